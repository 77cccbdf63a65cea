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
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Sequence

from clickhouse_connect.datatypes.base import ClickHouseType
from clickhouse_connect.driver.client import Client

from stream_app import metrics
from stream_app.sink.chaos import ChaosMode, ChaosSwitch
from stream_app.sink.errors import ChaosInsertError, describe, is_row_error
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
    payload: bytes
    row: list[Any]
    reason: str


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
        self._column_types: dict[str, Sequence[ClickHouseType]] = {}

    async def write(self, spec: TableSpec, rows: list[list[Any]],
                    payloads: Sequence[bytes]) -> list[RefusedRow]:
        """Insert ``rows`` (``payloads[i]`` is the message of ``rows[i]``) until they are
        durable; returns the rows ClickHouse refused, which were not inserted."""
        refused: list[RefusedRow] = []
        await self._write_part(spec, rows, payloads, refused)
        if refused:
            metrics.SINK_REFUSED_ROWS.labels(spec.table).inc(len(refused))
            log.warning("%d row(s) refused by %s, dead-lettered; first: %s",
                        len(refused), spec.table, refused[0].reason)
        return refused

    async def _write_part(self, spec: TableSpec, rows: list[list[Any]],
                          payloads: Sequence[bytes], refused: list[RefusedRow]) -> None:
        if not rows:
            return
        error = await self._insert_retrying(spec, rows, payloads)
        if error is None:
            return
        if len(rows) == 1:
            refused.append(RefusedRow(payloads[0], rows[0], describe(error)))
            return
        middle = len(rows) // 2
        await self._write_part(spec, rows[:middle], payloads[:middle], refused)
        await self._write_part(spec, rows[middle:], payloads[middle:], refused)

    async def _insert_retrying(self, spec: TableSpec, rows: list[list[Any]],
                               payloads: Sequence[bytes]) -> BaseException | None:
        """None once the rows are in; the error when ClickHouse refuses them for good."""
        token = dedup_token(spec.table, payloads)
        attempt = 0
        try:
            while True:
                try:
                    async with self._lock:
                        started = time.perf_counter()
                        await asyncio.to_thread(self._insert_sync, spec, rows, token)
                    metrics.SINK_INSERT_SECONDS.labels(spec.table).observe(
                        time.perf_counter() - started)
                    metrics.SINK_ROWS.labels(spec.table).inc(len(rows))
                    if attempt:
                        log.info("insert of %d rows into %s succeeded after %d retries",
                                 len(rows), spec.table, attempt)
                    return None
                except Exception as exc:
                    if is_row_error(exc):
                        return exc
                    attempt += 1
                    metrics.SINK_BLOCKED.labels(spec.table).set(1)
                    metrics.SINK_RETRIES.labels(spec.table).inc()
                    metrics.ERRORS.labels(metrics.STAGE_SINK, "insert_retry").inc()
                    delay = self._backoff(attempt)
                    log.warning("insert of %d rows into %s failed (%s); retry %d in %.1fs",
                                len(rows), spec.table, describe(exc), attempt, delay)
                    await asyncio.sleep(delay)
        finally:
            if attempt:
                metrics.SINK_BLOCKED.labels(spec.table).set(0)

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self._max_backoff_s, FIRST_BACKOFF_S * 2 ** (attempt - 1))
        return ceiling * random.uniform(0.5, 1.0)

    def _insert_sync(self, spec: TableSpec, rows: list[list[Any]], token: str) -> None:
        mode = self._chaos.mode()
        if mode is ChaosMode.REFUSE:
            raise ChaosInsertError("chaos switch: insert refused before it was sent")
        self._client.insert(spec.table, rows, column_names=list(spec.columns),
                            column_types=self._types_of(spec),
                            settings={"insert_deduplication_token": token})
        if mode is ChaosMode.LOST_ACK:
            raise ChaosInsertError("chaos switch: insert landed, its acknowledgement was lost")

    def _types_of(self, spec: TableSpec) -> Sequence[ClickHouseType]:
        """Column types, asked once per table instead of a DESCRIBE on every insert."""
        if spec.table not in self._column_types:
            context = self._client.create_insert_context(spec.table, list(spec.columns))
            self._column_types[spec.table] = context.column_types
        return self._column_types[spec.table]
