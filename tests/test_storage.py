import asyncio
import json
from dataclasses import replace

import pytest

from stream_app.records import ClassifiedTweet, DeadLetter, ProviderCall
from stream_app.sink.agent import decode_batch, deliver
from stream_app.sink.tables import DLQ, PROVIDER_CALLS, TWEETS
from stream_app.sink.writer import ClickHouseWriter
from stream_app.storage import clickhouse as ch


@pytest.fixture
def store(tmp_path):
    with ch.store_session(f"chdb://{tmp_path / 'ch'}") as client:
        yield client


def insert(store, spec, *records) -> None:
    """Through the sink's own path: checked JSON lines, one insert."""
    delivery = asyncio.run(deliver(ClickHouseWriter(store), spec, [r.to_json() for r in records]))
    assert delivery.dead_lettered == 0


def tweet(i: int, **changes) -> ClassifiedTweet:
    base = dict(id=str(i), text="panne", created_at="2026-03-12T14:00:00Z", run_id="r",
                source=f"f:{i}", ingested_at="2026-03-12T14:00:01Z", text_clean="panne", lang="fr",
                location="Bordeaux", region_code="FR-NAQ", sentiment="negative", priority=0,
                topic="outage", team="network_ops", confidence=0.8, tier="degraded",
                provider="rules", model="lexicon-v1", reason="r",
                classified_at="2026-03-12T14:00:02Z", version=1)
    return ClassifiedTweet(**(base | changes))


def test_migrations_create_tables_and_are_idempotent(store):
    tables = {r[0] for r in store.query("SHOW TABLES FROM dallosh").result_rows}
    assert {"tweets", "alerts", "provider_calls", "dlq", "schema_migrations"} <= tables
    assert ch.apply_migrations(store) == []  # second run applies nothing


def test_edited_migration_is_refused(store):
    store.command("ALTER TABLE dallosh.schema_migrations UPDATE checksum = 'x' WHERE version = 1 "
                  "SETTINGS mutations_sync = 1")
    with pytest.raises(ch.StorageError, match="was changed after it was applied"):
        ch.apply_migrations(store)


def test_sink_rows_insert_and_replacing_merge_tree_keeps_latest(store):
    insert(store, TWEETS, tweet(1), tweet(2), tweet(1, sentiment="neutral", version=2))
    result = store.query("SELECT id, sentiment FROM dallosh.tweets FINAL ORDER BY id").result_rows
    assert result == [("1", "neutral"), ("2", "negative")]


def test_undecodable_rows_become_sink_dead_letters(store):
    row_format = asyncio.run(ClickHouseWriter(store).row_format(TWEETS))
    decoded = decode_batch(row_format, [b"{broken", json.dumps({"id": "1"}).encode(), b"[1]",
                                        tweet(1, priority=-1).to_json(),
                                        tweet(2, mentions=["free", 3]).to_json(),
                                        tweet(3, created_at="yesterday").to_json()])
    assert decoded.rows == []
    reasons = [r.reason for r in decoded.undecodable]
    assert all(r.stage == "sink" for r in decoded.undecodable)
    assert reasons[0].startswith("cannot build a dallosh.tweets row: not JSON")
    assert reasons[1] == "cannot build a dallosh.tweets row: missing field 'created_at'"
    assert reasons[2] == "cannot build a dallosh.tweets row: expected a JSON object, got list"
    assert "column `priority` (UInt8) cannot hold -1" in reasons[3]
    assert "column `mentions` (Array(String)) cannot hold ['free', 3]" in reasons[4]
    assert "column `created_at` (DateTime64(3, 'UTC')) cannot hold 'yesterday'" in reasons[5]


def test_optional_fields_a_message_lacks_get_the_record_defaults(store):
    full = json.loads(tweet(1).to_json())
    for optional in ("author", "mentions", "retweet_count", "is_retweet"):
        del full[optional]
    row_format = asyncio.run(ClickHouseWriter(store).row_format(TWEETS))
    row = row_format.row(json.dumps(full).encode())
    assert row.record["mentions"] == [] and row.record["retweet_count"] == 0
    assert row.line != row.payload and json.loads(row.line)["is_retweet"] is False
    complete = tweet(2).to_json()
    assert row_format.row(complete).line is complete   # the usual case: the message as it is


