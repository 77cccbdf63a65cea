"""The sink's Kafka consumer commits exactly what is durable in ClickHouse, nothing more.

A real broker, a real worker process, the embedded ClickHouse; inserts are made to fail
with the sink's chaos switch while the worker is killed, then the committed offsets of
the sink's consumer group are checked against what ClickHouse holds.
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition

from stream_app.demo import WorkerProcess, wait_until_drained
from stream_app.kafka_admin import consumer_groups, ensure_topics, pipeline_lag, pipeline_topics
from stream_app.records import ClassifiedTweet
from stream_app.sink.consumer import commit_offsets, sink_group, sink_routes
from stream_app.storage.clickhouse import store_session
from tests.conftest import isolated_settings

REFUSED_LOG = "insert refused before it was sent"
GARBAGE = [b"{not json", b"[1, 2]", b""]


def test_commit_offsets_is_one_past_the_highest_delivered_offset():
    tp, other = TopicPartition("t", 0), TopicPartition("t", 1)

    def rec(offset: int) -> ConsumerRecord:
        return ConsumerRecord("t", 0, offset, 0, 0, None, b"", None, 0, 0, [])

    # 7 and 8 came again after a rebalance moved the position back: still 11.
    assert commit_offsets({tp: [rec(7), rec(8), rec(9), rec(10), rec(7), rec(8)],
                           other: []}) == {tp: 11}


def test_the_sink_group_and_its_topics_are_part_of_the_measured_lag(tmp_path):
    settings = isolated_settings(tmp_path, "127.0.0.1:1")
    groups = consumer_groups(settings)
    assert groups[sink_group(settings)] == list(sink_routes(settings))
    assert sink_group(settings) != settings.app_id
    # every pipeline topic is consumed, hence measured, by some group (the closed
    # windows are an output for other readers)
    measured = {t for names in groups.values() for t in names}
    assert set(pipeline_topics(settings)) - measured == {settings.topic_windows}


def tweet(i: int) -> ClassifiedTweet:
    return ClassifiedTweet(
        id=f"c{i}", text="panne fibre", created_at=f"2026-03-12T10:{i % 60:02d}:00Z",
        run_id="consumer", source=f"test:{i}", ingested_at="2026-03-12T10:00:00Z",
        text_clean="panne fibre", sentiment="negative", priority=1, topic="outage",
        team="network_ops", confidence=0.9, tier="degraded", provider="rules", model="m",
        reason="", classified_at="2026-03-12T10:00:00Z", version=1)


async def produce(bootstrap: str, topic: str, values: list[tuple[str, bytes]]) -> dict[str, tuple[int, int]]:
    """Send (key, value) pairs; returns key -> (partition, offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        futures = [(key, await producer.send(topic, value, key=key.encode())) for key, value in values]
        return {key: ((meta := await fut).partition, meta.offset) for key, fut in futures}
    finally:
        await producer.stop()


async def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(
            group, partitions=[TopicPartition(topic, p) for p in range(partitions)])
        return {tp.partition: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
    finally:
        await admin.close()


def wait_for(condition, what: str, worker: WorkerProcess, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        worker.check_alive()
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


@pytest.mark.integration
def test_the_sink_commits_only_what_is_durable_through_refused_inserts_and_a_kill(tmp_path, kafka_bootstrap):
    switch = tmp_path / "chaos"
    settings = isolated_settings(tmp_path / "data", kafka_bootstrap, sink_chaos_file=switch,
                                 sink_max_backoff_s=0.5, sink_batch_size=200)
    topic, group = settings.topic_classified, sink_group(settings)
    asyncio.run(ensure_topics(settings.bootstrap_servers, pipeline_topics(settings), settings.partitions))
    first = [(f"c{i}", tweet(i).to_json()) for i in range(600)]
    first += [(f"garbage-{i}", value) for i, value in enumerate(GARBAGE)]  # dead-lettered
    second = [(f"c{i}", tweet(i).to_json()) for i in range(600, 1500)]

    def sink_lag() -> int | None:
        try:
            lag = asyncio.run(pipeline_lag(settings.bootstrap_servers,
                                           {group: list(sink_routes(settings))}))
        except KafkaError as exc:  # e.g. the group coordinator of a fresh broker
            if not exc.retriable:
                raise
            return None
        return sum(lag.values())

    worker = WorkerProcess(settings)
    try:
        placed = asyncio.run(produce(settings.bootstrap_servers, topic, first))
        wait_for(lambda: sink_lag() == 0, "the first part to be committed", worker)
        ends_first = {}
        for partition, offset in placed.values():
            ends_first[partition] = max(ends_first.get(partition, 0), offset + 1)

        switch.write_text("refuse")  # from now on nothing can become durable
        placed |= asyncio.run(produce(settings.bootstrap_servers, topic, second))
        log = worker.log_path
        wait_for(lambda: log.read_text(errors="replace").count(REFUSED_LOG) >= 6,
                 "refused inserts", worker)
        during_fault = asyncio.run(committed(settings.bootstrap_servers, group, topic,
                                             settings.partitions))
        worker.proc.send_signal(signal.SIGKILL)
        worker.proc.wait()
    finally:
        worker.stop()

    # Committed = exactly the first part (garbage included: dead letters are durable too);
    # not one offset of the refused batches.
    assert during_fault == ends_first
    with store_session(settings.clickhouse_dsn) as client:
        stored = {r[0] for r in client.query("SELECT id FROM dallosh.tweets").result_rows}
        dead = client.query("SELECT count() FROM dallosh.dlq FINAL WHERE stage = 'sink'").result_rows[0][0]
    below_commit = {key for key, (p, o) in placed.items()
                    if o < during_fault.get(p, 0) and not key.startswith("garbage")}
    assert below_commit <= stored          # everything committed is in ClickHouse
    assert stored == {f"c{i}" for i in range(600)} and dead == len(GARBAGE)

    switch.unlink()
    worker = WorkerProcess(settings)   # restarts from the committed offsets
    try:
        asyncio.run(wait_until_drained(settings, worker, lambda line: None, timeout_s=180))
    finally:
        worker.stop()
    with store_session(settings.clickhouse_dsn) as client:
        ids = [r[0] for r in client.query("SELECT id FROM dallosh.tweets FINAL").result_rows]
        dead = client.query("SELECT count() FROM dallosh.dlq FINAL WHERE stage = 'sink'").result_rows[0][0]
    assert sorted(ids) == sorted(f"c{i}" for i in range(1500))   # none lost, none doubled
    assert dead == len(GARBAGE)
