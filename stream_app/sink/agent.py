"""The sink: the one ClickHouse writer. Consumes classified tweets, dead letters, the
provider-call ledger and the clean decisions, and batch-inserts each into its table.

Delivery: Faust's ``take`` acknowledges a batch's offsets only when the loop body
returns, and the body returns only once every row is durable in ClickHouse or stored
in ``dlq`` with the reason it was refused (see :mod:`stream_app.sink.writer`). A crash
before that redelivers the batch; the tables replace rows by key, the inserts carry a
deduplication token, so a redelivery never counts a tweet twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import faust

from stream_app import metrics
from stream_app.records import DeadLetter
from stream_app.settings import Settings
from stream_app.sink.tables import ALERTS, CLEAN_DECISIONS, DLQ, PROVIDER_CALLS, TWEETS, TableSpec
from stream_app.sink.writer import ClickHouseWriter, RefusedRow
from stream_app.topics import PipelineTopics

log = logging.getLogger(__name__)
STAGE = metrics.STAGE_SINK


@dataclass(frozen=True)
class DecodedBatch:
    rows: list[list[Any]]
    payloads: list[bytes]          # payloads[i] is the message of rows[i]
    undecodable: list[DeadLetter]


@dataclass(frozen=True)
class Delivery:
    inserted: int
    dead_lettered: int


def decode_batch(spec: TableSpec, payloads: list[bytes]) -> DecodedBatch:
    rows, kept, rejects = [], [], []
    for payload in payloads:
        try:
            rows.append(spec.to_row(payload))
            kept.append(payload)
        except (ValueError, TypeError, KeyError) as exc:
            rejects.append(DeadLetter.build(
                stage=STAGE, payload=payload,
                reason=f"cannot build a {spec.table} row: {type(exc).__name__}: {exc}"))
    return DecodedBatch(rows, kept, rejects)


def rows_and_rejects(spec: TableSpec, payloads: list[bytes]) -> tuple[list[list[Any]], list[DeadLetter]]:
    decoded = decode_batch(spec, payloads)
    return decoded.rows, decoded.undecodable


def refused_dead_letter(spec: TableSpec, refused: RefusedRow) -> DeadLetter:
    fields = dict(zip(spec.columns, refused.row))
    return DeadLetter.build(
        stage=STAGE, payload=refused.payload,
        reason=f"ClickHouse refused the row for {spec.table}: {refused.reason}",
        run_id=str(fields.get("run_id", "")), source=str(fields.get("source", "")),
        tweet_id=str(fields.get("id", fields.get("tweet_id", ""))))


async def deliver(writer: ClickHouseWriter, spec: TableSpec, payloads: list[bytes]) -> Delivery:
    """Make one batch durable: rows into ``spec.table``, the rest into ``dlq`` with why."""
    metrics.SINK_PENDING_ROWS.labels(spec.table).set(len(payloads))
    decoded = decode_batch(spec, payloads)
    refused = await writer.write(spec, decoded.rows, decoded.payloads)
    dead = decoded.undecodable + [refused_dead_letter(spec, r) for r in refused]
    if dead:
        # The sink owns the dlq table, so it writes its own dead letters there directly.
        dlq_payloads = [d.to_json() for d in dead]
        lost = await writer.write(DLQ, [DLQ.to_row(p) for p in dlq_payloads], dlq_payloads)
        for row in lost:  # only if ClickHouse refused a dead letter built by ourselves
            metrics.ERRORS.labels(STAGE, "dead_letter_refused").inc()
            log.error("ClickHouse refused a dead letter (%s); payload: %.500r", row.reason,
                      row.payload)
        metrics.DEAD_LETTERS.labels(STAGE, "undecodable").inc(len(decoded.undecodable))
        metrics.DEAD_LETTERS.labels(STAGE, "refused").inc(len(refused))
    metrics.SINK_PENDING_ROWS.labels(spec.table).set(0)
    return Delivery(inserted=len(decoded.rows) - len(refused), dead_lettered=len(dead))


def register_sink_agents(app: faust.App, topics: PipelineTopics, settings: Settings,
                         writer: ClickHouseWriter) -> None:
    for topic, spec in ((topics.classified, TWEETS), (topics.dlq, DLQ),
                        (topics.provider_calls, PROVIDER_CALLS),
                        (topics.decisions, CLEAN_DECISIONS), (topics.alerts, ALERTS)):
        _register_one(app, topic, spec, settings, writer)


def _register_one(app: faust.App, topic: faust.TopicT, spec: TableSpec, settings: Settings,
                  writer: ClickHouseWriter) -> None:
    async def sink(stream: faust.StreamT[bytes]) -> None:
        async for payloads in stream.take(settings.sink_batch_size, within=settings.sink_max_wait):
            metrics.MESSAGES_IN.labels(STAGE).inc(len(payloads))
            metrics.BATCH_SIZE.labels(STAGE).observe(len(payloads))
            await deliver(writer, spec, payloads)

    app.agent(topic, name=f"sink_{spec.table.split('.')[-1]}")(sink)
