"""The X filtered-stream connector against a local fault-injecting server (real sockets
on 127.0.0.1): parsing, conversion, reconnects with X's backoff, stalls, duplicates
after a backfill, restart from the checkpoint, rules management."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from connectors.live.backoff import ReconnectPolicy
from connectors.live.runner import LiveCounts
from connectors.live.stream import LiveError, StreamStats
from connectors.live.x_stream import STREAM_PATH, RULES_PATH, Rule, XStream, load_rules
from stream_app.records import raw_tweet_problem
from tests.live_server import (CUT, HOLD, RESET, FakeServer, ListSink, Respond, SleepRecorder, Stream,
                               run_source)

pytestmark = pytest.mark.timeout(10)

USERS = [{"id": "42", "username": "marie_b", "name": "Marie B.", "location": "Bordeaux"}]


def tweet(id_: str, text: str = "Encore une panne fibre @free", *,
          created_at: str = "2026-03-12T10:00:00.000Z", **data: Any) -> bytes:
    message = {"data": {"id": id_, "text": text, "created_at": created_at, "author_id": "42",
                        "lang": "fr", "public_metrics": {"retweet_count": 3, "like_count": 5,
                                                         "reply_count": 0, "quote_count": 0},
                        "edit_history_tweet_ids": [id_], **data},
               "includes": {"users": USERS}, "matching_rules": [{"id": "9", "tag": "free"}]}
    return json.dumps(message).encode() + b"\r\n"


KEEPALIVE = b"\r\n"


async def run_x(server: FakeServer, *, max_events: int, stall: float = 5.0, backfill: int = 0,
                checkpoint: Path | None = None, policy: ReconnectPolicy | None = None
                ) -> tuple[LiveCounts, ListSink, StreamStats, list[float]]:
    sleep = SleepRecorder()
    async with XStream("test-token", base_url=server.url, stall_timeout=stall,
                       backfill_minutes=backfill, policy=policy or ReconnectPolicy(),
                       sleep=sleep) as source:
        return await run_source(source, server, sleep, max_events=max_events, checkpoint=checkpoint)


def test_posts_become_valid_raw_tweets_with_every_field():
    async def main():
        reply = tweet("1002", "@free toujours rien", lang="und", in_reply_to_user_id="77",
                      referenced_tweets=[{"type": "replied_to", "id": "1001"}])
        retweet = tweet("1003", "RT @x: panne", referenced_tweets=[{"type": "retweeted", "id": "999"}])
        async with FakeServer() as server:
            server.route(STREAM_PATH, Stream([tweet("1001"), KEEPALIVE, reply, KEEPALIVE, retweet, HOLD]))
            counts, sink, stats, delays = await run_x(server, max_events=3)
            request = server.requests_to(STREAM_PATH)[0]
        return counts, sink, stats, request

    counts, sink, stats, request = asyncio.run(main())
    assert (counts.received, counts.produced, counts.dead_lettered, counts.duplicates) == (3, 3, 0, 0)
    assert stats.keepalives == 2 and stats.connects == 1
    first, reply, retweet = sink.raw
    assert all(raw_tweet_problem(r) is None for r in sink.raw)
    assert {k: first[k] for k in first if k not in ("run_id", "ingested_at")} == {
        "id": "1001", "text": "Encore une panne fibre @free", "created_at": "2026-03-12T10:00:00.000Z",
        "author": "marie_b", "author_name": "Marie B.", "author_location": "Bordeaux", "lang": "fr",
        "in_reply_to": "", "retweet_count": 3, "favorite_count": 5, "is_retweet": False,
        "source": "x-stream"}
    assert first["run_id"].startswith("stream-x-")
    assert (reply["in_reply_to"], reply["lang"], reply["is_retweet"]) == ("1001", "", False)
    assert retweet["is_retweet"] is True
    assert request.headers["authorization"] == "Bearer test-token"
    assert request.query["tweet.fields"] == ("created_at,lang,author_id,public_metrics,"
                                             "referenced_tweets,in_reply_to_user_id,geo")
    assert request.query["expansions"] == "author_id"
    assert request.query["user.fields"] == "username,name,location"
    assert "backfill_minutes" not in request.query


def test_disconnect_mid_line_dead_letters_the_fragment_and_reconnects_at_once():
    partial = tweet("2002")[:40]

    async def main():
        async with FakeServer() as server:
            server.route(STREAM_PATH,
                         Stream([tweet("2001"), partial, RESET]),
                         Stream([tweet("2002"), tweet("2003"), HOLD]))
            return await run_x(server, max_events=4)

    counts, sink, stats, delays = asyncio.run(main())
    assert sink.ids == ["2001", "2002", "2003"]
    assert [(d.reason, d.payload) for d in sink.dead] == [
        ("truncated line at disconnect", partial.decode())]
    assert (counts.received, counts.produced, counts.dead_lettered) == (4, 3, 1)
    assert dict(stats.reconnects) == {"dropped": 1}
    assert delays == [0.0]  # X: an established stream that drops is retried immediately


def test_stream_that_ends_without_data_backs_off_linearly():
    async def main():
        async with FakeServer() as server:
            server.route(STREAM_PATH, Stream([CUT]), Stream([CUT]), Stream([CUT]),
                         Stream([tweet("3001"), HOLD]))
            return await run_x(server, max_events=1)

    counts, sink, stats, delays = asyncio.run(main())
    assert sink.ids == ["3001"]
    # Never healthy, so no immediate retry: 250 ms more per attempt.
    assert delays == [0.25, 0.5, 0.75]
    assert dict(stats.reconnects) == {"dropped": 3}


def test_a_server_dropping_every_connection_is_not_hammered():
    async def main():
        async with FakeServer() as server:
            server.route(STREAM_PATH, *[Stream([tweet(f"31{i}"), CUT]) for i in range(3)],
                         Stream([tweet("3199"), HOLD]))
            return await run_x(server, max_events=4)

    counts, sink, stats, delays = asyncio.run(main())
    assert sink.ids == ["310", "311", "312", "3199"]
    assert delays == [0.0, 0.25, 0.5]  # one immediate retry, then the linear backoff


def test_malformed_lines_are_dead_lettered_never_fatal():
    control = json.dumps({"errors": [{"title": "operational-disconnect",
                                      "detail": "This stream has been disconnected"}]}).encode()
    lines = [b"not json at all\r\n", b"[1, 2]\r\n", b'{"foo": 1}\r\n', b"\xff\xfe{}\r\n",
             tweet("4001", created_at="hier soir"), tweet("4002", text="   "),
             control + b"\r\n", tweet("4003")]

    async def main():
        async with FakeServer() as server:
            server.route(STREAM_PATH, Stream([*lines, HOLD]))
            return await run_x(server, max_events=7)

    counts, sink, stats, _ = asyncio.run(main())
    assert sink.ids == ["4003"]
    reasons = [d.reason.split(":")[0].split(" '")[0] for d in sink.dead]
    assert reasons == ["malformed json", "not a JSON object", "no post in message", "invalid utf-8",
                       "unparsable created_at", "empty text"]
    assert [d.tweet_id for d in sink.dead][-2:] == ["4001", "4002"]
    assert all(d.stage == "stream" and d.source == "x-stream" for d in sink.dead)
    assert (counts.received, counts.produced, counts.dead_lettered, counts.malformed) == (7, 1, 6, 4)
    assert stats.control == 1  # the operational message is logged, not a post


def test_http_errors_back_off_exponentially_from_5_seconds():
    async def main():
        async with FakeServer() as server:
            server.route(STREAM_PATH, Respond(503, {"title": "Service Unavailable"}),
                         Respond(500, b"oops"), Respond(502, b""),
                         Stream([tweet("5001"), HOLD]))
            return await run_x(server, max_events=1)

    counts, sink, stats, delays = asyncio.run(main())
    assert sink.ids == ["5001"]
    assert delays == [5.0, 10.0, 20.0]
    assert dict(stats.reconnects) == {"http_error": 3}


def test_rate_limit_honours_reset_and_retry_after_headers():
    now = 1_800_000_000.0

    async def main():
        async with FakeServer() as server:
            server.route(STREAM_PATH,
                         Respond(429, {"title": "Too Many Requests"},
                                 {"x-rate-limit-reset": str(int(now) + 42)}),
                         Respond(429, {"title": "TooManyConnections"}, {"Retry-After": "7"}),
                         Respond(429, {"title": "Too Many Requests"}),
                         Stream([tweet("6001"), HOLD]))
            return await run_x(server, max_events=1, policy=ReconnectPolicy(clock=lambda: now))

    counts, sink, stats, delays = asyncio.run(main())
    assert sink.ids == ["6001"]
    # Headers win; without them, the third 429 is 60 s doubled twice.
    assert delays == [42.0, 7.0, 240.0]
    assert dict(stats.reconnects) == {"rate_limited": 3}


def test_refused_token_is_a_clear_error_without_the_secret():
    async def main():
        async with FakeServer() as server:
            server.route(STREAM_PATH, Respond(401, {"title": "Unauthorized", "detail": "Unauthorized"}))
            return await run_x(server, max_events=1)

    with pytest.raises(LiveError) as error:
        asyncio.run(main())
    assert "HTTP 401" in str(error.value) and "X_BEARER_TOKEN" in str(error.value)
    assert "test-token" not in str(error.value)


def test_stall_without_keepalives_reconnects_after_the_timeout():
    async def main():
        async with FakeServer() as server:
            server.route(STREAM_PATH, Stream([tweet("7001"), HOLD]),
                         Stream([tweet("7002"), HOLD]))
            started = time.monotonic()
            result = await run_x(server, max_events=2, stall=0.3)
            return result, time.monotonic() - started

    (counts, sink, stats, delays), elapsed = asyncio.run(main())
    assert sink.ids == ["7001", "7002"]
    assert dict(stats.reconnects) == {"stall": 1} and delays == [0.0]
    assert 0.3 <= elapsed < 2.0


def test_keepalives_keep_a_quiet_stream_open():
    async def main():
        async with FakeServer() as server:
            # 0.6 s without a post but a keep-alive every 0.1 s: longer than the 0.3 s
            # stall timeout in total, never between two bytes.
            steps = [tweet("8001")] + [0.1, KEEPALIVE] * 6 + [tweet("8002"), HOLD]
            server.route(STREAM_PATH, Stream(steps), Stream([tweet("8099"), HOLD]))
            return await run_x(server, max_events=2, stall=0.3)

    counts, sink, stats, delays = asyncio.run(main())
    assert sink.ids == ["8001", "8002"]
    assert stats.keepalives == 6 and dict(stats.reconnects) == {} and stats.connects == 1


def test_backfill_after_reconnect_produces_no_duplicate():
    async def main():
        async with FakeServer() as server:
            server.route(STREAM_PATH,
                         Stream([tweet("9001"), tweet("9002"), tweet("9003")]),  # ends cleanly
                         Stream([tweet("9002"), tweet("9003"), tweet("9004"), HOLD]))
            result = await run_x(server, max_events=6, backfill=2)
            return result, server.requests_to(STREAM_PATH)

    (counts, sink, stats, delays), requests = asyncio.run(main())
    assert sink.ids == ["9001", "9002", "9003", "9004"]
    assert (counts.received, counts.produced, counts.duplicates) == (6, 4, 2)
    assert "backfill_minutes" not in requests[0].query
    assert requests[1].query["backfill_minutes"] == "2"


def test_restart_resumes_from_the_checkpoint(tmp_path):
    checkpoint = tmp_path / "connectors" / "x-stream.json"

    async def main():
        async with FakeServer() as server:
            server.route(STREAM_PATH, Stream([tweet("1101"), tweet("1102"), HOLD]))
            first = await run_x(server, max_events=2, backfill=5, checkpoint=checkpoint)
        saved = json.loads(checkpoint.read_text())
        async with FakeServer() as server:
            # After the restart X backfills: 1102 again, then a new one.
            server.route(STREAM_PATH, Stream([tweet("1102"), tweet("1103"), HOLD]))
            second = await run_x(server, max_events=2, backfill=5, checkpoint=checkpoint)
            request = server.requests_to(STREAM_PATH)[0]
        return first, saved, second, request

    first, saved, second, request = asyncio.run(main())
    assert first[1].ids == ["1101", "1102"]
    assert saved["network"] == "x" and saved["recent_ids"] == ["1101", "1102"]
    assert saved["position"] == {"last_id": "1102", "last_created_at": "2026-03-12T10:00:00.000Z"}
    assert second[1].ids == ["1103"] and second[0].duplicates == 1
    assert request.query["backfill_minutes"] == "5"  # a restart is a reconnect for X
    assert json.loads(checkpoint.read_text())["recent_ids"] == ["1101", "1102", "1103"]


def test_backfill_minutes_outside_0_to_5_is_refused():
    with pytest.raises(LiveError, match="0-5"):
        XStream("t", backfill_minutes=6)
    with pytest.raises(LiveError, match="X_BEARER_TOKEN"):
        XStream("")


# --------------------------------------------------------------------------- rules

ACTIVE = {"data": [{"id": "111", "value": "old rule"},
                   {"id": "222", "value": "(@free OR @freebox) lang:fr", "tag": "free"}],
          "meta": {"result_count": 2}}


def test_rules_sync_deletes_and_adds_until_active_equals_configured():
    wanted = [Rule("(@free OR @freebox) lang:fr", "free"), Rule('"panne fibre" -is:retweet', "outage")]

    async def main():
        async with FakeServer() as server:
            server.route(RULES_PATH, lambda r: Respond(200, ACTIVE) if r.method == "GET"
                         else Respond(201, {"meta": {"summary": {}}}))
            async with XStream("tok", base_url=server.url) as x:
                plan = await x.sync_rules(wanted)
            return plan, [r for r in server.requests_to(RULES_PATH) if r.method == "POST"]

    plan, posts = asyncio.run(main())
    assert [r.json() for r in posts] == [
        {"delete": {"ids": ["111"]}},
        {"add": [{"value": '"panne fibre" -is:retweet', "tag": "outage"}]}]
    assert all("dry_run" not in r.query for r in posts)
    assert plan.keep == [wanted[0]] and plan.add == [wanted[1]]
    assert plan.delete == [("111", Rule("old rule"))]


def test_rules_dry_run_only_asks_x_to_validate():
    async def main():
        async with FakeServer() as server:
            server.route(RULES_PATH, lambda r: Respond(200, ACTIVE) if r.method == "GET"
                         else Respond(200, {"meta": {"summary": {}}}))
            async with XStream("tok", base_url=server.url) as x:
                plan = await x.sync_rules([Rule("new rule")], dry_run=True)
            return plan, [r for r in server.requests_to(RULES_PATH) if r.method == "POST"]

    plan, posts = asyncio.run(main())
    assert [r.query.get("dry_run") for r in posts] == ["true", "true"]
    assert [r.json() for r in posts] == [{"delete": {"ids": ["111", "222"]}},
                                         {"add": [{"value": "new rule"}]}]
    assert plan.describe() == ["would delete 'old rule' (id 111)",
                               "would delete '(@free OR @freebox) lang:fr' (id 222)",
                               "would add    'new rule'"]


def test_rules_already_in_place_send_nothing():
    async def main():
        async with FakeServer() as server:
            server.route(RULES_PATH, Respond(200, ACTIVE))
            async with XStream("tok", base_url=server.url) as x:
                await x.sync_rules([Rule("old rule"), Rule("(@free OR @freebox) lang:fr", "free")])
            return server.requests_to(RULES_PATH)

    assert [r.method for r in asyncio.run(main())] == ["GET"]


def test_rule_rejected_by_x_is_a_clear_error():
    rejected = {"errors": [{"title": "UnprocessableEntity", "value": "lang:xx",
                            "details": ["Invalid language"]}], "meta": {"summary": {"invalid": 1}}}

    async def main():
        async with FakeServer() as server:
            server.route(RULES_PATH, lambda r: Respond(200, {"meta": {}}) if r.method == "GET"
                         else Respond(400, rejected))
            async with XStream("tok", base_url=server.url) as x:
                await x.sync_rules([Rule("lang:xx")])

    with pytest.raises(LiveError, match="adding stream rules: HTTP 400"):
        asyncio.run(main())


def test_load_rules_from_options_and_file_entries():
    rules = load_rules(["@free", " @free "], ["panne", {"value": "@freebox", "tag": "box"}])
    assert rules == [Rule("@free"), Rule("panne"), Rule("@freebox", "box")]
    with pytest.raises(LiveError, match="bad rule entry"):
        load_rules([], [{"tag": "no value"}])
