"""Fault injection, end to end: every tweet lands in ClickHouse exactly once through
worker SIGKILLs, a broker restart and a window where ClickHouse inserts fail.

Real components: a Kafka broker of this test's own (own ports and data dir, so it can
be restarted without disturbing the session broker), real `dallosh worker` processes,
the embedded ClickHouse engine. The insert failures come from the sink's documented
chaos switch (``DALLOSH_SINK_CHAOS_FILE``): with embedded chdb, ClickHouse runs inside
the worker and nothing outside it can make its inserts fail.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import random
import signal
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from bench.dumps import write_dump
from connectors.csv_replay import ReplayOptions, ReplayResult, replay_file
from stream_app.demo import WorkerProcess, wait_until_drained
from stream_app.infra.kafka_broker import broker_down, broker_up
from stream_app.kafka_admin import ensure_topics, pipeline_topics
from stream_app.records import ClassifiedTweet
from stream_app.settings import Settings
from stream_app.storage.clickhouse import store_session
from tests.conftest import free_port, isolated_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TWEETS = 21_000
BROKEN_ROWS = 40          # empty text: the replayer dead-letters them
REFUSED = 25              # classified tweets ClickHouse refuses (priority 7: CHECK constraint)
REFUSED_LOG = "insert refused before it was sent"      # what the sink logs for each fault
LOST_ACK_LOG = "its acknowledgement was lost"


def split_dump(source: Path, first: Path, second: Path, at: int) -> tuple[set[str], set[str]]:
    """Two files with disjoint ids; the second gets BROKEN_ROWS rows with an empty text.
    Returns (ids that must be stored, ids of the broken rows)."""
    with open(source, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    broken = body[-BROKEN_ROWS:]
    for row in broken:
        row[2] = ""
    for path, part in ((first, body[:at]), (second, body[at:])):
        with open(path, "w", encoding="utf-8", newline="") as handle:
            csv.writer(handle).writerows([header, *part])
    return {r[0] for r in body[:-BROKEN_ROWS]}, {r[0] for r in broken}


def refused_tweets() -> list[ClassifiedTweet]:
    return [ClassifiedTweet(
        id=f"refused-{i}", text="x", created_at="2026-03-12T10:00:00Z", run_id="faults",
        source=f"buggy-classifier:{i}", ingested_at="2026-03-12T10:00:00Z", text_clean="x",
        sentiment="negative", priority=7, topic="outage", team="network_ops", confidence=1.0,
        tier="degraded", provider="rules", model="m", reason="", classified_at="2026-03-12T10:00:00Z",
        version=1) for i in range(REFUSED)]


async def produce(settings: Settings, topic: str, records: list[ClassifiedTweet]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for record in records:
            await producer.send_and_wait(topic, record.to_json(), key=record.id.encode())
    finally:
        await producer.stop()


class Chaos:
    """Timeline of the faults, printed at the end."""

    def __init__(self, settings: Settings, rng: random.Random) -> None:
        self.settings, self.rng = settings, rng
        self.worker = WorkerProcess(settings)
        self.events: list[str] = []
        self.started = time.monotonic()

    def note(self, event: str) -> None:
        self.events.append(f"{time.monotonic() - self.started:6.1f}s {event}")

    def sleep(self, low: float, high: float) -> None:
        end = time.monotonic() + self.rng.uniform(low, high)
        while time.monotonic() < end:
            self.worker.check_alive()  # a worker that dies by itself is a bug: fail, with its log
            time.sleep(0.1)

    def log_count(self, text: str) -> int:
        return self.worker.log_path.read_text(errors="replace").count(text)

    def hold_until_seen(self, text: str, times: int, timeout_s: float = 120) -> None:
        """Keep the current fault on until the worker's log shows it hit ``times`` times
        (a fault window that falls into a rebalance would prove nothing)."""
        deadline = time.monotonic() + timeout_s
        while self.log_count(text) < times:
            self.worker.check_alive()
            assert time.monotonic() < deadline, f"the sink never logged {text!r} {times} times"
            time.sleep(0.2)

    def kill_worker(self) -> None:
        self.worker.proc.send_signal(signal.SIGKILL)
        self.worker.proc.wait()
        self.worker.stop()  # closes the log handle
        self.note(f"SIGKILL worker pid {self.worker.proc.pid}")
        self.worker = WorkerProcess(self.settings)
        self.note(f"worker restarted, pid {self.worker.proc.pid}")

    def replay(self, path: Path) -> ReplayResult:
        result = asyncio.run(replay_file(path, self.settings, ReplayOptions(show_progress=False,
                                                                            archive=False)))
        self.note(f"replayed {path.name}: {result.summary_line()}")
        return result


def test_exactly_once_through_kills_broker_restart_and_failing_inserts(tmp_path: Path):
    settings = isolated_settings(tmp_path / "data", "", kafka_port=free_port(),
                                 kafka_controller_port=free_port(),
                                 sink_chaos_file=tmp_path / "chaos-switch",
                                 sink_max_backoff_s=1.0, sink_batch_size=2000)
    seed = int(os.environ.get("DALLOSH_FAULT_SEED", time.time_ns() % 100_000))
    print(f"\nfault-injection seed {seed} (DALLOSH_FAULT_SEED={seed} replays this timeline)")
    rng = random.Random(seed)
    switch = settings.sink_chaos_file
    assert switch is not None
    dump = write_dump(tmp_path / "dump.csv", TWEETS, seed=seed)
    first, second = tmp_path / "part1.csv", tmp_path / "part2.csv"
    expected_ids, broken_ids = split_dump(dump, first, second, at=TWEETS // 2)

    broker_up(settings, progress=lambda line: None)
    chaos = None
    try:
        asyncio.run(ensure_topics(settings.bootstrap_servers, pipeline_topics(settings),
                                  settings.partitions))
        chaos = Chaos(settings, rng)
        replays = [chaos.replay(first)]
        asyncio.run(produce(settings, settings.topic_classified, refused_tweets()))
        chaos.note(f"produced {REFUSED} classified tweets that ClickHouse must refuse")

        chaos.sleep(1, 5)
        chaos.kill_worker()                                      # kill 1

        chaos.sleep(3, 6)
        switch.write_text("refuse")
        chaos.note("ClickHouse inserts fail (refused)")
        chaos.hold_until_seen(REFUSED_LOG, times=chaos.log_count(REFUSED_LOG) + 5)
        switch.write_text("lost-ack")
        chaos.note("ClickHouse inserts land but their acknowledgement is lost")
        chaos.hold_until_seen(LOST_ACK_LOG, times=chaos.log_count(LOST_ACK_LOG) + 2)
        switch.unlink()
        chaos.note("ClickHouse inserts succeed again")

        chaos.sleep(0.5, 2)
        broker_down(settings)
        chaos.note("broker stopped")
        chaos.sleep(1, 3)
        broker_up(settings, progress=lambda line: None)
        chaos.note("broker started again")

        replays.append(chaos.replay(second))
        chaos.sleep(0.5, 4)
        chaos.kill_worker()                                      # kill 2
        chaos.sleep(4, 10)
        chaos.kill_worker()                                      # kill 3

        asyncio.run(wait_until_drained(settings, chaos.worker, lambda line: None, timeout_s=400))
        chaos.note("pipeline drained")
    finally:
        if chaos is not None:
            chaos.worker.stop()
        broker_down(settings)

    with store_session(settings.clickhouse_dsn) as client:
        def one(sql: str) -> int:
            return client.query(sql).result_rows[0][0]
        stored_ids = {r[0] for r in client.query(
            "SELECT DISTINCT id FROM dallosh.tweets WHERE id NOT LIKE 'refused-%'").result_rows}
        raw_rows = one("SELECT count() FROM dallosh.tweets")
        final_rows = one("SELECT count() FROM dallosh.tweets FINAL")
        final_dupes = one("SELECT count() FROM (SELECT id FROM dallosh.tweets FINAL "
                          "GROUP BY id HAVING count() > 1)")
        argmax_rows = one("SELECT count() FROM (SELECT id, argMax(sentiment, version) "
                          "FROM dallosh.tweets GROUP BY id)")
        rollup_total = one("SELECT sum(tweets) FROM dallosh.tweets_by_minute_v")
        rollup_exact = one("SELECT count() FROM dallosh.tweets FINAL")
        dlq = dict(client.query("SELECT stage, count() FROM dallosh.dlq FINAL GROUP BY stage").result_rows)
        dlq_dupes = one("SELECT count() FROM (SELECT dead_letter_id FROM dallosh.dlq FINAL "
                        "GROUP BY dead_letter_id HAVING count() > 1)")
        refused_in_dlq = one("SELECT count() FROM dallosh.dlq FINAL WHERE stage = 'sink' "
                             "AND reason LIKE '%VIOLATED_CONSTRAINT%'")
        refused_in_tweets = one("SELECT count() FROM dallosh.tweets WHERE id LIKE 'refused-%'")
        replay_dlq_ids = {r[0] for r in client.query(
            "SELECT tweet_id FROM dallosh.dlq FINAL WHERE stage = 'replay'").result_rows}
        dropped_lost = one("SELECT count() FROM dallosh.clean_decisions FINAL WHERE action = 'dropped' "
                           "AND tweet_id NOT IN (SELECT id FROM dallosh.tweets)")

    worker_log = (settings.data_dir / "logs" / "worker.log").read_text(errors="replace")
    refused_attempts = worker_log.count(REFUSED_LOG)
    lost_acks = worker_log.count(LOST_ACK_LOG)
    replayed_rows = sum(r.rows_read for r in replays)
    figures = {
        "rows replayed": replayed_rows,
        "produced to Kafka": sum(r.produced for r in replays),
        "dead-lettered by the replayer": sum(r.dead_lettered for r in replays),
        "unique tweet ids expected": len(expected_ids),
        "distinct tweet ids stored": len(stored_ids),
        "raw rows in tweets (before merges)": raw_rows,
        "rows in tweets FINAL": final_rows - refused_in_tweets,
        "ids duplicated in FINAL": final_dupes,
        "ids by argMax": argmax_rows,
        "rollup total (tweets_by_minute_v)": rollup_total,
        "rollup over-count (re-labelled on redelivery)": rollup_total - rollup_exact,
        "dlq rows by stage": dlq,
        "dlq: sink-refused rows": refused_in_dlq,
        "insert attempts refused by the chaos switch": refused_attempts,
        "inserts landed with their acknowledgement lost": lost_acks,
    }
    print("timeline:\n  " + "\n  ".join(chaos.events))
    print("figures:\n" + json.dumps(figures, indent=2))

    assert refused_attempts > 0 and lost_acks > 0          # the ClickHouse faults did hit
    assert all(r.reconciles for r in replays)
    assert replayed_rows == TWEETS
    assert stored_ids == expected_ids                        # none lost, none invented
    assert final_rows - refused_in_tweets == len(expected_ids)
    assert final_dupes == 0 and argmax_rows == final_rows
    assert rollup_total >= rollup_exact                      # over-count only, never a loss
    assert refused_in_tweets == 0 and refused_in_dlq == REFUSED
    assert replay_dlq_ids == broken_ids and dlq.get("replay") == BROKEN_ROWS
    assert dlq_dupes == 0
    assert dlq.get("sink", 0) == REFUSED and set(dlq) <= {"replay", "sink"}
    assert dropped_lost == 0                                 # no tweet lost as a "drop"
    assert len(expected_ids) + BROKEN_ROWS == replayed_rows  # in = stored + dead-lettered