def test_dlq_and_ledger_rows_insert(store):
    dead = DeadLetter.build(stage="replay", reason="missing id", payload="{}", run_id="r")
    call = ProviderCall(call_id="c1", at="2026-03-12T14:00:00Z", run_id="r", tier="degraded",
                        provider="rules", model="lexicon-v1", tweets=5)
    for spec, record in ((DLQ, dead), (PROVIDER_CALLS, call)):
        insert(store, spec, record)
    assert store.query("SELECT reason FROM dallosh.dlq").result_rows == [("missing id",)]
    assert store.query("SELECT tweets FROM dallosh.provider_calls").result_rows == [(5,)]


def test_second_process_on_same_embedded_store_gets_a_clear_error(tmp_path):
    import subprocess
    import sys
    path = tmp_path / "ch"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys,time; from stream_app.storage.clickhouse import open_store; "
         f"open_store('chdb://{path}'); print('ready', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(ch.StorageError, match=r"open in another process \(pid \d+\)"):
            ch.connect(f"chdb://{path}")
    finally:
        holder.kill()
        holder.wait()
    with ch.store_session(f"chdb://{path}") as client:  # free again once the holder is gone
        assert client.query("SELECT count() FROM dallosh.tweets").result_rows == [(0,)]


def test_store_session_releases_the_path_for_the_next_process(tmp_path):
    import subprocess
    import sys
    dsn = f"chdb://{tmp_path / 'ch'}"
    with ch.store_session(dsn):
        pass
    opened = subprocess.run([sys.executable, "-c", "from stream_app.storage.clickhouse import "
                             f"store_session\nwith store_session('{dsn}'): print('ok')"],
                            capture_output=True, text=True)
    assert opened.stdout.strip() == "ok", opened.stderr


def test_dsn_validation_and_redaction():
    with pytest.raises(ch.StorageError, match="expected chdb:///path"):
        ch.connect("postgres://u:secret@h/db")
    assert ch.redact_dsn("http://u:secret@h:8123/dallosh") == "http://u:***@h:8123/dallosh"
    with pytest.raises(ch.StorageError) as raised:
        ch.connect("postgres://u:secret@h/db")
    assert "secret" not in str(raised.value)


# ----------------------------------------------------------------- 0003: layout, rollup, retention

def test_migration_0003_keeps_the_rows_of_an_older_store(tmp_path, monkeypatch):
    dsn = f"chdb://{tmp_path / 'ch'}"
    every = ch.load_migrations()
    monkeypatch.setattr(ch, "load_migrations", lambda: [m for m in every if m.version < 3])
    with ch.store_session(dsn) as client:     # an installation at migration 0002, with data
        at_0002 = replace(TWEETS, columns=tuple(c for c in TWEETS.columns if c != "text_scrubbed"))
        insert(client, at_0002, tweet(1), tweet(2), tweet(1, sentiment="neutral", version=2))
    monkeypatch.setattr(ch, "load_migrations", lambda: every)
    with ch.store_session(dsn) as client:
        engine = client.query("SELECT engine_full FROM system.tables WHERE database = 'dallosh' "
                              "AND name = 'tweets'").result_rows[0][0]
        assert "PARTITION BY toYYYYMM(created_at) ORDER BY (created_at, id)" in engine
        assert "non_replicated_deduplication_window = 1000" in engine
        assert client.query("SELECT id, sentiment FROM dallosh.tweets FINAL ORDER BY id").result_rows \
            == [("1", "neutral"), ("2", "negative")]
        # the rollup was backfilled from the latest version of each tweet only
        assert client.query("SELECT sentiment, sum(tweets) FROM dallosh.tweets_by_minute_v "
                            "GROUP BY sentiment ORDER BY sentiment").result_rows \
            == [("negative", 1), ("neutral", 1)]


def test_rollup_counts_a_redelivered_tweet_once_and_says_what_it_overcounts(store):
    insert(store, TWEETS, tweet(1), tweet(2), tweet(3, created_at="2026-03-12T14:01:30Z"))
    insert(store, TWEETS, tweet(1), tweet(2))      # redelivered after a crash: same cells
    insert(store, TWEETS, tweet(2, version=2))     # re-classified, same labels: same cell
    view = "SELECT minute, sentiment, tweets FROM dallosh.tweets_by_minute_v ORDER BY minute, sentiment"
    assert [(m.strftime("%H:%M"), s, n) for m, s, n in store.query(view).result_rows] == \
        [("14:00", "negative", 2), ("14:01", "negative", 1)]
    insert(store, TWEETS, tweet(1, sentiment="neutral", version=3))  # into another cell
    exact = store.query("SELECT sentiment, count() FROM dallosh.tweets FINAL "
                        "GROUP BY sentiment ORDER BY sentiment").result_rows
    rollup = store.query("SELECT sentiment, sum(tweets) FROM dallosh.tweets_by_minute_v "
                         "GROUP BY sentiment ORDER BY sentiment").result_rows
    assert exact == [("negative", 2), ("neutral", 1)]
    assert rollup == [("negative", 3), ("neutral", 1)]   # the documented over-count: id 1 twice
    columns = store.query("DESCRIBE TABLE dallosh.tweets_by_minute_v").result_rows
    assert [(c[0], c[1]) for c in columns] == [
        ("minute", "DateTime('UTC')"), ("topic", "LowCardinality(String)"),
        ("sentiment", "LowCardinality(String)"), ("priority", "UInt8"),
        ("location", "LowCardinality(String)"), ("team", "LowCardinality(String)"),
        ("tweets", "UInt64")]


