"""The ``dallosh`` command line. Every user mistake ends in one clear line, not a traceback."""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from pathlib import Path
from typing import Any, Callable

import click

from connectors.csv_formats import FormatError
from connectors.csv_replay import ReplayError, replay_file
from stream_app.infra.kafka_broker import InfraError, broker_down, broker_status, broker_up
from stream_app.kafka_admin import KafkaUnavailable, ensure_topics, pipeline_topics
from stream_app.settings import Settings, SettingsError, load_settings
from stream_app.storage.clickhouse import StorageError

USER_ERRORS = (InfraError, StorageError, SettingsError, KafkaUnavailable, ReplayError, FormatError)


def _settings() -> Settings:
    return load_settings()


def friendly_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
    return wrapper


def _setup_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Dallosh Stream: real-time social customer-care monitor.

    Tweets flow CSV/live connector -> Kafka (tweets.raw) -> clean -> classify ->
    ClickHouse, with dead letters and a cost ledger on the way. Settings come from
    DALLOSH_* environment variables (see the README's configuration table).

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
    status = broker_up(_settings(), progress=click.echo)
    click.echo(status.describe())


@infra.command("down")
@friendly_errors
def infra_down() -> None:
    """Stop the local broker cleanly; its data stays in the data dir."""
    click.echo(broker_down(_settings()).describe())


@infra.command("status")
@friendly_errors
def infra_status() -> None:
    """Say whether the local broker runs, where, and where its data and log are."""
    settings = _settings()
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
    settings = _settings()
    _setup_logging(settings)
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
              help="Use COLUMN for FIELD (id, text, created_at, author, ...); repeatable.")
@click.option("--no-progress", is_flag=True, help="Do not draw the progress bar.")
@friendly_errors
def replay(files: tuple[Path, ...], maps: tuple[str, ...], no_progress: bool) -> None:
    """Replay CSV dump(s) of tweets into Kafka (tweets.raw), keyed by tweet id.

    Plain or gzip-compressed CSV with a header row. Bad rows go to the dead-letter
    topic with their file and line; the run ends with rows read = produced +
    dead-lettered. Needs a running broker (`dallosh infra up`) and a worker to process.
    """
    settings = _settings()
    overrides = _parse_maps(maps)
    failed = False
    for path in files:
        result = asyncio.run(replay_file(path, settings, column_overrides=overrides,
                                         show_progress=not no_progress))
        click.echo(f"{path}: run {result.run_id}: {result.summary_line()}")
        failed |= not result.reconciles
    sys.exit(1 if failed else 0)


# --------------------------------------------------------------------------- demo

@main.command()
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--keep-infra", is_flag=True, help="Leave the local broker running afterwards.")
@click.option("--timeout", "timeout_s", default=600.0, show_default=True,
              help="Seconds to wait for the pipeline to process everything.")
@friendly_errors
def demo(file: Path | None, keep_infra: bool, timeout_s: float) -> None:
    """Run the whole pipeline locally on the bundled sample (or FILE) and print a summary.

    Starts the local broker if needed, runs a worker, replays, waits until every tweet
    is in ClickHouse (stored or dead-lettered), stops the worker and summarises the run.
    """
    from stream_app.demo import DemoError, run_demo
    try:
        result = run_demo(_settings(), file, keep_infra=keep_infra, timeout_s=timeout_s,
                          say=click.echo)
    except DemoError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(1)
    sys.exit(0 if result.reconciles else 1)


if __name__ == "__main__":
    main()
