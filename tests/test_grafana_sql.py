"""Every ClickHouse query of the committed dashboards and alert rules, run on the real
schema (chdb) after a real replay of the bundled sample, with the plugin's macros
expanded as grafana-clickhouse-datasource does: each returns the columns its panel
expects, and rows where the demo guarantees them."""

from __future__ import annotations

import contextlib

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from stream_app.dashboards import queries
from stream_app.dashboards.macros import expand
from stream_app.storage.clickhouse import store_session
from tests.replayed_store import ReplayedStore, replayed_store

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
RULES_FILE = ROOT / "grafana" / "provisioning" / "alerting" / "rules.yaml"
BY_SQL = {query.sql: query for query in queries.ALL}
PANEL_INTERVAL_S = 300  # what Grafana picks for a one-day range on a wide panel


def committed_panel_queries() -> list[tuple[str, str, dict[str, str]]]:
    """(dashboard/panel, rawSql, dashboard variables) of every ClickHouse target."""
    found = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        variables = {v["name"]: str(v.get("query", "")) for v in
                     dashboard.get("templating", {}).get("list", [])}
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                if target.get("datasource", {}).get("uid") == "dallosh-clickhouse":
                    found.append((f"{path.stem}/{panel['title']}", target["rawSql"], variables))
    return found


def committed_rule_queries() -> list[tuple[str, str, int]]:
    """(rule title, rawSql, relative 'from' seconds) of every ClickHouse alert query."""
    found = []
    for group in yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))["groups"]:
        for rule in group["rules"]:
            for data in rule["data"]:
                if data["datasourceUid"] == "dallosh-clickhouse":
                    found.append((rule["title"], data["model"]["rawSql"],
                                  data["relativeTimeRange"]["from"]))
    return found


PANELS = committed_panel_queries()
RULES = committed_rule_queries()


@pytest.fixture(scope="module")
def store(tmp_path_factory, kafka_bootstrap) -> ReplayedStore:
    return replayed_store(tmp_path_factory.getbasetemp() / "replayed-demo", kafka_bootstrap)


@pytest.fixture(scope="module")
def demo_range(store) -> tuple[datetime, datetime]:
    """The replayed day as a dashboard time range (whole minutes around the data)."""
    with store_session(store.settings.clickhouse_dsn) as client:
        low, high = client.query(
            "SELECT min(created_at), max(created_at) FROM dallosh.tweets FINAL").result_rows[0]
    low, high = (t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t for t in (low, high))
    return low - timedelta(minutes=1), high + timedelta(minutes=1)


def run(store: ReplayedStore, sql: str):
    with store_session(store.settings.clickhouse_dsn) as client:
        return client.query(sql)


def columns(store: ReplayedStore, sql: str) -> tuple[str, ...]:
    """Result columns even when there are no rows (DESCRIBE of the query)."""
    return tuple(row[0] for row in run(store, f"DESCRIBE ({sql})").result_rows)


def panel_range(name: str, demo_range: tuple[datetime, datetime]) -> tuple[datetime, datetime]:
    """Tweets carry event time (the replayed day, what an analyst picks in the time
    picker); the provider-call ledger is stamped when the request ran (now)."""
    if name.startswith("dallosh-finops/"):
        now = datetime.now(timezone.utc)
        return now - timedelta(days=7), now
    return demo_range


def test_every_clickhouse_panel_and_rule_query_is_known_with_its_expectations():
    assert len(PANELS) >= 13 and RULES
    for name, sql, *_ in PANELS + RULES:
        assert sql in BY_SQL, f"{name}: its SQL is not in stream_app/dashboards/queries.py"
    assert {sql for _, sql, _ in PANELS} | {sql for _, sql, _ in RULES} == set(BY_SQL), \
        "a query of queries.py is used by no panel or rule"


