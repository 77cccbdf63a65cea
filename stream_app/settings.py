"""Settings: every knob of one installation, read from ``DALLOSH_*`` variables.

Precedence: explicit overrides (tests, CLI flags) > environment > optional YAML config
file (``DALLOSH_CONFIG``, keys are the lowercase names without the prefix) > defaults.
The configuration table of ``docs/configuration.md`` is generated from :data:`SETTINGS`
and a test keeps it in sync, so a new setting is documented the moment it is added here.

Each setting has a parser that refuses what cannot work (a log level logging does not
know, a share above 1, a topic name Kafka refuses, a retention that overflows
ClickHouse's DateTime...), and :func:`_check_together` refuses combinations that cannot
(two stages on one topic). The CLI loads settings before a command starts anything, so
a bad value is one ``error: DALLOSH_X='...': must be ...`` line, not a crash halfway
through a run. A ``DALLOSH_*`` variable that nothing reads gets a warning with the
nearest setting's name (:func:`unknown_variable_warnings`): a typo is not silent.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import urlsplit

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


# ---------------------------------------------------------------------------- parsers
# One parser per kind of value. Each refuses what cannot work (with the reason a user can
# act on), so that a bad variable stops a command before it starts anything instead of
# crashing a worker, a broker or logging halfway through a run.

def _number(raw: str, kind: type, ok: Callable[[Any], bool], expected: str) -> Any:
    try:
        value = kind(raw.strip())
    except ValueError:
        raise ValueError(f"must be {expected}") from None
    # float() also reads "nan" and "inf": no bound, timeout or budget means either.
    if (kind is float and not math.isfinite(value)) or not ok(value):
        raise ValueError(f"must be {expected}")
    return value


def _ip_address(raw: str) -> str:
    import ipaddress
    try:
        return str(ipaddress.ip_address(raw.strip()))
    except ValueError:
        raise ValueError("must be an IP address such as 127.0.0.1 or 0.0.0.0") from None


def _positive_int(raw: str) -> int:
    return _number(raw, int, lambda v: v > 0, "a positive integer")


def _port(raw: str) -> int:
    return _number(raw, int, lambda v: 0 <= v <= 65535, "a TCP port (0-65535)")


def _listen_port(raw: str) -> int:
    """A port something must listen on: 0 ("any free port") cannot be connected to."""
    return _number(raw, int, lambda v: 1 <= v <= 65535, "a TCP port (1-65535)")


def _positive_float(raw: str) -> float:
    return _number(raw, float, lambda v: v > 0, "a positive number")


def _non_negative_float(raw: str) -> float:
    return _number(raw, float, lambda v: v >= 0, "a number >= 0")


def _non_negative_int(raw: str) -> int:
    return _number(raw, int, lambda v: v >= 0, "an integer >= 0")


def _share(raw: str) -> float:
    """A share or similarity: 0 would match everything, above 1 nothing."""
    return _number(raw, float, lambda v: 0 < v <= 1, "a number in (0, 1]")


def _probability(raw: str) -> float:
    """A test's significance level: 0 never fires, 1 always does."""
    return _number(raw, float, lambda v: 0 < v < 1, "a probability in (0, 1), e.g. 1e-6")


def _confidence(raw: str) -> float:
    return _number(raw, float, lambda v: 0 <= v <= 1, "a confidence in [0, 1]")


def _backfill_minutes(raw: str) -> int:
    return _number(raw, int, lambda v: 0 <= v <= 5, "an integer from 0 to 5 (X's backfill limit)")


# ClickHouse's DateTime ends in 2106 and `stored_at + toIntervalDay(N)` wraps around past
# it (measured: now + 30000 days gives 1972), so a longer TTL would delete rows at once.
MAX_RETENTION_DAYS = 10_000


