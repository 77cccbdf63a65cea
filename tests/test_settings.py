import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stream_app.settings import (SETTINGS, SettingsError, load_settings, settings_table_markdown,
                                 unknown_variable_warnings)
from tests.project_docs import ROOT, read_doc

CONFIGURATION_DOC = "docs/configuration.md"  # holds the generated settings table


def test_defaults_use_local_broker_and_embedded_clickhouse(tmp_path):
    settings = load_settings(environ={"DALLOSH_DATA_DIR": str(tmp_path)})
    assert settings.uses_local_broker
    assert settings.bootstrap_servers == "127.0.0.1:19092"
    assert settings.clickhouse_dsn == f"chdb://{tmp_path / 'clickhouse'}"
    assert settings.topic_raw == "tweets.raw"


def test_environment_overrides_and_parses_types(tmp_path):
    settings = load_settings(environ={"DALLOSH_DATA_DIR": str(tmp_path), "DALLOSH_PARTITIONS": "8",
                                      "DALLOSH_KAFKA_BOOTSTRAP": "k1:9092,k2:9092",
                                      "DALLOSH_SINK_MAX_WAIT": "0.25"})
    assert settings.partitions == 8
    assert settings.sink_max_wait == 0.25
    assert not settings.uses_local_broker
    assert settings.bootstrap_servers == "k1:9092,k2:9092"


@pytest.mark.parametrize("var, value", [("DALLOSH_PARTITIONS", "zero"), ("DALLOSH_PARTITIONS", "0"),
                                        ("DALLOSH_KAFKA_PORT", "70000"),
                                        ("DALLOSH_SINK_MAX_WAIT", "-1")])
def test_bad_values_name_the_variable(var, value):
    with pytest.raises(SettingsError, match=var):
        load_settings(environ={var: value})


def test_config_file_is_read_and_environment_wins(tmp_path):
    config = tmp_path / "dallosh.yaml"
    config.write_text("partitions: 6\napp_id: from-file\n")
    settings = load_settings(environ={"DALLOSH_CONFIG": str(config), "DALLOSH_APP_ID": "from-env"})
    assert settings.partitions == 6
    assert settings.app_id == "from-env"


def test_config_file_with_unknown_key_is_a_clear_error(tmp_path):
    config = tmp_path / "dallosh.yaml"
    config.write_text("partitons: 6\n")
    with pytest.raises(SettingsError, match="unknown setting.*partitons"):
        load_settings(environ={"DALLOSH_CONFIG": str(config)})


def test_as_env_round_trips(tmp_path):
    settings = load_settings(environ={"DALLOSH_DATA_DIR": str(tmp_path), "DALLOSH_PARTITIONS": "3"})
    assert load_settings(environ=settings.as_env()) == settings


def test_the_configuration_doc_documents_every_setting():
    doc = read_doc(CONFIGURATION_DOC)
    assert settings_table_markdown() in doc, \
        f"{CONFIGURATION_DOC}: the settings table is stale: paste settings_table_markdown() output"
    for spec in SETTINGS:
        assert spec.env_var in doc


def test_a_renamed_setting_still_set_is_a_clear_error_not_silently_ignored():
    with pytest.raises(SettingsError, match="DALLOSH_SIGNALS_TREND_Z was replaced by "
                                            "DALLOSH_SIGNALS_TREND_THRESHOLD"):
        load_settings(environ={"DALLOSH_SIGNALS_TREND_Z": "3"})


# ---------------------------------------------------------------------------- validation
# Every setting refuses what cannot work, with one SettingsError naming the variable,
# so a command stops before it starts a broker, a worker or a replay.

