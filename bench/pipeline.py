"""``dallosh bench pipeline``: real tweets through real workers, end to end, and where the
time goes.

1. **Tweets** — the labelled corpora's real tweets (``dallosh data fetch``: the US airline
   customer-care tweets and the English tweets, encoding damage included), shuffled,
   written as a replay dump in the seed export's columns (event times 50 ms-2 s apart,
   the dataset's declared language); with no network and no cached corpora, the bundled
   sample's texts (synthetic French tweets) instead, said in the result.
2. **Run** — one ``dallosh worker`` process (role ``all``, as ``dallosh demo`` runs it)
   on the local broker, in a throwaway data dir, app id and topics. Not timed: its start
   and a 50-tweet warm-up replay (joining groups, first fetches, lazy loads). Timed: the
   replay of the dump, from its first row produced (the earliest ``ingested_at``) to its
   last row stored (the latest ``stored_at``, set by ClickHouse when the row became
   queryable): ``tweets_per_s`` is the tweets stored over that span.
3. **Profile** — the time each step of each stage spends (``dallosh_step_seconds_total``
   on the worker's ``/metrics``, read before and after the timed replay): decode, clean,
   language, dedup, classify, produce, signals, sink, in ms per tweet and as a share of
   the worker's CPU time; what no step accounts for is the framework (Faust's and
   aiokafka's consume, produce and commit machinery, the event loop). **Waits** — each
   topic's consumer lag sampled every second (where messages queue), and per tweet the
   time from produce to its classify window and from there to stored.

The rules tier always runs (``DALLOSH_LOCAL_MODEL=off``, provider variables blanked so no
paid API is called); the local tier runs too when ``--local-model DIR`` names an artifact.
``--profile FILE`` also records a py-spy flame graph of the worker during the timed part.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import gzip
import os
import platform
import random
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from aiokafka.errors import KafkaError
from prometheus_client.parser import text_string_to_metric_families

from bench.dumps import HEADER
from bench.sink import BenchInputError, _delete_topics, child_settings, free_port, latency_split
from connectors.csv_replay import ReplayOptions, replay_file
from connectors.samples import SAMPLE_PATH
from stream_app.demo import WorkerProcess, wait_until_drained
from stream_app.kafka_admin import consumer_groups, ensure_topics, pipeline_lag, pipeline_topics
from stream_app.records import iso, utc_now
from stream_app.settings import Settings
from stream_app.storage.clickhouse import store_session

Say = Callable[[str], None]
CORPORA = ("airline_en", "english_tweets")
# The steps the stages report (stream_app.metrics.STEP_SECONDS), in pipeline order.
STEPS = ("decode", "clean", "language", "dedup", "classify", "produce", "signals", "sink")
START = datetime(2026, 3, 12, tzinfo=timezone.utc)
WARM_UP_TWEETS = 50
LAG_EVERY_S = 1.0
Snapshot = dict[tuple[str, tuple[tuple[str, str], ...]], float]


# --------------------------------------------------------------------------- tweets

def real_tweets(settings: Settings, n: int, say: Say, seed: int = 3,
                fetch: bool = True) -> tuple[list[tuple[str, str]], dict]:
    """``n`` (text, lang) pairs of real tweets, shuffled, and where they come from
    (``fetch``: download the corpora when they are not cached yet)."""
    from stream_app.local_model.datasets import DatasetError, fetch_datasets, load_dataset_paths
    paths = load_dataset_paths(settings.cache_dir)
    if paths is None and fetch:
        try:
            paths = fetch_datasets(settings.cache_dir, progress=say)
        except (DatasetError, OSError) as exc:
            say(f"  the labelled corpora are not available ({exc}); using the bundled sample")
    if paths is not None:
        rows: list[tuple[str, str]] = []
        for name in CORPORA:
            with paths.path(name).open(encoding="utf-8", newline="") as handle:
                rows += [(row["text"], row.get("lang") or "") for row in csv.DictReader(handle)]
        source = {"corpora": list(CORPORA), "brand": "airline"}
    else:
        with gzip.open(SAMPLE_PATH, "rt", encoding="utf-8", newline="") as handle:
            rows = [(row["full_text"], row["lang"]) for row in csv.DictReader(handle)]
        source = {"corpora": [SAMPLE_PATH.name], "brand": "free"}
    rows = [row for row in rows if row[0].strip()]
    random.Random(seed).shuffle(rows)
    source["distinct_texts"] = min(n, len(rows))
    if n > len(rows):  # more than the corpora hold: repeats (the clean stage's near-duplicates)
        rows = [rows[i % len(rows)] for i in range(n)]
    return rows[:n], source


def write_tweets_dump(path: Path, tweets: list[tuple[str, str]], first_id: int,
                      start: datetime = START, seed: int = 7) -> Path:
    """A replay dump of ``tweets`` in the seed export's columns (``bench.dumps.HEADER``)."""
    rng = random.Random(seed)
    moment = start
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for i, (text, lang) in enumerate(tweets):
            moment += timedelta(milliseconds=rng.randint(50, 2000))
            writer.writerow([str(first_id + i), moment.strftime("%Y-%m-%dT%H:%M:%SZ"), text,
                             f"User {i % 5000}", f"user_{i % 5000}", "", "", "", 0, 0, lang, "false"])
    return path


