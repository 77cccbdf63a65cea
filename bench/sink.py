"""``dallosh bench sink``: how fast the sink lands rows, how fresh the wall is.

1. **Throughput** — classified tweets are produced to a throwaway topic, then a
   ``dallosh worker --role sink`` process consumes and inserts them (Kafka fetch,
   decode, deduplication token, insert into the embedded ClickHouse). Rows/s come from
   the sink's own counter (``dallosh_sink_rows_total``) between its first and its last
   insert, so the worker's start-up is not counted. 10 % of the tweets arrive twice,
   re-classified (a newer version): the store must hold each id once.
2. **Query cost** on that store — the wall's "tweets per minute by sentiment" three
   ways: ``FINAL``, ``argMax`` by id, and the ``tweets_by_minute_v`` rollup.
3. **Latency** — a ``dallosh worker`` (whole pipeline, the configured classifier: the
   local model when ``DALLOSH_LOCAL_MODEL`` holds one) receives raw tweets at a steady
   rate; latency is ``stored_at`` (set by ClickHouse when the row is inserted, i.e. when
   it becomes queryable) minus the moment the tweet was produced (its ``ingested_at``),
   split at ``classified_at`` (when its classify window started) into the two halves
   of the pipeline. The tweets are real ones the local model never trained on (the
   held-out airline and English tweets of ``dallosh data fetch``), so that each is
   classified, not reused as a near-duplicate of an earlier one.

Everything runs in a throwaway data dir and throwaway topics (deleted afterwards).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from bench.dumps import _BODIES, _CITIES, _OPENINGS
from stream_app.demo import wait_until_drained
from stream_app.kafka_admin import ensure_topics, pipeline_topics
from stream_app.records import ClassifiedTweet, RawTweet, iso, utc_now
from stream_app.settings import Settings, load_settings
from stream_app.storage.clickhouse import store_session

Say = Callable[[str], None]
TWEETS_TABLE = "dallosh.tweets"
REVISED_SHARE = 0.10
# Settings the caller's environment may set for the bench's workers (the classifier and
# the batching knobs that trade latency for batch size); the rest is the bench's own.
TUNABLE = ("DALLOSH_LOCAL_", "DALLOSH_CLASSIFY_", "DALLOSH_SINK_", "DALLOSH_PROVIDERS")
WALL_QUERIES = {
    "final": "SELECT toStartOfMinute(created_at) AS minute, sentiment, count() "
             "FROM dallosh.tweets FINAL GROUP BY minute, sentiment",
    "argmax": "SELECT minute, sentiment, count() FROM (SELECT id, "
              "toStartOfMinute(any(created_at)) AS minute, argMax(sentiment, version) AS sentiment "
              "FROM dallosh.tweets GROUP BY id) GROUP BY minute, sentiment",
    "rollup": "SELECT minute, sentiment, sum(tweets) FROM dallosh.tweets_by_minute_v "
              "GROUP BY minute, sentiment",
}


def free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_settings(base: Settings, data_dir: Path, prefix: str, **overrides: str) -> Settings:
    """Settings of a benchmark's own throwaway installation: its data dir, app id, topics
    and metrics port, on ``base``'s broker; the user's tunables (``TUNABLE``) still apply,
    ``overrides`` win over everything."""
    return load_settings({
        "data_dir": str(data_dir), "kafka_bootstrap": base.bootstrap_servers,
        "app_id": f"dallosh-{prefix}", "metrics_port": str(free_port()),
        "partitions": str(base.partitions),
        **{f"topic_{n}": f"{prefix}.{n}" for n in
           ("raw", "clean", "classified", "dlq", "alerts", "provider_calls", "decisions",
            "windows")},
        **overrides,
    }, environ={k: v for k, v in os.environ.items()
                if not k.startswith("DALLOSH_") or k.startswith(TUNABLE)})


class Worker:
    def __init__(self, settings: Settings, role: str) -> None:
        self.settings, self.role = settings, role
        self.log_path = settings.data_dir / "logs" / f"worker-{role}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "stream_app", "worker", "--role", role],
                                     env=os.environ | settings.as_env(), stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the bench worker exited (code {self.proc.returncode}):\n{tail}")

    def sink_rows(self) -> float:
        """The worker's dallosh_sink_rows_total for tweets (0 until /metrics answers)."""
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.settings.metrics_port}/metrics", timeout=2) as reply:
                text = reply.read().decode()
        except OSError:
            return 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "dallosh_sink_rows_total" and sample.labels.get("table") == TWEETS_TABLE:
                    return sample.value
        return 0.0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def _text(rng: random.Random) -> str:
    return f"{rng.choice(_OPENINGS)} {rng.choice(_BODIES).format(city=rng.choice(_CITIES))}".strip()