BAD_VALUES = [
    ("DALLOSH_LOCAL_MODEL_RUNTIME", "tensorflow", "must be one of auto, onnx, torch"),
    ("DALLOSH_METRICS_ADDR", "everywhere", "IP address"),
    ("DALLOSH_DATA_DIR", "{file}", "must be a folder"),
    ("DALLOSH_CACHE_DIR", "{file}", "must be a folder"),
    ("DALLOSH_CONFIG", "{missing}", "file not found"),
    ("DALLOSH_KAFKA_BOOTSTRAP", "kafka://k1:9092", "host:port (no scheme)"),
    ("DALLOSH_KAFKA_BOOTSTRAP", "k1:9092,", "host:port"),
    ("DALLOSH_KAFKA_BOOTSTRAP", "k1:99999", "host:port"),
    ("DALLOSH_KAFKA_PORT", "0", "a TCP port (1-65535)"),
    ("DALLOSH_KAFKA_CONTROLLER_PORT", "70000", "a TCP port (1-65535)"),
    ("DALLOSH_KAFKA_HEAP", "lots", "Java heap size"),
    ("DALLOSH_KAFKA_HEAP", "64m", "at least 128m"),
    ("DALLOSH_KAFKA_VERSION", "../../etc", "Apache Kafka release"),
    ("DALLOSH_CLICKHOUSE_DSN", "mysql://db/x", "chdb:///path or http(s)://"),
    ("DALLOSH_CLICKHOUSE_DSN", "chdb://", "chdb:///path"),
    ("DALLOSH_APP_ID", "my app", "consumer groups and topics"),
    ("DALLOSH_APP_ID", "x" * 240, "consumer groups and topics"),
    ("DALLOSH_PARTITIONS", "0", "a positive integer"),
    ("DALLOSH_TOPIC_RAW", "tweets raw", "Kafka topic name"),
    ("DALLOSH_TOPIC_CLEAN", "..", "Kafka topic name"),
    ("DALLOSH_TOPIC_CLASSIFIED", "t" * 250, "Kafka topic name"),
    ("DALLOSH_TOPIC_DLQ", "dlq/x", "Kafka topic name"),
    ("DALLOSH_TOPIC_ALERTS", "alerts!", "Kafka topic name"),
    ("DALLOSH_TOPIC_PROVIDER_CALLS", "é", "Kafka topic name"),
    ("DALLOSH_TOPIC_DECISIONS", "a b", "Kafka topic name"),
    ("DALLOSH_TOPIC_WINDOWS", "w:1", "Kafka topic name"),
    ("DALLOSH_BRAND", "../free", "built-in brand"),
    ("DALLOSH_BRAND_FILE", "{missing}", "existing file (not found)"),
    ("DALLOSH_DEDUP_HORIZON_S", "0", "a positive number"),
    ("DALLOSH_DEDUP_CAPACITY", "-5", "a positive integer"),
    ("DALLOSH_DEDUP_THRESHOLD", "1.5", "in (0, 1]"),
    ("DALLOSH_DEDUP_THRESHOLD", "0", "in (0, 1]"),
    ("DALLOSH_METRICS_PORT", "-1", "a TCP port (0-65535)"),
    ("DALLOSH_CLASSIFY_BATCH_SIZE", "2.5", "a positive integer"),
    ("DALLOSH_CLASSIFY_MAX_WAIT", "nan", "a positive number"),
    ("DALLOSH_PROVIDERS", "{dir}", "existing file (it is a folder)"),
    ("DALLOSH_MAX_COST_PER_HOUR", "-1", "a number >= 0"),
    ("DALLOSH_MAX_COST_PER_DAY", "inf", "a number >= 0"),
    ("DALLOSH_CLASSIFY_DEADLINE_S", "0", "a positive number"),
    ("DALLOSH_CLASSIFY_MAX_ITEMS", "0", "a positive integer"),
    ("DALLOSH_LOCAL_MODEL", "{file}", "artifact folder"),
    ("DALLOSH_LOCAL_MODEL_THREADS", "0", "a positive integer"),
    ("DALLOSH_LOCAL_ESCALATE_BELOW", "1.2", "a confidence in [0, 1]"),
    ("DALLOSH_SINK_BATCH_SIZE", "0", "a positive integer"),
    ("DALLOSH_SINK_MAX_WAIT", "-1", "a positive number"),
    ("DALLOSH_SINK_MAX_BACKOFF_S", "0", "a positive number"),
    ("DALLOSH_STREAM_BUFFER_MAX", "0", "a positive integer"),
    ("DALLOSH_TWEETS_RETENTION_DAYS", "-1", "from 0 (keep forever)"),
    ("DALLOSH_ROLLUP_RETENTION_DAYS", "30000", "overflows ClickHouse's DateTime"),
    ("DALLOSH_ALERTS_RETENTION_DAYS", "1y", "from 0 (keep forever)"),
    ("DALLOSH_PROVIDER_CALLS_RETENTION_DAYS", "10001", "to 10000"),
    ("DALLOSH_DLQ_RETENTION_DAYS", "-3", "from 0 (keep forever)"),
    ("DALLOSH_REPLAY_CHECKPOINT_EVERY", "0", "a positive integer"),
    ("DALLOSH_MAX_FUTURE_SKEW_S", "-1", "a number >= 0"),
    ("DALLOSH_X_API_URL", "api.x.com", "an http:// or https:// URL"),
    ("DALLOSH_X_RULES_FILE", "{missing}", "existing file"),
    ("DALLOSH_X_BACKFILL_MINUTES", "6", "from 0 to 5"),
    ("DALLOSH_MASTODON_INSTANCE", "ftp://piaille.fr", "http:// or https:// URL or a host name"),
    ("DALLOSH_MASTODON_TAGS", "freebox,panne totale", "comma-separated hashtags"),
    ("DALLOSH_MASTODON_STREAMING_URL", "wss://x:notaport", "bad port"),
    ("DALLOSH_STREAM_STALL_TIMEOUT", "0", "a positive number"),
    ("DALLOSH_STREAM_METRICS_PORT", "65536", "a TCP port (0-65535)"),
    ("DALLOSH_SIGNALS_ALLOWED_LATENESS_S", "-1", "a number >= 0"),
    ("DALLOSH_SIGNALS_REVISION_HORIZON_S", "0", "a positive number"),
    ("DALLOSH_SIGNALS_HIGH_SHARE", "7", "in (0, 1]"),
    ("DALLOSH_SIGNALS_BURST_ALPHA", "1", "a probability in (0, 1)"),
    ("DALLOSH_SIGNALS_BURST_RATIO", "0", "a positive number"),
    ("DALLOSH_SIGNALS_TREND_HOURS", "0", "a positive integer"),
    ("DALLOSH_SIGNALS_TREND_THRESHOLD", "-8.5", "a positive number"),
    ("DALLOSH_SIGNALS_RESOLVE_MINUTES", "0", "a positive integer"),
    ("DALLOSH_SIGNALS_HEARTBEAT_S", "-1", "a number >= 0"),
    ("DALLOSH_LOG_LEVEL", "verbose", "must be one of debug, info, warning, error, critical"),
    ("DALLOSH_LOG_LEVEL", "loud", "must be one of debug, info, warning, error, critical"),
]
# Any value is valid: the chaos switch is "on" while the file exists, wherever it is.
FREE_FORM = {"DALLOSH_SINK_CHAOS_FILE"}


