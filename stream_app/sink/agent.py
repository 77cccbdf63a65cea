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

from stream_app import metrics
from stream_app.records import DeadLetter
from stream_app.sink.rows import Row, RowError, RowFormat
from stream_app.sink.tables import DLQ, TableSpec
from stream_app.sink.writer import ClickHouseWriter, RefusedRow

log = logging.getLogger(__name__)
STAGE = metrics.STAGE_SINK


@dataclass(frozen=True)
class DecodedBatch:
    rows: list[Row]
    undecodable: list[DeadLetter]


@dataclass(frozen=True)
class Delivery:
    inserted: int
    dead_lettered: int


def decode_batch(row_format: RowFormat, payloads: list[bytes]) -> DecodedBatch:
    rows, rejects = [], []
    for payload in payloads:
        try:
            rows.append(row_format.row(payload))
        except RowError as exc:
            rejects.append(DeadLetter.build(
                stage=STAGE, payload=payload, reason=f"cannot build a {row_format.spec.table} row: {exc}",
                **_origin(exc.record)))
    return DecodedBatch(rows, rejects)


def refused_dead_letter(spec: TableSpec, refused: RefusedRow) -> DeadLetter:
    return DeadLetter.build(
        stage=STAGE, payload=refused.row.payload,
        reason=f"ClickHouse refused the row for {spec.table}: {refused.reason}",
        **_origin(refused.row.record))


def _origin(record: dict) -> dict[str, str]:
    """Which run, source line and tweet a dead letter came from, as far as it says."""
    return {"run_id": str(record.get("run_id", "")), "source": str(record.get("source", "")),
            "tweet_id": str(record.get("id", record.get("tweet_id", "")))}


async def deliver(writer: ClickHouseWriter, spec: TableSpec, payloads: list[bytes]) -> Delivery:
    """Make one batch durable: rows into ``spec.table``, the rest into ``dlq`` with why."""
    return await land(writer, spec, await prepare(writer, spec, payloads))


async def prepare(writer: ClickHouseWriter, spec: TableSpec, payloads: list[bytes]) -> DecodedBatch:
    """The CPU half of :func:`deliver` (the sink's consumer runs it for the next batch
    while the previous one is being inserted)."""
    metrics.SINK_PENDING_ROWS.labels(spec.table).inc(len(payloads))
    return decode_batch(await writer.row_format(spec), payloads)


async def land(writer: ClickHouseWriter, spec: TableSpec, decoded: DecodedBatch) -> Delivery:
    """The insert half of :func:`deliver`: returns once every row is durable."""
    refused = await writer.write(spec, decoded.rows)
    dead = decoded.undecodable + [refused_dead_letter(spec, r) for r in refused]
    if dead:
        # The sink owns the dlq table, so it writes its own dead letters there directly.
        letters = decode_batch(await writer.row_format(DLQ), [d.to_json() for d in dead])
        lost = await writer.write(DLQ, letters.rows)
        for refusal in lost:  # only if ClickHouse refused a dead letter built by ourselves
            metrics.ERRORS.labels(STAGE, "dead_letter_refused").inc()
            log.error("ClickHouse refused a dead letter (%s); payload: %.500r", refusal.reason,
                      refusal.row.payload)
        metrics.DEAD_LETTERS.labels(STAGE, "undecodable").inc(len(decoded.undecodable))
        metrics.DEAD_LETTERS.labels(STAGE, "refused").inc(len(refused))
    metrics.SINK_PENDING_ROWS.labels(spec.table).dec(len(decoded.rows) + len(decoded.undecodable))
    return Delivery(inserted=len(decoded.rows) - len(refused), dead_lettered=len(dead))
