"""The sink: the one ClickHouse writer. Consumes classified tweets, dead letters and the
provider-call ledger, and batch-inserts each into its table.

Offsets are acknowledged only after the insert returned (Faust's ``take`` acks a batch
when the loop body finishes), and a failing insert is retried with backoff rather than
raised: an exception inside a Faust agent would still ack the batch and lose it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import faust
from clickhouse_connect.driver.client import Client

from stream_app import metrics
from stream_app.records import DeadLetter
from stream_app.settings import Settings
from stream_app.sink.tables import CLEAN_DECISIONS, DLQ, PROVIDER_CALLS, TWEETS, TableSpec
from stream_app.topics import PipelineTopics

log = logging.getLogger(__name__)
STAGE = metrics.STAGE_SINK
MAX_BACKOFF_S = 30.0


class ClickHouseWriter:
    """Serialises inserts on one client (chdb allows one engine per process)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._lock = asyncio.Lock()

    async def insert(self, spec: TableSpec, rows: list[list[Any]]) -> None:
        attempt = 0
        while True:
            try:
                async with self._lock:
                    started = time.perf_counter()
                    await asyncio.to_thread(self._client.insert, spec.table, rows,
                                            column_names=list(spec.columns))
                metrics.SINK_INSERT_SECONDS.labels(spec.table).observe(time.perf_counter() - started)
                metrics.SINK_ROWS.labels(spec.table).inc(len(rows))
                return
            except Exception as exc:  # transient or not, retrying keeps the rows
                attempt += 1
                delay = min(MAX_BACKOFF_S, 0.2 * 2 ** attempt) * random.uniform(0.5, 1.0)
                metrics.ERRORS.labels(STAGE, "insert_retry").inc()
                log.warning("insert of %d rows into %s failed (%s: %s); retry %d in %.1fs",
                            len(rows), spec.table, type(exc).__name__, exc, attempt, delay)
                await asyncio.sleep(delay)


def rows_and_rejects(spec: TableSpec, payloads: list[bytes]) -> tuple[list[list[Any]], list[DeadLetter]]:
    rows, rejects = [], []
    for payload in payloads:
        try:
            rows.append(spec.to_row(payload))
        except (ValueError, TypeError, KeyError) as exc:
            rejects.append(DeadLetter.build(
                stage=STAGE, payload=payload,
                reason=f"cannot build a {spec.table} row: {type(exc).__name__}: {exc}"))
    return rows, rejects


def register_sink_agents(app: faust.App, topics: PipelineTopics, settings: Settings,
                         writer: ClickHouseWriter) -> None:
    for topic, spec in ((topics.classified, TWEETS), (topics.dlq, DLQ),
                        (topics.provider_calls, PROVIDER_CALLS),
                        (topics.decisions, CLEAN_DECISIONS)):
        _register_one(app, topic, spec, settings, writer)


def _register_one(app: faust.App, topic: faust.TopicT, spec: TableSpec, settings: Settings,
                  writer: ClickHouseWriter) -> None:
    async def sink(stream: faust.StreamT[bytes]) -> None:
        async for payloads in stream.take(settings.sink_batch_size, within=settings.sink_max_wait):
            metrics.MESSAGES_IN.labels(STAGE).inc(len(payloads))
            metrics.BATCH_SIZE.labels(STAGE).observe(len(payloads))
            rows, rejects = rows_and_rejects(spec, payloads)
            if rows:
                await writer.insert(spec, rows)
            if rejects:
                # The sink owns the dlq table, so it writes its own rejects there directly.
                await writer.insert(DLQ, [DLQ.to_row(r.to_json()) for r in rejects])
                metrics.DEAD_LETTERS.labels(STAGE, "unwritable").inc(len(rejects))

    app.agent(topic, name=f"sink_{spec.table.split('.')[-1]}")(sink)
