"""The Mastodon connector against a local fault-injecting server (real sockets on
127.0.0.1): SSE parsing, HTML to text, gap filling over REST after a reconnect or a
restart, several hashtags at once, stalls, rate limits."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from connectors.live.backoff import ReconnectPolicy
from connectors.live.checkpoint import save_checkpoint
from connectors.live.mastodon import MastodonStream, SseParser, html_to_text
from connectors.live.runner import LiveCounts
from connectors.live.stream import LiveError, StreamStats
from stream_app.records import raw_tweet_problem
from tests.live_server import (CUT, HOLD, RESET, FakeServer, ListSink, Respond, SleepRecorder, Stream,
                               run_source)

pytestmark = pytest.mark.timeout(10)

STREAM = "/api/v1/streaming/hashtag"
REST = "/api/v1/timelines/tag/free"
NOW = 1_800_000_000.0


def status(id_: int | str, content: str = "<p>Encore une panne #free</p>", **extra: Any) -> dict:
    return {"id": str(id_), "created_at": "2026-03-12T10:00:00.000Z", "content": content,
            "spoiler_text": "", "language": "fr", "in_reply_to_id": None, "reblog": None,
            "reblogs_count": 1, "favourites_count": 2, "replies_count": 0,
            "account": {"id": "7", "username": "alice", "acct": "alice", "display_name": "Alice"},
            **extra}


def update(st: dict) -> bytes:
    return f"event: update\ndata: {json.dumps(st)}\n\n".encode()


def sse_stream(*steps: Any) -> Stream:
    return Stream(list(steps), content_type="text/event-stream")


async def run_masto(server: FakeServer, *, max_events: int, tags=("free",), stall: float = 5.0,
                    checkpoint: Path | None = None, now: float | None = None, **kwargs: Any
                    ) -> tuple[LiveCounts, ListSink, StreamStats, list[float]]:
    sleep = SleepRecorder()
    clock = (lambda: now) if now else time.time
    async with MastodonStream(server.url, tags=tags, stall_timeout=stall, sleep=sleep,
                              policy_factory=lambda: ReconnectPolicy(clock=clock),
                              **kwargs) as source:
        return await run_source(source, server, sleep, max_events=max_events, checkpoint=checkpoint)


def test_html_content_becomes_plain_text():
    html = ('<p>Bonjour <span class="h-card"><a href="https://piaille.fr/@free" class="u-url mention">'
            '@<span>free</span></a></span>, plus d&#39;internet &amp; pas de TV&nbsp;!<br />'
            'Voir <a href="https://example.fr/panne/bordeaux"><span class="invisible">https://</span>'
            '<span class="ellipsis">example.fr/panne</span><span class="invisible">/bordeaux</span></a></p>'
            '<p><a href="https://mastodon.social/tags/free" class="mention hashtag">'
            '#<span>free</span></a></p>')
    assert html_to_text(html) == ("Bonjour @free, plus d'internet & pas de TV\xa0!\n"
                                  "Voir https://example.fr/panne/bordeaux\n\n#free")
    assert html_to_text("") == "" and html_to_text("<p>  </p>") == ""


def test_sse_parser_follows_the_spec():
    parser = SseParser()
    fed = [parser.feed(line) for line in
           [":thump", "event: update", "data: {\"a\":", "data: 1}", "id: 9", "", "", "data:x", ""]]
    assert fed == [SseParser.COMMENT, None, None, None, None, ("update", '{"a":\n1}'), None, None,
                   ("message", "x")]


def test_statuses_become_valid_raw_tweets_and_other_events_are_skipped():
    plain = status(101, content="<p>Plus de fibre depuis ce matin <a href=\"#\">#free</a></p>")
    boost = status(102, content="", reblog=status(90, content="<p>Panne géante</p>", reblogs_count=40,
                                                  account={"acct": "bob@piaille.fr",
                                                           "display_name": "Bob"}))
    reply = status(103, content="<p>Pareil ici</p>", spoiler_text="Râlerie", in_reply_to_id="101",
                   language=None)
    steps = [b":thump\n", update(plain), b"event: delete\ndata: 55\n\n",
             f"event: status.update\ndata: {json.dumps(plain)}\n\n".encode(),
             b"event: update\ndata: {not json\n\n", b"event: update\ndata: [1]\n\n",
             update(boost), b":thump\n", update(reply), HOLD]

    async def main():
        async with FakeServer() as server:
            server.route(STREAM, sse_stream(*steps))
            server.route(REST, Respond(200, []))
            result = await run_masto(server, max_events=5)
            return result, server.requests_to(STREAM)[0]

    (counts, sink, stats, _), request = asyncio.run(main())
    host = request.headers["host"]
    assert request.query == {"tag": "free"} and request.headers["accept"] == "text/event-stream"
    assert sink.ids == [f"masto:{host}:101", f"masto:{host}:102", f"masto:{host}:103"]
    assert all(raw_tweet_problem(r) is None for r in sink.raw)
    first, boost_raw, reply_raw = sink.raw
    assert {k: first[k] for k in first if k not in ("run_id", "ingested_at")} == {
        "id": f"masto:{host}:101", "text": "Plus de fibre depuis ce matin #free",
        "created_at": "2026-03-12T10:00:00.000Z", "author": f"alice@{host}", "author_name": "Alice",
        "author_location": "", "lang": "fr", "in_reply_to": "", "retweet_count": 1,
        "favorite_count": 2, "is_retweet": False, "source": f"mastodon:{host}"}
    assert first["run_id"].startswith("stream-mastodon-")
    assert (boost_raw["text"], boost_raw["author"], boost_raw["is_retweet"],
            boost_raw["retweet_count"]) == ("Panne géante", "bob@piaille.fr", True, 40)
    assert (reply_raw["text"], reply_raw["in_reply_to"], reply_raw["lang"]) == (
        "Râlerie\n\nPareil ici", f"masto:{host}:101", "")
    assert [d.reason.split(":")[0] for d in sink.dead] == ["malformed json", "not a status object"]
    assert (counts.received, counts.produced, counts.dead_lettered) == (5, 3, 2)
    assert (stats.keepalives, stats.control) == (2, 2)


def test_reconnect_fills_the_gap_over_rest_without_duplicates():
    cut_event = update(status(103))[:40]  # "event: update\ndata: {..." cut mid-JSON

    async def main():
        async with FakeServer() as server:
            server.route(STREAM,
                         sse_stream(update(status(101)), update(status(102)), cut_event, RESET),
                         sse_stream(update(status(104)), update(status(105)), HOLD))
            # First connect: anchor on the newest status; after the cut: statuses since
            # 102, newest first as Mastodon answers them.
            server.route(REST, Respond(200, [status(100)]),
                         Respond(200, [status(104), status(103)]))
            result = await run_masto(server, max_events=7)
            return result, server.requests_to(REST), server.url

    (counts, sink, stats, delays), rest, url = asyncio.run(main())
    prefix = f"masto:{url.removeprefix('http://')}:"
    assert sink.ids == [prefix + str(i) for i in (101, 102, 103, 104, 105)]
    assert [(d.reason, d.payload) for d in sink.dead] == [
        ("truncated event at disconnect", cut_event.decode())]
    assert (counts.received, counts.produced, counts.dead_lettered, counts.duplicates) == (7, 5, 1, 1)
    assert [r.query for r in rest] == [{"limit": "1"}, {"min_id": "102", "limit": "40"}]
    assert stats.backfilled == 2 and dict(stats.reconnects) == {"dropped": 1} and delays == [0.0]


def test_restart_pages_forward_through_a_long_gap(tmp_path):
    checkpoint = tmp_path / "connectors" / "mastodon.json"
    save_checkpoint(checkpoint, "mastodon", {"position": {"since_ids": {"hashtag:free": "1000"}},
                                             "recent_ids": []})
    published = [status(i) for i in range(1001, 1091)]

    def timeline(request):
        newer = [s for s in published if int(s["id"]) > int(request.query["min_id"])]
        return Respond(200, list(reversed(newer[:int(request.query["limit"])])))

    async def main():
        async with FakeServer() as server:
            server.route(STREAM, sse_stream(HOLD))
            server.route(REST, timeline)
            result = await run_masto(server, max_events=90, checkpoint=checkpoint)
            return result, server.requests_to(REST)

    (counts, sink, stats, _), rest = asyncio.run(main())
    assert [int(i.rsplit(":", 1)[1]) for i in sink.ids] == list(range(1001, 1091))
    assert [r.query["min_id"] for r in rest] == ["1000", "1040", "1080"]
    saved = json.loads(checkpoint.read_text())
    assert saved["position"] == {"since_ids": {"hashtag:free": "1090"}}
    assert len(saved["recent_ids"]) == 90


def test_backfill_stops_after_the_page_limit():
    published = [status(i) for i in range(1, 201)]

    def timeline(request):
        if "min_id" not in request.query:
            return Respond(200, [status(0)])
        newer = [s for s in published if int(s["id"]) > int(request.query["min_id"])]
        return Respond(200, list(reversed(newer[:40])))

    async def main():
        async with FakeServer() as server:
            server.route(STREAM, sse_stream(CUT), sse_stream(HOLD))
            server.route(REST, timeline)
            return await run_masto(server, max_events=80, backfill_pages=2)

    counts, sink, stats, _ = asyncio.run(main())
    assert len(sink.ids) == 80 and sink.ids[-1].endswith(":80") and stats.backfilled == 80


def test_several_hashtags_share_one_dedupe_and_one_checkpoint(tmp_path):
    checkpoint = tmp_path / "m.json"
    both = status(200, content="<p>#free #freebox en panne</p>")

    def stream(request):
        if request.query["tag"] == "free":
            return sse_stream(update(both), update(status(201)), HOLD)
        return sse_stream(update(status(150)), 0.05, update(both), HOLD)

    async def main():
        async with FakeServer() as server:
            server.route(STREAM, stream)
            server.route("/api/v1/timelines/tag/free", Respond(200, []))
            server.route("/api/v1/timelines/tag/freebox", Respond(200, []))
            return await run_masto(server, max_events=4, tags=("#free", "freebox", "free"),
                                   checkpoint=checkpoint)

    counts, sink, stats, _ = asyncio.run(main())
    assert sorted(i.rsplit(":", 1)[1] for i in sink.ids) == ["150", "200", "201"]
    assert counts.duplicates == 1 and stats.connects == 2
    assert json.loads(checkpoint.read_text())["position"]["since_ids"] == {
        "hashtag:free": "201", "hashtag:freebox": "200"}


def test_heartbeats_keep_the_stream_and_silence_is_a_stall():
    beats = [step for _ in range(5) for step in (0.1, b":thump\n")]

    async def main():
        async with FakeServer() as server:
            server.route(STREAM, sse_stream(update(status(1)), *beats, update(status(2)), HOLD),
                         sse_stream(update(status(3)), HOLD))
            server.route(REST, Respond(200, []))
            return await run_masto(server, max_events=3, stall=0.3)

    counts, sink, stats, delays = asyncio.run(main())
    assert [i.rsplit(":", 1)[1] for i in sink.ids] == ["1", "2", "3"]
    assert stats.keepalives == 5 and dict(stats.reconnects) == {"stall": 1} and delays == [0.0]


def test_rate_limited_backfill_waits_as_the_instance_says():
    async def main():
        async with FakeServer() as server:
            server.route(STREAM, sse_stream(update(status(1)), CUT),
                         sse_stream(HOLD), sse_stream(update(status(3)), HOLD))
            server.route(REST, Respond(200, []),
                         Respond(429, {"error": "Too many requests"},
                                 {"X-RateLimit-Reset": "2027-01-15T08:00:30.000Z"}),
                         Respond(200, [status(2)]))
            return await run_masto(server, max_events=3, now=NOW)

    counts, sink, stats, delays = asyncio.run(main())
    assert [i.rsplit(":", 1)[1] for i in sink.ids] == ["1", "2", "3"]
    assert delays == [0.0, 30.0]
    assert dict(stats.reconnects) == {"dropped": 1, "rate_limited": 1}


def test_public_timeline_needing_a_token_is_a_clear_error():
    async def main():
        async with FakeServer() as server:
            server.route("/api/v1/streaming/public/local",
                         Respond(401, {"error": "This method requires an authenticated user"}))
            await run_masto(server, max_events=1, tags=(), local=True)

    with pytest.raises(LiveError, match="HTTP 401: This method requires an authenticated user.*"
                                        "MASTODON_ACCESS_TOKEN"):
        asyncio.run(main())


def test_access_token_and_streaming_url_are_used():
    async def main():
        async with FakeServer() as api, FakeServer() as streaming:
            streaming.route(STREAM, sse_stream(update(status(1)), HOLD))
            api.route(REST, Respond(200, []))
            await run_masto(api, max_events=1, access_token="s3cret", streaming_url=streaming.url)
            return api.requests, streaming.requests

    api_requests, streaming_requests = asyncio.run(main())
    assert [r.path for r in streaming_requests] == [STREAM]
    assert [r.path for r in api_requests] == [REST]
    assert all(r.headers["authorization"] == "Bearer s3cret"
               for r in api_requests + streaming_requests)