def _retention_days(raw: str) -> int:
    return _number(raw, int, lambda v: 0 <= v <= MAX_RETENTION_DAYS,
                   f"an integer from 0 (keep forever) to {MAX_RETENTION_DAYS} (~27 years; "
                   "longer overflows ClickHouse's DateTime)")


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _log_level(raw: str) -> str:
    level = raw.strip().lower()
    if level not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
    return level


LOCAL_MODEL_RUNTIMES = ("auto", "onnx", "torch")


def _local_model_runtime(raw: str) -> str:
    runtime = raw.strip().lower()
    if runtime not in LOCAL_MODEL_RUNTIMES:
        raise ValueError(f"must be one of {', '.join(LOCAL_MODEL_RUNTIMES)}")
    return runtime


def _http_url(raw: str, *, bare_host_ok: bool = False) -> str:
    value = raw.strip()
    expected = "an http:// or https:// URL" + (" or a host name" if bare_host_ok else "")
    try:
        parts = urlsplit(value if "://" in value or not bare_host_ok else f"https://{value}")
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"must be {expected} (bad port?)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be {expected} with a host")
    return value


def _instance_url(raw: str) -> str:
    return _http_url(raw, bare_host_ok=True)  # MastodonStream adds https:// to a bare host


def _clickhouse_dsn(raw: str) -> str:
    value = raw.strip()
    if value.startswith("chdb://"):
        if not value[len("chdb://"):]:
            raise ValueError("must name the embedded store's folder: chdb:///path")
        return value
    try:
        _http_url(value)
    except ValueError:
        raise ValueError("must be chdb:///path or http(s)://user:pass@host:8123/dallosh") from None
    return value


_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?)$")


def _kafka_bootstrap(raw: str) -> str:
    """``host[:port],...`` as aiokafka and Faust (``kafka://<entry>``) take it; spaces
    around commas are dropped, since Faust would keep them in the host name."""
    servers = [entry.strip() for entry in raw.split(",")]
    expected = "a comma-separated list of host:port (no scheme), e.g. k1:9092,k2:9092"
    for server in servers:
        host, sep, port = server.rpartition(":") if not server.endswith("]") else (server, "", "")
        if not sep:
            host, port = server, "9092"
        if not _HOST.match(host) or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"must be {expected}")
    return ",".join(servers)


_JVM_SIZE = re.compile(r"^(\d+)([kmgt]?)$", re.IGNORECASE)
_JVM_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
MIN_KAFKA_HEAP = 128 * 1024**2  # the broker starts with -Xms128m; -Xmx below it fails


def _kafka_heap(raw: str) -> str:
    value = raw.strip()
    match = _JVM_SIZE.match(value)
    if not match or int(match[1]) * _JVM_UNITS[match[2].lower()] < MIN_KAFKA_HEAP:
        raise ValueError("must be a Java heap size of at least 128m, e.g. 512m or 2g")
    return value


def _kafka_version(raw: str) -> str:
    value = raw.strip()  # a Maven version and a cache folder name: no spaces, no slashes
    if not re.match(r"^\d+\.\d+(\.\d+)?([.-][0-9A-Za-z]+)*$", value):
        raise ValueError("must be an Apache Kafka release, e.g. 3.9.1")
    return value


# Kafka's own rule for topic names (and Faust derives topic names from the app id).
_KAFKA_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
MAX_TOPIC_LENGTH = 249


def _topic(raw: str) -> str:
    value = raw.strip()
    if (not _KAFKA_NAME.match(value) or value in (".", "..")
            or len(value) > MAX_TOPIC_LENGTH):
        raise ValueError(f"must be a Kafka topic name: 1-{MAX_TOPIC_LENGTH} of "
                         "A-Z a-z 0-9 . _ -")
    return value


_APP_ID_SUFFIX = "-signals-state"  # the longest topic name built from the app id


def _app_id(raw: str) -> str:
    value = raw.strip()
    longest = MAX_TOPIC_LENGTH - len(_APP_ID_SUFFIX)
    if not _KAFKA_NAME.match(value) or value in (".", "..") or len(value) > longest:
        raise ValueError(f"must be 1-{longest} of A-Z a-z 0-9 . _ - (it names consumer "
                         "groups and topics)")
    return value


