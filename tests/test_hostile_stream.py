"""A hostile stream through the real pipeline (issue 15): real broker, a real
``dallosh worker`` process, chdb.

One 2025 dump mixes a real incident (a Lyon outage, the shape of
``tests/test_signals_replay.write_dump``) with what a scraped dump or another producer
really sends: dates in 2099, 1970 and 1990, a ~1 MB text and one just under the 100,000
character limit, control characters and bidi overrides, invalid UTF-8 bytes, a bracket
bomb, spreadsheet formulas, an exact duplicate and an id conflict, and a spam minute of
6,000 tweets with random words (a signals cell of ~1.9 MiB: its changelog record must be
chunked, or Kafka refuses it). An independent aiokafka producer adds records the replay
would never send: JSON nested 100,000 deep, bytes that are not UTF-8, a 2099 record.

What must hold: the replay reconciles; every row is stored or dead-lettered with a
reason a user can read (counted per reason); nothing else is lost; the worker neither
dies nor logs a traceback; hostile text is stored verbatim; the Lyon outage still
raises its alert; the spam minute's state was written as chunks.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import random
import string
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from connectors.csv_replay import ReplayOptions, replay_file
from connectors.dump_reader import SAMPLE_BYTES
from stream_app.demo import WorkerProcess, wait_until_drained
from stream_app.kafka_admin import ensure_topics, pipeline_topics
from stream_app.records import reason_kind, timeline_of
from stream_app.signals.agent import join_chunks, read_state, state_key
from stream_app.storage.clickhouse import store_session
from tests.test_signals_replay import lyon_outage
from tests.conftest import isolated_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

START = datetime(2025, 3, 4, 8, 0, tzinfo=timezone.utc)   # a past dump, not rebased
HEADER = ["id", "created_at", "full_text", "name", "screen_name", "user_location",
          "in_reply_to_screen_name", "in_reply_to_status_id", "retweet_count",
          "favorite_count", "lang", "retweeted"]
SPAM_MINUTE, SPAM_TWEETS = 60, 6000        # minutes after START; one minute of spam
HOSTILE_MINUTE = 90                        # after the spam rows: far past the encoding sample
BIDI = "\u202e"                            # RIGHT-TO-LEFT OVERRIDE
FORMULAS = ('=HYPERLINK("http://x","y")', "+cmd|' /C calc'!A0", "@SUM(1)")
BAD_UTF8 = {"<<FF>>": b"\xff", "<<C328>>": b"\xc3\x28", "<<80>>": b"\x80"}
SCHEMA_TOO_LONG = "schema: text: is too long"
FUTURE = "created_at in the future"


@dataclass
class Dump:
    """What the test wrote, and what it expects of each row."""
    path: Path
    rows: int = 0
    accepted: set[str] = field(default_factory=set)        # ids the replay must produce
    refused: dict[str, str] = field(default_factory=dict)  # id -> expected reason prefix
    duplicates: int = 0
    spam_minute_epoch: int = 0


def stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def row(tweet_id: str, created_at: str, text: str, author: str = "", name: str = "") -> list[str]:
    return [tweet_id, created_at, text, name or author, author, "", "", "", "0", "0", "fr", "false"]


def incident_rows(rng: random.Random) -> list[list[str]]:
    """Three hours of calm traffic over six cities, the last one a Lyon outage
    (the shape the detectors are known to alert on, slightly busier)."""
    return [row(str(10**18 + n), stamp(t), text, f"user{n % 97}")
            for n, t, text in lyon_outage(rng, START, calm=(7, 11))]


def spam_rows(rng: random.Random) -> list[list[str]]:
    """6,000 tweets within one minute, distinct authors, random words: no two alike."""
    base = START + timedelta(minutes=SPAM_MINUTE)
    rows = []
    for i in range(SPAM_TWEETS):
        words = " ".join("".join(rng.choices(string.ascii_lowercase, k=8)) for _ in range(12))
        t = base + timedelta(seconds=i * 59 // SPAM_TWEETS)
        rows.append(row(str(2 * 10**18 + i), stamp(t), f"@free {words}", f"spam_account_{i}"))
    return rows


def hostile_rows() -> list[tuple[list[str], str | None]]:
    """(row, expected dead-letter reason prefix or None when it must be stored)."""
    t = stamp(START + timedelta(minutes=HOSTILE_MINUTE))
    ids = iter(str(3 * 10**18 + k) for k in range(100))
    return [
        (row(next(ids), "2099-01-01T00:00:00Z", "@free tweet du futur", "voyageur"), FUTURE),
        (row(next(ids), "2099-12-31T23:59:59Z", "@free encore le futur", "voyageur2"), FUTURE),
        (row(next(ids), "1970-01-01T00:00:00Z", "@free epoch zero", "horloge"), None),
        (row(next(ids), "1990-06-15T12:00:00Z", "@free minitel en panne", "nostalgique"), None),
        (row(next(ids), t, "@free " + "spam " * 180_000, "gros"), SCHEMA_TOO_LONG),   # ~900,000 chars
        (row(next(ids), t, "@free " + "trop " * 240_000, "enorme"), "unreadable CSV"),  # 1.2 MB cell
        (row(next(ids), t, ("@free " + "lent " * 20_000)[:99_999], "presque"), None),
        (row(next(ids), t, "@free nul\x00 octet", "zero"), None),       # NULs carry nothing: dropped
        (row(next(ids), t, "[" * 100_000, "crochets"), None),                          # at the limit
        (row(next(ids), t, f"@free panne\x07\x1b[31m rouge\x01 {BIDI}gnp.exe\u200f fin",
             f"evil{BIDI}user\x07", f"Nom{BIDI}\x1b[0m"), None),
        (row(next(ids), t, "@free ligne une\nligne deux\r\nligne\ttrois\x0b\x0c", "multiligne"), None),
        (row(next(ids), t, "@free octets <<FF>> casses <<C328>> ici", "bad<<80>>user"), None),
        (row(next(ids), t, FORMULAS[0], FORMULAS[0], FORMULAS[2]), None),
        (row(next(ids), t, FORMULAS[1], "tableur", "-2+3"), None),
        (row(next(ids), t, FORMULAS[2], "sommeur", FORMULAS[1]), None),
        (row(next(ids), t, "   ", "vide"), "empty text"),
        (row(next(ids), "hier soir", "@free quand ?", "flou"), "unparsable created_at"),
    ]


def write_dump(path: Path) -> Dump:
    """A plain CSV written as bytes: the invalid UTF-8 rows carry raw bytes, placed far
    after the first 64 KiB so the file is still read as UTF-8 (with U+FFFD for them)."""
    rng = random.Random(15)
    dump = Dump(path)
    body = incident_rows(rng) + spam_rows(rng)
    body.sort(key=lambda r: r[1])
    hostile = hostile_rows()
    first, conflict = body[0], list(body[1])
    # An exact copy of a row (skipped as a duplicate) and another text under an id (a conflict).
    conflict[2] = "@free un autre texte sous le même id"
    at = next(i for i, r in enumerate(body) if r[1] >= stamp(START + timedelta(minutes=HOSTILE_MINUTE)))
    rows = body[:at] + [r for r, _ in hostile] + [list(first), conflict] + body[at:]
    dump.duplicates = 1
    dump.refused[conflict[0]] = "id conflict"
    dump.accepted.update(r[0] for r in body)
    for r, reason in hostile:
        if reason is None:
            dump.accepted.add(r[0])
        else:
            dump.refused[r[0]] = reason
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(HEADER)
    writer.writerows(rows)
    data = out.getvalue().encode("utf-8")
    assert data.find(b"<<FF>>") > SAMPLE_BYTES     # past the sample the encoding is decided on
    for token, raw in BAD_UTF8.items():
        data = data.replace(token.encode(), raw)
    path.write_bytes(data)
    dump.rows = len(rows)
    dump.spam_minute_epoch = int((START + timedelta(minutes=SPAM_MINUTE)).timestamp() // 60)
    return dump


# Records no replay would send, from an independent producer: (key, payload, expected).
NESTED = b"[" * 100_000 + b"]" * 100_000
NESTED_OBJECT = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
DIRECT_OK = {"id": "4000000000000000001", "text": f"@free {BIDI}direct\x07 {FORMULAS[1]}",
             "run_id": "manual-hostile", "created_at": "2025-03-04T09:30:00Z", "source": "test",
             "ingested_at": "2025-03-04T09:30:00Z", "author": f"=cmd{BIDI}"}
DIRECT = [
    (b"4000000000000000002", NESTED, "invalid JSON: nested too deeply"),
    (b"4000000000000000003", NESTED_OBJECT, "invalid JSON: nested too deeply"),
    (b"4000000000000000004", b"\xff\xfe{\"id\": 1}", "invalid JSON"),
    (b"4000000000000000005", json.dumps(DIRECT_OK | {"id": "4000000000000000005",
                                                     "created_at": "2099-01-01T00:00:00Z"}).encode(),
     FUTURE),
    (b"4000000000000000001", json.dumps(DIRECT_OK, ensure_ascii=False).encode(), None),
]


async def produce_direct(bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)   # default 1 MB request cap
    await producer.start()
    try:
        for key, payload, _ in DIRECT:
            await producer.send_and_wait(topic, payload, key=key)
    finally:
        await producer.stop()


def rows_of(client, sql: str, **parameters) -> list[tuple]:
    return client.query(sql, parameters=parameters).result_rows


def test_a_hostile_stream_is_stored_or_dead_lettered_row_by_row_and_the_incident_still_alerts(
        tmp_path, kafka_bootstrap):
    dump = write_dump(tmp_path / "hostile_2025.csv")
    settings = isolated_settings(tmp_path / "data", kafka_bootstrap)
    asyncio.run(ensure_topics(settings.bootstrap_servers, pipeline_topics(settings), settings.partitions))
    asyncio.run(produce_direct(settings.bootstrap_servers, settings.topic_raw))
    worker = WorkerProcess(settings)
    try:
        replay = asyncio.run(replay_file(dump.path, settings, ReplayOptions(show_progress=False)))
        asyncio.run(wait_until_drained(settings, worker, print, timeout_s=240))
        worker.check_alive()                                   # it did not crash on any of it
    finally:
        worker.stop()
    run = replay.run_id
    print(f"replay: {replay.summary_line()}; reasons {replay.dead_letter_reasons}")

    # The replay reconciles, with the counts this dump implies.
    assert replay.reconciles
    assert replay.rows_read == dump.rows
    assert replay.duplicates == dump.duplicates
    assert replay.dead_lettered == len(dump.refused)
    assert replay.produced == len(dump.accepted)

    with store_session(settings.clickhouse_dsn) as client:
        dlq = rows_of(client, "SELECT stage, reason, tweet_id, source FROM dallosh.dlq FINAL "
                              "WHERE run_id = {run:String}", run=run)
        stored = dict(rows_of(client, "SELECT id, text FROM dallosh.tweets FINAL "
                                      "WHERE run_id = {run:String}", run=run))
        authors = dict(rows_of(client, "SELECT id, author FROM dallosh.tweets FINAL "
                                       "WHERE run_id = {run:String}", run=run))
        years = dict(rows_of(client, "SELECT text, toYear(created_at) FROM dallosh.tweets FINAL "
                                     "WHERE run_id = {run:String} AND created_at < '2000-01-01'", run=run))
        dropped = {r[0] for r in rows_of(
            client, "SELECT tweet_id FROM dallosh.clean_decisions FINAL "
                    "WHERE run_id = {run:String} AND action = 'dropped'", run=run)}
        direct_dlq = rows_of(client, "SELECT reason, tweet_id FROM dallosh.dlq FINAL "
                                     "WHERE stage = 'clean' AND tweet_id LIKE '4%'")
        direct_stored = rows_of(client, "SELECT id, text, author FROM dallosh.tweets FINAL "
                                        "WHERE run_id = 'manual-hostile'")
        alerts = rows_of(client, "SELECT location, key, status FROM dallosh.alerts FINAL "
                                 "WHERE run_id = {run:String} AND status != 'withdrawn'", run=run)

    # Every refused row is in the DLQ once, with a reason a user can read.
    per_reason = Counter(reason_kind(reason) for _, reason, _, _ in dlq)
    print(f"dlq per reason: {dict(per_reason)}; stored {len(stored)}; dropped {len(dropped)}")
    assert per_reason == Counter(replay.dead_letter_reasons)
    by_id = {tweet_id: (stage, reason) for stage, reason, tweet_id, _ in dlq}
    assert len(dlq) == len(by_id) == len(dump.refused)
    for tweet_id, expected in dump.refused.items():
        if expected == "unreadable CSV":   # the reader cannot know the id of a row it refused
            tweet_id = ""
        stage, reason = by_id[tweet_id]
        assert stage == "replay" and reason.startswith(expected), (tweet_id, reason[:120])
    assert all(source.startswith(f"{dump.path.name}:") for *_, source in dlq)

    # Nothing else lost: stored = produced, less what the clean stage dead-lettered or dropped.
    clean_dead = {tweet_id for stage, _, tweet_id, _ in dlq if stage == "clean"}
    assert set(stored) == dump.accepted - clean_dead - dropped
    assert not clean_dead and not dropped   # the default brand tags, and the replay pre-validates
    assert len(stored) + replay.dead_lettered + replay.duplicates == replay.rows_read

    # Hostile text stored verbatim: formulas as text (never evaluated), bidi and control
    # characters kept, invalid bytes as U+FFFD, the row next to them intact.
    by_text = {text: tweet_id for tweet_id, text in stored.items()}
    for formula in FORMULAS:
        assert formula in by_text, f"formula text not stored verbatim: {formula!r}"
    assert authors[by_text[FORMULAS[1]]] == "tableur"
    assert any(a == FORMULAS[0] for a in authors.values())
    bidi = [i for i, text in stored.items() if BIDI in text and "\x07" in text]
    assert len(bidi) == 1 and authors[bidi[0]] == f"evil{BIDI}user\x07"
    assert any("ligne deux" in text and "\n" in text for text in stored.values())
    broken = [text for text in stored.values() if "octets" in text]
    assert broken == ["@free octets \ufffd casses \ufffd( ici"]
    assert "[" * 100_000 in stored.values()
    assert {len(text) for text in stored.values()} >= {99_999, 100_000}   # at the limit: kept
    assert "@free nul octet" in by_text
    # No lower bound on event time: far-past tweets are stored as dated (the signals
    # engine counts them as late, which must not disturb the 2025 windows).
    assert years == {"@free epoch zero": 1970, "@free minitel en panne": 1990}

    # The independent producer's records: one stored, the others dead-lettered by reason.
    assert [(i, t, a) for i, t, a in direct_stored] == \
        [(DIRECT_OK["id"], DIRECT_OK["text"], DIRECT_OK["author"])]
    direct_reasons = {tweet_id: reason for reason, tweet_id in direct_dlq}
    for key, _, expected in DIRECT:
        if expected is not None:
            assert direct_reasons[key.decode()].startswith(expected), (key, direct_reasons.get(key.decode()))

    # The worker never crashed nor logged a traceback on any of it.
    log = worker.log_path.read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in log, log[log.find("Traceback") - 2000:][:6000]

    # The real incident still raises its alert in this run.
    print(f"alerts of the run: {alerts}")
    assert any(location == "Lyon" for location, _, _ in alerts), alerts

    # The spam minute's cell went to the changelog as chunks, and reads back whole.
    state = asyncio.run(read_state(settings))
    name = state_key(timeline_of(run), f"all|{dump.spam_minute_epoch}")
    head = state.get(name)
    print(f"spam minute state head: {head}")
    assert head is not None and set(head) == {"chunks"} and head["chunks"] >= 2
    cell = join_chunks({k: v for k, v in state.items() if k.startswith(name)})[name]
    assert cell["volume"] >= SPAM_TWEETS and len(cell["authors"]) >= SPAM_TWEETS