# --------------------------------------------------------------------------- metrics

def scrape(port: int) -> Snapshot:
    """Every sample of the worker's ``/metrics`` (empty while it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    except OSError:
        return {}
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(snapshot: Snapshot, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, lbls), v in snapshot.items() if n == name and want <= set(lbls))


def stage_profile(before: Snapshot, after: Snapshot, tweets: int) -> dict:
    """ms per tweet of each step (summed over the stages that have it) and of each
    stage/step pair, each one's share of all the steps' time, and the worker's CPU."""
    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    pairs = sorted({dict(lbls)["stage"] + "/" + dict(lbls)["step"]
                    for (n, lbls) in after if n == "dallosh_step_seconds_total"})
    per_pair = {pair: delta("dallosh_step_seconds_total", stage=pair.split("/")[0],
                            step=pair.split("/")[1]) for pair in pairs}
    per_step = {step: sum(s for pair, s in per_pair.items() if pair.endswith("/" + step))
                for step in STEPS}
    steps_s = sum(per_step.values())

    def row(seconds: float) -> dict:
        return {"ms_per_tweet": round(1000 * seconds / tweets, 4) if tweets else None,
                "share": round(seconds / steps_s, 4) if steps_s else None}

    cpu_s = delta("process_cpu_seconds_total")
    return {
        "worker_cpu_ms_per_tweet": round(1000 * cpu_s / tweets, 4) if tweets else None,
        "steps_ms_per_tweet": round(1000 * steps_s / tweets, 4) if tweets else None,
        "steps": {step: row(s) for step, s in per_step.items()},
        "by_stage_and_step": {pair: row(s) for pair, s in per_pair.items()},
        "note": "each step's wall-clock time in the worker (sends: until the record is "
                "queued in the producer; sink: until the insert, in ClickHouse's threads, "
                "and the commit returned), per tweet stored; a step that waits (a full "
                "producer batch, the CPU taken by other processes) counts its wait. What "
                "no step covers (Faust's and aiokafka's consume, produce and commit "
                "machinery, the event loop) shows in a py-spy profile (--profile)",
    }


# --------------------------------------------------------------------------- one tier

def _provider_blanks(settings: Settings) -> dict[str, str]:
    """Every provider key and URL variable set empty: the bench never calls a paid API."""
    from stream_app.classify.provider_config import load_providers
    return {name: "" for p in load_providers(settings.providers)
            for name in (p.base_url_env, p.key_env) if name}


def _wait_for_rows(worker: WorkerProcess, port: int, target: float, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while total(scrape(port), "dallosh_sink_rows_total", table="dallosh.tweets") < target:
        worker.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"the pipeline did not store {target:.0f} tweets within "
                               f"{timeout_s:.0f} s; see {worker.log_path}")
        time.sleep(1.0)  # the timing comes from ClickHouse; this only notices the end


