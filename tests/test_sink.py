"""The sink's writer against the real ClickHouse engine (chdb): deduplicated retries,
refused rows isolated and dead-lettered, transient failures retried, back-pressure."""

import asyncio
import json
import threading
import time

import pytest

from stream_app import metrics
from stream_app.records import ClassifiedTweet
from stream_app.sink.agent import deliver
from stream_app.sink.chaos import ChaosSwitch
from stream_app.sink.errors import is_row_error
from stream_app.sink.tables import TWEETS, TableSpec
from stream_app.sink.writer import JSON_INSERT_SETTINGS, ClickHouseWriter, dedup_token
from stream_app.storage import clickhouse as ch


@pytest.fixture
def store(tmp_path):
    with ch.store_session(f"chdb://{tmp_path / 'ch'}") as client:
        yield client


def tweet(i: int, **changes) -> bytes:
    base = dict(id=f"t{i}", text="panne", created_at=f"2026-03-12T14:{i % 60:02d}:00Z",
                run_id="r", source=f"f:{i}", ingested_at="2026-03-12T14:00:01Z",
                text_clean="panne", lang="fr", location="Bordeaux", region_code="FR-NAQ",
                sentiment="negative", priority=0, topic="outage", team="network_ops",
                confidence=0.8, tier="degraded", provider="rules", model="lexicon-v1",
                reason="r", classified_at="2026-03-12T14:00:02Z", version=1)
    return ClassifiedTweet(**(base | changes)).to_json()


def count(store, sql: str) -> int:
    return store.query(sql).result_rows[0][0]


def fast_writer(store, **kwargs) -> ClickHouseWriter:
    return ClickHouseWriter(store, max_backoff_s=0.05, **kwargs)


def test_a_retried_insert_that_had_landed_is_not_doubled(store, tmp_path):
    """The insert lands but its reply is lost (chaos lost-ack): the retry carries the same
    deduplication token and ClickHouse drops it. Counted without FINAL, before merges."""
    switch = tmp_path / "chaos"
    switch.write_text("lost-ack")
    writer = fast_writer(store, chaos=ChaosSwitch(switch))
    payloads = [tweet(i) for i in range(500)]
    retries_before = metrics.SINK_RETRIES.labels(TWEETS.table)._value.get()

    def close_switch_later():
        time.sleep(0.4)
        switch.unlink()
    threading.Thread(target=close_switch_later).start()
    delivery = asyncio.run(deliver(writer, TWEETS, payloads))

    assert delivery.inserted == 500 and delivery.dead_lettered == 0
    assert metrics.SINK_RETRIES.labels(TWEETS.table)._value.get() > retries_before
    assert count(store, "SELECT count() FROM dallosh.tweets") == 500  # raw rows, no FINAL
    assert count(store, "SELECT uniqExact(id) FROM dallosh.tweets") == 500


def test_without_the_deduplication_window_the_same_retry_would_double(store):
    """The control for the test above: the table's window is what drops the retry."""
    body = b"\n".join(tweet(i) for i in range(10))
    settings = {"insert_deduplication_token": dedup_token(TWEETS.table, [b"batch"]), **JSON_INSERT_SETTINGS}
    for _ in range(2):
        store.raw_insert(TWEETS.table, list(TWEETS.columns), insert_block=body, fmt="JSONEachRow",
                         settings=settings)
    assert count(store, "SELECT count() FROM dallosh.tweets") == 10
    store.command("ALTER TABLE dallosh.tweets MODIFY SETTING non_replicated_deduplication_window = 0")
    for _ in range(2):
        store.raw_insert(TWEETS.table, list(TWEETS.columns), insert_block=body, fmt="JSONEachRow",
                         settings=settings)
    assert count(store, "SELECT count() FROM dallosh.tweets") == 30


