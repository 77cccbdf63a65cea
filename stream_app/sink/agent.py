"""The sink's delivery step: one batch of messages of one topic made durable.

:func:`deliver` decodes the messages into rows of their table, inserts them (see
:mod:`stream_app.sink.writer`: retried until durable, refused rows isolated) and stores
every message that cannot be a row in ``dlq`` with the reason. It returns only when
each message is either a row or a dead letter in ClickHouse; the sink's consumer
(:mod:`stream_app.sink.consumer`) commits the Kafka offsets only after that. A crash
before redelivers the batch; the tables replace rows by key and the inserts carry a
deduplication token, so a redelivery never counts a tweet twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from stream_app import metrics
from stream_app.records import DeadLetter
from stream_app.sink.tables import DLQ, TableSpec
from stream_app.sink.writer import ClickHouseWriter, RefusedRow

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