async def _replay_sampling_lag(settings: Settings, dump: Path, worker: WorkerProcess,
                               target: Callable[[int], float], timeout_s: float):
    """Replay ``dump`` and wait until its tweets are stored, sampling consumer lag."""
    samples: list[tuple[float, dict[str, int]]] = []
    done = asyncio.Event()

    async def sample() -> None:
        groups = consumer_groups(settings)
        while not done.is_set():
            try:
                samples.append((time.monotonic(), await pipeline_lag(settings.bootstrap_servers, groups)))
            except KafkaError:
                pass
            try:
                await asyncio.wait_for(done.wait(), LAG_EVERY_S)
            except asyncio.TimeoutError:
                pass

    sampler = asyncio.create_task(sample())
    try:
        replay = await replay_file(dump, settings, ReplayOptions(show_progress=False, archive=False,
                                                                 say=lambda line: None))
        await asyncio.to_thread(_wait_for_rows, worker, settings.metrics_port,
                                target(replay.produced), timeout_s)
    finally:
        done.set()
        await sampler
    return replay, samples


def _lag_summary(samples: list[tuple[float, dict[str, int]]], settings: Settings) -> dict:
    names = {settings.topic_raw: "raw", settings.topic_clean: "clean",
             settings.topic_classified: "classified", settings.topic_decisions: "decisions",
             settings.topic_provider_calls: "provider_calls", settings.topic_dlq: "dlq",
             settings.topic_alerts: "alerts"}
    out = {}
    for topic, short in names.items():
        values = [lag.get(topic, 0) for _, lag in samples]
        if values:
            out[short] = {"peak": max(values), "mean": round(sum(values) / len(values), 1)}
    return {"consumer_lag_messages": out, "samples": len(samples), "every_s": LAG_EVERY_S}


def _py_spy(pid: int, out: Path) -> subprocess.Popen | None:
    exe = shutil.which("py-spy")
    if exe is None:
        return None
    # The format follows the file name: .svg a flame graph, .json speedscope, else
    # collapsed stacks (one line per stack and its sample count, for scripts).
    fmt = {".svg": "flamegraph", ".json": "speedscope"}.get(out.suffix, "raw")
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--output", str(out), "--rate", "200",
                             "--nonblocking", "--threads", "--gil", "--format", fmt],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def scrape_all(ports: list[int]) -> Snapshot:
    """The samples of several workers added up (their CPU, their steps' seconds)."""
    merged: Snapshot = {}
    for port in ports:
        for key, value in scrape(port).items():
            merged[key] = merged.get(key, 0.0) + value
    return merged


