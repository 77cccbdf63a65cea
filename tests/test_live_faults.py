"""The live connectors against a hostile server (issue 15), on real sockets: malformed
lines, a line over the 1 MiB bound, JSON nested 100k deep, ``1e999`` counts, ``NaN``,
a stream trickling a byte a second, streams reset mid-line, huge error bodies and REST
answers, tokens over plain http. The connector survives each, reconnects with X's
backoff, and loses nothing it had taken: the end-to-end test reads back what reached
the real Kafka broker."""

from __future__ import annotations

import asyncio
import json
import tracemalloc

import pytest

from connectors.live.backoff import ReconnectPolicy
from connectors.live.mastodon import MastodonStream
from connectors.live.runner import stream_to_kafka
from connectors.live.stream import MAX_LINE_BYTES, LineReader, LiveError, OverlongLine
from connectors.live.x_stream import RULES_PATH, STREAM_PATH, XStream
from tests.conftest import isolated_settings
from tests.live_server import CUT, HOLD, RESET, FakeServer, Respond, SleepRecorder, Stream
from tests.test_cli import assert_clean_error, dallosh
from tests.test_live_mastodon import REST, STREAM, run_masto, sse_stream, status, update
from tests.test_live_x_stream import run_x, tweet

pytestmark = pytest.mark.timeout(30)

OVERSIZED = b"{" + b"a" * MAX_LINE_BYTES + b"}\r\n"   # one byte of JSON too many
NESTED = b"[" * 100_000 + b"\r\n"
NAN = b'{"data": {"id": "14", "text": NaN, "created_at": "2026-03-12T10:00:00Z"}}\r\n'


def infinite_likes(id_: str) -> bytes:
    line = tweet(id_)
    assert b'"like_count": 5' in line
    return line.replace(b'"like_count": 5', b'"like_count": 1e999')


def hostile_x_stream() -> list[Stream | Respond]:
    """Three connections: every kind of bad line then a reset mid-line; a 503; the rest."""
    return [Stream([tweet("11"), b"{broken\r\n", OVERSIZED, tweet("12"), NESTED,
                    infinite_likes("13"), NAN, 0.3, b'{"data": {"id": "15"', RESET]),
            Respond(503, {"title": "Service Unavailable", "detail": "try later"}),
            Stream([tweet("12"), tweet("16"), HOLD])]


HOSTILE_REASONS = ["malformed json", "line too long", "malformed json", "malformed json",
                   "malformed json", "truncated line at disconnect"]


def test_x_survives_every_hostile_line_and_reconnects_with_backoff():
    async def main():
        async with FakeServer() as server:
            server.route(STREAM_PATH, *hostile_x_stream())
            return await run_x(server, max_events=10)

    counts, sink, stats, delays = asyncio.run(main())
    assert sink.ids == ["11", "12", "16"]
    assert (counts.produced, counts.dead_lettered, counts.duplicates) == (3, 6, 1)
    reasons = [dead.reason for dead in sink.dead]
    assert [r.split(":")[0] for r in reasons] == HOSTILE_REASONS
    assert reasons[1] == (f"line too long: over {MAX_LINE_BYTES} bytes (of {MAX_LINE_BYTES + 3} "
                          "bytes, dropped)")
    assert len(sink.dead[1].payload) == 4096  # the line's head, not the whole of it
    assert reasons[2] == "malformed json: nested too deeply"
    assert reasons[3] == "malformed json: number out of range: 1e999"
    assert reasons[4] == "malformed json: NaN is not a JSON number"
    assert delays == [0.0, 5.0]  # dropped after data: at once; then a 5xx: 5 s
    assert dict(stats.reconnects) == {"dropped": 1, "http_error": 1}


def test_a_stream_trickling_a_byte_a_second_is_not_a_stall_and_loses_nothing():
    line = tweet("21")
    steps = [b"\r", 1.0, b"\n", 1.0] + [line[:25], 0.9, line[25:]] + [HOLD]

    async def main():
        async with FakeServer() as server:
            server.route(STREAM_PATH, Stream(steps))
            return await run_x(server, max_events=1, stall=1.5)

    counts, sink, stats, delays = asyncio.run(main())
    assert sink.ids == ["21"] and stats.keepalives == 1
    assert stats.connects == 1 and not stats.reconnects and delays == []


