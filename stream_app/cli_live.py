"""``dallosh stream ...``: live connectors (X filtered stream, Mastodon) into Kafka."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable

import click

from stream_app.cli_support import current_settings, friendly_errors, setup_logging
from stream_app.kafka_admin import ensure_topics
from stream_app.metrics import serve_metrics
from stream_app.settings import Settings


def _checkpoint_name(value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"[A-Za-z0-9._-]+", value):
        raise click.BadParameter("letters, digits, '.', '_' and '-' only", param_hint="--name")
    return value


def _stream_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--stall-timeout", type=click.FloatRange(min=0, min_open=True),
                     help="Seconds without a byte (keep-alives included) before reconnecting "
                          "[default: DALLOSH_STREAM_STALL_TIMEOUT, 30]."),
        click.option("--name", callback=lambda ctx, param, value: _checkpoint_name(value),
                     help="Checkpoint name: the position is kept in DATA_DIR/connectors/NAME.json."),
        click.option("--limit", type=click.IntRange(min=1),
                     help="Stop after this many posts (and bad lines) received."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _rule_options(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option("--rules-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                           help="YAML list of rules: strings, or {value, tag} mappings "
                                "[default: DALLOSH_X_RULES_FILE].")(command)
    return click.option("--rule", "rules", multiple=True, metavar="RULE",
                        help="A filtered-stream rule, e.g. '(@free OR @freebox) lang:fr "
                             "-is:retweet'; repeatable.")(command)


def _wanted_rules(rules: tuple[str, ...], rules_file: Path | None, settings: Settings) -> list | None:
    """The configured rules, or None when none are configured (the active ones then apply)."""
    from connectors.live.x_stream import load_rules, read_rules_file
    path = rules_file or settings.x_rules_file
    if not rules and path is None:
        return None
    return load_rules(rules, read_rules_file(path) if path else [])


def _setup_stream_logging(settings: Settings) -> None:
    setup_logging(settings)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per reconnect is enough


def _report_live(name: str, counts: Any, stats: Any, settings: Settings) -> None:
    from connectors.live.checkpoint import checkpoint_path
    from connectors.live.runner import describe_stats
    click.echo(f"{name}: run {counts.run_id}: {counts.summary_line()}")
    click.echo(f"  {describe_stats(stats)}")
    if counts.dead_letter_reasons:
        reasons = ", ".join(f"{k}={v}" for k, v in counts.dead_letter_reasons.most_common())
        click.echo(f"  dead letters  {reasons}")
    click.echo(f"  checkpoint    {checkpoint_path(settings.data_dir, name)}")
    sys.exit(0 if counts.reconciles else 1)


@click.group()
def stream() -> None:
    """Follow a live network into Kafka (tweets.raw) without losing its place.

    The position and the recently produced ids are kept in DATA_DIR/connectors/NAME.json,
    so a reconnect or a restart neither loses nor duplicates what the network lets us
    recover. Ctrl-C / SIGTERM stop cleanly: flush, save the checkpoint, print
    received = produced + dead-lettered + duplicates. Prometheus metrics
    (dallosh_stream_*) on DALLOSH_STREAM_METRICS_PORT.
    """


@stream.command("x")
@_rule_options
@click.option("--base-url", help="X API base URL [default: DALLOSH_X_API_URL, https://api.x.com].")
@click.option("--backfill-minutes", type=click.IntRange(0, 5),
              help="Minutes of posts X re-sends after a reconnect or restart (needs Pro or "
                   "Enterprise access; duplicates are skipped) [default: DALLOSH_X_BACKFILL_MINUTES, 0].")
@_stream_options
@friendly_errors
def stream_x(rules: tuple[str, ...], rules_file: Path | None, base_url: str | None,
             backfill_minutes: int | None, stall_timeout: float | None, name: str | None,
             limit: int | None) -> None:
    """Stream posts matching your rules from the X API v2 filtered stream.

    Needs X_BEARER_TOKEN (the app-only bearer token of your X project). With --rule or
    --rules-file the active rules are first made equal to them; without, the rules
    already active on the project apply (`dallosh stream x-rules` shows them).
    """
    from connectors.live.runner import stream_to_kafka
    from connectors.live.stream import check_token_url
    from connectors.live.x_stream import XStream
    settings = current_settings()
    _setup_stream_logging(settings)
    wanted = _wanted_rules(rules, rules_file, settings)
    base_url = base_url or settings.x_api_url
    check_token_url(base_url, "X API base URL")  # before Kafka is touched: a config error
    name = name or "x-stream"
    serve_metrics(settings.stream_metrics_port, settings.metrics_addr)

    async def run() -> tuple[Any, Any]:
        # Fail on an unreachable Kafka before touching the project's rules.
        await ensure_topics(settings.bootstrap_servers, [settings.topic_raw, settings.topic_dlq],
                            settings.partitions)
        async with XStream(os.environ.get("X_BEARER_TOKEN", "").strip(),
                           base_url=base_url,
                           stall_timeout=stall_timeout or settings.stream_stall_timeout,
                           backfill_minutes=(settings.x_backfill_minutes if backfill_minutes is None
                                             else backfill_minutes)) as source:
            if wanted is not None:
                for line in (await source.sync_rules(wanted)).describe():
                    click.echo(f"rules: {line}")
            return await stream_to_kafka(source, settings, name=name, max_events=limit), source.stats

    counts, stats = asyncio.run(run())
    _report_live(name, counts, stats, settings)


@stream.command("x-rules")
@_rule_options
@click.option("--dry-run", is_flag=True,
              help="Print the changes and have X validate them, but change nothing.")
@click.option("--base-url", help="X API base URL [default: DALLOSH_X_API_URL, https://api.x.com].")
@friendly_errors
def stream_x_rules(rules: tuple[str, ...], rules_file: Path | None, dry_run: bool,
                   base_url: str | None) -> None:
    """Show the active X filtered-stream rules, or make them equal to --rule/--rules-file.

    Rules are matched on value and tag: active rules that are not configured are
    deleted, configured ones that are not active are added. Needs X_BEARER_TOKEN.
    """
    from connectors.live.x_stream import XStream
    settings = current_settings()
    wanted = _wanted_rules(rules, rules_file, settings)

    async def run() -> list[str]:
        async with XStream(os.environ.get("X_BEARER_TOKEN", "").strip(),
                           base_url=base_url or settings.x_api_url) as x:
            if wanted is None:
                active = await x.active_rules()
                return [f"{rid}  {r.value!r}" + (f" (tag {r.tag})" if r.tag else "")
                        for rid, r in active] or ["no active rules"]
            return (await x.sync_rules(wanted, dry_run=dry_run)).describe()

    for line in asyncio.run(run()):
        click.echo(line)


@stream.command("mastodon")
@click.option("--instance", "--base-url", "instance",
              help="Instance URL, e.g. https://piaille.fr "
                   "[default: DALLOSH_MASTODON_INSTANCE, https://mastodon.social].")
@click.option("--tag", "tags", multiple=True, metavar="HASHTAG",
              help="Hashtag to follow, with or without '#'; repeatable "
                   "[default: DALLOSH_MASTODON_TAGS; none: the public timeline].")
@click.option("--local", is_flag=True, help="Only statuses posted on the instance itself.")
@click.option("--streaming-url",
              help="Streaming server, when the instance serves it elsewhere "
                   "[default: DALLOSH_MASTODON_STREAMING_URL, the instance].")
@_stream_options
@friendly_errors
def stream_mastodon(instance: str | None, tags: tuple[str, ...], local: bool,
                    streaming_url: str | None, stall_timeout: float | None, name: str | None,
                    limit: int | None) -> None:
    """Stream statuses of Mastodon hashtag (or public) timelines.

    After a reconnect or a restart, the statuses posted meanwhile are fetched from the
    instance's REST timeline (duplicates skipped). MASTODON_ACCESS_TOKEN is sent when
    set (some instances want one for public timelines).
    """
    from connectors.live.mastodon import MastodonStream
    from connectors.live.runner import stream_to_kafka
    settings = current_settings()
    _setup_stream_logging(settings)
    tags = tags or tuple(t for t in settings.mastodon_tags.split(",") if t.strip())
    serve_metrics(settings.stream_metrics_port, settings.metrics_addr)

    async def run() -> tuple[Any, Any, str]:
        async with MastodonStream(instance or settings.mastodon_instance, tags=tags, local=local,
                                  access_token=os.environ.get("MASTODON_ACCESS_TOKEN", "").strip(),
                                  streaming_url=streaming_url or settings.mastodon_streaming_url,
                                  stall_timeout=stall_timeout or settings.stream_stall_timeout
                                  ) as source:
            run_name = name or re.sub(r"[^A-Za-z0-9._-]", "_", f"mastodon-{source.host}")
            counts = await stream_to_kafka(source, settings, name=run_name, max_events=limit)
            return counts, source.stats, run_name

    counts, stats, run_name = asyncio.run(run())
    _report_live(run_name, counts, stats, settings)
