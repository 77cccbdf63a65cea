"""Property-based fuzzing (Hypothesis) of what the live connectors read from a server
they do not control (issue 15): the bounded line reader, the X stream's line decoder,
the SSE parser and the X / Mastodon event decoders and converters.

The one property: every input ends as a valid raw tweet, or is rejected with a reason
(a Malformed event, a dead-letter reason, or ignored as a keep-alive/control message),
never as an unhandled exception.

Cost: :data:`EXAMPLES` examples per property (200 by default, about 10 s in all).
``DALLOSH_FUZZ_EXAMPLES=20000`` (or ``HYPOTHESIS_PROFILE=long``: 10,000) runs longer.
The settings are local to this module: other test modules' Hypothesis settings are
left alone.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from connectors.live.mastodon import MastodonStream, SseParser, Timeline
from connectors.live.runner import LiveRunner
from connectors.live.stream import (LineReader, Malformed, OverlongLine, Post, UndecodableJson,
                                    decode_json)
from connectors.live.x_stream import XStream
from stream_app.records import raw_tweet_problem
from tests.live_server import ListSink


def _examples() -> int:
    if os.environ.get("DALLOSH_FUZZ_EXAMPLES"):
        return int(os.environ["DALLOSH_FUZZ_EXAMPLES"])
    return 10_000 if os.environ.get("HYPOTHESIS_PROFILE") == "long" else 200


EXAMPLES = _examples()
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])

pytestmark = pytest.mark.timeout(max(120, EXAMPLES // 10))

# --------------------------------------------------------------------------- strategies

# Literals that broke (or could break) json.loads or the conversions after it.
HOSTILE_LITERALS = ["1e999", "-1e999", "NaN", "Infinity", "-Infinity", "1" * 5000, "-0",
                    "1e-999", "1.5", "9" * 400, "[" * 3000, "[" * 3000 + "]" * 3000,
                    '{"a":' * 3000 + "1" + "}" * 3000, "null", "true", "false", '""', "{}", "[]",
                    '"\\ud800"', '"\\u0000"', '"2026-03-12T10:00:00Z"', '"0001-01-01T00:00:00+01:00"',
                    '"9999-12-31T23:59:59-01:00"', '"hier soir"', '"<p>a<br>b</p>"', '"<![CDATA[x"']

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children,
                                                                     max_size=4),
    max_leaves=12)


def literal() -> st.SearchStrategy[str]:
    """A JSON value as text: a hostile literal or any JSON value."""
    return st.sampled_from(HOSTILE_LITERALS) | json_values.map(json.dumps)


X_GOOD = {"id": '"1001"', "text": '"panne fibre"', "created_at": '"2026-03-12T10:00:00.000Z"',
          "author_id": '"42"', "lang": '"fr"', "metrics": "{}", "retweets": "3", "likes": "5",
          "refs": '[{"type": "replied_to", "id": "1000"}]', "users": '[{"id": "42"}]',
          "reply_to": "null"}
MASTO_GOOD = {"id": '"110"', "created_at": '"2026-03-12T10:00:00.000Z"',
              "content": '"<p>panne #free</p>"', "spoiler": '""', "lang": '"fr"', "reply": "null",
              "reblog": "null", "reblogs": "1", "favourites": "2", "account": "{}",
              "acct": '"alice"', "name": '"Alice"'}


def slots_of(draw: st.DrawFn, good: dict[str, str]) -> dict[str, str]:
    """The good values, a few of them (or all) replaced by hostile ones, so that both
    outcomes (a raw tweet, a reason) are explored."""
    names = sorted(good)
    hostile = draw(st.sets(st.sampled_from(names), max_size=3) | st.just(set(names)))
    return {name: draw(literal()) if name in hostile else good[name] for name in names}


@st.composite
def x_lines(draw: st.DrawFn) -> bytes:
    """Lines of the X stream: tweet-shaped messages with hostile values, any JSON, any
    bytes, and mutations of each (cut, bytes flipped)."""
    kind = draw(st.sampled_from(["tweet", "tweet", "json", "bytes"]))
    if kind == "tweet":
        slots = slots_of(draw, X_GOOD)
        users = draw(st.sampled_from([slots["users"], f'[{{"id": {slots["author_id"]}, '
                                      f'"username": {slots["text"]}, "location": {slots["lang"]}}}]']))
        text = ('{"data": {"id": %(id)s, "text": %(text)s, "created_at": %(created_at)s, '
                '"author_id": %(author_id)s, "lang": %(lang)s, "in_reply_to_user_id": %(reply_to)s, '
                '"public_metrics": {"retweet_count": %(retweets)s, "like_count": %(likes)s}, '
                '"referenced_tweets": %(refs)s}, "includes": {"users": USERS}}' % slots
                ).replace("USERS", users)
        if draw(st.booleans()):
            text = text.replace('"public_metrics": {', f'"public_metrics": {slots["metrics"]}, "x": {{')
        line = text.encode("utf-8", errors="surrogatepass")
    elif kind == "json":
        line = draw(literal()).encode("utf-8", errors="surrogatepass")
    else:
        line = draw(st.binary(max_size=200))
    if draw(st.integers(0, 3)) == 0 and line:
        cut = draw(st.integers(0, len(line)))
        line = line[:cut] if draw(st.booleans()) else line[:cut] + draw(st.binary(max_size=8)) + line[cut:]
    return line.replace(b"\n", b" ")


@st.composite
def mastodon_events(draw: st.DrawFn) -> list[str]:
    """SSE lines of Mastodon events: update/delete/other events whose data is a
    status-shaped object with hostile values, any JSON or any text, split over lines."""
    slots = slots_of(draw, MASTO_GOOD)
    account = draw(st.sampled_from([slots["account"], '{"acct": %(acct)s, "display_name": %(name)s, '
                                    '"username": %(name)s}' % slots]))
    status = ('{"id": %(id)s, "created_at": %(created_at)s, "content": %(content)s, '
              '"spoiler_text": %(spoiler)s, "language": %(lang)s, "in_reply_to_id": %(reply)s, '
              '"reblog": %(reblog)s, "reblogs_count": %(reblogs)s, "favourites_count": %(favourites)s, '
              '"account": ACCOUNT}' % slots).replace("ACCOUNT", account)
    if draw(st.booleans()):  # a boost: the status inside "reblog"
        status = status.replace('"reblog": ' + slots["reblog"], '"reblog": ' + status, 1)
    data = draw(st.sampled_from([status, status, draw(literal()), draw(st.text(max_size=60))]))
    name = draw(st.sampled_from(["update", "update", "delete", "status.update", "", "update\r"]))
    lines = [f"event: {name}"] if name else []
    data_lines = data.split("\n") if draw(st.booleans()) else [data.replace("\n", " ")]
    lines += [f"data: {part}" for part in data_lines]
    extra = draw(st.lists(st.text(max_size=20).map(lambda s: s.replace("\n", " ")), max_size=3))
    position = draw(st.integers(0, len(lines)))
    lines[position:position] = extra
    return lines + [""]


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def x_source():
    source = XStream("fuzz-token", base_url="https://api.x.test")
    yield source
    asyncio.run(source.__aexit__(None, None, None))


@pytest.fixture(scope="module")
def masto_source():
    source = MastodonStream("https://masto.test", tags=["free"])
    yield source
    asyncio.run(source.__aexit__(None, None, None))


def assert_accepted_or_rejected(runner: LiveRunner, event: Any) -> None:
    """The property: a Post converts to a valid raw tweet or to a dead-letter reason;
    anything else is a Malformed event with a reason, or None (keep-alive, control)."""
    if event is None:
        event_kind("ignored")
        return
    if isinstance(event, Malformed):
        assert event.reason.strip()
        assert isinstance(event.raw, str)
        event_kind("malformed")
        return
    assert isinstance(event, Post)
    outcome = runner.convert(event)
    if isinstance(outcome, str):
        assert outcome.strip()
        event_kind("dead-lettered")
    else:
        assert raw_tweet_problem(outcome) is None
        json.dumps(outcome)  # producible: the record serialises
        event_kind("raw tweet")


def event_kind(kind: str) -> None:
    event(kind)  # shown by --hypothesis-show-statistics: both outcomes must be explored


# --------------------------------------------------------------------------- properties

@FUZZ
@given(chunks=st.lists(st.binary(max_size=40) | st.sampled_from([b"\n", b"\r\n", b"x" * 50]),
                       max_size=30),
       limit=st.integers(1, 64))
def test_line_reader_gives_every_line_and_never_holds_more_than_the_bound(chunks, limit):
    reader = LineReader(limit)
    got: list[bytes | OverlongLine] = []
    for chunk in chunks:
        got += reader.feed(chunk)
        assert len(reader._buffer) <= limit
    rest = reader.finish()
    *lines, tail = b"".join(chunks).split(b"\n")
    expected: list[Any] = [("long", len(line)) if len(line) > limit else line.removesuffix(b"\r")
                           for line in lines]
    assert [("long", item.size) if isinstance(item, OverlongLine) else item for item in got] == expected
    if len(tail) > limit:
        assert isinstance(rest, OverlongLine) and rest.cut and rest.size == len(tail)
    else:
        assert rest == tail
    assert all(len(item.head) <= 4096 for item in got if isinstance(item, OverlongLine))


@FUZZ
@given(text=literal() | st.text(max_size=50) | st.binary(max_size=50))
def test_decode_json_returns_a_value_or_one_undecodable_error(text):
    try:
        value = decode_json(text)
    except UndecodableJson as exc:
        assert exc.reason.startswith("malformed json")
    else:
        json.dumps(value, allow_nan=False)  # nothing non-finite came through


@FUZZ
@given(line=x_lines())
def test_x_stream_lines_become_raw_tweets_or_reasons(x_source, line):
    runner = LiveRunner(x_source, ListSink())
    assert_accepted_or_rejected(runner, x_source._event_of(line))


@FUZZ
@given(events=st.lists(mastodon_events(), min_size=1, max_size=3))
def test_mastodon_sse_events_become_raw_tweets_or_reasons(masto_source, events):
    runner = LiveRunner(masto_source, ListSink())
    parser = SseParser(max_event_chars=2000)  # small: events over the bound come up too
    timeline = Timeline("free")
    for line in (line for event in events for line in event):
        message = parser.feed(line)
        assert len(parser.pending()) <= 2000
        if message is SseParser.TOO_LONG:
            event_kind("event too long")
        elif message is not None and message is not SseParser.COMMENT:
            assert_accepted_or_rejected(runner, masto_source._dispatch(timeline, *message))


@FUZZ
@given(status=json_values)
def test_any_decoded_mastodon_status_converts_or_is_rejected(masto_source, status):
    runner = LiveRunner(masto_source, ListSink())
    assert_accepted_or_rejected(runner, masto_source._post(Timeline("free"), status, "{}"))
