"""Settings: every knob of one installation, read from ``DALLOSH_*`` variables.

Precedence: explicit overrides (tests, CLI flags) > environment > optional YAML config
file (``DALLOSH_CONFIG``, keys are the lowercase names without the prefix) > defaults.
The README's configuration table is generated from :data:`SETTINGS` and a test keeps
it in sync, so a new setting is documented the moment it is added here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

ENV_PREFIX = "DALLOSH_"


class SettingsError(ValueError):
    """A setting has a value the program cannot use (message names the variable)."""


@dataclass(frozen=True)
class SettingSpec:
    name: str
    default: Any
    parse: Callable[[str], Any]
    help: str

    @property
    def env_var(self) -> str:
        return ENV_PREFIX + self.name.upper()


def _user_dir(xdg_var: str, fallback: str) -> Path:
    base = os.environ.get(xdg_var) or str(Path.home() / fallback)
    return Path(base) / "dallosh"


def _number(raw: str, kind: type, ok: Callable[[Any], bool], expected: str) -> Any:
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"must be {expected}") from None
    if not ok(value):
        raise ValueError(f"must be {expected}")
    return value


def _positive_int(raw: str) -> int:
    return _number(raw, int, lambda v: v > 0, "a positive integer")


def _port(raw: str) -> int:
    return _number(raw, int, lambda v: 0 <= v <= 65535, "a TCP port (0-65535)")


def _positive_float(raw: str) -> float:
    return _number(raw, float, lambda v: v > 0, "a positive number")


def _non_negative_float(raw: str) -> float:
    return _number(raw, float, lambda v: v >= 0, "a number >= 0")


def _non_negative_int(raw: str) -> int:
    return _number(raw, int, lambda v: v >= 0, "an integer >= 0")


def _backfill_minutes(raw: str) -> int:
    return _number(raw, int, lambda v: 0 <= v <= 5, "an integer from 0 to 5 (X's backfill limit)")


SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec("data_dir", None, Path,
                "All local state of one installation: broker data, embedded ClickHouse, "
                "archives. Default `$XDG_DATA_HOME/dallosh` (`~/.local/share/dallosh`)."),
    SettingSpec("cache_dir", None, Path,
                "Per-user download cache shared by all data dirs (Kafka jars, model and "
                "tokenizer files). Default `$XDG_CACHE_HOME/dallosh` (`~/.cache/dallosh`)."),
    SettingSpec("config", None, Path,
                "Optional YAML file with any of these settings (lowercase, no prefix)."),
    SettingSpec("kafka_bootstrap", "", str,
                "Bootstrap servers of an existing Kafka cluster. Empty: use the local "
                "broker managed by `dallosh infra` on `kafka_port`."),
    SettingSpec("kafka_port", 19092, _port, "Client port of the local broker (127.0.0.1)."),
    SettingSpec("kafka_controller_port", 19093, _port,
                "KRaft controller port of the local broker (127.0.0.1)."),
    SettingSpec("kafka_heap", "512m", str, "Java heap cap of the local broker (-Xmx)."),
    SettingSpec("kafka_version", "3.9.1", str,
                "Apache Kafka release fetched from Maven Central for the local broker."),
    SettingSpec("clickhouse_dsn", "", str,
                "`chdb:///path` (embedded engine) or `http(s)://user:pass@host:8123/dallosh`. "
                "Empty: embedded at `DATA_DIR/clickhouse`."),
    SettingSpec("app_id", "dallosh", str,
                "Faust application id: the Kafka consumer group of the workers' Faust agents; "
                "the ClickHouse sink uses `<app_id>-sink`."),
    SettingSpec("partitions", 4, _positive_int,
                "Partitions of the pipeline topics (the most workers that can share a stage)."),
    SettingSpec("topic_raw", "tweets.raw", str, "Topic the connectors produce raw tweets to."),
    SettingSpec("topic_clean", "tweets.clean", str, "Topic of cleaned tweets."),
    SettingSpec("topic_classified", "tweets.classified", str, "Topic of classified tweets."),
    SettingSpec("topic_dlq", "tweets.dlq", str, "Dead-letter topic (record + stage + reason)."),
    SettingSpec("topic_alerts", "alerts", str, "Topic of weak-signal alerts."),
    SettingSpec("topic_provider_calls", "provider.calls", str,
                "Ledger topic: one record per classifier request (tokens, cost, latency)."),
    SettingSpec("topic_decisions", "tweets.decisions", str,
                "Topic of the clean stage's decisions (dropped, tagged, deduplicated tweets)."),
    SettingSpec("brand", "free", str,
                "Built-in brand configuration judging relevance (`free`, `airline`), unless "
                "`brand_file` is set."),
    SettingSpec("brand_file", None, Path,
                "YAML brand configuration (accounts, keywords, policies); see "
                "`stream_app/clean/brands/free.yaml`."),
    SettingSpec("dedup_horizon_s", 21600.0, _positive_float,
                "Event-time horizon (seconds) within which copies and retweets are matched "
                "to their original."),
    SettingSpec("dedup_capacity", 50_000, _positive_int,
                "Most tweets the dedup index remembers (~2 KB each) within the horizon."),
    SettingSpec("dedup_threshold", 0.6, _positive_float,
                "Jaccard similarity from which a tweet is a near-duplicate of an earlier one."),
    SettingSpec("metrics_port", 9108, _port,
                "Port of the worker's Prometheus `/metrics` endpoint (0 disables it)."),
    SettingSpec("classify_batch_size", 200, _positive_int,
                "Most tweets the classify agent takes per window (packed into provider requests)."),
    SettingSpec("classify_max_wait", 0.5, _positive_float,
                "Seconds a partial classify batch waits before it is sent anyway."),
    SettingSpec("providers", None, Path,
                "YAML list of classifier providers (cloud, on-prem) replacing the packaged "
                "`stream_app/classify/providers.yaml`; e.g. a local Ollama first."),
    SettingSpec("max_cost_per_hour", 0.0, _non_negative_float,
                "USD a rolling hour of classifier requests may cost (0: no limit); requests that "
                "would exceed it go to the next, cheaper tier."),
    SettingSpec("max_cost_per_day", 0.0, _non_negative_float,
                "USD a rolling day of classifier requests may cost (0: no limit)."),
    SettingSpec("classify_deadline_s", 20.0, _positive_float,
                "Seconds a request may take with its retries before its tweets fall to the next tier."),
    SettingSpec("classify_max_items", 50, _positive_int,
                "Most tweets in one provider request (accuracy drops in long batches)."),
    SettingSpec("local_model", None, str,
                "Artifact directory of the local model tier (`dallosh train --out`); `off` "
                "disables the tier. Default `<cache_dir>/models/local`; when no artifact is "
                "there the cascade falls back to the degraded rules."),
    SettingSpec("local_model_threads", 2, _positive_int,
                "CPU threads of local-model inference and training (torch)."),
    SettingSpec("local_escalate_below", 0.0, _non_negative_float,
                "Local-first mode when > 0: the local model answers first and only items whose "
                "calibrated confidence is below this go up to the cloud/on-prem providers. "
                "0 = providers first, local model only as their fallback."),
    SettingSpec("sink_batch_size", 5000, _positive_int,
                "Most rows per ClickHouse insert."),
    SettingSpec("sink_max_wait", 0.5, _positive_float,
                "Seconds a partial sink batch waits before it is inserted anyway."),
    SettingSpec("sink_max_backoff_s", 30.0, _positive_float,
                "Longest pause between two retries of an insert that failed for a transient "
                "reason (backoff doubles from 0.2 s, with jitter); the batch is never dropped."),
    SettingSpec("stream_buffer_max", 4096, _positive_int,
                "Most messages a Faust agent (clean, classify, signals) buffers ahead of its "
                "processing; past it the worker stops fetching that partition (back-pressure). "
                "The ClickHouse sink fetches its next batch only once the previous one is stored."),
    SettingSpec("sink_chaos_file", None, Path,
                "Chaos switch for fault-injection tests, off by default: while this file exists, "
                "every ClickHouse insert fails (content `refuse`: before it is sent; `lost-ack`: "
                "after it landed, as if the reply were lost)."),
    SettingSpec("tweets_retention_days", 365, _non_negative_int,
                "Days a tweet (and its clean decisions) is kept after it was stored (0: forever)."),
    SettingSpec("rollup_retention_days", 730, _non_negative_int,
                "Days the per-minute rollup `tweets_by_minute` keeps a cell after its last "
                "update (0: forever)."),
    SettingSpec("alerts_retention_days", 365, _non_negative_int,
                "Days an alert is kept after its last update (0: forever)."),
    SettingSpec("provider_calls_retention_days", 400, _non_negative_int,
                "Days a classifier request stays in the FinOps ledger `provider_calls` (0: forever)."),
    SettingSpec("dlq_retention_days", 90, _non_negative_int,
                "Days a dead letter is kept in ClickHouse `dlq` (0: forever)."),
    SettingSpec("replay_checkpoint_every", 10_000, _positive_int,
                "Rows between two replay checkpoints (what `dallosh replay --resume` continues from)."),
    SettingSpec("x_api_url", "https://api.x.com", str,
                "Base URL of the X API (`dallosh stream x`); the token comes from `X_BEARER_TOKEN`."),
    SettingSpec("x_rules_file", None, Path,
                "YAML list of X filtered-stream rules (strings or `{value, tag}`) that "
                "`dallosh stream x` applies before streaming."),
    SettingSpec("x_backfill_minutes", 0, _backfill_minutes,
                "Minutes of posts X re-sends after a reconnect or restart (0-5; needs Pro or "
                "Enterprise access); duplicates are skipped."),
    SettingSpec("mastodon_instance", "https://mastodon.social", str,
                "Mastodon instance `dallosh stream mastodon` follows (e.g. `https://piaille.fr`); "
                "a token, if the instance wants one, comes from `MASTODON_ACCESS_TOKEN`."),
    SettingSpec("mastodon_tags", "", str,
                "Comma-separated hashtags `dallosh stream mastodon` follows. Empty: the public "
                "timeline."),
    SettingSpec("mastodon_streaming_url", "", str,
                "Streaming server of the instance, when it is not the instance URL itself."),
    SettingSpec("stream_stall_timeout", 30.0, _positive_float,
                "Seconds without a byte (keep-alives included) before a live connector "
                "reconnects (X sends one every ~20 s, Mastodon ~15 s)."),
    SettingSpec("stream_metrics_port", 9109, _port,
                "Port of a live connector's Prometheus `/metrics` (0 disables it); distinct "
                "from the worker's so both can run on one host."),
    SettingSpec("topic_windows", "signals.windows", str,
                "Topic of the signals stage's closed one-minute windows (per topic, location "
                "and overall), re-published when late data revises them."),
    SettingSpec("signals_allowed_lateness_s", 120.0, _non_negative_float,
                "Event-time seconds the signals watermark trails the slowest partition: a "
                "one-minute window closes this long after its end."),
    SettingSpec("signals_revision_horizon_s", 86400.0, _positive_float,
                "Event-time seconds behind the watermark within which late tweets still revise "
                "closed windows and alerts; older ones are counted and left out."),
    SettingSpec("signals_high_share", 0.30, _positive_float,
                "Threshold detector: share of priority-0 tweets over the last hour and the last "
                "5 minutes that fires an alert."),
    SettingSpec("signals_burst_alpha", 1e-6, _positive_float,
                "Burst detector: Poisson tail probability of the last 10 minutes' negative count "
                "under the baseline below which it fires."),
    SettingSpec("signals_burst_ratio", 2.8, _positive_float,
                "Burst detector: least ratio of observed to expected negatives (last 10 minutes)."),
    SettingSpec("signals_trend_hours", 6, _positive_int,
                "Slow-rise detector: hours of five-minute negative counts the Poisson CUSUM "
                "looks back over."),
    SettingSpec("signals_trend_threshold", 8.5, _positive_float,
                "Slow-rise detector: log-likelihood ratio (nats) at which the Poisson CUSUM "
                "(tuned to a doubling of the negatives) raises an alarm; lower pages earlier "
                "and more often."),
    SettingSpec("signals_resolve_minutes", 30, _positive_int,
                "Event-time minutes without any signal before an alert resolves (hysteresis)."),
    SettingSpec("log_level", "info", str, "Log level of workers and commands."),
)

_SPECS = {spec.name: spec for spec in SETTINGS}
# Settings whose meaning changed under a new name: an old name still set is an error
# rather than silently ignored, so nobody keeps tuning a knob that no longer exists.
RENAMED = {"signals_trend_z": ("signals_trend_threshold",
                               "the slow-rise test is now a CUSUM; its threshold is not a z-score")}


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    cache_dir: Path
    config: Path | None
    kafka_bootstrap: str
    kafka_port: int
    kafka_controller_port: int
    kafka_heap: str
    kafka_version: str
    clickhouse_dsn: str
    app_id: str
    partitions: int
    topic_raw: str
    topic_clean: str
    topic_classified: str
    topic_dlq: str
    topic_alerts: str
    topic_provider_calls: str
    topic_decisions: str
    brand: str
    brand_file: Path | None
    dedup_horizon_s: float
    dedup_capacity: int
    dedup_threshold: float
    metrics_port: int
    classify_batch_size: int
    classify_max_wait: float
    providers: Path | None
    max_cost_per_hour: float
    max_cost_per_day: float
    classify_deadline_s: float
    classify_max_items: int
    sink_batch_size: int
    local_model: Path | None
    local_model_threads: int
    local_escalate_below: float
    sink_max_wait: float
    sink_max_backoff_s: float
    stream_buffer_max: int
    sink_chaos_file: Path | None
    tweets_retention_days: int
    rollup_retention_days: int
    alerts_retention_days: int
    provider_calls_retention_days: int
    dlq_retention_days: int
    replay_checkpoint_every: int
    x_api_url: str
    x_rules_file: Path | None
    x_backfill_minutes: int
    mastodon_instance: str
    mastodon_tags: str
    mastodon_streaming_url: str
    stream_stall_timeout: float
    stream_metrics_port: int
    topic_windows: str
    signals_allowed_lateness_s: float
    signals_revision_horizon_s: float
    signals_high_share: float
    signals_burst_alpha: float
    signals_burst_ratio: float
    signals_trend_hours: int
    signals_trend_threshold: float
    signals_resolve_minutes: int
    log_level: str

    @property
    def uses_local_broker(self) -> bool:
        return not self.kafka_bootstrap

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.kafka_port}"

    def as_env(self) -> dict[str, str]:
        """The settings as ``DALLOSH_*`` variables, to hand to a child process."""
        env = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "local_model" and value is None:
                value = "off"  # None means "disabled" here, not "use the default"
            if value is not None:
                env[_SPECS[f.name].env_var] = str(value)
        return env


def load_settings(overrides: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings`; raises :class:`SettingsError` with the variable's name."""
    environ = os.environ if environ is None else environ
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(_SPECS)
    if unknown:
        raise SettingsError(f"unknown setting(s): {', '.join(sorted(unknown))}")

    for old_name, (new_name, why) in RENAMED.items():
        if ENV_PREFIX + old_name.upper() in environ:
            raise SettingsError(f"{ENV_PREFIX}{old_name.upper()} was replaced by "
                                f"{_SPECS[new_name].env_var} ({why}; see README, Configuration)")

    raw: dict[str, Any] = {}
    config_path = overrides.get("config") or environ.get(_SPECS["config"].env_var)
    if config_path:
        raw.update(_read_config_file(Path(config_path)))
    for spec in SETTINGS:
        if spec.env_var in environ and environ[spec.env_var] != "":
            raw[spec.name] = environ[spec.env_var]
    raw.update(overrides)

    values: dict[str, Any] = {}
    for spec in SETTINGS:
        if spec.name not in raw:
            values[spec.name] = spec.default
            continue
        value = raw[spec.name]
        try:
            values[spec.name] = value if not isinstance(value, str) else spec.parse(value)
        except ValueError as exc:
            raise SettingsError(f"{spec.env_var}={value!r}: {exc}") from None

    values["data_dir"] = Path(values["data_dir"] or _user_dir("XDG_DATA_HOME", ".local/share"))
    values["data_dir"] = values["data_dir"].expanduser().resolve()
    values["cache_dir"] = Path(values["cache_dir"] or _user_dir("XDG_CACHE_HOME", ".cache"))
    values["cache_dir"] = values["cache_dir"].expanduser().resolve()
    if values["local_model"] == "off":
        values["local_model"] = None
    else:
        values["local_model"] = Path(values["local_model"] or values["cache_dir"] / "models" / "local")
    if not values["clickhouse_dsn"]:
        values["clickhouse_dsn"] = f"chdb://{values['data_dir'] / 'clickhouse'}"
    return Settings(**values)


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise SettingsError(f"DALLOSH_CONFIG: file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"DALLOSH_CONFIG: {path} is not valid YAML: {exc}") from None
    if not isinstance(content, dict):
        raise SettingsError(f"DALLOSH_CONFIG: {path} must hold a mapping of settings")
    unknown = set(content) - set(_SPECS)
    if unknown:
        raise SettingsError(f"DALLOSH_CONFIG: {path}: unknown setting(s): "
                            f"{', '.join(sorted(unknown))}")
    return {k: (str(v) if not isinstance(v, str) else v) for k, v in content.items()}


def settings_table_markdown() -> str:
    """The README configuration table (kept in sync by a test)."""
    rows = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for spec in SETTINGS:
        default = "" if spec.default in (None, "") else f"`{spec.default}`"
        rows.append(f"| `{spec.env_var}` | {default} | {spec.help} |")
    return "\n".join(rows)
