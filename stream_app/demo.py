"""``dallosh demo [FILE]``: the whole product on one machine, start to finish.

Starts the local broker if needed, runs a worker process, replays the bundled sample
(or the user's dump), waits until the consumer groups have committed every message of
every stage (the sink's group commits only what is stored in ClickHouse), stops the
worker, and reads the run back from ClickHouse.

With ``train_model`` (``dallosh demo``'s default; ``--no-train-first-run-model`` skips it)
on a machine with no local model yet, it first trains the first-run model
(:mod:`stream_app.local_model.first_run`: frozen encoder and the brand's labelled tweets,
~80 s on 2 cores, with a progress bar) and caches it where the workers look, so a new
user's first run classifies with the local model. It scores above the degraded rules on
every label of both brands' held-out sets (docs/local-model.md); ``run_demo`` itself
defaults to not training, for callers (tests, benchmarks) that choose their tier.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from aiokafka.errors import KafkaError

from connectors.csv_replay import ReplayOptions, ReplayResult, replay_file
from connectors.samples import SAMPLE_PATH
from stream_app.infra.kafka_broker import broker_down, broker_status, broker_up, log_tail
from stream_app.kafka_admin import consumer_groups, ensure_topics, pipeline_lag, pipeline_topics
from stream_app.report import load_report_data, write_report
from stream_app.settings import Settings
from stream_app.storage.clickhouse import store_session
from stream_app.summary import RunSummary, format_alerts, format_summary, run_alerts, summarise_run

Say = Callable[[str], None]
DRAIN_CONFIRMATIONS = 3  # one zero-lag snapshot per stage hop (raw -> clean -> classified)
STALL_S = 60.0           # no committed progress for this long with work queued: restart


class DemoError(RuntimeError):
    pass


@dataclass
class DemoResult:
    replay: ReplayResult
    summary: RunSummary
    report_path: Path | None = None
    alerts: list[dict] | None = None

    @property
    def reconciles(self) -> bool:
        return self.replay.reconciles and \
            self.replay.rows_read == self.summary.rows_accounted(self.replay.duplicates)


class WorkerProcess:
    """A ``dallosh worker`` child process with its log in the data dir."""

    def __init__(self, settings: Settings, extra_env: dict[str, str] | None = None,
                 role: str = "all") -> None:
        self.role = role
        self.log_path = settings.data_dir / "logs" / ("worker.log" if role == "all" else f"worker-{role}.log")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._env = os.environ | settings.as_env() | (extra_env or {})
        self.restarts = 0
        self._start()

    def _start(self) -> None:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "stream_app", "worker", "--role", self.role],
                                     env=self._env,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

    def restart(self) -> None:
        """Stop (SIGTERM, then SIGKILL) and start again: what a supervisor does with a
        worker that stopped making progress. Nothing is lost: offsets are committed only
        after the work is durable, and the signals state is in its changelog."""
        self.stop(grace_s=10.0)
        self.restarts += 1
        self._start()

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise DemoError(f"the worker exited (code {self.proc.returncode}). "
                            f"Last lines of {self.log_path}:\n{log_tail(self.log_path)}")

    def stop(self, grace_s: float = 30.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


async def wait_until_drained(settings: Settings, worker: WorkerProcess, say: Say,
                             timeout_s: float, stall_s: float = STALL_S) -> None:
    """Return once every consumer group of the pipeline (the Faust agents' and the
    sink's) has committed everything on every topic it reads. The sink commits only
    what is durable in ClickHouse, so drained means every tweet is stored there.

    A worker that commits nothing for ``stall_s`` while work is queued is restarted
    (once per stall, said on the output and in its log). Seen rarely under load on this
    2-core machine: a worker alive but no longer consuming any topic (see
    docs/delivery.md); a restart resumes from the committed offsets, exactly once."""
    groups = consumer_groups(settings)
    deadline = time.monotonic() + timeout_s
    confirmations, last_report = 0, 0.0
    last_lag: dict | None = None
    progress_at = time.monotonic()
    while confirmations < DRAIN_CONFIRMATIONS:
        worker.check_alive()
        if time.monotonic() > deadline:
            raise DemoError(f"the pipeline did not drain within {timeout_s:.0f} s; see "
                            f"{worker.log_path}:\n{log_tail(worker.log_path)}")
        try:
            lag = await pipeline_lag(settings.bootstrap_servers, groups)
        except KafkaError as exc:
            if not exc.retriable:
                raise
            # e.g. the group coordinator is still being elected on a fresh broker
            await asyncio.sleep(0.5)
            continue
        pending = sum(lag.values())
        if lag != last_lag:
            last_lag, progress_at = lag, time.monotonic()
        elif pending and time.monotonic() - progress_at > stall_s:
            say(f"  the worker made no progress for {stall_s:.0f} s with {pending} messages "
                f"queued: restarting it (log: {worker.log_path})")
            worker.restart()
            progress_at = time.monotonic()
        confirmations = confirmations + 1 if pending == 0 else 0
        if pending and time.monotonic() - last_report > 2:
            detail = ", ".join(f"{t} {n}" for t, n in lag.items() if n)
            say(f"  pipeline working: {pending} messages queued ({detail})")
            last_report = time.monotonic()
        await asyncio.sleep(0.5)


def describe_classifier(settings: Settings, first_run: bool = False) -> str:
    """Which tiers will classify: said up front, so nobody mistakes rules for a model."""
    from stream_app.classify.local_tier import local_model_present
    from stream_app.classify.provider_config import load_providers
    usable = [p.name for p in load_providers(settings.providers) if p.available]
    providers = f"providers {', '.join(usable)}" if usable else "no provider configured (no key, no on-prem URL)"
    if settings.local_model is None:
        local = "local model disabled (DALLOSH_LOCAL_MODEL=off)"
    elif first_run:
        local = (f"local model {settings.local_model} (none cached yet: training the first-run "
                 "model now, about 1-2 minutes on 2 cores, once)")
    elif local_model_present(settings.local_model):
        local = f"local model {settings.local_model}"
    else:
        from stream_app.local_model.encoders import TRAIN_EXTRA, torch_installed
        how = "`dallosh train` makes one" if torch_installed() else f"{TRAIN_EXTRA}, then `dallosh train`"
        local = f"no local model at {settings.local_model} ({how})"
    return f"Classifier: {providers}; {local}; degraded rules as the last resort"


def needs_first_run_model(settings: Settings) -> bool:
    """No model is cached where the workers look, and this install can train one (the
    base install, without torch, runs models but does not train them)."""
    from stream_app.classify.local_tier import local_model_present
    from stream_app.local_model.encoders import torch_installed
    return (settings.local_model is not None and not local_model_present(settings.local_model)
            and torch_installed())


def train_first_run(settings: Settings, say: Say, rows: dict[str, int] | None = None) -> bool:
    """Train and cache the first-run local model; on failure (no network for the
    labelled data, say) explain and go on with the rules. True when a model was made."""
    from stream_app.local_model.datasets import DatasetError
    from stream_app.local_model.encoders import LocalModelError
    from stream_app.local_model.fewshot import brand_taxonomy
    from stream_app.local_model.first_run import ProgressBar, train_first_run_model
    from stream_app.taxonomy import TaxonomyError
    assert settings.local_model is not None
    try:
        brand = brand_taxonomy(settings)
    except TaxonomyError as exc:
        say(f"  note: {exc}; the first-run model learns sentiment only")
        brand = None
    try:
        meta = train_first_run_model(settings.local_model, settings.cache_dir, brand,
                                     threads=settings.local_model_threads, rows=rows,
                                     tick=ProgressBar("  training the local model"))
    except (DatasetError, LocalModelError, OSError) as exc:
        say(f"  could not train the first-run local model ({exc}); the degraded rules classify")
        return False
    heads = ", ".join(meta["heads"])
    brand_note = f" (brand {brand.brand})" if brand is not None and "topic" in meta["heads"] else ""
    say(f"  local model trained in {meta['first_run_s']:.0f}s ({heads} heads{brand_note}) and cached at "
        f"{settings.local_model}; `make model` trains the full, fine-tuned recipe (~17 min)")
    return True


def run_demo(settings: Settings, file: Path | None = None, *, keep_infra: bool = False,
             timeout_s: float = 600.0, say: Say = print, train_model: bool = False) -> DemoResult:
    file = file or SAMPLE_PATH
    if file == SAMPLE_PATH:
        say(f"Replaying the bundled sample: {file.name} (synthetic; see connectors/samples/README.md)")
    first_run = train_model and needs_first_run_model(settings)
    say(describe_classifier(settings, first_run))
    if first_run:
        train_first_run(settings, say)
    started_broker = not broker_status(settings).running
    broker_up(settings, progress=say)
    worker = None
    try:
        asyncio.run(ensure_topics(settings.bootstrap_servers, pipeline_topics(settings),
                                  settings.partitions))
        say(f"Starting a worker (log: {settings.data_dir / 'logs' / 'worker.log'}, "
            f"metrics: http://127.0.0.1:{settings.metrics_port}/metrics)")
        worker = WorkerProcess(settings)
        replay = asyncio.run(replay_file(file, settings, ReplayOptions()))
        say(f"Replayed: {replay.summary_line()}")
        say("Waiting for every tweet to reach ClickHouse...")
        asyncio.run(wait_until_drained(settings, worker, say, timeout_s))
        worker.stop()
        worker = None
        with store_session(settings.clickhouse_dsn) as client:
            summary = summarise_run(client, replay.run_id)
            alerts = run_alerts(client, replay.run_id)
            report_data = load_report_data(client, replay.run_id) if summary.stored else None
        say(format_summary(summary, replay.rows_read, replay.duplicates))
        say(format_alerts(alerts))
        report_path = None
        if report_data is not None:
            report_path = write_report(report_data, settings.data_dir / "reports" /
                                       f"{replay.run_id}.html")
            say(f"Report: {report_path} (open it in a browser; `dallosh report --out FILE` "
                "writes it again)")
        return DemoResult(replay=replay, summary=summary, report_path=report_path, alerts=alerts)
    finally:
        if worker is not None:
            worker.stop()
        if started_broker and not keep_infra:
            broker_down(settings)
        say(f"Kafka: {broker_status(settings).describe()}")