def bench_tier(base: Settings, work: Path, tweets: list[tuple[str, str]], brand: str, tier: str,
               local_model: str, say: Say, profile: Path | None = None,
               timeout_s: float = 900.0, split_roles: bool = False) -> dict:
    prefix = f"bench-pipe-{uuid.uuid4().hex[:8]}"
    settings = child_settings(base, work / tier, prefix, local_model=local_model, brand=brand)
    # One `all` worker, as `dallosh demo` runs; or a `pipeline` and a `sink` worker (two
    # processes: the clean and classify stages on one core, signals and ClickHouse on the
    # other). The sink worker keeps the settings' metrics port, where the rows are counted.
    roles = [("pipeline", dataclasses.replace(settings, metrics_port=free_port())),
             ("sink", settings)] if split_roles else [("all", settings)]
    ports = [each.metrics_port for _, each in roles]
    asyncio.run(ensure_topics(settings.bootstrap_servers,
                              pipeline_topics(settings) + [settings.topic_windows], settings.partitions))
    dump = write_tweets_dump(work / f"{tier}.csv", tweets, first_id=1_960_000_000_000_000_000)
    warm_up = write_tweets_dump(work / f"{tier}_warm_up.csv", tweets[:WARM_UP_TWEETS],
                                first_id=1_969_000_000_000_000_000, start=START - timedelta(days=1))
    say(f"[{tier}] {' + '.join(role for role, _ in roles)} worker on {settings.bootstrap_servers} "
        f"(logs {settings.data_dir / 'logs'}); warming up with {WARM_UP_TWEETS} tweets...")
    blanks = _provider_blanks(settings)
    workers = [WorkerProcess(each, extra_env=blanks, role=role) for role, each in roles]
    worker = workers[-1]  # the one that stores rows
    spy = None
    try:
        asyncio.run(replay_file(warm_up, settings, ReplayOptions(show_progress=False, archive=False,
                                                                 say=lambda line: None)))
        asyncio.run(wait_until_drained(settings, worker, lambda line: None, timeout_s=300))
        before = scrape_all(ports)
        stored_before = total(before, "dallosh_sink_rows_total", table="dallosh.tweets")
        if profile is not None:
            spy = _py_spy(workers[0].proc.pid, profile)  # the clean and classify stages
            if spy is None:
                say("  py-spy is not on PATH: no flame graph (pip install py-spy)")
        say(f"[{tier}] replaying {len(tweets):,} tweets and timing them to ClickHouse...")
        started = time.monotonic()
        replay, lag = asyncio.run(_replay_sampling_lag(
            settings, dump, worker, lambda produced: stored_before + produced, timeout_s))
        landed_s = time.monotonic() - started
        after = scrape_all(ports)
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes the flame graph on SIGINT
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
        asyncio.run(wait_until_drained(settings, worker, lambda line: None, timeout_s=300))
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
        for each in workers:
            each.stop()
        asyncio.run(_delete_topics(settings.bootstrap_servers,
                                   pipeline_topics(settings) + [settings.topic_windows]))
    with store_session(settings.clickhouse_dsn) as client:
        params = {"run": replay.run_id}
        stored, span_ms, lat = client.query(
            "SELECT count(), dateDiff('millisecond', min(ingested_at), max(stored_at)), "
            "quantilesExact(0.5, 0.95)(dateDiff('millisecond', ingested_at, stored_at) / 1000) "
            "FROM dallosh.tweets FINAL WHERE run_id = {run:String}", parameters=params).result_rows[0]
        stages, tiers = latency_split(client, replay.run_id)
        halves = {"produced_" + name if name.startswith("to_") else name: value
                  for name, value in stages.items()}
    seconds = span_ms / 1000
    rate = stored / seconds if seconds > 0 else 0.0
    say(f"[{tier}] {stored:,} of {replay.produced:,} tweets stored in {seconds:.1f} s: "
        f"{rate:,.0f} tweets/s end to end; classified by {tiers}")
    return {
        "tweets_per_s": round(rate, 1), "seconds": round(seconds, 2), "produced": replay.produced,
        "stored": stored, "exactly_once": stored == replay.produced,
        "replay": {"rows_read": replay.rows_read, "dead_lettered": replay.dead_lettered,
                   "duplicates": replay.duplicates, "seconds": round(replay.elapsed_s, 2)},
        "seen_by_bench_s": round(landed_s, 2),
        "worker_roles": [role for role, _ in roles],
        "classified_by": tiers,
        "profile": stage_profile(before, after, stored),
        "waits": {**_lag_summary(lag, settings),
                  "latency_p50_p95_s": [round(q, 3) for q in lat], **halves,
                  "configured": {"classify_batch_size": settings.classify_batch_size,
                                 "classify_max_wait_s": settings.classify_max_wait,
                                 "sink_batch_size": settings.sink_batch_size,
                                 "sink_max_wait_s": settings.sink_max_wait}},
        "local_model": local_model,
    }


# --------------------------------------------------------------------------- the bench

def bench_pipeline(settings: Settings, tweets: int, local_model: Path | None = None,
                   say: Say = print, profile: Path | None = None, fetch: bool = True,
                   split_roles: bool = False) -> dict:
    if local_model is not None and not Path(local_model).is_dir():
        raise BenchInputError(f"--local-model {local_model}: no such directory")
    load_before = os.getloadavg()[0]  # the machine may be shared: say how busy it was
    rows, source = real_tweets(settings, tweets, say, fetch=fetch)
    say(f"{len(rows):,} real tweets ({', '.join(source['corpora'])}), brand {source['brand']}")
    with tempfile.TemporaryDirectory(prefix="dallosh-bench-pipeline-") as tmp:
        work = Path(tmp)
        rules = bench_tier(settings, work, rows, source["brand"], "rules", "off", say, profile,
                           split_roles=split_roles)
        local = None
        if local_model is not None:
            local = bench_tier(settings, work, rows, source["brand"], "local", str(local_model), say,
                               split_roles=split_roles)
    return {
        "benchmark": "pipeline", "at": iso(utc_now()), "tweets": len(rows), "source": source,
        "workers": "a `pipeline` and a `sink` worker process" if split_roles
        else "one `dallosh worker --role all` process",
        "rules": rules,
        "local": local if local is not None else None,
        "local_skipped_reason": None if local is not None else
        "no --local-model DIR given: the local tier was not run",
        "target_rules_tweets_per_s": 3000, "target_local_tweets_per_s": 600,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "load_avg_1m_before": round(load_before, 2),
                    "load_avg_1m_after": round(os.getloadavg()[0], 2)},
    }