def _brand(raw: str) -> str:
    value = raw.strip()  # a file name under stream_app/clean/brands: no path
    if not re.match(r"^[A-Za-z0-9_-]+$", value):
        raise ValueError("must be the name of a built-in brand (free, airline); "
                         "set DALLOSH_BRAND_FILE for your own YAML")
    return value


def _hashtags(raw: str) -> str:
    for tag in raw.split(","):
        tag = tag.strip().lstrip("#")
        if tag and not re.match(r"^\w+$", tag):
            raise ValueError("must be comma-separated hashtags (letters, digits, _), "
                             "e.g. freebox,panne")
    return raw.strip()


def _existing_file(raw: str) -> Path:
    path = Path(raw.strip()).expanduser()
    if not path.is_file():
        raise ValueError("must be an existing file" +
                         (" (it is a folder)" if path.is_dir() else " (not found)"))
    return path


def _directory(raw: str) -> Path:
    path = Path(raw.strip()).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError("must be a folder (this is a file)")
    return path


def _local_model(raw: str) -> str:
    value = raw.strip()
    if value.lower() == "off":
        return "off"
    if Path(value).expanduser().is_file():
        raise ValueError("must be an artifact folder (`dallosh train --out`) or `off`")
    return value


SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec("data_dir", None, _directory,
                "All local state of one installation: broker data, embedded ClickHouse, "
                "archives. Default `$XDG_DATA_HOME/dallosh` (`~/.local/share/dallosh`)."),
    SettingSpec("cache_dir", None, _directory,
                "Per-user download cache shared by all data dirs (Kafka jars, model and "
                "tokenizer files). Default `$XDG_CACHE_HOME/dallosh` (`~/.cache/dallosh`)."),
    SettingSpec("config", None, Path,
                "Optional YAML file with any of these settings (lowercase, no prefix)."),
    SettingSpec("kafka_bootstrap", "", _kafka_bootstrap,
                "Bootstrap servers of an existing Kafka cluster. Empty: use the local "
                "broker managed by `dallosh infra` on `kafka_port`."),
    SettingSpec("kafka_port", 19092, _listen_port, "Client port of the local broker (127.0.0.1)."),
    SettingSpec("kafka_controller_port", 19093, _listen_port,
                "KRaft controller port of the local broker (127.0.0.1)."),
    SettingSpec("kafka_heap", "512m", _kafka_heap,
                "Java heap cap of the local broker (-Xmx): e.g. `512m`, `2g`; at least `128m`."),
    SettingSpec("kafka_version", "3.9.1", _kafka_version,
                "Apache Kafka release fetched from Maven Central for the local broker."),
    SettingSpec("clickhouse_dsn", "", _clickhouse_dsn,
                "`chdb:///path` (embedded engine) or `http(s)://user:pass@host:8123/dallosh`. "
                "Empty: embedded at `DATA_DIR/clickhouse`."),
    SettingSpec("app_id", "dallosh", _app_id,
                "Faust application id: the Kafka consumer group of the workers' Faust agents; "
                "the ClickHouse sink uses `<app_id>-sink`."),
    SettingSpec("partitions", 4, _positive_int,
                "Partitions of the pipeline topics (the most workers that can share a stage)."),
    SettingSpec("topic_raw", "tweets.raw", _topic, "Topic the connectors produce raw tweets to."),
    SettingSpec("topic_clean", "tweets.clean", _topic, "Topic of cleaned tweets."),
    SettingSpec("topic_classified", "tweets.classified", _topic, "Topic of classified tweets."),
    SettingSpec("topic_dlq", "tweets.dlq", _topic, "Dead-letter topic (record + stage + reason)."),
    SettingSpec("topic_alerts", "alerts", _topic, "Topic of weak-signal alerts."),
    SettingSpec("topic_provider_calls", "provider.calls", _topic,
                "Ledger topic: one record per classifier request (tokens, cost, latency)."),
    SettingSpec("topic_decisions", "tweets.decisions", _topic,
                "Topic of the clean stage's decisions (dropped, tagged, deduplicated tweets)."),
    SettingSpec("brand", "free", _brand,
                "Built-in brand configuration judging relevance (`free`, `airline`), unless "
                "`brand_file` is set."),
    SettingSpec("brand_file", None, _existing_file,
                "YAML brand configuration (accounts, keywords, policies); see "
                "`stream_app/clean/brands/free.yaml`."),
    SettingSpec("dedup_horizon_s", 21600.0, _positive_float,
                "Event-time horizon (seconds) within which copies and retweets are matched "
                "to their original."),
    SettingSpec("dedup_capacity", 50_000, _positive_int,
                "Most tweets the dedup index remembers (~2 KB each) within the horizon."),
    SettingSpec("dedup_threshold", 0.6, _share,
                "Jaccard similarity from which a tweet is a near-duplicate of an earlier one."),
    SettingSpec("metrics_port", 9108, _port,
                "Port of the worker's Prometheus `/metrics` endpoint (0 disables it)."),
    SettingSpec("metrics_addr", "127.0.0.1", lambda raw: _ip_address(raw),
                "Address the `/metrics` endpoints (worker, live connectors) listen on: loopback "
                "by default, so nothing is exposed by accident; `0.0.0.0` inside a container "
                "that Prometheus scrapes (docker-compose sets it)."),
    SettingSpec("classify_batch_size", 200, _positive_int,
                "Most tweets the classify agent takes per window (packed into provider requests)."),
    SettingSpec("classify_max_wait", 0.5, _positive_float,
                "Seconds a partial classify batch waits before it is sent anyway."),
    SettingSpec("providers", None, _existing_file,
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
    SettingSpec("local_model", None, _local_model,
                "Artifact directory of the local model tier (`dallosh train --out`); `off` "
                "disables the tier. Default `<cache_dir>/models/local`; when no artifact is "
                "there the cascade falls back to the degraded rules."),
    SettingSpec("local_model_threads", 2, _positive_int,
                "CPU threads of local-model inference and training (torch)."),
    SettingSpec("local_model_runtime", "auto", _local_model_runtime,
                "How workers run the local model: `onnx` (onnxruntime, the artifact's checked "
                "export, torch never imported), `torch`, or `auto`: torch where it is installed "
                "and the CPU computes bf16 natively (AVX512-BF16/AMX: faster there), else onnx."),
    SettingSpec("local_escalate_below", 0.0, _confidence,
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
    SettingSpec("tweets_retention_days", 365, _retention_days,
                "Days a tweet (and its clean decisions) is kept after it was stored (0: forever)."),
    SettingSpec("rollup_retention_days", 730, _retention_days,
                "Days the per-minute rollup `tweets_by_minute` keeps a cell after its last "
                "update (0: forever)."),
    SettingSpec("alerts_retention_days", 365, _retention_days,
                "Days an alert is kept after its last update (0: forever)."),
    SettingSpec("provider_calls_retention_days", 400, _retention_days,
                "Days a classifier request stays in the FinOps ledger `provider_calls` (0: forever)."),
    SettingSpec("dlq_retention_days", 90, _retention_days,
                "Days a dead letter is kept in ClickHouse `dlq` (0: forever)."),
    SettingSpec("replay_checkpoint_every", 10_000, _positive_int,
                "Rows between two replay checkpoints (what `dallosh replay --resume` continues from)."),
    SettingSpec("max_future_skew_s", 3600.0, _non_negative_float,
                "Seconds a tweet's `created_at` may lie ahead of now (clock skew between the "
                "source and this host); a later one is dead-lettered `created_at in the future` "
                "by the replayer and the clean stage, never stored as future data."),
    SettingSpec("x_api_url", "https://api.x.com", _http_url,
                "Base URL of the X API (`dallosh stream x`); the token comes from `X_BEARER_TOKEN`."),
    SettingSpec("x_rules_file", None, _existing_file,
                "YAML list of X filtered-stream rules (strings or `{value, tag}`) that "
                "`dallosh stream x` applies before streaming."),
    SettingSpec("x_backfill_minutes", 0, _backfill_minutes,
                "Minutes of posts X re-sends after a reconnect or restart (0-5; needs Pro or "
                "Enterprise access); duplicates are skipped."),
    SettingSpec("mastodon_instance", "https://mastodon.social", _instance_url,
                "Mastodon instance `dallosh stream mastodon` follows (e.g. `https://piaille.fr`); "
                "a token, if the instance wants one, comes from `MASTODON_ACCESS_TOKEN`."),
    SettingSpec("mastodon_tags", "", _hashtags,
                "Comma-separated hashtags `dallosh stream mastodon` follows. Empty: the public "
                "timeline."),
    SettingSpec("mastodon_streaming_url", "", _http_url,
                "Streaming server of the instance, when it is not the instance URL itself."),
    SettingSpec("stream_stall_timeout", 30.0, _positive_float,
                "Seconds without a byte (keep-alives included) before a live connector "
                "reconnects (X sends one every ~20 s, Mastodon ~15 s)."),
    SettingSpec("stream_metrics_port", 9109, _port,
                "Port of a live connector's Prometheus `/metrics` (0 disables it); distinct "
                "from the worker's so both can run on one host."),
    SettingSpec("topic_windows", "signals.windows", _topic,
                "Topic of the signals stage's closed one-minute windows (per topic, location "
                "and overall), re-published when late data revises them."),
    SettingSpec("signals_allowed_lateness_s", 120.0, _non_negative_float,
                "Event-time seconds the signals watermark trails the slowest partition: a "
                "one-minute window closes this long after its end."),
    SettingSpec("signals_revision_horizon_s", 86400.0, _positive_float,
                "Event-time seconds behind the watermark within which late tweets still revise "
                "closed windows and alerts; older ones are counted and left out."),
    SettingSpec("signals_high_share", 0.30, _share,
                "Threshold detector: share of priority-0 tweets over the last hour and the last "
                "5 minutes that fires an alert."),
    SettingSpec("signals_burst_alpha", 1e-6, _probability,
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
    SettingSpec("signals_heartbeat_s", 30.0, _non_negative_float,
                "Live timeline only: every this many wall-clock seconds, partitions without "
                "traffic are taken as caught up to now minus this, so windows close and alerts "
                "resolve when complaints stop (0: off; the watermark then waits for tweets)."),
    SettingSpec("log_level", "info", _log_level,
                "Log level of workers and commands: debug, info, warning, error or critical."),
)

_SPECS = {spec.name: spec for spec in SETTINGS}
# Settings whose meaning changed under a new name: an old name still set is an error
# rather than silently ignored, so nobody keeps tuning a knob that no longer exists.
RENAMED = {"signals_trend_z": ("signals_trend_threshold",
                               "the slow-rise test is now a CUSUM; its threshold is not a z-score")}

# DALLOSH_* variables that are read, but are not settings: the test suite's own knobs.
# The on-prem providers' URL variables (DALLOSH_OLLAMA_URL, ...) are named by the
# providers file in use; the CLI passes them in (see cli_support.current_settings).
NOT_SETTINGS = frozenset({"DALLOSH_FAULT_SEED", "DALLOSH_FUZZ_EXAMPLES"})  # test knobs
NOT_SETTINGS_PREFIXES = ("DALLOSH_TEST_",)


def unknown_variable_warnings(environ: Mapping[str, str],
                              also_known: Iterable[str] = ()) -> list[str]:
    """One warning per ``DALLOSH_*`` variable that nothing reads (a typo is otherwise
    silently ignored), with the nearest setting's name when one is close."""
    known = {spec.env_var for spec in SETTINGS} | NOT_SETTINGS | set(also_known)
    known |= {ENV_PREFIX + old.upper() for old in RENAMED}  # an error of its own
    warnings = []
    for var in sorted(environ):
        if (not var.startswith(ENV_PREFIX) or var in known
                or var.startswith(NOT_SETTINGS_PREFIXES)):
            continue
        line = f"warning: {var} is not a setting"
        nearest = difflib.get_close_matches(var[len(ENV_PREFIX):].lower(), _SPECS, n=1)
        if nearest:
            line += f"; did you mean {_SPECS[nearest[0]].env_var}?"
        warnings.append(line)
    return warnings


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
    metrics_addr: str
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
    local_model_runtime: str
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
    max_future_skew_s: float
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
    signals_heartbeat_s: float
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
                                f"{_SPECS[new_name].env_var} ({why}; see docs/configuration.md)")

    raw: dict[str, Any] = {}
    config_path = overrides.get("config") or environ.get(_SPECS["config"].env_var)
    if config_path:
        raw.update(_read_config_file(Path(config_path)))
    from_file = set(raw)
    for spec in SETTINGS:
        if spec.env_var in environ and environ[spec.env_var] != "":
            raw[spec.name] = environ[spec.env_var]
            from_file.discard(spec.name)
    for name, value in overrides.items():
        if value is not None and value != "":  # empty means default, as for a variable
            raw[name] = value
            from_file.discard(name)

    values: dict[str, Any] = {}
    for spec in SETTINGS:
        if spec.name not in raw:
            values[spec.name] = spec.default
            continue
        # Overrides may be typed (a Path, an int): they are checked like any variable.
        value = raw[spec.name] if isinstance(raw[spec.name], str) else str(raw[spec.name])
        try:
            values[spec.name] = spec.parse(value)
        except ValueError as exc:
            where = f" (in {config_path})" if spec.name in from_file else ""
            raise SettingsError(f"{spec.env_var}={_redacted(value)!r}{where}: {exc}") from None
    _check_together(values)

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


def _redacted(value: str) -> str:
    """The value with any URL password masked: error lines end up in logs and tickets."""
    return re.sub(r"(://[^/@:\s]*):[^/@\s]*@", r"\1:***@", value)


def _check_together(values: Mapping[str, Any]) -> None:
    """Settings that are valid alone but cannot work together (one clear error each)."""
    def clash(name: str, other: str, why: str) -> SettingsError:
        return SettingsError(f"{_SPECS[name].env_var}={str(values[name])!r}: same as "
                             f"{_SPECS[other].env_var}; {why}")

    if values["kafka_port"] == values["kafka_controller_port"]:
        raise clash("kafka_controller_port", "kafka_port",
                    "the local broker needs two ports (clients, KRaft controller)")
    if not values["kafka_bootstrap"]:  # the local broker and the metrics share this host
        for name in ("metrics_port", "stream_metrics_port"):
            for broker_port in ("kafka_port", "kafka_controller_port"):
                if values[name] == values[broker_port]:
                    raise clash(name, broker_port, "the local broker listens there")
    seen: dict[str, str] = {}
    for spec in SETTINGS:
        if spec.name.startswith("topic_"):
            topic = values[spec.name]
            if topic in seen:
                raise clash(spec.name, seen[topic],
                            "each stream needs its own topic (a stage would read its own output)")
            seen[topic] = spec.name


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
    # YAML reads `local_model: off` as False, and an empty value as None (unset, as an
    # empty variable is).
    return {k: "off" if v is False else str(v) for k, v in content.items() if v is not None}


def settings_table_markdown() -> str:
    """The configuration table of docs/configuration.md (kept in sync by a test)."""
    rows = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for spec in SETTINGS:
        default = "" if spec.default in (None, "") else f"`{spec.default}`"
        rows.append(f"| `{spec.env_var}` | {default} | {spec.help} |")
    return "\n".join(rows)