def test_final_and_argmax_agree_before_any_merge(store):
    for version in (1, 2, 3):   # three inserts = three parts, nothing merged yet
        insert(store, TWEETS, *[tweet(i, version=version, priority=version % 3) for i in range(50)])
    assert store.query("SELECT count() FROM dallosh.tweets").result_rows == [(150,)]
    final = store.query("SELECT priority, count() FROM dallosh.tweets FINAL GROUP BY priority").result_rows
    argmax = store.query("SELECT p, count() FROM (SELECT argMax(priority, version) AS p "
                         "FROM dallosh.tweets GROUP BY id) GROUP BY p").result_rows
    assert final == argmax == [(0, 50)]


def test_retention_is_applied_from_settings_and_only_when_it_changes(tmp_path):
    from stream_app.settings import load_settings
    from stream_app.storage.retention import Retention, apply_retention, current_ttl
    dsn = f"chdb://{tmp_path / 'ch'}"
    settings = load_settings({"tweets_retention_days": "30", "dlq_retention_days": "0"}, environ={})
    retention = Retention.from_settings(settings)
    client = ch.open_store(dsn, retention)
    try:
        assert current_ttl(client, "dallosh", "tweets") == "toDateTime(stored_at) + toIntervalDay(30)"
        assert current_ttl(client, "dallosh", "tweets_by_minute") == \
            "toDateTime(last_stored) + toIntervalDay(730)"
        assert current_ttl(client, "dallosh", "provider_calls") == "toDateTime(at) + toIntervalDay(400)"
        assert current_ttl(client, "dallosh", "dlq") == ""          # 0 days: kept forever
        assert apply_retention(client, retention) == []              # unchanged: no ALTER
        assert apply_retention(client, Retention(7, 730, 365, 400, 0)) == ["tweets", "clean_decisions"]
        assert apply_retention(client, Retention(0, 730, 365, 400, 0)) == ["tweets", "clean_decisions"]
        assert current_ttl(client, "dallosh", "tweets") == ""
    finally:
        ch.close_store(client, dsn)


def test_expired_rows_go_and_recent_ones_stay(store):
    from stream_app.storage.retention import Retention, apply_retention
    insert(store, TWEETS, tweet(1), tweet(2))
    store.command("ALTER TABLE dallosh.tweets UPDATE stored_at = now64(3) - INTERVAL 40 DAY "
                  "WHERE id = '1' SETTINGS mutations_sync = 1")
    apply_retention(store, Retention(30, 730, 365, 400, 90))
    store.command("OPTIMIZE TABLE dallosh.tweets FINAL")
    assert store.query("SELECT id FROM dallosh.tweets").result_rows == [("2",)]


def test_an_alert_of_an_old_replayed_dump_is_kept(store):
    """Alerts carry event time (a 2024 dump's alert is dated 2024); retention must count
    from when the alert was stored, or a replay's alerts vanish on insert."""
    from stream_app.records import Alert
    from stream_app.sink.tables import ALERTS
    from stream_app.storage.retention import Retention, apply_retention
    apply_retention(store, Retention(30, 730, 30, 400, 90))
    old = "2024-02-06T11:05:00.000Z"
    alert = Alert(alert_id="a1", detector="threshold", key="location:Lyon", location="Lyon",
                  severity="critical", status="firing", window_start=old, window_end=old,
                  observed=1.0, expected=0.3, score=3.3, example_ids=["1"], message="m",
                  first_seen=old, updated_at=old, resolved_at=None, version=1)
    insert(store, ALERTS, alert)
    store.command("OPTIMIZE TABLE dallosh.alerts FINAL")
    assert store.query("SELECT alert_id FROM dallosh.alerts").result_rows == [("a1",)]
