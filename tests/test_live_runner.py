"""The shared run loop: dedupe memory, checkpoint file, clean stop on SIGTERM, flush and
checkpoint on a fatal error, and one end-to-end run into the real Kafka broker."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import pytest

from connectors.live.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from connectors.live.runner import LiveRunner, stop_on_signals, stream_to_kafka
from connectors.recent_ids import RecentIds
from connectors.live.stream import LiveError
from connectors.live.x_stream import STREAM_PATH, XStream
from tests.conftest import isolated_settings
from tests.live_server import CUT, HOLD, FakeServer, ListSink, Respond, SleepRecorder, Stream
from tests.test_live_x_stream import tweet

pytestmark = pytest.mark.timeout(30)


def test_recent_ids_forget_the_least_recently_seen():
    recent = RecentIds(3, ["a", "b", "c"])
    assert "a" in recent          # touching "a" makes "b" the oldest
    recent.add("d")
    assert recent.newest(3) == ["c", "a", "d"]
    assert "b" not in recent and len(recent) == 3


def test_checkpoint_is_replaced_atomically_and_checked(tmp_path):
    path = tmp_path / "connectors" / "x.json"
    assert load_checkpoint(path, "x") is None
    save_checkpoint(path, "x", {"recent_ids": ["1"]})
    save_checkpoint(path, "x", {"recent_ids": ["1", "2"]})
    assert load_checkpoint(path, "x")["recent_ids"] == ["1", "2"]
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]  # no temp file left
    with pytest.raises(CheckpointError, match="use another --name"):
        load_checkpoint(path, "mastodon")
    path.write_text('{"version": 1, "netw')
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(path, "x")


def test_sigterm_stops_reading_flushes_and_saves(tmp_path):
    checkpoint = tmp_path / "x.json"

    async def main():
        async with FakeServer() as server:
            server.route(STREAM_PATH, Stream([tweet("1"), tweet("2"), HOLD]))
            async with XStream("tok", base_url=server.url, sleep=SleepRecorder()) as source:
                sink = ListSink()
                runner = LiveRunner(source, sink, checkpoint=checkpoint)
                stop = asyncio.Event()

                async def kill_when_both_arrived():
                    while len(sink.raw) < 2:
                        await asyncio.sleep(0.01)
                    os.kill(os.getpid(), signal.SIGTERM)

                killer = asyncio.create_task(kill_when_both_arrived())
                with stop_on_signals(stop):
                    counts = await asyncio.wait_for(runner.run(stop), 5)
                await killer
                assert await server.idle(), "the stream connection was left open"
                return counts, sink

    previous = signal.getsignal(signal.SIGTERM)
    counts, sink = asyncio.run(main())
    assert signal.getsignal(signal.SIGTERM) == previous  # handlers removed again
    assert (counts.received, counts.produced) == (2, 2) and counts.reconciles
    assert sink.flushes >= 1
    assert json.loads(checkpoint.read_text())["recent_ids"] == ["1", "2"]


def test_cancelled_run_still_flushes_and_saves(tmp_path):
    checkpoint = tmp_path / "x.json"

    async def main():
        async with FakeServer() as server:
            server.route(STREAM_PATH, Stream([tweet("1"), HOLD]))
            async with XStream("tok", base_url=server.url, sleep=SleepRecorder()) as source:
                sink = ListSink()
                task = asyncio.create_task(LiveRunner(source, sink, checkpoint=checkpoint).run())
                while not sink.raw:
                    await asyncio.sleep(0.01)
                task.cancel()  # what asyncio.run does on a second Ctrl-C
                with pytest.raises(asyncio.CancelledError):
                    await task
                return sink

    sink = asyncio.run(main())
    assert sink.flushes == 1
    assert json.loads(checkpoint.read_text())["recent_ids"] == ["1"]


def test_fatal_error_still_flushes_and_saves_what_was_handled(tmp_path):
    checkpoint = tmp_path / "x.json"

    async def main():
        async with FakeServer() as server:
            server.route(STREAM_PATH, Stream([tweet("1"), tweet("2"), CUT]),
                         Respond(403, {"title": "Forbidden", "detail": "client-not-enrolled"}))
            async with XStream("tok", base_url=server.url, sleep=SleepRecorder()) as source:
                sink = ListSink()
                runner = LiveRunner(source, sink, checkpoint=checkpoint)
                try:
                    await asyncio.wait_for(runner.run(), 5)
                finally:
                    result = (runner.counts, sink)
        return result

    with pytest.raises(LiveError, match="HTTP 403: client-not-enrolled"):
        asyncio.run(main())
    assert json.loads(checkpoint.read_text())["recent_ids"] == ["1", "2"]


def test_a_post_that_cannot_be_converted_is_dead_lettered():
    odd = json.dumps({"data": {"id": "5", "text": "ok", "created_at": "2026-03-12T10:00:00Z",
                               "public_metrics": {"like_count": "many"}}}).encode() + b"\r\n"

    async def main():
        async with FakeServer() as server:
            server.route(STREAM_PATH, Stream([odd, tweet("6"), HOLD]))
            async with XStream("tok", base_url=server.url, sleep=SleepRecorder()) as source:
                sink = ListSink()
                counts = await asyncio.wait_for(LiveRunner(source, sink, max_events=2).run(), 5)
        return counts, sink

    counts, sink = asyncio.run(main())
    assert sink.ids == ["6"] and counts.reconciles
    assert sink.dead[0].reason.startswith("unconvertible post: ValueError")
    assert sink.dead[0].tweet_id == "5"


async def consume_topic(settings, topic: str, n: int, *, extra_wait_ms: int = 0
                        ) -> list[tuple[str, dict]]:
    """(key, value) of the first ``n`` records of ``topic`` (30 s at most), plus any
    that arrive within ``extra_wait_ms`` after them (to see a duplicate)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.bootstrap_servers,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    got: list[tuple[str, dict]] = []

    def add(batch) -> None:
        got.extend(((m.key or b"").decode(), json.loads(m.value))
                   for ms in batch.values() for m in ms)
    try:
        async with asyncio.timeout(30):
            while len(got) < n:
                add(await consumer.getmany(timeout_ms=500))
            if extra_wait_ms:
                add(await consumer.getmany(timeout_ms=extra_wait_ms))
    finally:
        await consumer.stop()
    return got