def _fill(value: str, tmp_path: Path) -> str:
    (tmp_path / "a-file").write_text("x")
    return value.format(file=tmp_path / "a-file", missing=tmp_path / "missing.yaml", dir=tmp_path)


@pytest.mark.parametrize("var, value, reason", BAD_VALUES)
def test_each_bad_value_is_one_error_naming_the_variable(var, value, reason, tmp_path):
    value = _fill(value, tmp_path)
    with pytest.raises(SettingsError) as caught:
        load_settings(environ={"DALLOSH_DATA_DIR": str(tmp_path / "data"), var: value})
    message = str(caught.value)
    assert message.startswith(var), message
    assert reason in message, message
    assert "\n" not in message


def test_every_setting_has_a_bad_value_tested():
    tested = {var for var, _, _ in BAD_VALUES}
    untested = {spec.env_var for spec in SETTINGS} - tested - FREE_FORM
    assert not untested, f"add a bad value for each to BAD_VALUES: {sorted(untested)}"


@pytest.mark.parametrize("var, value, name, expected", [
    ("DALLOSH_METRICS_PORT", "0", "metrics_port", 0),  # 0 disables the endpoint
    ("DALLOSH_LOG_LEVEL", " WARNING ", "log_level", "warning"),
    ("DALLOSH_KAFKA_BOOTSTRAP", "k1:9092, k2:9092", "kafka_bootstrap", "k1:9092,k2:9092"),
    ("DALLOSH_KAFKA_BOOTSTRAP", "[::1]:9092,kafka", "kafka_bootstrap", "[::1]:9092,kafka"),
    ("DALLOSH_KAFKA_HEAP", "2G", "kafka_heap", "2G"),
    ("DALLOSH_KAFKA_HEAP", "131072k", "kafka_heap", "131072k"),
    ("DALLOSH_CLICKHOUSE_DSN", "https://u:p@ch.example:8443/dallosh", "clickhouse_dsn",
     "https://u:p@ch.example:8443/dallosh"),
    ("DALLOSH_MASTODON_INSTANCE", "piaille.fr", "mastodon_instance", "piaille.fr"),
    ("DALLOSH_MASTODON_TAGS", "#freebox, panne", "mastodon_tags", "#freebox, panne"),
    ("DALLOSH_LOCAL_ESCALATE_BELOW", "1", "local_escalate_below", 1.0),
    ("DALLOSH_DEDUP_THRESHOLD", "1", "dedup_threshold", 1.0),
    ("DALLOSH_TWEETS_RETENTION_DAYS", "0", "tweets_retention_days", 0),
    ("DALLOSH_LOCAL_MODEL", "OFF", "local_model", None),
    ("DALLOSH_APP_ID", "dallosh-test-1f2e.x_y", "app_id", "dallosh-test-1f2e.x_y"),
])
def test_legitimate_values_are_accepted(var, value, name, expected, tmp_path):
    settings = load_settings(environ={"DALLOSH_DATA_DIR": str(tmp_path), var: value})
    assert getattr(settings, name) == expected
    assert load_settings(environ=settings.as_env()) == settings


