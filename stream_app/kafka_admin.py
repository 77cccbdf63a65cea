"""Small Kafka administration helpers: create the pipeline topics, measure consumer lag.

Lag (end offset minus the committed offset of the group that consumes the topic,
summed per topic) is what the worker exports as a metric and what ``dallosh demo``
waits on to know that every replayed tweet went through every stage. Two groups
consume the pipeline: the Faust agents (``app_id``) and the ClickHouse sink
(``<app_id>-sink``); a topic read by both is as far behind as the slower one.
"""

from __future__ import annotations

import asyncio
from typing import Iterable

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError
from aiokafka.structs import ConsumerRecord, TopicPartition

from stream_app.settings import Settings


class KafkaUnavailable(RuntimeError):
    """The Kafka cluster cannot be reached."""

    def __init__(self, bootstrap: str, cause: Exception) -> None:
        super().__init__(f"cannot reach Kafka at {bootstrap} ({cause}). Is the broker up? "
                         "(`dallosh infra up`, or set DALLOSH_KAFKA_BOOTSTRAP)")


def pipeline_topics(settings: Settings) -> list[str]:
    return [settings.topic_raw, settings.topic_clean, settings.topic_classified,
            settings.topic_dlq, settings.topic_alerts, settings.topic_provider_calls,
            settings.topic_decisions, settings.topic_windows]


def consumer_groups(settings: Settings) -> dict[str, list[str]]:
    """Each consumer group of the pipeline and the topics it consumes."""
    from stream_app.sink.consumer import sink_group, sink_routes  # heavy: only when asked
    return {settings.app_id: [settings.topic_raw, settings.topic_clean,
                              settings.topic_classified],  # clean, classify, signals
            sink_group(settings): list(sink_routes(settings))}


async def ensure_topics(bootstrap: str, names: Iterable[str], partitions: int,
                        configs: dict[str, str] | None = None) -> list[str]:
    """Create the topics that do not exist yet (with ``configs``, e.g. compaction);
    return the ones created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    try:
        await admin.start()
    except KafkaConnectionError as exc:
        raise KafkaUnavailable(bootstrap, exc) from None
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in dict.fromkeys(names) if n not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [NewTopic(n, num_partitions=partitions, replication_factor=1,
                              topic_configs=configs or {}) for n in missing])
            except TopicAlreadyExistsError:
                pass  # another process created it in between: fine
        return missing
    finally:
        await admin.close()


async def _clients(bootstrap: str) -> tuple[AIOKafkaConsumer, AIOKafkaAdminClient]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    try:
        await consumer.start()
        await admin.start()
    except KafkaConnectionError as exc:
        await asyncio.gather(consumer.stop(), admin.close(), return_exceptions=True)
        raise KafkaUnavailable(bootstrap, exc) from None
    return consumer, admin


async def _end_offsets(consumer: AIOKafkaConsumer, admin: AIOKafkaAdminClient,
                       topics: list[str]) -> dict[TopicPartition, int]:
    described = await admin.describe_topics(topics)
    partitions = [TopicPartition(d["topic"], p["partition"]) for d in described
                  for p in d["partitions"]]
    return await consumer.end_offsets(partitions) if partitions else {}


async def topic_end_offsets(bootstrap: str, topics: Iterable[str]) -> dict[TopicPartition, int]:
    """The next offset to be written, for every partition of ``topics`` that exists."""
    consumer, admin = await _clients(bootstrap)
    try:
        return await _end_offsets(consumer, admin, list(dict.fromkeys(topics)))
    finally:
        await asyncio.gather(consumer.stop(), admin.close(), return_exceptions=True)


async def read_to_end(bootstrap: str, topic: str) -> list[ConsumerRecord]:
    """Every record of ``topic``, each partition from its beginning up to its end offset
    at the time of the call (in order within a partition)."""
    consumer, admin = await _clients(bootstrap)
    try:
        ends = {tp: end for tp, end in (await _end_offsets(consumer, admin, [topic])).items() if end}
        if not ends:
            return []
        consumer.assign(list(ends))
        await consumer.seek_to_beginning(*ends)
        records: list[ConsumerRecord] = []
        remaining = set(ends)
        while remaining:
            for tp, batch in (await consumer.getmany(*remaining, timeout_ms=1000)).items():
                records += [r for r in batch if r.offset < ends[tp]]
            remaining = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}
        return records
    finally:
        await asyncio.gather(consumer.stop(), admin.close(), return_exceptions=True)


async def read_latest_values(bootstrap: str, topic: str) -> dict[bytes, bytes]:
    """The latest value of every key of ``topic`` (a compacted changelog)."""
    return {r.key: r.value for r in await read_to_end(bootstrap, topic) if r.key is not None}


async def pipeline_lag(bootstrap: str, groups: dict[str, list[str]]) -> dict[str, int]:
    """Per topic, the lag of its slowest consumer group (``groups``: group -> topics,
    as :func:`consumer_groups` gives); 0 once every group has committed everything."""
    topics = list(dict.fromkeys(t for names in groups.values() for t in names))
    consumer, admin = await _clients(bootstrap)
    try:
        ends = await _end_offsets(consumer, admin, topics)
        lag = {t: 0 for t in topics}
        for group, names in groups.items():
            partitions = [tp for tp in ends if tp.topic in names]
            committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
            per_topic = dict.fromkeys(names, 0)
            for tp in partitions:
                meta = committed.get(tp)
                done = meta.offset if meta is not None and meta.offset >= 0 else 0
                per_topic[tp.topic] += max(0, ends[tp] - done)
            for topic, behind in per_topic.items():
                lag[topic] = max(lag[topic], behind)
        return lag
    finally:
        await asyncio.gather(consumer.stop(), admin.close(), return_exceptions=True)
