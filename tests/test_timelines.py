"""A run is a timeline, tested the way an analyst meets it: `dallosh demo` and replays of
other dumps into one installation (real broker, real worker processes, chdb).

- Replaying a dump of another year between two demos leaves the demo's alerts exactly as
  they were (before: `Alerts: 4`, the Bordeaux incident twice plus two phantom national
  alerts), and that dump gets its own alert.
- The same dump replayed into two fresh data dirs gives the same labels, tiers, dedup
  decisions and alerts (before: rules/dedup 2035/949, 2025/959, 2044/940 on three runs).
"""

from __future__ import annotations

import asyncio

import pytest

from connectors.csv_replay import ReplayOptions, replay_file
from stream_app.demo import WorkerProcess, run_demo, wait_until_drained
from stream_app.storage.clickhouse import store_session
from tests.conftest import isolated_settings
from tests.test_signals_replay import write_dump as write_lyon_2024_dump

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# What must be identical between two replays of one dump (ids, labels, tier, dedup).
TWEET_FACTS = ("SELECT id, sentiment, priority, topic, team, tier, provider, dedup_kind, duplicate_of, "
               "location FROM dallosh.tweets FINAL WHERE run_id = {run:String} ORDER BY id")


def alert_facts(alerts: list[dict]) -> list[tuple]:
    """An alert as the on-call reads it (not its ids, which name the run)."""
    return [(a["severity"], a["location"], a["key"], a["status"], a["first_seen"], a["resolved_at"],
             a["observed"], a["expected"], tuple(a["detectors"]), a["message"]) for a in alerts]


def tweet_facts(settings, run_id: str) -> list[tuple]:
    with store_session(settings.clickhouse_dsn) as client:
        return client.query(TWEET_FACTS, parameters={"run": run_id}).result_rows


@pytest.fixture(scope="module")
def installation(tmp_path_factory, kafka_bootstrap):
    """One installation and the demo replayed into it once."""
    folder = tmp_path_factory.mktemp("timelines")
    settings = isolated_settings(folder / "data", kafka_bootstrap)
    first = run_demo(settings, say=print, timeout_s=300)
    # Read now: a later replay of the same ids replaces these rows (one row per tweet id).
    return folder, settings, first, tweet_facts(settings, first.replay.run_id)


def test_a_dump_of_another_year_leaves_the_demo_alerts_unchanged(installation):
    folder, settings, first, _ = installation
    assert [(a["location"], a["status"]) for a in first.alerts] == [("Bordeaux", "resolved")]

    other = folder / "lyon_2024.csv.gz"
    write_lyon_2024_dump(other)             # two years before the sample, its own Lyon outage
    worker = WorkerProcess(settings)
    try:
        replay = asyncio.run(replay_file(other, settings, ReplayOptions(show_progress=False)))
        asyncio.run(wait_until_drained(settings, worker, print, timeout_s=300))
    finally:
        worker.stop()

    again = run_demo(settings, say=print, timeout_s=300)
    assert again.replay.run_id != first.replay.run_id
    assert alert_facts(again.alerts) == alert_facts(first.alerts)
    from stream_app.summary import run_alerts
    with store_session(settings.clickhouse_dsn) as client:
        lyon = run_alerts(client, replay.run_id)
        first_again = run_alerts(client, first.replay.run_id)
    assert [(a["location"], a["status"]) for a in lyon] == [("Lyon", "firing")]
    assert alert_facts(first_again) == alert_facts(first.alerts)   # the first run's, untouched


def test_the_same_dump_replayed_into_a_fresh_installation_gives_the_same_result(installation,
                                                                                  tmp_path,
                                                                                  kafka_bootstrap):
    _, settings, first, first_tweets = installation
    assert len(first_tweets) == first.summary.stored
    fresh = isolated_settings(tmp_path / "data", kafka_bootstrap)
    second = run_demo(fresh, say=print, timeout_s=300)
    assert second.summary.by_tier == first.summary.by_tier
    assert second.summary.clean_decisions == first.summary.clean_decisions
    assert tweet_facts(fresh, second.replay.run_id) == first_tweets
    assert alert_facts(second.alerts) == alert_facts(first.alerts)