def test_an_error_never_echoes_a_dsn_password():
    with pytest.raises(SettingsError) as caught:
        load_settings(environ={"DALLOSH_CLICKHOUSE_DSN": "ftp://dallosh:s3cret@ch:8123/x"})
    assert "s3cret" not in str(caught.value)
    assert "dallosh:***@ch" in str(caught.value)


def test_overrides_are_validated_like_variables(tmp_path):
    with pytest.raises(SettingsError, match="DALLOSH_SIGNALS_HIGH_SHARE='2'"):
        load_settings({"signals_high_share": 2}, environ={})
    settings = load_settings({"data_dir": tmp_path, "partitions": 3}, environ={})
    assert settings.data_dir == tmp_path.resolve() and settings.partitions == 3


def test_a_bad_value_from_the_config_file_names_the_variable_and_the_file(tmp_path):
    config = tmp_path / "dallosh.yaml"
    config.write_text("dedup_threshold: 1.5\n")
    with pytest.raises(SettingsError,
                       match=rf"DALLOSH_DEDUP_THRESHOLD='1.5' \(in {config}\): must be"):
        load_settings(environ={"DALLOSH_CONFIG": str(config)})
    # The environment wins over the file, so a good variable hides the file's bad value.
    assert load_settings(environ={"DALLOSH_CONFIG": str(config),
                                  "DALLOSH_DEDUP_THRESHOLD": "0.7"}).dedup_threshold == 0.7


@pytest.mark.parametrize("env, message", [
    ({"DALLOSH_KAFKA_CONTROLLER_PORT": "19092"},
     "DALLOSH_KAFKA_CONTROLLER_PORT='19092': same as DALLOSH_KAFKA_PORT"),
    ({"DALLOSH_METRICS_PORT": "19093"},
     "DALLOSH_METRICS_PORT='19093': same as DALLOSH_KAFKA_CONTROLLER_PORT"),
    ({"DALLOSH_STREAM_METRICS_PORT": "29092", "DALLOSH_KAFKA_PORT": "29092"},
     "DALLOSH_STREAM_METRICS_PORT='29092': same as DALLOSH_KAFKA_PORT"),
    ({"DALLOSH_TOPIC_CLEAN": "tweets.raw"}, "DALLOSH_TOPIC_CLEAN='tweets.raw': same as DALLOSH_TOPIC_RAW"),
    ({"DALLOSH_TOPIC_WINDOWS": "alerts"}, "DALLOSH_TOPIC_WINDOWS='alerts': same as DALLOSH_TOPIC_ALERTS"),
])
def test_settings_that_cannot_work_together_are_refused(env, message):
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        load_settings(environ=env)


def test_metrics_port_may_equal_a_local_broker_port_when_kafka_is_elsewhere():
    settings = load_settings(environ={"DALLOSH_KAFKA_BOOTSTRAP": "kafka:9092",
                                      "DALLOSH_METRICS_PORT": "19092"})
    assert settings.metrics_port == 19092


