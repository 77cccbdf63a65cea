import json

import pytest

from stream_app.records import ClassifiedTweet, DeadLetter, ProviderCall
from stream_app.sink.agent import rows_and_rejects
from stream_app.sink.tables import DLQ, PROVIDER_CALLS, TWEETS
from stream_app.storage import clickhouse as ch


@pytest.fixture
def store(tmp_path):
    with ch.store_session(f"chdb://{tmp_path / 'ch'}") as client:
        yield client


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
    payloads = [tweet(1).to_json(), tweet(2).to_json(), tweet(1, sentiment="neutral", version=2).to_json()]
    rows, rejects = rows_and_rejects(TWEETS, payloads)
    assert rejects == []
    store.insert(TWEETS.table, rows, column_names=list(TWEETS.columns))
    result = store.query("SELECT id, sentiment FROM dallosh.tweets FINAL ORDER BY id").result_rows
    assert result == [("1", "neutral"), ("2", "negative")]


def test_undecodable_rows_become_sink_dead_letters():
    rows, rejects = rows_and_rejects(TWEETS, [b"{broken", json.dumps({"id": "1"}).encode()])
    assert rows == [] and len(rejects) == 2
    assert all(r.stage == "sink" and "dallosh.tweets" in r.reason for r in rejects)


def test_dlq_and_ledger_rows_insert(store):
    dead = DeadLetter.build(stage="replay", reason="missing id", payload="{}", run_id="r")
    call = ProviderCall(call_id="c1", at="2026-03-12T14:00:00Z", run_id="r", tier="degraded",
                        provider="rules", model="lexicon-v1", tweets=5)
    for spec, record in ((DLQ, dead), (PROVIDER_CALLS, call)):
        store.insert(spec.table, [spec.to_row(record.to_json())], column_names=list(spec.columns))
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