def classified_tweets(n: int, run_id: str, seed: int = 11) -> list[ClassifiedTweet]:
    rng = random.Random(seed)
    start = datetime(2026, 3, 12, tzinfo=timezone.utc)
    now = iso(utc_now())
    tweets = []
    for i in range(n):
        text = _text(rng)
        tweets.append(ClassifiedTweet(
            id=str(1_950_000_000_000_000_000 + i), text=text, text_clean=text,
            created_at=iso(start + timedelta(milliseconds=150 * i)), run_id=run_id,
            source=f"bench:{i}", ingested_at=now, lang="fr", location=rng.choice(_CITIES),
            sentiment=rng.choice(("negative", "neutral", "positive")), priority=rng.randint(0, 2),
            topic=rng.choice(("outage", "billing", "fibre", "mobile")), team="network_ops",
            confidence=0.7, tier="degraded", provider="rules", model="lexicon-v1", reason="",
            classified_at=now, version=1, mentions=["free"], relevance="customer"))
    revised = [ClassifiedTweet(**(t.to_dict() | {"sentiment": "neutral", "version": 2}))
               for t in rng.sample(tweets, int(n * REVISED_SHARE))]
    return tweets + revised


async def _produce(bootstrap: str, topic: str, payloads: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                                max_batch_size=1 << 20)
    await producer.start()
    try:
        for start in range(0, len(payloads), 10_000):
            futures = [await producer.send(topic, value, key=key)
                       for key, value in payloads[start:start + 10_000]]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()


class BenchInputError(ValueError):
    """The bench was asked for more than it can do (a user error, not a failure)."""


def warmup_tweets(rate: float) -> int:
    return int(rate * 5)


def held_out_tweets(settings: Settings, n: int, seed: int = 5) -> list[str]:
    """``n`` real tweets no local model was trained on (test splits), shuffled."""
    import csv

    from stream_app.local_model.datasets import fetch_datasets
    paths = fetch_datasets(settings.cache_dir, progress=lambda _: None)
    texts = []
    for name in ("airline_en", "english_tweets"):
        with paths.path(name, "test").open(encoding="utf-8", newline="") as handle:
            texts += [row["text"] for row in csv.DictReader(handle)]
    random.Random(seed).shuffle(texts)
    if len(texts) < n:
        raise BenchInputError(f"the latency run needs {n:,} held-out tweets (5 s of warm-up at the "
                              f"rate + --latency-tweets) and there are {len(texts):,}; ask for fewer")
    return texts[:n]


async def _produce_steady(bootstrap: str, topic: str, texts: list[str], rate: float,
                          run_id: str) -> float:
    """Raw tweets at ``rate`` per second, each stamped with the moment it is sent."""
    n = len(texts)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    started = time.monotonic()
    try:
        for i in range(n):
            await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
            now = utc_now()
            tweet = RawTweet(id=f"{run_id}-{i}", text=texts[i], created_at=iso(now),
                             run_id=run_id, source=f"bench:{i}", ingested_at=iso(now),
                             author=f"user_{i % 500}", lang="en")  # the held-out tweets are English
            await producer.send(topic, tweet.to_json(), key=tweet.id.encode())
        await producer.flush()
    finally:
        await producer.stop()
    return n / (time.monotonic() - started)