def test_a_line_longer_than_the_bound_is_never_held_whole():
    """8 MiB without a newline: the connector holds at most the bound (old code kept the
    whole line, and re-copied it on every chunk)."""
    chunk = b"x" * (64 << 10)
    steps = [chunk] * 128 + [b"\r\n", tweet("31"), HOLD]

    async def main():
        async with FakeServer() as server:
            server.route(STREAM_PATH, Stream(steps))
            tracemalloc.start()
            try:
                result = await run_x(server, max_events=2)
                return result, tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()

    (counts, sink, _, _), peak = asyncio.run(main())
    assert sink.ids == ["31"]
    assert sink.dead[0].reason == (f"line too long: over {MAX_LINE_BYTES} bytes "
                                   f"(of {128 * len(chunk) + 1} bytes, dropped)")
    assert peak < 5 * MAX_LINE_BYTES, f"peak {peak / 2**20:.1f} MiB"


def test_a_huge_error_body_is_read_only_up_to_its_cap():
    chunk = b"z" * (64 << 10)
    huge = Stream([b'{"detail": "'] + [chunk] * 512 + [b'"}'], status=503)  # 32 MiB

    async def main():
        async with FakeServer() as server:
            server.route(STREAM_PATH, huge, Stream([tweet("41"), HOLD]))
            tracemalloc.start()
            try:
                result = await run_x(server, max_events=1)
                return result, tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()

    (counts, sink, stats, delays), peak = asyncio.run(main())
    assert sink.ids == ["41"] and delays == [5.0]
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB for a 32 MiB error body"


def test_an_error_body_trickling_in_is_given_up_after_the_stall_timeout():
    trickle = Stream([b'{"detail": "'] + [b"z", 0.2] * 50, status=503)  # 10 s at this pace

    async def main():
        async with FakeServer() as server:
            server.route(STREAM_PATH, trickle, Stream([tweet("42"), HOLD]))
            started = asyncio.get_running_loop().time()
            result = await run_x(server, max_events=1, stall=1.0)
            return result, asyncio.get_running_loop().time() - started

    (counts, sink, stats, delays), elapsed = asyncio.run(main())
    assert sink.ids == ["42"] and delays == [5.0] and elapsed < 3


def test_a_rest_answer_over_its_cap_is_refused_not_read():
    async def main():
        async with FakeServer() as server:
            big = [{"id": str(i), "value": "v" * 1000, "tag": ""} for i in range(20_000)]
            server.route(RULES_PATH, Respond(200, {"data": big}))
            async with XStream("tok", base_url=server.url) as x:
                await x.active_rules()

    with pytest.raises(LiveError, match=r"/2/tweets/search/stream/rules answered more than "
                                        r"16777216 bytes"):
        asyncio.run(main())


def test_mastodon_survives_hostile_events_and_a_cut_stream():
    oversized = b"event: update\ndata: " + b"x" * MAX_LINE_BYTES + b"\n\n"
    nested = b"event: update\ndata: " + b"{\"a\":" * 100_000 + b"\n\n"
    infinite = update(status(3)).replace(b'"favourites_count": 2', b'"favourites_count": 1e999')
    assert infinite != update(status(3))

    async def main():
        async with FakeServer() as server:
            server.route(REST, Respond(200, []))
            server.route(STREAM, sse_stream(update(status(1)), oversized, nested, infinite,
                                            update(status(4)), b"event: update\ndata: {\"id\"", CUT),
                         sse_stream(update(status(5)), HOLD))
            return await run_masto(server, max_events=7)

    counts, sink, stats, delays = asyncio.run(main())
    assert [r.rsplit(":", 1)[1] for r in sink.ids] == ["1", "4", "5"]
    assert [d.reason.split(":")[0] for d in sink.dead] == [
        "line too long", "malformed json", "malformed json", "truncated event at disconnect"]
    assert sink.dead[1].reason == "malformed json: nested too deeply"
    assert delays == [0.0]


def test_an_sse_event_that_never_ends_is_bounded_and_dropped():
    """2 MiB of data lines with no blank line: one dead letter, then the stream goes on
    (old code kept every line of the event and dispatched them as one)."""
    line = b"data: " + b"d" * 1000 + b"\n"

    async def main():
        async with FakeServer() as server:
            server.route(REST, Respond(200, []))
            server.route(STREAM, sse_stream(b"event: update\n", line * 2100, b"\n",
                                            update(status(2)), HOLD))
            return await run_masto(server, max_events=2)

    counts, sink, stats, delays = asyncio.run(main())
    assert [r.rsplit(":", 1)[1] for r in sink.ids] == ["2"]
    assert [d.reason for d in sink.dead] == [
        f"event too long: over {MAX_LINE_BYTES} characters (dropped)"]
    assert sink.dead[0].payload.startswith("event: update\ndata: ddd")
    assert len(sink.dead[0].payload) == 4096