def test_time_series_read_the_rollup_not_raw_tweets():
    for name, sql, _ in PANELS:
        if BY_SQL[sql].time_series and "tweets" in sql and "provider_calls" not in sql:
            assert queries.ROLLUP in sql and "dallosh.tweets " not in sql, name


@pytest.mark.parametrize("name,sql,variables", PANELS, ids=[p[0] for p in PANELS])
def test_panel_query_runs_on_the_replayed_store(store, demo_range, name, sql, variables):
    expected = BY_SQL[sql]
    expanded = expand(sql, *panel_range(name, demo_range), PANEL_INTERVAL_S, variables)
    assert columns(store, expanded) == expected.columns, name
    result = run(store, expanded)
    if expected.demo_has_rows:
        assert result.result_rows, f"{name}: no rows after the demo replay"
    if expected.time_series:
        assert result.column_names[0] == "time"
        times = [row[0] for row in result.result_rows]
        assert all(isinstance(t, (datetime,)) for t in times), f"{name}: time is not a DateTime"
        assert times == sorted(times), f"{name}: a time series must be sorted by time"
        for row in result.result_rows:
            assert all(isinstance(v, (int, float)) for v in row[1:]
                       if not isinstance(v, str)), f"{name}: non-numeric value {row}"


def test_wall_figures_agree_with_the_replay(store, demo_range):
    """The rollup the wall reads counts each stored tweet once, and the outage shows."""
    stored = store.demo.summary.stored

    def rows(query):
        return run(store, expand(query.sql, *demo_range, PANEL_INTERVAL_S)).result_rows

    assert sum(row[1] for row in rows(queries.VOLUME)) == stored
    negatives = store.demo.summary.by_sentiment["negative"]
    assert sum(row[2] for row in rows(queries.VOLUME)) == negatives
    assert rows(queries.LOCATIONS)[0][0] == "Bordeaux"
    topics = rows(queries.TOP_TOPICS)
    assert dict(topics) == store.demo.summary.by_topic or \
        len(topics) == 10
    high = store.demo.summary.by_priority.get(0, 0)
    (net,) = rows(queries.NET_SENTIMENT)[0]
    positives = store.demo.summary.by_sentiment.get("positive", 0)
    assert net == pytest.approx((positives - negatives) / stored)
    latest = rows(queries.LATEST_HIGH_PRIORITY)
    assert len(latest) == min(25, high) and all(row[1] for row in latest), "team missing"


def alert_rule_at(store: ReplayedStore, sql: str, from_s: int, at: datetime):
    expanded = expand(sql, at - timedelta(seconds=from_s), at, 60)
    assert columns(store, expanded) == BY_SQL[sql].columns
    return run(store, expanded)


@contextlib.contextmanager
def live_copy_of_the_demo_alerts(store: ReplayedStore):
    """The demo's alerts as if the live stream had raised them, removed afterwards."""
    with store_session(store.settings.clickhouse_dsn) as client:
        # (A subquery: ClickHouse would read `run_id` in a WHERE beside REPLACE as the alias.)
        client.command("INSERT INTO dallosh.alerts SELECT * REPLACE ('live' AS run_id, "
                       "concat('live-', alert_id) AS alert_id) FROM "
                       "(SELECT * FROM dallosh.alerts FINAL WHERE run_id != 'live')")
    try:
        yield
    finally:
        with store_session(store.settings.clickhouse_dsn) as client:
            client.command("ALTER TABLE dallosh.alerts DELETE WHERE run_id = 'live' "
                           "SETTINGS mutations_sync = 1")


def bordeaux_alert(store: ReplayedStore) -> tuple[datetime, datetime]:
    with store_session(store.settings.clickhouse_dsn) as client:
        rows = client.query("SELECT first_seen, resolved_at FROM dallosh.alerts FINAL "
                            "WHERE location = 'Bordeaux' AND status != 'withdrawn'").result_rows
    assert len(rows) == 1, f"the demo should raise one Bordeaux alert, got {rows}"
    return tuple(t.replace(tzinfo=timezone.utc) if t and t.tzinfo is None else t for t in rows[0])


