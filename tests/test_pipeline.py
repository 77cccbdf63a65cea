"""End to end on real infrastructure: Kafka broker, `dallosh worker` processes, chdb."""

import asyncio
import json
import time
import urllib.request

import pytest
from aiokafka import AIOKafkaProducer

from stream_app.demo import WorkerProcess, run_demo, wait_until_drained
from stream_app.kafka_admin import ensure_topics, pipeline_topics
from stream_app.storage.clickhouse import store_session

pytestmark = pytest.mark.integration

SAMPLE_ROWS, SAMPLE_BAD_ROWS = 3000, 16  # documented in connectors/samples/README.md


def read_metrics(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def scalar(client, sql: str):
    return client.query(sql).result_rows[0][0]


def test_demo_on_bundled_sample_stores_every_tweet_exactly_once_and_reruns(pipeline_settings):
    first = run_demo(pipeline_settings, say=print, timeout_s=240)
    assert first.replay.rows_read == SAMPLE_ROWS
    assert first.summary.dead_lettered == SAMPLE_BAD_ROWS
    assert first.summary.stored == SAMPLE_ROWS - SAMPLE_BAD_ROWS
    assert first.reconciles
    assert first.summary.top_locations and next(iter(first.summary.top_locations)) == "Bordeaux"
    good = SAMPLE_ROWS - SAMPLE_BAD_ROWS
    with store_session(pipeline_settings.clickhouse_dsn) as client:
        # Without FINAL: each tweet was inserted exactly once (no retried/doubled insert).
        assert client.query("SELECT count(), uniqExact(id) FROM dallosh.tweets").result_rows == \
            [(good, good)]
        # The clean stage's decisions are logged; the sample's 195 retweets and 108
        # support-account replies (connectors/samples/README.md) are among them.
        decisions = dict(client.query(
            "SELECT decision, count() FROM dallosh.clean_decisions FINAL WHERE run_id = {r:String} "
            "GROUP BY decision", parameters={"r": first.replay.run_id}).result_rows)
        assert decisions["retweet"] == 195 and decisions["brand_own"] == 108
        assert first.summary.clean_decisions["retweet (tagged)"] == 195
        # Copies reuse their original's classification instead of a model call.
        copies = client.query(
            "SELECT count(), countIf(c.sentiment = o.sentiment AND c.topic = o.topic) "
            "FROM dallosh.tweets AS c INNER JOIN dallosh.tweets AS o ON c.duplicate_of = o.id "
            "WHERE c.provider = 'dedup'").result_rows[0]
        assert copies[0] > 500 and copies[0] == copies[1]
        assert scalar(client, "SELECT sum(tweets) FROM dallosh.provider_calls") == good - copies[0]

    second = run_demo(pipeline_settings, say=print, timeout_s=240)  # re-running works
    assert second.replay.run_id != first.replay.run_id
    assert second.reconciles and second.summary.stored == SAMPLE_ROWS - SAMPLE_BAD_ROWS

    with store_session(pipeline_settings.clickhouse_dsn) as client:
        # The replay replaced the first run's rows rather than adding to them.
        assert scalar(client, "SELECT count() FROM dallosh.tweets FINAL") == good
        assert scalar(client, "SELECT uniqExact(run_id) FROM dallosh.tweets FINAL") == 1
        assert scalar(client, "SELECT count() FROM dallosh.dlq FINAL") == 2 * SAMPLE_BAD_ROWS
        ledger = client.query("SELECT sum(tweets), countIf(tier != 'degraded') "
                              "FROM dallosh.provider_calls").result_rows[0]
        reused = first.summary.by_tier["degraded/dedup"] + second.summary.by_tier["degraded/dedup"]
        assert ledger == (2 * good - reused, 0)  # one ledger entry per tweet a model saw


def test_malformed_messages_from_any_producer_are_dead_lettered_by_the_clean_stage(pipeline_settings):
    settings = pipeline_settings
    good = {"id": "900", "text": "Toujours pas de 4G à Lille, c'est nul", "run_id": "manual",
            "created_at": "2026-03-12T10:00:00Z", "source": "test", "ingested_at": "2026-03-12T10:00:00Z"}
    payloads = [json.dumps(good).encode(), b"{this is not json", b"\xff\xfe",
                json.dumps(good | {"id": "901", "text": ""}).encode(),
                json.dumps(good | {"id": "902", "retweet_count": "many"}).encode()]

    async def produce() -> None:
        await ensure_topics(settings.bootstrap_servers, pipeline_topics(settings), settings.partitions)
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
        await producer.start()
        try:
            for i, payload in enumerate(payloads):
                await producer.send_and_wait(settings.topic_raw, payload, key=str(i).encode())
        finally:
            await producer.stop()

    asyncio.run(produce())
    worker = WorkerProcess(settings)
    try:
        asyncio.run(wait_until_drained(settings, worker, print, timeout_s=120))
        # The lag gauge is refreshed every few seconds: wait for its first drained reading.
        lag_sample = 'dallosh_consumer_lag_messages{topic="%s"} 0.0' % settings.topic_raw
        deadline = time.monotonic() + 15
        while lag_sample not in (metrics := read_metrics(settings.metrics_port)):
            assert time.monotonic() < deadline, "consumer lag metric never exported"
            time.sleep(0.5)
    finally:
        worker.stop()
    assert 'dallosh_messages_in_total{stage="clean"} 5.0' in metrics
    assert 'dallosh_sink_rows_total{table="dallosh.tweets"} 1.0' in metrics
    assert 'dallosh_dead_letters_total{reason="invalid JSON",stage="clean"} 2.0' in metrics

    with store_session(settings.clickhouse_dsn) as client:
        assert client.query("SELECT id, location, lang FROM dallosh.tweets FINAL").result_rows == \
            [("900", "Lille", "fr")]
        reasons = sorted(r[0] for r in client.query(
            "SELECT reason FROM dallosh.dlq FINAL WHERE stage = 'clean'").result_rows)
    assert len(reasons) == 4
    assert reasons[0] == "empty text"
    assert sum(r.startswith("invalid JSON") for r in reasons) == 2
    assert any(r.startswith("schema: retweet_count") for r in reasons)


def test_demo_uses_an_onprem_openai_compatible_server_named_by_dallosh_providers(tmp_path, kafka_bootstrap):
    """The running pipeline (worker subprocess) classifies through a local
    OpenAI-compatible server (playing Ollama) named in a DALLOSH_PROVIDERS file."""
    import threading

    from tests.conftest import isolated_settings
    from tests.live_server import FakeServer
    from tests.test_cascade import PATH, model

    ready, stop, url = threading.Event(), threading.Event(), []

    def serve() -> None:
        async def main() -> None:
            async with FakeServer().route(PATH, model()) as server:
                url.append(server.url)
                ready.set()
                while not stop.is_set():
                    await asyncio.sleep(0.05)
        asyncio.run(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    providers = tmp_path / "providers.yaml"
    providers.write_text(f"""providers:
  - name: local-ollama
    tier: onprem
    base_url: {url[0]}/v1
    model: qwen2.5:7b-instruct
    context_tokens: 8192
    max_output_tokens: 2048
""")
    settings = isolated_settings(tmp_path / "data", kafka_bootstrap, providers=str(providers))
    try:
        result = run_demo(settings, say=print, timeout_s=240)
    finally:
        stop.set()
        thread.join(10)
    assert result.reconciles
    tiers = result.summary.by_tier
    assert tiers.get("onprem/local-ollama", 0) > 1000  # customer originals went to the server
    assert set(tiers) <= {"onprem/local-ollama", "onprem/cache", "degraded/rules", "onprem/dedup",
                          "degraded/dedup"}
    with store_session(settings.clickhouse_dsn) as client:
        calls = client.query("SELECT provider, outcome, sum(tweets) FROM dallosh.provider_calls "
                             "GROUP BY provider, outcome").result_rows
    assert ("local-ollama", "ok", tiers["onprem/local-ollama"]) in [(p, o, n) for p, o, n in calls]


def test_a_worker_that_stops_making_progress_is_restarted_and_nothing_is_lost(pipeline_settings,
                                                                             tmp_path):
    """A worker alive but no longer consuming (SIGSTOP stands in for the rare stall seen
    under load) is restarted by the demo's drain wait; every tweet still lands once."""
    import signal

    from bench.dumps import write_dump
    from connectors.csv_replay import ReplayOptions, replay_file

    settings = pipeline_settings
    asyncio.run(ensure_topics(settings.bootstrap_servers, pipeline_topics(settings), settings.partitions))
    dump = write_dump(tmp_path / "dump.csv", 600)
    worker = WorkerProcess(settings)
    lines: list[str] = []
    try:
        worker.proc.send_signal(signal.SIGSTOP)
        replay = asyncio.run(replay_file(dump, settings, ReplayOptions(show_progress=False)))
        asyncio.run(wait_until_drained(settings, worker, lines.append, timeout_s=180, stall_s=5))
    finally:
        worker.stop()
    assert worker.restarts == 1
    assert any("made no progress" in line for line in lines)
    with store_session(settings.clickhouse_dsn) as client:
        assert scalar(client, "SELECT count() FROM dallosh.tweets FINAL") == replay.produced == 600
