"""The sink's Kafka consumer: fetch a batch, make it durable, then commit exactly it.

A plain aiokafka consumer in its own group (``<app_id>-sink``) with auto-commit off,
not Faust's ``stream.take``: with ``take`` Faust commits offsets from its own ack and
gap bookkeeping, and once committed dead-letter offset past a row that never reached
ClickHouse (a real loss, seen in the fault-injection test; cf. faust-streaming #312).
Here the only offsets ever committed are ``offset + 1`` of records that
:func:`~stream_app.sink.agent.deliver` has made durable (inserted, or stored in ``dlq``
with the reason ClickHouse refused them):

1. ``getmany`` until ``sink_batch_size`` records or ``sink_max_wait`` seconds after the
   first one (ClickHouse likes few, large inserts), and decode/check it
   (:func:`~stream_app.sink.agent.prepare`);
2. per topic, ``land`` it into its table; it returns only when every row is durable
   (transient ClickHouse errors are retried forever, with backoff);
3. commit, per partition, one past the highest delivered offset.

Steps 2-3 of a batch run while step 1 of the next one does: ClickHouse inserts in its
own threads, the decoding is Python, so on two cores they overlap. At most one batch
lands at a time, so batches are committed in the order they were fetched.

Back-pressure: at most one batch is being landed and one prepared, so while ClickHouse
is down the backlog stays in Kafka; aiokafka's read-ahead is bounded by
``max_partition_fetch_bytes`` (8 MiB) per assigned partition.

Why the highest offset is safe to commit: this consumer's position on a partition
starts at the group's committed offset (everything below it delivered) and only moves
through records that end up in the current batch; a rebalance only moves it back.
So every offset below the highest one in a delivered batch was delivered, by this
batch, an earlier one, or whoever committed before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict

import mode
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata, TopicPartition

from stream_app import metrics
from stream_app.settings import Settings
from stream_app.sink.agent import DecodedBatch, land, prepare
from stream_app.sink.tables import ALERTS, CLEAN_DECISIONS, DLQ, PROVIDER_CALLS, TWEETS, TableSpec
from stream_app.sink.writer import ClickHouseWriter

log = logging.getLogger(__name__)
STAGE = metrics.STAGE_SINK
IDLE_POLL_S = 1.0          # how long one empty fetch waits before the stop flag is checked
STOP_GRACE_S = 20.0        # on shutdown, how long the batch in flight may take to land
FETCH_BYTES_PER_PARTITION = 8 << 20

Batch = dict[TopicPartition, list[ConsumerRecord]]
# Profile steps: checking and decoding a batch; landing it (inserts, commit).
_DECODE_SECONDS = metrics.STEP_SECONDS.labels(STAGE, "decode")
_LAND_SECONDS = metrics.STEP_SECONDS.labels(STAGE, "sink")


def sink_group(settings: Settings) -> str:
    """The sink's consumer group: its own, so its commits are only its own."""
    return f"{settings.app_id}-sink"


def sink_routes(settings: Settings) -> dict[str, TableSpec]:
    """Which topic lands in which table."""
    return {settings.topic_classified: TWEETS, settings.topic_dlq: DLQ,
            settings.topic_provider_calls: PROVIDER_CALLS,
            settings.topic_decisions: CLEAN_DECISIONS, settings.topic_alerts: ALERTS}


def commit_offsets(batch: Batch) -> dict[TopicPartition, int]:
    """One past the highest offset of each partition in a delivered batch."""
    return {tp: max(r.offset for r in records) + 1 for tp, records in batch.items() if records}