def test_unknown_variables_are_warned_with_the_nearest_setting():
    warnings = unknown_variable_warnings({
        "DALLOSH_DEDUP_TRESHOLD": "0.9", "DALLOSH_WHATEVER_ELSE": "1", "HOME": "/root",
        "DALLOSH_PARTITIONS": "4", "DALLOSH_TEST_KAFKA_BOOTSTRAP": "k:9092",
        "DALLOSH_FAULT_SEED": "7", "DALLOSH_OLLAMA_URL": "http://gpu:11434/v1",
        "DALLOSH_SIGNALS_TREND_Z": "3"}, also_known={"DALLOSH_OLLAMA_URL"})
    assert warnings == [
        "warning: DALLOSH_DEDUP_TRESHOLD is not a setting; did you mean DALLOSH_DEDUP_THRESHOLD?",
        "warning: DALLOSH_WHATEVER_ELSE is not a setting"]


# How the code reads a variable: os.environ[...] / .get(...), getenv, monkeypatch.setenv,
# and the tests' `KEY_ENV = "..."` constants.
READS = re.compile(r"""(?:environ(?:\.get)?\s*[\[(]\s*|getenv\(\s*|setenv\(\s*|_ENV\s*=\s*)"""
                   r"""["'](DALLOSH_[A-Z0-9_]+)["']""")


def test_every_dallosh_variable_the_repository_reads_is_a_setting_or_allowed():
    root = ROOT
    names: set[str] = set()
    for folder in ("stream_app", "connectors", "bench", "tests"):
        for path in (root / folder).rglob("*.py"):
            names |= set(READS.findall(path.read_text(encoding="utf-8")))
    assert {"DALLOSH_TEST_KAFKA_BOOTSTRAP", "DALLOSH_FAULT_SEED"} <= names, "READS is broken"
    from stream_app.cli_support import _provider_variables
    warned = unknown_variable_warnings(dict.fromkeys(names, "x"),
                                       also_known=_provider_variables(None))
    assert not warned, "add the variable to NOT_SETTINGS (or make it a setting)"


# ---------------------------------------------------------------------------- the CLI


def dallosh(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DALLOSH_")} | env
    return subprocess.run([sys.executable, "-m", "stream_app", *args], capture_output=True,
                          text=True, env=full_env, timeout=timeout)


@pytest.mark.parametrize("args", [("demo",), ("replay", "--dry-run", "{csv}"), ("replay", "{csv}")])
def test_a_bad_setting_stops_the_command_before_anything_starts(args, tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("id,text,created_at\n1,hello,2026-03-12T10:00:00Z\n")
    data_dir = tmp_path / "data"
    started = time.monotonic()
    result = dallosh(*(a.format(csv=csv) for a in args),
                     env={"DALLOSH_DATA_DIR": str(data_dir), "DALLOSH_LOG_LEVEL": "verbose"})
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: DALLOSH_LOG_LEVEL='verbose': must be one of debug, info, warning, error, critical"]
    assert not data_dir.exists(), "something started (the data dir was created)"
    assert time.monotonic() - started < 30


def test_the_cli_warns_of_a_misspelt_variable_and_goes_on(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("id,text,created_at\n1,hello,2026-03-12T10:00:00Z\n")
    result = dallosh("replay", "--dry-run", str(csv),
                     env={"DALLOSH_DATA_DIR": str(tmp_path), "DALLOSH_DEDUP_TRESHOLD": "0.9",
                          "DALLOSH_OLLAMA_URL": "http://127.0.0.1:11434/v1"})
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "warning: DALLOSH_DEDUP_TRESHOLD is not a setting; did you mean DALLOSH_DEDUP_THRESHOLD?"]
    assert "utf-8, comma-delimited" in result.stdout


def test_the_cli_refuses_a_broken_providers_file_before_starting(tmp_path):
    providers = tmp_path / "providers.yaml"
    providers.write_text("providers:\n  - name: p\n    tier: moon\n    model: m\n"
                         "    base_url: http://127.0.0.1:1/v1\n")
    result = dallosh("infra", "status", env={"DALLOSH_DATA_DIR": str(tmp_path / "data"),
                                             "DALLOSH_PROVIDERS": str(providers)})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: DALLOSH_PROVIDERS: {providers}: providers[0]")


def test_config_file_yaml_off_and_empty_values_mean_what_they_say(tmp_path):
    config = tmp_path / "dallosh.yaml"
    config.write_text("local_model: off\nbrand_file:\n")  # YAML: False and None
    settings = load_settings(environ={"DALLOSH_CONFIG": str(config)})
    assert settings.local_model is None and settings.brand_file is None
