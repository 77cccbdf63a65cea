"""A real Prometheus server (Debian package `prometheus`) scraping a real worker's
/metrics: the operational alert rules load and evaluate, every query of the Operations
dashboard runs (and returns data where the traffic guarantees it), and stopping the
worker fires DalloshWorkerDown — the series Grafana relays to on-call."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from aiokafka import AIOKafkaProducer

from stream_app.dashboards.operations import all_exprs
from stream_app.demo import WorkerProcess, wait_until_drained
from stream_app.kafka_admin import ensure_topics, pipeline_topics
from tests.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="prometheus not installed (apt-get install prometheus; `make test-tools` does it)")]

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "rules" / "dallosh.rules.yml"
# Queries that must return series once the worker has processed traffic.
MUST_HAVE_DATA = ("dallosh_messages_in_total", "dallosh_consumer_lag_messages",
                  "dallosh_batch_size_sum", "dallosh_classified_total",
                  "dallosh_sink_insert_seconds_bucket", "up{")


def api(port: int, path: str, **params: str) -> dict:
    url = f"http://127.0.0.1:{port}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]


def wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


async def produce(settings, n: int) -> None:
    await ensure_topics(settings.bootstrap_servers, pipeline_topics(settings), settings.partitions)
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await producer.start()
    try:
        for i in range(n):
            tweet = {"id": f"p{i}", "text": f"@free panne fibre à Lille depuis ce matin ({i})",
                     "run_id": "prom", "created_at": "2026-03-12T10:00:00Z", "source": "test",
                     "ingested_at": "2026-03-12T10:00:00Z"}
            await producer.send_and_wait(settings.topic_raw, json.dumps(tweet).encode(),
                                         key=tweet["id"].encode())
        await producer.send_and_wait(settings.topic_raw, b"{broken", key=b"bad")
    finally:
        await producer.stop()


@pytest.fixture
def prometheus(tmp_path, pipeline_settings):
    """Prometheus scraping the test worker every second; rules with `for: 0s` so an
    alert fires on the first failed evaluation (expressions unchanged)."""
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["for"] = "0s"
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules), encoding="utf-8")
    target = f"127.0.0.1:{pipeline_settings.metrics_port}"
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "rules.yml")],
        # One `--role all` worker stands for both Compose services.
        "scrape_configs": [{"job_name": "dallosh-workers", "static_configs": [
            {"targets": [target], "labels": {"service": "worker-pipeline"}},
            {"targets": [target], "labels": {"service": "sink"}}]}],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen(["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _ready(port), 30, "Prometheus to start")
        yield port
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()


def _ready(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2).status == 200
    except OSError:
        return False


def test_prometheus_scrapes_a_worker_evaluates_the_rules_and_pages_when_it_stops(
        prometheus, pipeline_settings):
    port, settings = prometheus, pipeline_settings
    asyncio.run(produce(settings, 30))
    worker = WorkerProcess(settings)
    try:
        asyncio.run(wait_until_drained(settings, worker, print, timeout_s=120))
        wait_for(lambda: all(t["health"] == "up" for t in api(port, "targets")["activeTargets"]),
                 30, "both targets up")
        # Rate windows need a few scrapes of the processed traffic.
        wait_for(lambda: api(port, "query", query="dallosh_sink_rows_total")["result"], 30,
                 "sink metrics scraped")
        time.sleep(5)
        for expr in all_exprs():
            result = api(port, "query", query=expr.replace("$__rate_interval", "30s"))["result"]
            if any(name in expr for name in MUST_HAVE_DATA):
                assert result, f"no data for the Operations query {expr}"
        groups = wait_for(lambda: [g for g in api(port, "rules")["groups"]
                                   if all(r.get("lastEvaluation", "").startswith("20")
                                          for r in g["rules"])], 30, "rules evaluated")
        names = {r["name"] for g in groups for r in g["rules"]}
        assert {"DalloshWorkerDown", "DalloshConsumerLagHigh", "DalloshCloudTiersDown",
                "DalloshDeadLettersHigh"} <= names
        for rule in (r for g in groups for r in g["rules"]):
            assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"
            assert rule["state"] == "inactive", f"{rule['name']} fires on a healthy worker"
    finally:
        worker.stop()
    # The worker is gone: its scrapes fail, up == 0, the alert fires for both services.
    def firing_for_both() -> list:
        # The two targets are scraped at different moments: wait until both fire.
        result = api(port, "query", query='ALERTS{alertname="DalloshWorkerDown",alertstate="firing"}')["result"]
        return result if len({series["metric"]["service"] for series in result}) == 2 else []

    firing = wait_for(firing_for_both, 60, "DalloshWorkerDown to fire for both services")
    assert {series["metric"]["service"] for series in firing} == {"worker-pipeline", "sink"}
    assert all(series["metric"]["severity"] == "critical" for series in firing)