async def _delete_topics(bootstrap: str, topics: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(topics)
    except Exception:  # throwaway topics; a failed cleanup must not hide the figures
        pass
    finally:
        await admin.close()


def _wait_for_rows(worker: Worker, target: int, timeout_s: float) -> list[tuple[float, float]]:
    """Poll the sink counter until it reaches ``target``; returns (time, rows) samples."""
    samples: list[tuple[float, float]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        worker.check_alive()
        rows = worker.sink_rows()
        samples.append((time.monotonic(), rows))
        if rows >= target:
            return samples
        time.sleep(0.05)
    raise RuntimeError(f"the sink stored {samples[-1][1]:.0f} of {target} rows in {timeout_s:.0f} s; "
                       f"see {worker.log_path}")


def _timed(client, sql: str, repeat: int = 5) -> tuple[float, int]:
    timings, rows = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        rows = len(client.query(sql).result_rows)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings), rows


def bench_throughput(base: Settings, work: Path, rows: int, say: Say) -> dict:
    prefix = f"bench-sink-{uuid.uuid4().hex[:8]}"
    settings = child_settings(base, work / "throughput", prefix)
    run_id = f"bench-{prefix}"
    tweets = classified_tweets(rows, run_id)
    asyncio.run(ensure_topics(settings.bootstrap_servers, pipeline_topics(settings), settings.partitions))
    try:
        say(f"Producing {len(tweets):,} classified tweets ({rows:,} ids, "
            f"{len(tweets) - rows:,} re-classified)...")
        asyncio.run(_produce(settings.bootstrap_servers, settings.topic_classified,
                             [(t.id.encode(), t.to_json()) for t in tweets]))
        say("Starting a sink worker and timing it...")
        worker = Worker(settings, "sink")
        try:
            samples = _wait_for_rows(worker, len(tweets), timeout_s=600)
        finally:
            worker.stop()
    finally:
        asyncio.run(_delete_topics(settings.bootstrap_servers, pipeline_topics(settings)))
    first = next((t, n) for t, n in samples if n > 0)
    last = samples[-1]
    if last[1] == first[1]:  # the time to the first insert includes the group join: not timed
        raise BenchInputError(f"all {len(tweets):,} rows landed at once, so there is no rate to "
                              f"time; send several sink batches ({settings.sink_batch_size:,} rows "
                              "each): more --rows")
    rate = (last[1] - first[1]) / (last[0] - first[0])
    with store_session(settings.clickhouse_dsn) as client:
        one = lambda sql: client.query(sql).result_rows[0][0]  # noqa: E731
        stored = one("SELECT count() FROM dallosh.tweets FINAL")
        raw_rows = one("SELECT count() FROM dallosh.tweets")
        queries = {}
        for name, sql in WALL_QUERIES.items():
            seconds, result_rows = _timed(client, sql)
            queries[name] = {"median_s": round(seconds, 4), "result_rows": result_rows}
        rollup_total = one("SELECT sum(tweets) FROM dallosh.tweets_by_minute_v")
    say(f"  {rate:,.0f} rows/s; stored {stored:,} distinct tweets of {rows:,}")
    return {"rows_sent": len(tweets), "distinct_ids": rows, "rows_per_s": round(rate, 1),
            "stored_final": stored, "raw_rows_before_merges": raw_rows,
            "exactly_once": stored == rows,
            "query_cost": queries, "rollup_total": rollup_total,
            "rollup_overcount": rollup_total - rows,
            "note": "rollup over-counts the re-classified tweets whose cell changed "
                    "(counted in their old and new cell); FINAL and argMax are exact"}


def latency_split(client, run_id: str) -> tuple[dict[str, list[float]], dict[str, int]]:
    """One run's latency split (p50 and p95 in seconds: produced -> classify window ->
    stored) and its tweets per ``tier/provider``; ``bench sink`` and ``bench pipeline``."""
    params = {"run": run_id}
    stages = {name: [round(q, 3) for q in client.query(
        f"SELECT quantilesExact(0.5, 0.95)(dateDiff('millisecond', {a}, {b}) / 1000) "
        "FROM dallosh.tweets FINAL WHERE run_id = {run:String}", parameters=params).result_rows[0][0]]
        for name, (a, b) in {"to_classify_window_p50_p95_s": ("ingested_at", "classified_at"),
                             "classify_window_to_stored_p50_p95_s": ("classified_at", "stored_at")}.items()}
    tiers = {f"{tier}/{provider}": count for tier, provider, count in client.query(
        "SELECT tier, provider, count() FROM dallosh.tweets FINAL WHERE run_id = {run:String} "
        "GROUP BY tier, provider ORDER BY count() DESC", parameters=params).result_rows}
    return stages, tiers


def bench_latency(base: Settings, work: Path, texts: list[str], rate: float, say: Say,
                  split_roles: bool = False) -> dict:
    """Latency of ``texts`` (``held_out_tweets``: warm-up first, then the measured ones),
    through one ``--role all`` worker or, with ``split_roles``, a ``pipeline`` and a
    ``sink`` worker (two processes, so two cores' worth of Python)."""
    prefix = f"bench-lat-{uuid.uuid4().hex[:8]}"
    settings = child_settings(base, work / "latency", prefix)
    run_id, warm_id = f"bench-{prefix}", f"warmup-{prefix}"
    warmup = warmup_tweets(rate)
    n = len(texts) - warmup
    asyncio.run(ensure_topics(settings.bootstrap_servers, pipeline_topics(settings), settings.partitions))
    if split_roles:
        workers = [Worker(dataclasses.replace(settings, metrics_port=free_port()), "pipeline"),
                   Worker(settings, "sink")]
    else:
        workers = [Worker(settings, "all")]
    worker = workers[-1]  # the one whose sink counts rows
    try:
        say(f"Warming up the pipeline ({' + '.join(w.role for w in workers)} worker) with {warmup} tweets...")
        asyncio.run(_produce_steady(settings.bootstrap_servers, settings.topic_raw, texts[:warmup],
                                    rate, warm_id))
        _wait_for_rows(worker, warmup, timeout_s=180)
        say(f"Sending {n:,} tweets at a steady {rate:g}/s...")
        achieved = asyncio.run(_produce_steady(settings.bootstrap_servers, settings.topic_raw,
                                               texts[warmup:], rate, run_id))
        asyncio.run(wait_until_drained(settings, worker, lambda line: None, timeout_s=300))
    finally:
        for each in workers:
            each.stop()
        asyncio.run(_delete_topics(settings.bootstrap_servers, pipeline_topics(settings)))
    with store_session(settings.clickhouse_dsn) as client:
        params = {"run": run_id}
        p50, p95, p99, worst, stored = client.query(
            "SELECT quantilesExact(0.5, 0.95, 0.99)(lat)[1], quantilesExact(0.5, 0.95, 0.99)(lat)[2], "
            "quantilesExact(0.5, 0.95, 0.99)(lat)[3], max(lat), count() FROM (SELECT "
            "dateDiff('millisecond', ingested_at, stored_at) / 1000 AS lat "
            "FROM dallosh.tweets FINAL WHERE run_id = {run:String})", parameters=params).result_rows[0]
        stages, tiers = latency_split(client, run_id)
    say(f"  latency p50 {p50:.3f} s, p95 {p95:.3f} s, p99 {p99:.3f} s over {stored:,} tweets; "
        f"classified by {tiers}")
    return {"tweets": n, "stored": stored, "rate_per_s": rate, "achieved_rate_per_s": round(achieved, 1),
            "latency_p50_s": round(p50, 3), "latency_p95_s": round(p95, 3),
            "latency_p99_s": round(p99, 3), "latency_max_s": round(worst, 3), **stages,
            "classified_by": tiers, "worker_roles": [w.role for w in workers],
            "classify_max_wait_s": settings.classify_max_wait,
            "sink_max_wait_s": settings.sink_max_wait,
            "local_model": str(getattr(settings, "local_model", "") or "")}


def bench_sink(settings: Settings, rows: int, latency_tweets: int, rate: float,
               say: Say = print, split_roles: bool = False) -> dict:
    load_before = os.getloadavg()[0]  # the machine may be shared: say how busy it was
    texts = held_out_tweets(settings, warmup_tweets(rate) + latency_tweets)  # fails early if too few
    with tempfile.TemporaryDirectory(prefix="dallosh-bench-sink-") as tmp:
        work = Path(tmp)
        throughput = bench_throughput(settings, work, rows, say)
        latency = bench_latency(settings, work, texts, rate, say, split_roles=split_roles)
    return {
        "benchmark": "sink", "at": iso(utc_now()),
        "rows_per_s": throughput["rows_per_s"],
        "latency_p50_s": latency["latency_p50_s"], "latency_p95_s": latency["latency_p95_s"],
        "latency_p99_s": latency["latency_p99_s"],
        "target_rows_per_s": 50_000, "target_latency_p95_s": 2.0,
        "throughput": throughput, "latency": latency,
        "batch_size": settings.sink_batch_size,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "load_avg_1m_before": round(load_before, 2),
                    "load_avg_1m_after": round(os.getloadavg()[0], 2)},
    }