@pytest.mark.parametrize("name,sql,from_s", RULES, ids=[r[0] for r in RULES])
def test_alert_rule_pages_while_the_demo_incident_is_open_and_not_after(store, name, sql, from_s):
    """Evaluated as Grafana would have during the replayed day (alerts carry event
    time): a replay's alert never pages (it is an analysis of the past); the same
    incident on the live timeline fires during the incident, with example tweets, and is
    quiet once it is resolved."""
    first_seen, resolved_at = bordeaux_alert(store)
    assert alert_rule_at(store, sql, from_s, first_seen + timedelta(minutes=5)).result_rows == []
    with live_copy_of_the_demo_alerts(store):
        during = alert_rule_at(store, sql, from_s, first_seen + timedelta(minutes=5))
        after = alert_rule_at(store, sql, from_s, resolved_at + timedelta(minutes=1))
        now = alert_rule_at(store, sql, from_s, datetime.now(timezone.utc))
    rows = [dict(zip(during.column_names, row)) for row in during.result_rows]
    assert [r["location"] for r in rows] == ["Bordeaux"], rows
    numeric = [c for c, t in zip(during.column_names, during.column_types)
               if t.python_type in (int, float)]
    assert numeric == ["open"], "Grafana needs exactly one numeric column: the value"
    assert rows[0]["examples"].count(" | ") >= 1, "the message carries example tweets"
    # The page explains itself: summary, representative complaints (scrubbed), terms, mixes.
    assert rows[0]["summary"].startswith("Bordeaux: ") and rows[0]["terms"]
    assert "negative " in rows[0]["sentiments"] and rows[0]["topics"]
    assert resolved_at is not None
    assert after.result_rows == []
    assert now.result_rows == []


def test_the_map_places_bordeaux_with_its_complaints_and_incident(store, demo_range):
    """The wall's map: each location at the gazetteer's coordinates, its complaints as
    ClickHouse counts them, and the demo's Bordeaux incident (resolved by the end of the
    day; firing, with its level, while it ran)."""
    from stream_app.clean.location import COORDINATES
    low, high = demo_range

    def rows(at: datetime):
        result = run(store, expand(queries.MAP.sql, low, at, PANEL_INTERVAL_S))
        return {row[0]: dict(zip(result.column_names, row)) for row in result.result_rows}

    day = rows(high)
    assert next(iter(day)) == "Bordeaux"                       # the most complaints first
    with store_session(store.settings.clickhouse_dsn) as client:
        stored = dict(client.query(
            "SELECT location, countIf(sentiment = 'negative') FROM dallosh.tweets FINAL "
            "WHERE location != '' GROUP BY location").result_rows)
    for location, row in day.items():
        assert (row["latitude"], row["longitude"]) == COORDINATES[location]
        assert row["complaints"] == stored[location]
    assert set(day) == set(stored)
    bordeaux = day["Bordeaux"]
    assert (bordeaux["incident"], bordeaux["incident_level"]) == ("resolved", 0)
    assert bordeaux["summary"].startswith("Bordeaux: ")
    assert all(r["incident"] == "calm" for name, r in day.items() if name != "Bordeaux")
    first_seen, _ = bordeaux_alert(store)
    during = rows(first_seen + timedelta(minutes=10))["Bordeaux"]
    assert during["incident"] == "firing" and during["incident_level"] >= 1


def test_the_wall_alerts_table_shows_the_explanation(store, demo_range):
    result = run(store, expand(queries.ALERTS.sql, *demo_range, PANEL_INTERVAL_S))
    (row,) = [dict(zip(result.column_names, r)) for r in result.result_rows
              if r[result.column_names.index("location")] == "Bordeaux"]
    assert row["summary"].startswith("Bordeaux: ") and row["terms"] and row["representative"]
    assert row["people"] > 0 and row["severity_level"] >= 1
    assert row["sentiments"].startswith("negative ")