class _LogRebalance(ConsumerRebalanceListener):
    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Nothing to commit here: every delivered batch was committed when it landed, and
        # the batch in flight (if any) is not durable yet. Records of it on a partition
        # that moves away are redelivered to the new owner (idempotent).
        if revoked:
            log.info("sink: %d partition(s) revoked", len(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("sink: %d partition(s) assigned", len(assigned))


class SinkConsumer(mode.Service):
    """Started and stopped with the worker's Faust app (``app.add_dependency``)."""

    def __init__(self, settings: Settings, writer: ClickHouseWriter, **kwargs) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.writer = writer
        self.routes = sink_routes(settings)
        self.group = sink_group(settings)
        self._consumer: AIOKafkaConsumer | None = None
        self._runner: asyncio.Task | None = None
        self._stopping = False

    async def on_start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers.split(","),
            group_id=self.group, client_id=self.group,
            enable_auto_commit=False,        # offsets move only in _commit, after deliver
            auto_offset_reset="earliest",
            session_timeout_ms=10_000, heartbeat_interval_ms=1_000, rebalance_timeout_ms=20_000,
            # aiokafka asks a partition for more only once its buffered records are taken;
            # at the default 1 MiB a fetch (~1,200 tweets) the sink sat waiting for the
            # next one. The read-ahead stays bounded: this much per assigned partition.
            max_partition_fetch_bytes=FETCH_BYTES_PER_PARTITION, fetch_max_bytes=4 * FETCH_BYTES_PER_PARTITION)
        self._consumer.subscribe(list(self.routes), listener=_LogRebalance())
        await self._consumer.start()
        self._runner = asyncio.create_task(self._run(), name="sink-consumer")
        log.info("sink consumer started (group %s, topics %s)", self.group, ", ".join(self.routes))

    async def on_stop(self) -> None:
        self._stopping = True
        if self._runner is not None:
            # Let the batch in flight land and commit; if ClickHouse is down that could be
            # forever: cancel then, the batch stays uncommitted and is redelivered.
            done, _ = await asyncio.wait({self._runner}, timeout=STOP_GRACE_S)
            if not done:
                log.warning("sink: batch still not durable after %.0f s; stopping without "
                            "committing it (it will be redelivered)", STOP_GRACE_S)
                self._runner.cancel()
                await asyncio.gather(self._runner, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()  # auto-commit is off: commits nothing

    async def _run(self) -> None:
        landing: asyncio.Task | None = None   # the previous batch, being inserted and committed
        try:
            while not self._stopping:
                batch = await self._next_batch()
                prepared = await self._prepare(batch) if batch else []
                if landing is not None:
                    await landing
                    landing = None
                if batch:
                    landing = asyncio.create_task(self._land(batch, prepared))
            if landing is not None:
                await landing
        except asyncio.CancelledError:
            if landing is not None:
                landing.cancel()
            raise
        except Exception as exc:  # a bug, not a ClickHouse outage (deliver retries those)
            log.exception("sink consumer failed; stopping the worker (nothing uncommitted "
                          "is lost: it is redelivered on restart)")
            await self.crash(exc)

    async def _next_batch(self) -> Batch:
        """Up to ``sink_batch_size`` records, at most ``sink_max_wait`` s after the first."""
        assert self._consumer is not None
        limit = self.settings.sink_batch_size
        batch: Batch = defaultdict(list)
        count, deadline = 0, None
        while count < limit and not self._stopping:
            wait = IDLE_POLL_S if deadline is None else deadline - time.monotonic()
            if wait <= 0:
                break
            fetched = await self._consumer.getmany(timeout_ms=int(wait * 1000),
                                                   max_records=limit - count)
            for tp, records in fetched.items():
                batch[tp].extend(records)
                count += len(records)
            if count and deadline is None:
                deadline = time.monotonic() + self.settings.sink_max_wait
        return batch

    async def _prepare(self, batch: Batch) -> list[tuple[TableSpec, DecodedBatch]]:
        by_topic: dict[str, list[bytes]] = defaultdict(list)
        for tp, records in batch.items():
            by_topic[tp.topic].extend(r.value if r.value is not None else b"" for r in records)
        prepared = []
        started = time.perf_counter()
        for topic, payloads in by_topic.items():
            metrics.MESSAGES_IN.labels(STAGE).inc(len(payloads))
            metrics.BATCH_SIZE.labels(STAGE).observe(len(payloads))
            spec = self.routes[topic]
            prepared.append((spec, await prepare(self.writer, spec, payloads)))
        _DECODE_SECONDS.inc(time.perf_counter() - started)
        return prepared

    async def _land(self, batch: Batch, prepared: list[tuple[TableSpec, DecodedBatch]]) -> None:
        started = time.perf_counter()
        for spec, decoded in prepared:
            await land(self.writer, spec, decoded)
        await self._commit(batch)
        _LAND_SECONDS.inc(time.perf_counter() - started)

    async def _commit(self, batch: Batch) -> None:
        """Commit the delivered batch, and only it."""
        assert self._consumer is not None
        assigned = self._consumer.assignment()
        offsets = {tp: OffsetAndMetadata(offset, "")
                   for tp, offset in commit_offsets(batch).items() if tp in assigned}
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group rebalanced while the batch was being delivered: these partitions
            # may belong to another member now, which starts from the last committed
            # offset and inserts part of this batch again. That redelivery is harmless:
            # the rows replace themselves (same key, ReplacingMergeTree) and a retried
            # insert carries the same deduplication token.
            metrics.ERRORS.labels(STAGE, "commit_failed").inc()
            log.warning("sink: commit after a rebalance failed (%s); the batch will be "
                        "redelivered (idempotent)", exc)
        except KafkaError as exc:
            if exc.retriable:  # aiokafka already retried; same outcome as above
                metrics.ERRORS.labels(STAGE, "commit_failed").inc()
                log.warning("sink: commit failed (%s); the next commit covers this batch, "
                            "or it is redelivered (idempotent)", exc)
            else:
                raise