def test_a_backfill_page_nested_too_deep_is_a_clear_error():
    async def main():
        async with FakeServer() as server:
            server.route(REST, Respond(200, b"[" * 100_000))
            server.route(STREAM, sse_stream(HOLD))
            return await run_masto(server, max_events=1)

    with pytest.raises(LiveError, match="did not answer a list of statuses"):
        asyncio.run(main())


# --------------------------------------------------------------------------- tokens over http

@pytest.mark.parametrize("url", ["http://api.example.com", "http://10.0.0.5:8080"])
def test_a_token_is_never_sent_over_plain_http_to_another_machine(url):
    with pytest.raises(LiveError, match="refusing to send the access token over plain http"):
        XStream("tok", base_url=url)
    with pytest.raises(LiveError, match="refusing to send the access token over plain http"):
        MastodonStream(url, access_token="tok")
    with pytest.raises(LiveError, match="Mastodon streaming URL: refusing"):
        MastodonStream("https://piaille.fr", streaming_url=url, access_token="tok")


@pytest.mark.parametrize("url", ["https://api.x.com", "http://127.0.0.1:9", "http://localhost:9",
                                 "http://[::1]:9"])
def test_https_and_loopback_urls_are_accepted(url):
    async def main():
        async with XStream("tok", base_url=url), MastodonStream(url, access_token="tok"):
            pass
    asyncio.run(main())
    asyncio.run(MastodonStream("http://masto.example", tags=["free"]).__aexit__())  # no token: fine


def test_the_cli_refuses_a_token_over_http_in_one_line(tmp_path):
    result = dallosh("stream", "x", "--base-url", "http://api.example.com",
                     env={"X_BEARER_TOKEN": "secret-token", "DALLOSH_DATA_DIR": str(tmp_path),
                          "DALLOSH_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    assert_clean_error(result, "error: X API base URL: refusing to send the access token over "
                               "plain http to api.example.com: use an https:// URL")
    assert result.returncode == 2 and "secret-token" not in result.stdout + result.stderr


# --------------------------------------------------------------------------- the line reader

def test_line_reader_is_linear_a_byte_at_a_time():
    """200 KiB fed one byte at a time (old code: quadratic, re-splitting its buffer)."""
    reader = LineReader(1 << 20)
    data = (b"y" * 999 + b"\n") * 200
    got = [line for i in range(len(data)) for line in reader.feed(data[i:i + 1])]
    assert got == [b"y" * 999] * 200 and reader.finish() == b""


def test_line_reader_cut_inside_an_overlong_line():
    reader = LineReader(10)
    assert reader.feed(b"ok\r\n0123456789ABC") == [b"ok"]
    rest = reader.finish()
    assert isinstance(rest, OverlongLine) and (rest.size, rest.head, rest.cut) == (13, b"0123456789ABC", True)
    assert rest.event().reason == "line too long: over 10 bytes (cut by the disconnect after 13 bytes, dropped)"
    assert reader.feed(b"next\n") == [b"next"]


# --------------------------------------------------------------------------- into Kafka

@pytest.mark.integration
def test_hostile_stream_into_the_real_broker_loses_nothing(tmp_path, kafka_bootstrap):
    from tests.test_live_runner import consume_topic

    settings = isolated_settings(tmp_path / "data", kafka_bootstrap)

    async def main():
        async with FakeServer() as server:
            server.route(STREAM_PATH, *hostile_x_stream())
            async with XStream("tok", base_url=server.url, sleep=SleepRecorder(),
                               policy=ReconnectPolicy()) as source:
                counts = await stream_to_kafka(source, settings, name="x-hostile", max_events=10)
        raw = await consume_topic(settings, settings.topic_raw, 3, extra_wait_ms=1000)
        dead = await consume_topic(settings, settings.topic_dlq, 6, extra_wait_ms=1000)
        return counts, raw, dead

    counts, raw, dead = asyncio.run(main())
    assert counts.summary_line() == "received 10 = produced 3 + dead-lettered 6 + duplicates 1  [OK]"
    assert sorted(key for key, _ in raw) == ["11", "12", "16"]  # each taken post, exactly once
    assert all(value["run_id"] == counts.run_id for _, value in raw)
    assert sorted(value["reason"].split(":")[0] for _, value in dead) == sorted(HOSTILE_REASONS)
    saved = json.loads((settings.data_dir / "connectors" / "x-hostile.json").read_text())
    assert saved["position"]["last_id"] == "16" and saved["recent_ids"][-1] == "16"
