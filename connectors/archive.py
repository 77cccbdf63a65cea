"""The raw archive: every replayed file is kept, content-addressed, under the data dir
(``DATA_DIR/archive/<sha256>``), with what was replayed from it and when. Any run can be
audited and replayed again from the exact bytes it read."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from connectors.checkpoint import read_json, write_json_atomic
from stream_app.records import iso, utc_now

CHUNK = 1 << 20


@dataclass(frozen=True)
class ArchivedFile:
    sha256: str
    path: Path
    size: int
    already_archived: bool


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def archive_file(source: Path, data_dir: Path, run_id: str) -> ArchivedFile:
    """Copy ``source`` into the archive (once per content) and record this run."""
    sha = file_sha256(source)
    folder = data_dir / "archive" / sha[:2]
    target = folder / f"{sha}{''.join(source.suffixes)[-12:]}"
    already = target.exists()
    if not already:
        folder.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        shutil.copyfile(source, partial)
        partial.replace(target)
    meta_path = folder / f"{sha}.json"
    meta = read_json(meta_path) or {"sha256": sha, "size": source.stat().st_size,
                                    "archived_at": iso(utc_now()), "replays": []}
    meta["replays"].append({"run_id": run_id, "original_path": str(source.resolve()),
                            "at": iso(utc_now())})
    write_json_atomic(meta_path, meta)
    return ArchivedFile(sha, target, meta["size"], already)