def test_rows_clickhouse_refuses_are_dead_lettered_and_the_rest_lands(store):
    payloads = [tweet(i) for i in range(1000)]
    payloads[17] = tweet(17, priority=7)            # CHECK constraint (server side)
    payloads[500] = tweet(500, priority=300)         # does not fit UInt8 (checked by the sink)
    payloads[998] = tweet(998, id="")                # CHECK constraint: empty id
    payloads.append(b'{"id": "broken"')             # not even JSON
    delivery = asyncio.run(deliver(fast_writer(store), TWEETS, payloads))

    assert (delivery.inserted, delivery.dead_lettered) == (997, 4)
    assert count(store, "SELECT count() FROM dallosh.tweets FINAL") == 997
    assert count(store, "SELECT countIf(id IN ('t17', 't500')) FROM dallosh.tweets") == 0
    reasons = store.query("SELECT tweet_id, reason FROM dallosh.dlq WHERE stage = 'sink' "
                          "ORDER BY tweet_id, reason").result_rows
    assert [tweet_id for tweet_id, _ in reasons] == ["", "", "t17", "t500"]
    assert "id_not_empty" in reasons[0][1]
    assert reasons[1][1].startswith("cannot build a dallosh.tweets row: not JSON")
    assert "VIOLATED_CONSTRAINT" in reasons[2][1] and "priority_0_1_2" in reasons[2][1]
    assert "column `priority` (UInt8) cannot hold 300" in reasons[3][1]   # checked before the insert
    payload = store.query("SELECT payload FROM dallosh.dlq WHERE tweet_id = 't17'").result_rows[0][0]
    assert json.loads(payload)["priority"] == 7  # the original message, for a replay later


def test_a_transient_failure_is_retried_until_clickhouse_accepts(store, tmp_path):
    switch = tmp_path / "chaos"
    switch.write_text("refuse")
    writer = fast_writer(store, chaos=ChaosSwitch(switch))

    async def scenario():
        task = asyncio.create_task(deliver(writer, TWEETS, [tweet(i) for i in range(50)]))
        await asyncio.sleep(0.5)
        assert not task.done()                      # held, not dropped, not dead-lettered
        assert metrics.SINK_BLOCKED.labels(TWEETS.table)._value.get() == 1
        assert metrics.SINK_PENDING_ROWS.labels(TWEETS.table)._value.get() == 50
        switch.unlink()
        return await asyncio.wait_for(task, 5)

    delivery = asyncio.run(scenario())
    assert (delivery.inserted, delivery.dead_lettered) == (50, 0)
    assert metrics.SINK_BLOCKED.labels(TWEETS.table)._value.get() == 0
    assert count(store, "SELECT count() FROM dallosh.tweets") == 50
    assert count(store, "SELECT count() FROM dallosh.dlq") == 0


def test_a_missing_table_is_not_blamed_on_the_rows(store):
    """A deployment problem (here: no such table) must not dead-letter every row."""
    missing = TableSpec(table="dallosh.no_such_table", record_type=ClassifiedTweet,
                        columns=TWEETS.columns)

    async def scenario():
        task = asyncio.create_task(deliver(fast_writer(store), missing, [tweet(1)]))
        await asyncio.sleep(0.5)
        still_retrying = not task.done()
        task.cancel()
        return still_retrying

    assert asyncio.run(scenario())
    assert count(store, "SELECT count() FROM dallosh.dlq") == 0


def test_error_classification():
    from clickhouse_connect.driver.exceptions import DatabaseError, DataError, OperationalError
    assert is_row_error(DataError("Unable to create native array for column `p`"))
    assert is_row_error(DatabaseError("Code: 469. DB::Exception: Constraint `x` ... (VIOLATED_CONSTRAINT)"))
    assert not is_row_error(DatabaseError("Code: 252. DB::Exception: Too many parts (TOO_MANY_PARTS)"))
    assert not is_row_error(DatabaseError("Code: 241. DB::Exception: Memory limit exceeded"))
    assert not is_row_error(OperationalError("Error HTTPConnectionPool: connection refused"))
    assert not is_row_error(TimeoutError())


def test_dedup_token_depends_on_content_and_table():
    a, b = [b"x", b"y"], [b"xy"]
    assert dedup_token("t", a) == dedup_token("t", list(a))
    assert dedup_token("t", a) != dedup_token("t", b)   # length-prefixed, no ambiguity
    assert dedup_token("t", a) != dedup_token("u", a)
