"""A brand unlike the shipped ones (tests/brands/bank.yaml: cards, loans, app_login,
fraud, other) classifies into ITS names end to end: a dump replayed into Kafka, a real
worker process (clean, classify with the degraded rules, sink), rows in ClickHouse."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import pytest

from connectors.csv_replay import replay_file
from stream_app.clean.relevance import load_brand
from stream_app.demo import WorkerProcess, wait_until_drained
from stream_app.storage.clickhouse import store_session
from tests.conftest import isolated_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BANK = Path(__file__).parent / "brands" / "bank.yaml"
# Tweets written for this test (none is one of the brand file's examples).
TWEETS = [
    ("@AcmeBank my debit card was declined twice today, awful", "cards"),
    ("@AcmeBank the banking app crashes on login since yesterday", "app_login"),
    ("@AcmeBank scam payments keep showing on my account, terrible", "fraud"),
    ("@AcmeBank any news on my mortgage application? waiting for weeks", "loans"),
    ("@AcmeBank you are the best, have a nice weekend", "other"),
    ("@AcmeBank cannot log in, password reset link broken", "app_login"),
    ("@AcmeBank contactless not working at the shop", "cards"),
    ("@AcmeBank the overdraft fee on my loan is a rip off", "loans"),
]


def _dump(path: Path) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "created_at", "full_text", "screen_name", "lang"])
        for i, (text, _) in enumerate(TWEETS):
            writer.writerow([str(7_100_000_000_000_000_000 + i), f"2026-03-12T10:{i:02d}:00Z",
                             text, f"customer{i}", "en"])
    return path


def test_a_custom_brand_classifies_into_its_own_topics_through_a_worker(tmp_path, kafka_bootstrap):
    settings = isolated_settings(tmp_path / "data", kafka_bootstrap, brand_file=str(BANK))
    taxonomy = load_brand(settings).taxonomy
    asyncio.run(replay_file(_dump(tmp_path / "bank.csv"), settings))
    worker = WorkerProcess(settings)
    try:
        asyncio.run(wait_until_drained(settings, worker, print, timeout_s=180))
    finally:
        worker.stop()
    with store_session(settings.clickhouse_dsn) as client:
        rows = client.query("SELECT text, topic, team, tier FROM dallosh.tweets FINAL").result_rows
    assert len(rows) == len(TWEETS)
    for text, topic, team, tier in rows:
        assert topic in taxonomy.topic_names, (text, topic)
        assert team == taxonomy.team_of(topic), (text, topic, team)
        assert tier == "degraded"  # the rules tier: local model off, no provider key
    by_text = {text: topic for text, topic, _, _ in rows}
    assert by_text == dict(TWEETS)
