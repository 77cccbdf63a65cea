"""Durable, idempotent inserts: the one place the sink talks to ClickHouse.

- Every insert carries an ``insert_deduplication_token`` derived from its content, and
  the tables keep a ``non_replicated_deduplication_window``: an insert retried after it
  actually landed (reply lost, timeout) is dropped by ClickHouse instead of doubled.
- Transient errors (see :mod:`stream_app.sink.errors`) are retried with capped,
  jittered exponential backoff, for as long as it takes: the batch is held, the agent
  does not ask for more, and the worker stops fetching once its bounded stream buffer
  is full — back-pressure instead of an unbounded queue in memory.
- Permanent errors blame some rows: the batch is bisected until those rows are
  isolated; the rest lands and the refused rows are returned with the reason.
- Rows go in as the JSON lines of their messages (``JSONEachRow``, parsed by ClickHouse
  in C++), checked beforehand against the table's column types
  (:mod:`stream_app.sink.rows`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from clickhouse_connect.driver.client import Client

from stream_app import metrics
from stream_app.sink.chaos import ChaosMode, ChaosSwitch
from stream_app.sink.errors import ChaosInsertError, describe, is_row_error
from stream_app.sink.rows import Row, RowFormat
from stream_app.sink.tables import TableSpec

log = logging.getLogger(__name__)
FIRST_BACKOFF_S = 0.2


class _HideSerialisationTracebacks(logging.Filter):
    """clickhouse-connect logs a full traceback for every value it cannot serialise;
    while the sink bisects a batch that is one line per probe. The sink logs the
    refused rows itself, with their reason."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Error serializing column")


logging.getLogger("clickhouse_connect.driver.transform").addFilter(_HideSerialisationTracebacks())


@dataclass(frozen=True)
class RefusedRow:
    row: Row
    reason: str


# How ClickHouse reads the lines: timestamps as the records write them (ISO 8601, "Z" or
# an offset; naive ones in the column's UTC), keys that are not columns ignored.
JSON_INSERT_SETTINGS = {"date_time_input_format": "best_effort", "input_format_skip_unknown_fields": 1}


def dedup_token(table: str, payloads: Sequence[bytes]) -> str:
    """Same rows, same token: what makes a retried insert a no-op for ClickHouse."""
    digest = hashlib.blake2b(table.encode(), digest_size=16)
    for payload in payloads:
        digest.update(len(payload).to_bytes(4, "little"))
        digest.update(payload)
    return f"{table}:{digest.hexdigest()}"


class ClickHouseWriter:
    """Serialises inserts on one client (chdb allows one engine per process)."""

    def __init__(self, client: Client, *, max_backoff_s: float = 30.0,
                 chaos: ChaosSwitch | None = None) -> None:
        self._client = client
        self._lock = asyncio.Lock()
        self._max_backoff_s = max_backoff_s
        self._chaos = chaos or ChaosSwitch(None)
        self._formats: dict[str, RowFormat] = {}

    async def row_format(self, spec: TableSpec) -> RowFormat:
        """How messages become rows of ``spec.table``, from the column types ClickHouse
        reports (asked once per table; retried like an insert while ClickHouse is
        unreachable or the table is missing)."""
        if spec.table not in self._formats:
            types: dict[str, str] = {}

            def describe_table() -> None:
                result = self._client.query(f"DESCRIBE TABLE {spec.table}")
                types.update((row[0], row[1]) for row in result.result_rows)

            error = await self._retrying(spec.table, "describe", describe_table)
            if error is not None:  # not a row's fault, but retrying will not fix it either
                raise error
            self._formats[spec.table] = RowFormat(spec, types)
        return self._formats[spec.table]

    async def write(self, spec: TableSpec, rows: list[Row]) -> list[RefusedRow]:
        """Insert ``rows`` until they are durable; returns the rows ClickHouse refused,
        which were not inserted."""
        refused: list[RefusedRow] = []
        await self._write_part(spec, rows, refused)
        if refused:
            metrics.SINK_REFUSED_ROWS.labels(spec.table).inc(len(refused))
            log.warning("%d row(s) refused by %s, dead-lettered; first: %s",
                        len(refused), spec.table, refused[0].reason)
        return refused

    async def _write_part(self, spec: TableSpec, rows: list[Row], refused: list[RefusedRow]) -> None:
        if not rows:
            return
        token = dedup_token(spec.table, [row.payload for row in rows])
        error = await self._retrying(spec.table, f"insert of {len(rows)} rows",
                                     lambda: self._insert_sync(spec, rows, token), rows=len(rows))
        if error is None:
            return
        if len(rows) == 1:
            refused.append(RefusedRow(rows[0], describe(error)))
            return
        middle = len(rows) // 2
        await self._write_part(spec, rows[:middle], refused)
        await self._write_part(spec, rows[middle:], refused)

    async def _retrying(self, table: str, what: str, action: Callable[[], None],
                        rows: int = 0) -> BaseException | None:
        """Run ``action`` (blocking, in a thread) until it succeeds: None; or the error
        when it blames the rows (retrying cannot help). Every other failure is retried
        with backoff, for as long as it takes."""
        attempt = 0
        try:
            while True:
                try:
                    async with self._lock:
                        started = time.perf_counter()
                        await asyncio.to_thread(action)
                    if rows:
                        metrics.SINK_INSERT_SECONDS.labels(table).observe(time.perf_counter() - started)
                        metrics.SINK_ROWS.labels(table).inc(rows)
                    if attempt:
                        log.info("%s into %s succeeded after %d retries", what, table, attempt)
                    return None
                except Exception as exc:
                    if is_row_error(exc):
                        return exc
                    attempt += 1
                    metrics.SINK_BLOCKED.labels(table).set(1)
                    metrics.SINK_RETRIES.labels(table).inc()
                    metrics.ERRORS.labels(metrics.STAGE_SINK, "insert_retry").inc()
                    delay = self._backoff(attempt)
                    log.warning("%s into %s failed (%s); retry %d in %.1fs",
                                what, table, describe(exc), attempt, delay)
                    await asyncio.sleep(delay)
        finally:
            if attempt:
                metrics.SINK_BLOCKED.labels(table).set(0)

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self._max_backoff_s, FIRST_BACKOFF_S * 2 ** (attempt - 1))
        return ceiling * random.uniform(0.5, 1.0)

    def _insert_sync(self, spec: TableSpec, rows: list[Row], token: str) -> None:
        mode = self._chaos.mode()
        if mode is ChaosMode.REFUSE:
            raise ChaosInsertError("chaos switch: insert refused before it was sent")
        self._client.raw_insert(spec.table, list(spec.columns), insert_block=b"\n".join(r.line for r in rows),
                                fmt="JSONEachRow",
                                settings={"insert_deduplication_token": token, **JSON_INSERT_SETTINGS})
        if mode is ChaosMode.LOST_ACK:
            raise ChaosInsertError("chaos switch: insert landed, its acknowledgement was lost")
