"""ClickHouse access: one client factory for both DSN kinds, and the schema migrations.

``chdb:///path`` runs the real ClickHouse engine in-process (one process per data path);
``http(s)://user:pass@host:8123/db`` talks to a server. Both go through
clickhouse-connect, so the rest of the code never knows which one it has.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from stream_app.storage.retention import Retention, apply_retention

DATABASE = "dallosh"
MIGRATIONS_TABLE = f"{DATABASE}.schema_migrations"


class StorageError(RuntimeError):
    """ClickHouse cannot be reached or used; the message says why (never a secret)."""


def redact_dsn(dsn: str) -> str:
    """The DSN with any password replaced, safe for logs and error messages."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def chdb_path(dsn: str) -> Path | None:
    """The data folder of an embedded (chdb) DSN, or None for a server DSN."""
    if not dsn.startswith("chdb://"):
        return None
    return Path(dsn[len("chdb://"):])


# Embedded data paths this process holds, with the open lock file of each.
_held_locks: dict[Path, int] = {}


def _claim_embedded_path(path: Path) -> None:
    """Take the one-process-per-path claim on an embedded store.

    Measured here: chdb itself does not reliably refuse a second process on the same
    path (a child opened it while the parent held it), which would corrupt the store.
    An exclusive flock, held while the client is open, makes the rule enforceable.
    """
    if path in _held_locks:
        return
    path.mkdir(parents=True, exist_ok=True)
    lock_file = path / ".dallosh.lock"
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise StorageError(
            f"the embedded ClickHouse at {path} is open in another process (pid {holder}). "
            "The embedded store allows one process per data path: stop that process (a "
            "`dallosh worker` or demo?) or use a ClickHouse server DSN.") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _held_locks[path] = fd


def _release_embedded_path(path: Path) -> None:
    fd = _held_locks.pop(path, None)
    if fd is not None:
        os.close(fd)  # closing the descriptor drops the flock


def connect(dsn: str) -> Client:
    """Open a clickhouse-connect client on ``dsn`` (chdb or http[s])."""
    path = chdb_path(dsn)
    try:
        if path is not None:
            _claim_embedded_path(path)
            return clickhouse_connect.get_client(dsn=f"chdb://{path}")
        if not dsn.startswith(("http://", "https://")):
            raise StorageError(f"DALLOSH_CLICKHOUSE_DSN={redact_dsn(dsn)!r}: expected "
                               "chdb:///path or http(s)://user:pass@host:8123/dallosh")
        return clickhouse_connect.get_client(dsn=dsn)
    except StorageError:
        raise
    except Exception as exc:  # driver errors carry no secret, but the DSN may
        if path is not None:
            _release_embedded_path(path)
        raise StorageError(f"cannot open ClickHouse at {redact_dsn(dsn)}: "
                           f"{type(exc).__name__}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else ""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]

    def statements(self) -> list[str]:
        without_comments = re.sub(r"^\s*--.*$", "", self.sql, flags=re.MULTILINE)
        return [s.strip() for s in without_comments.split(";") if s.strip()]


def load_migrations() -> list[Migration]:
    folder = resources.files("stream_app.schemas").joinpath("clickhouse")
    migrations = []
    for entry in folder.iterdir():
        match = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if match:
            migrations.append(Migration(int(match[1]), match[2], entry.read_text("utf-8")))
    return sorted(migrations, key=lambda m: m.version)


def apply_migrations(client: Client) -> list[int]:
    """Bring the schema up to date; idempotent. Returns the versions applied now."""
    client.command(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
    client.command(f"""CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE}
        (version UInt32, name String, checksum String, applied_at DateTime DEFAULT now())
        ENGINE = MergeTree ORDER BY version""")
    applied = {row[0]: row[1] for row in
               client.query(f"SELECT version, checksum FROM {MIGRATIONS_TABLE}").result_rows}
    done_now = []
    for migration in load_migrations():
        if migration.version in applied:
            if applied[migration.version] != migration.checksum:
                raise StorageError(
                    f"schema migration {migration.version:04d}_{migration.name} was changed "
                    "after it was applied; add a new migration instead of editing it")
            continue
        try:
            for statement in migration.statements():
                client.command(statement)
        except ClickHouseError as exc:
            raise StorageError(f"schema migration {migration.version:04d}_{migration.name} "
                               f"failed: {_first_line(exc)}") from None
        client.insert(MIGRATIONS_TABLE, [[migration.version, migration.name, migration.checksum]],
                      column_names=["version", "name", "checksum"])
        done_now.append(migration.version)
    return done_now


def open_store(dsn: str, retention: Retention | None = None) -> Client:
    """Connect and make sure the schema is current, and the retention (TTLs) too when
    given; the caller owns the client for its whole life (the sink). Readers that come
    and go use :func:`store_session`, which leaves retention alone."""
    client = connect(dsn)
    try:
        apply_migrations(client)
        if retention is not None:
            try:
                apply_retention(client, retention, DATABASE)
            except ClickHouseError as exc:
                raise StorageError(f"cannot apply the retention settings: {_first_line(exc)}") from None
    except BaseException:
        close_store(client, dsn)
        raise
    return client


def close_store(client: Client, dsn: str) -> None:
    client.close()
    path = chdb_path(dsn)
    if path is not None:
        _release_embedded_path(path)


@contextmanager
def store_session(dsn: str) -> Iterator[Client]:
    """A migrated client for a short read (report, summary, tests); closed afterwards so
    a worker can open the embedded store again."""
    client = open_store(dsn)
    try:
        yield client
    finally:
        close_store(client, dsn)