@pytest.mark.integration
def test_stream_into_the_real_broker(tmp_path, kafka_bootstrap):
    settings = isolated_settings(tmp_path / "data", kafka_bootstrap)

    async def consume(topic: str, n: int) -> list[tuple[str, dict]]:
        return await consume_topic(settings, topic, n)

    async def main():
        async with FakeServer() as server:
            server.route(STREAM_PATH, Stream([tweet("101"), b"{broken\r\n", tweet("102"),
                                              tweet("101"), HOLD]))
            async with XStream("tok", base_url=server.url, sleep=SleepRecorder()) as source:
                counts = await stream_to_kafka(source, settings, name="x-test", max_events=4)
        return counts, await consume(settings.topic_raw, 2), await consume(settings.topic_dlq, 1)

    counts, raw, dead = asyncio.run(main())
    assert counts.summary_line() == ("received 4 = produced 2 + dead-lettered 1 + duplicates 1  [OK]")
    assert sorted(key for key, _ in raw) == ["101", "102"]
    assert all(value["source"] == "x-stream" and value["run_id"] == counts.run_id for _, value in raw)
    assert dead[0][1]["reason"].startswith("malformed json") and dead[0][1]["payload"] == "{broken"
    saved = json.loads((settings.data_dir / "connectors" / "x-test.json").read_text())
    assert saved["recent_ids"] == ["102", "101"]  # least recently seen first (101 came twice)
