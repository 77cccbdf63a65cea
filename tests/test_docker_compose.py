"""The container deployment (docker-compose.yml and the files it mounts) stays wired to
the code: real paths, real DALLOSH_* settings, real CLI commands, real metric names.

Docker is not needed: the files are parsed and cross-checked. When `promtool` is
installed (Debian/Ubuntu package `prometheus`), the Prometheus config and alert rules
are also checked and unit-tested by Prometheus' own tool.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
RULES_DIR = ROOT / "deploy" / "prometheus" / "rules"
CLICKHOUSE_USERS_XML = ROOT / "deploy" / "clickhouse" / "users.d" / "grafana_readonly.xml"
GRAFANA_DATASOURCES = ROOT / "grafana" / "provisioning" / "datasources" / "datasources.yaml"
GRAFANA_DASHBOARD_PROVIDERS = ROOT / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml"

WORKER_ROLES = {"worker-pipeline": "pipeline", "sink": "sink"}


# --------------------------------------------------------------------------- helpers

_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<default>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


# The secrets docker-compose.yml requires (``${VAR:?...}``): a host that set them.
SECRETS_SET = {"CLICKHOUSE_PASSWORD": "ch-secret", "GRAFANA_ADMIN_PASSWORD": "gf-secret",
               "GRAFANA_CLICKHOUSE_PASSWORD": "gf-ch-secret"}


class MissingVariable(KeyError):
    """A ``${VAR:?message}`` / ``${VAR?message}`` whose variable is not set: Compose
    refuses to start with this message."""


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose variable interpolation (``$VAR``, ``${VAR}``, ``${VAR:-default}``,
    ``${VAR-default}``, ``${VAR:?error}``, ``$$``) against ``env`` (default: a host
    that set the required secrets, :data:`SECRETS_SET`, and nothing else)."""
    env = SECRETS_SET if env is None else env

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["plain"]
        op, default = match["op"], match["default"] or ""
        if op == ":?" and not env.get(name) or op == "?" and name not in env:
            raise MissingVariable(f"{name}: {default}")
        if op in (":-", ":?"):
            return env.get(name) or (default if op == ":-" else "")
        if op in ("-", "?"):
            return env[name] if name in env else (default if op == "-" else "")
        return env.get(name, "")

    return _INTERPOLATION.sub(replace, value)


def environment(service: dict, env: dict[str, str] | None = None) -> dict[str, str]:
    """A service's ``environment`` (mapping or list form), interpolated."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {key: interpolate("" if value is None else str(value), env)
            for key, value in raw.items()}


def bind_mounts(service: dict) -> list[tuple[str, str]]:
    """``(host source, container target)`` of a service's bind mounts."""
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                mounts.append((volume["source"], volume["target"]))
            continue
        source, _, rest = volume.partition(":")
        target = rest.split(":")[0]
        if source.startswith((".", "/", "~")):  # otherwise a named volume
            mounts.append((source, target))
    return mounts


def host_path(container_path: str, service: dict) -> Path | None:
    """The repo path a container path of ``service`` comes from, via its bind mounts."""
    wanted = PurePosixPath(container_path)
    for source, target in bind_mounts(service):
        target_path = PurePosixPath(target)
        if wanted == target_path or target_path in wanted.parents:
            return ROOT / source / wanted.relative_to(target_path)
    return None


def command_args(service: dict) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else [str(c) for c in command]


def worker_services(compose: dict) -> dict[str, dict]:
    return {name: compose["services"][name] for name in WORKER_ROLES}


_PROMQL_NOT_METRICS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
    "group_right", "offset", "bool", "inf", "nan", "atan2",
}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression reads (functions, keywords, labels excluded)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # range/subquery durations
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", expr):
        name, is_call = match.group(1), match.group(2)
        if not is_call and name.lower() not in _PROMQL_NOT_METRICS:
            names.add(name)
    return names


def exposed_metric_names() -> set[str]:
    """Sample names ``/metrics`` shows for the collectors in stream_app.metrics.

    prometheus_client strips ``_total`` from a Counter's name and exposes
    ``<name>_total`` (and ``<name>_created``); histograms expose ``_bucket``/``_sum``/
    ``_count``. ``describe()`` gives the family name and type even before any sample.
    """
    from prometheus_client.metrics import MetricWrapperBase

    from stream_app import metrics

    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("_info",),
        "stateset": ("",),
        "enum": ("",),
    }
    names = set()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                names.update(family.name + s for s in suffixes[family.type])
    return names


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def prometheus_config() -> dict:
    return yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def rule_files(compose: dict, prometheus_config: dict) -> list[Path]:
    """The repo files behind the config's rule_files globs (via the compose mounts)."""
    files = []
    for pattern in prometheus_config.get("rule_files") or []:
        source = host_path(pattern, compose["services"]["prometheus"])
        assert source is not None, f"rule_files entry {pattern} is not inside a bind mount"
        files.extend(sorted(source.parent.glob(source.name)))
    return files


@pytest.fixture(scope="module")
def alert_rules(rule_files: list[Path]) -> list[dict]:
    rules = []
    for path in rule_files:
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            rules.extend(rule for rule in group["rules"] if "alert" in rule)
    return rules


@pytest.fixture(scope="module")
def datasources() -> dict[str, dict]:
    content = yaml.safe_load(GRAFANA_DATASOURCES.read_text(encoding="utf-8"))
    assert content["apiVersion"] == 1
    return {ds["uid"]: ds for ds in content["datasources"]}


@pytest.fixture(scope="module")
def grafana_user_xml() -> ET.Element:
    return ET.parse(CLICKHOUSE_USERS_XML).getroot()


# --------------------------------------------------------------------------- compose

def test_compose_has_the_services_and_no_obsolete_version_key(compose):
    assert "version" not in compose, "the Compose spec has no `version:` key any more"
    assert {"kafka", "clickhouse", "worker-pipeline", "sink", "prometheus",
            "grafana"} <= set(compose["services"])


def test_bind_mounted_host_paths_exist(compose):
    mounts = [(name, source) for name, service in compose["services"].items()
              for source, _ in bind_mounts(service)]
    assert mounts, "no bind mounts found: the parser is broken"
    missing = [f"{name}: {source}" for name, source in mounts if not (ROOT / source).exists()]
    assert not missing, f"bind-mounted paths missing from the repo: {missing}"


def test_named_volumes_are_declared(compose):
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for volume in service.get("volumes") or []:
            source = volume.get("source") if isinstance(volume, dict) else volume.split(":")[0]
            if source and not source.startswith((".", "/", "~")):
                assert source in declared, f"{name}: volume {source!r} is not declared"


def test_built_services_have_their_dockerfile(compose):
    built = {name: s["build"] for name, s in compose["services"].items() if "build" in s}
    assert set(WORKER_ROLES) <= set(built)
    for name, build in built.items():
        if isinstance(build, str):
            build = {"context": build}
        context = ROOT / build.get("context", ".")
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"


DOCKERFILES = ("Dockerfile", "Dockerfile.train")  # the workers' image, the training image


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_copies_existing_paths_and_runs_dallosh_unprivileged(dockerfile):
    lines = (ROOT / dockerfile).read_text(encoding="utf-8").splitlines()
    copies = [line.split()[1:] for line in lines if line.startswith("COPY ")]
    assert copies
    for args in copies:
        args = [a for a in args if not a.startswith("--")]
        for source in args[:-1]:
            assert (ROOT / source).exists(), f"Dockerfile copies missing path {source}"
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"
    entrypoints = [line for line in lines if line.startswith("ENTRYPOINT ")]
    assert entrypoints and yaml.safe_load(entrypoints[-1].split(None, 1)[1]) == ["dallosh"]
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^dallosh\s*=\s*"stream_app\.cli:main"', pyproject, re.MULTILINE)


def test_every_dallosh_variable_is_a_real_setting(compose):
    from stream_app.settings import SETTINGS

    known = {spec.env_var for spec in SETTINGS}
    used = {(name, var) for name, service in compose["services"].items()
            for var in environment(service) if var.startswith("DALLOSH_")}
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    used |= {("Dockerfile", var) for var in re.findall(r"\b(DALLOSH_[A-Z0-9_]+)=", dockerfile)}
    assert used, "no DALLOSH_* variables found: the parser is broken"
    unknown = sorted(f"{where}: {var}" for where, var in used if var not in known)
    assert not unknown, f"not settings in stream_app/settings.py: {unknown}"


def test_worker_settings_values_are_valid(compose):
    from stream_app.settings import load_settings

    for name, service in worker_services(compose).items():
        env = {k: v for k, v in environment(service).items() if k.startswith("DALLOSH_")}
        settings = load_settings(environ=env)  # raises SettingsError on a bad value
        assert not settings.uses_local_broker, f"{name} must use the kafka service"
        assert settings.clickhouse_dsn.startswith("http"), f"{name} must use the server"


def test_worker_commands_are_real_dallosh_commands(compose):
    import click

    from stream_app.cli import main

    for name, role in WORKER_ROLES.items():
        args = command_args(compose["services"][name])
        assert args[:1] == ["worker"], f"{name}: expected `dallosh worker ...`, got {args}"
        assert args[0] in main.commands, f"`dallosh {args[0]}` does not exist"
        command = main.commands[args[0]]
        # Parses the arguments as click would (an unknown option or a --role outside
        # its Choice raises) without running the worker.
        ctx = command.make_context(args[0], args[1:])
        assert ctx.params["role"] == role, f"{name} should run --role {role}"
        role_option = next(p for p in command.params if p.name == "role")
        assert isinstance(role_option.type, click.Choice) and role in role_option.type.choices


def test_workers_reach_kafka_on_its_advertised_in_network_listener(compose):
    kafka_env = environment(compose["services"]["kafka"])
    advertised = dict(re.match(r"(\w+)://([^,]+)", item).groups()
                      for item in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    listeners = dict(re.match(r"(\w+)://([^,]*)", item).groups()
                     for item in kafka_env["KAFKA_LISTENERS"].split(","))
    in_network = {name: address for name, address in advertised.items()
                  if address.rsplit(":", 1)[0] in ("kafka", compose["services"]["kafka"].get("hostname"))}
    assert in_network, "no advertised listener is reachable as the kafka service"
    for listener, address in in_network.items():
        assert listeners[listener].rsplit(":", 1)[1] == address.rsplit(":", 1)[1], (
            f"{listener} is advertised on {address} but listens on {listeners[listener]}")
    for name, service in worker_services(compose).items():
        bootstrap = environment(service)["DALLOSH_KAFKA_BOOTSTRAP"]
        assert set(bootstrap.split(",")) <= set(in_network.values()), (
            f"{name}: DALLOSH_KAFKA_BOOTSTRAP={bootstrap} is not one of {in_network}")


def test_workers_reach_clickhouse_as_its_configured_user(compose):
    # A non-default password proves both sides follow the same variable.
    host_env = SECRETS_SET | {"CLICKHOUSE_PASSWORD": "not-the-default"}
    clickhouse_env = environment(compose["services"]["clickhouse"], host_env)
    for name, service in worker_services(compose).items():
        dsn = urlsplit(environment(service, host_env)["DALLOSH_CLICKHOUSE_DSN"])
        assert dsn.scheme == "http"
        assert dsn.hostname == "clickhouse" and dsn.hostname in compose["services"]
        assert dsn.port == 8123
        assert dsn.path.strip("/") == clickhouse_env["CLICKHOUSE_DB"] == "dallosh"
        assert dsn.username == clickhouse_env["CLICKHOUSE_USER"]
        assert dsn.password == clickhouse_env["CLICKHOUSE_PASSWORD"] == "not-the-default"


def test_workers_wait_for_healthy_dependencies(compose):
    services = compose["services"]
    for name, service in worker_services(compose).items():
        depends = service.get("depends_on") or {}
        for dependency in ("kafka", "clickhouse"):
            assert depends.get(dependency, {}).get("condition") == "service_healthy", (
                f"{name} must wait for {dependency} to be healthy")
            assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"


def test_worker_healthcheck_probes_the_metrics_port(compose):
    for name, service in worker_services(compose).items():
        port = environment(service)["DALLOSH_METRICS_PORT"]
        probe = " ".join(service["healthcheck"]["test"])
        assert f":{port}/metrics" in probe, f"{name}: healthcheck does not probe :{port}"


def test_sink_is_not_replicated(compose):
    replicas = (compose["services"]["sink"].get("deploy") or {}).get("replicas", 1)
    assert replicas == 1, "the sink is the one ClickHouse writer"


# --------------------------------------------------------------------------- prometheus

def test_prometheus_scrapes_every_worker_on_its_metrics_port(compose, prometheus_config):
    targets: dict[str, set[int]] = {}
    for job in prometheus_config["scrape_configs"]:
        for sd in job.get("dns_sd_configs") or []:
            for dns_name in sd["names"]:
                targets.setdefault(dns_name, set()).add(int(sd["port"]))
        for static in job.get("static_configs") or []:
            for target in static["targets"]:
                host, _, port = target.rpartition(":")
                targets.setdefault(host, set()).add(int(port))
    for name, service in worker_services(compose).items():
        port = int(environment(service)["DALLOSH_METRICS_PORT"])
        assert port in targets.get(name, set()), (
            f"Prometheus does not scrape {name} on its DALLOSH_METRICS_PORT {port}")


def test_prometheus_rule_files_exist(rule_files):
    assert rule_files, "rule_files matches no file in the repo"


def test_alert_rules_use_existing_metrics(alert_rules):
    assert alert_rules
    known = exposed_metric_names() | {"up"}
    for rule in alert_rules:
        unknown = promql_metric_names(rule["expr"]) - known
        assert not unknown, f"{rule['alert']}: unknown metric(s) {sorted(unknown)}"


def test_metric_name_extraction_catches_unknown_names():
    known = exposed_metric_names()
    assert "dallosh_messages_in_total" in known and "dallosh_messages_in" not in known
    assert "dallosh_sink_insert_seconds_bucket" in known
    assert "dallosh_consumer_lag_messages" in known
    expr = ('sum by (topic) (rate(dallosh_messages_in[5m])) / on(stage) '
            'absent(up{job="x", service="or"}) or histogram_quantile(0.9, '
            'dallosh_sink_insert_seconds_bucket)')
    assert promql_metric_names(expr) == {"dallosh_messages_in", "up",
                                         "dallosh_sink_insert_seconds_bucket"}
    assert promql_metric_names(expr) - known - {"up"} == {"dallosh_messages_in"}


def test_alert_rules_are_annotated_with_a_runbook(alert_rules):
    from tests.project_docs import RUNBOOKS, anchors
    headings = anchors(RUNBOOKS)
    for rule in alert_rules:
        annotations = rule.get("annotations") or {}
        assert annotations.get("summary") and annotations.get("description"), rule["alert"]
        page, _, anchor = annotations.get("runbook_url", "").partition("#")
        assert page == RUNBOOKS and anchor, f"{rule['alert']}: runbook_url must be {RUNBOOKS}#..."
        assert anchor in headings, (
            f"{rule['alert']}: {RUNBOOKS} has no heading with anchor #{anchor} "
            f"(e.g. `## Runbook: {rule['alert']}`)")


# --------------------------------------------------------------------------- promtool

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)")


def _promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)


@needs_promtool
def test_promtool_accepts_the_config(tmp_path, compose, prometheus_config):
    config = dict(prometheus_config)
    # Container paths -> repo paths, so promtool also loads and checks the rules.
    config["rule_files"] = [str(host_path(p, compose["services"]["prometheus"]))
                            for p in prometheus_config["rule_files"]]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = _promtool("check", "config", str(copy))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


@needs_promtool
def test_promtool_accepts_the_rules(rule_files):
    result = _promtool("check", "rules", *map(str, rule_files))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_alerts_fire_when_they_should(tmp_path, rule_files):
    """`promtool test rules` on synthetic series: each alert fires on its condition and
    stays quiet otherwise. Annotations are stripped (`check rules` validates their
    templates) so the test pins expressions, `for` durations and labels only."""
    stripped = []
    for path in rule_files:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
        for group in content["groups"]:
            for rule in group["rules"]:
                rule.pop("annotations", None)
        copy = tmp_path / path.name
        copy.write_text(yaml.safe_dump(content), encoding="utf-8")
        stripped.append(str(copy))

    workers = 'up{job="dallosh-workers", service="%s", instance="%s"}'
    cases = {
        "rule_files": stripped,
        "evaluation_interval": "1m",
        "tests": [
            {   # One sink replica stops answering; the pipeline stays up.
                "interval": "1m",
                "input_series": [
                    {"series": workers % ("sink", "10.0.0.3:9108"), "values": "0x10"},
                    {"series": workers % ("worker-pipeline", "10.0.0.2:9108"), "values": "1x10"},
                ],
                "alert_rule_test": [
                    {"eval_time": "1m", "alertname": "DalloshWorkerDown", "exp_alerts": []},
                    {"eval_time": "3m", "alertname": "DalloshWorkerDown", "exp_alerts": [
                        {"exp_labels": {"severity": "critical", "job": "dallosh-workers",
                                        "service": "sink", "instance": "10.0.0.3:9108"}}]},
                ],
            },
            {   # No sink container at all: its target vanishes from DNS discovery.
                "interval": "1m",
                "input_series": [
                    {"series": workers % ("worker-pipeline", "10.0.0.2:9108"), "values": "1x10"},
                ],
                "alert_rule_test": [
                    {"eval_time": "3m", "alertname": "DalloshWorkerDown", "exp_alerts": [
                        {"exp_labels": {"severity": "critical", "job": "dallosh-workers",
                                        "service": "sink"}}]},
                ],
            },
            {   # Two workers report the same lag: one alert per topic, over threshold only.
                "interval": "1m",
                "input_series": [
                    {"series": 'dallosh_consumer_lag_messages{topic="tweets.raw", instance="a"}',
                     "values": "20000x10"},
                    {"series": 'dallosh_consumer_lag_messages{topic="tweets.raw", instance="b"}',
                     "values": "20000x10"},
                    {"series": 'dallosh_consumer_lag_messages{topic="tweets.clean", instance="a"}',
                     "values": "500x10"},
                ],
                "alert_rule_test": [
                    {"eval_time": "4m", "alertname": "DalloshConsumerLagHigh", "exp_alerts": []},
                    {"eval_time": "6m", "alertname": "DalloshConsumerLagHigh", "exp_alerts": [
                        {"exp_labels": {"severity": "warning", "topic": "tweets.raw"}}]},
                ],
            },
            {   # Cloud classified for 40 min, then stopped while the rules tier goes on.
                "interval": "1m",
                "input_series": [
                    {"series": 'dallosh_classified_total{tier="cloud", provider="gemini-flash"}',
                     "values": "0+100x40 4000x40"},
                    {"series": 'dallosh_classified_total{tier="degraded", provider="rules"}',
                     "values": "0x40 0+100x40"},
                ],
                "alert_rule_test": [
                    {"eval_time": "30m", "alertname": "DalloshCloudTiersDown", "exp_alerts": []},
                    {"eval_time": "48m", "alertname": "DalloshCloudTiersDown", "exp_alerts": []},
                    {"eval_time": "58m", "alertname": "DalloshCloudTiersDown", "exp_alerts": [
                        {"exp_labels": {"severity": "critical"}}]},
                ],
            },
            {   # No cloud key at all: the rules tier classifies everything, nothing fires.
                "interval": "1m",
                "input_series": [
                    {"series": 'dallosh_classified_total{tier="degraded", provider="rules"}',
                     "values": "0+100x80"},
                ],
                "alert_rule_test": [
                    {"eval_time": "75m", "alertname": "DalloshCloudTiersDown", "exp_alerts": []},
                ],
            },
            {   # clean dead-letters 10 % of its input; classify 1 %.
                "interval": "1m",
                "input_series": [
                    {"series": 'dallosh_messages_in_total{stage="clean"}', "values": "0+100x30"},
                    {"series": 'dallosh_dead_letters_total{stage="clean", reason="invalid JSON"}',
                     "values": "0+10x30"},
                    {"series": 'dallosh_messages_in_total{stage="classify"}', "values": "0+100x30"},
                    {"series": 'dallosh_dead_letters_total{stage="classify", reason="x"}',
                     "values": "0+1x30"},
                ],
                "alert_rule_test": [
                    {"eval_time": "8m", "alertname": "DalloshDeadLettersHigh", "exp_alerts": []},
                    {"eval_time": "25m", "alertname": "DalloshDeadLettersHigh", "exp_alerts": [
                        {"exp_labels": {"severity": "warning", "stage": "clean"}}]},
                ],
            },
        ],
    }
    test_file = tmp_path / "alerts.test.yml"
    test_file.write_text(yaml.safe_dump(cases, sort_keys=False), encoding="utf-8")
    result = _promtool("test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- grafana

def test_grafana_datasources(compose, datasources):
    assert {"dallosh-clickhouse", "dallosh-prometheus"} <= set(datasources)

    clickhouse = datasources["dallosh-clickhouse"]
    assert clickhouse["type"] == "grafana-clickhouse-datasource"
    data = clickhouse["jsonData"]
    assert data["defaultDatabase"] == "dallosh"
    assert data["host"] in compose["services"] and data["host"] == "clickhouse"
    assert data["protocol"] == "http" and int(data["port"]) == 8123
    password_ref = clickhouse["secureJsonData"]["password"]
    variable = re.fullmatch(r"\$\{?(\w+)\}?", password_ref)
    assert variable, "the ClickHouse password must come from Grafana's environment"
    assert variable.group(1) in environment(compose["services"]["grafana"]), (
        f"the grafana service does not set {variable.group(1)}")

    prometheus = datasources["dallosh-prometheus"]
    assert prometheus["type"] == "prometheus" and prometheus.get("isDefault") is False
    url = urlsplit(prometheus["url"])
    assert url.hostname == "prometheus" and url.hostname in compose["services"]
    assert url.port == 9090
    assert sum(bool(ds.get("isDefault")) for ds in datasources.values()) <= 1


def test_grafana_clickhouse_user_matches_the_users_xml(compose, datasources, grafana_user_xml):
    username = datasources["dallosh-clickhouse"]["jsonData"]["username"]
    user = grafana_user_xml.find(f"users/{username}")
    assert user is not None, f"user {username!r} is not defined in {CLICKHOUSE_USERS_XML.name}"
    # No password in the file: ClickHouse reads it from its environment, which Compose
    # fills from the same host variable as Grafana's side.
    password = user.find("password")
    assert password is not None and not (password.text or "").strip(), "a password is written in the XML"
    variable = password.get("from_env")
    assert variable, "<password from_env=...> expected"
    host_env = SECRETS_SET | {"GRAFANA_CLICKHOUSE_PASSWORD": "a-chosen-one"}
    clickhouse_side = environment(compose["services"]["clickhouse"], host_env)[variable]
    grafana_side = environment(compose["services"]["grafana"], host_env)["GRAFANA_CLICKHOUSE_PASSWORD"]
    assert clickhouse_side == grafana_side == "a-chosen-one"


def test_grafana_dashboards_provider_reads_the_mounted_folder(compose):
    content = yaml.safe_load(GRAFANA_DASHBOARD_PROVIDERS.read_text(encoding="utf-8"))
    assert content["apiVersion"] == 1
    (provider,) = content["providers"]
    assert provider["type"] == "file" and provider["folder"] == "Dallosh"
    source = host_path(provider["options"]["path"], compose["services"]["grafana"])
    assert source is not None and source.resolve() == (ROOT / "grafana" / "dashboards").resolve()


def test_grafana_provisioning_is_mounted(compose):
    source = host_path("/etc/grafana/provisioning/datasources/datasources.yaml",
                       compose["services"]["grafana"])
    assert source is not None and source.resolve() == GRAFANA_DATASOURCES.resolve()


# --------------------------------------------------------------------------- clickhouse

def test_clickhouse_grafana_user_is_readonly_and_limited_to_dallosh(grafana_user_xml):
    assert grafana_user_xml.tag == "clickhouse"
    user = grafana_user_xml.find("users/grafana")
    assert user is not None
    profile_name = user.findtext("profile")
    profile = grafana_user_xml.find(f"profiles/{profile_name}")
    assert profile is not None, f"profile {profile_name!r} is not defined in the file"
    # readonly=1: not even SET (readonly=2 let a query lift its own limits).
    assert profile.findtext("readonly") == "1", "the Grafana user must be readonly=1"
    assert profile.findtext("allow_ddl") == "0"
    # ... except the query timeout the plugin sends with every query, bounded.
    timeout = profile.find("constraints/max_execution_time")
    assert timeout is not None and timeout.find("changeable_in_readonly") is not None
    assert 0 < float(timeout.findtext("max")) <= 600
    # Every other constraint stays unchangeable in readonly mode.
    others = [c.tag for c in profile.find("constraints")
              if c.tag != "max_execution_time" and c.find("changeable_in_readonly") is not None]
    assert not others, f"settings changeable by the read-only user: {others}"
    assert [db.text for db in user.findall("allow_databases/database")] == ["dallosh"]
    # XML <grants> need SQL-driven access control, which this file does not rely on.
    assert user.find("grants") is None


def test_clickhouse_users_file_is_mounted_as_a_single_file(compose):
    service = compose["services"]["clickhouse"]
    targets = {target: source for source, target in bind_mounts(service)}
    target = f"/etc/clickhouse-server/users.d/{CLICKHOUSE_USERS_XML.name}"
    # Not the whole folder: the image's entrypoint writes users.d/default-user.xml.
    assert "/etc/clickhouse-server/users.d" not in targets
    assert target in targets
    assert (ROOT / targets[target]).resolve() == CLICKHOUSE_USERS_XML.resolve()


def test_clickhouse_grafana_user_logs_in_only_from_grafana_and_loopback(compose, grafana_user_xml):
    networks = grafana_user_xml.find("users/grafana/networks")
    assert networks is not None and len(networks), "no <networks>: nobody can log in"
    import ipaddress

    for entry in networks:
        if entry.tag == "ip":
            network = ipaddress.ip_network(entry.text.strip(), strict=False)
            assert network.is_loopback, f"<ip>{entry.text}</ip> lets more than loopback in"
        elif entry.tag == "host":
            assert entry.text.strip() == "grafana" and "grafana" in compose["services"]
        else:  # host_regexp, etc.: open-ended
            raise AssertionError(f"unexpected <networks> entry <{entry.tag}>")


# --------------------------------------------------------------------------- defaults a deployment keeps

def _strings(node) -> list[str]:
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in _strings(value)]
    return [node] if isinstance(node, str) else []


def test_secrets_have_no_default_and_compose_refuses_to_start_without_them(compose):
    """A password with a default (``${X:-dallosh}``) is the password of every deployment
    that forgot to set it; ``${X:?...}`` makes Compose refuse to start instead."""
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    uses = [(m["braced"], m["op"]) for m in _INTERPOLATION.finditer(text)
            if m["braced"] and re.search(r"PASSWORD|SECRET", m["braced"])]
    assert {name for name, _ in uses} >= set(SECRETS_SET)
    defaulted = sorted({name for name, op in uses if op != ":?"})
    assert not defaulted, f"secrets with a default or silently empty: {defaulted}"
    for name in SECRETS_SET:
        without = {k: v for k, v in SECRETS_SET.items() if k != name}
        with pytest.raises(MissingVariable, match=name):
            for value in _strings(compose):
                interpolate(value, without)


def test_published_ports_bind_to_loopback_by_default(compose):
    published = []
    for name, service in compose["services"].items():
        for port in service.get("ports") or []:
            spec = port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port.get('published')}"
            published.append((name, interpolate(str(spec))))
    assert published, "no published port: the parser is broken"
    exposed = [f"{name}: {spec}" for name, spec in published
               if not (spec.startswith("127.0.0.1:") or spec.startswith("[::1]:"))]
    assert not exposed, f"ports published on every interface: {exposed}"


def test_images_and_the_grafana_plugin_are_pinned(compose):
    for name, service in compose["services"].items():
        image = service.get("image", "")
        if "build" in service:
            continue
        repo, _, tag = image.rpartition(":")
        assert repo and re.fullmatch(r"v?\d+\.\d+\.\d+(\.\d+)?([-.]\w+)*", tag), (
            f"{name}: image {image!r} is not pinned to a release (x.y.z)")
    plugins = environment(compose["services"]["grafana"]).get("GF_INSTALL_PLUGINS", "")
    assert plugins, "the ClickHouse plugin is not installed"
    for plugin in plugins.split(","):
        parts = plugin.split()
        assert len(parts) == 2 and re.fullmatch(r"\d+\.\d+\.\d+", parts[1]), (
            f"plugin {plugin!r} is not pinned ('<id> <x.y.z>')")
    base = [line.split()[1] for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()
            if line.startswith("FROM ")]
    assert base and all(re.search(r":\d+\.\d+\.\d+", image) for image in base), base


# --------------------------------------------------------------------------- the image's build context

def dockerfile_copies(dockerfile: str = "Dockerfile") -> list[tuple[list[str], str]]:
    """``(sources, destination)`` of the Dockerfile's COPY lines (no --from stages)."""
    copies = []
    for line in (ROOT / dockerfile).read_text(encoding="utf-8").splitlines():
        if not line.startswith("COPY "):
            continue
        args = line.split()[1:]
        assert not any(a.startswith("--from") for a in args), "multi-stage COPY: extend this test"
        args = [a for a in args if not a.startswith("--")]
        copies.append((args[:-1], args[-1]))
    return copies


@pytest.mark.timeout(300)
@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_the_package_builds_from_exactly_what_the_dockerfile_copies(tmp_path, dockerfile):
    """`docker build` runs `pip install .` on what the COPY lines put in /src: build the
    wheel from a folder holding exactly that (no Docker engine needed), so a package
    listed in pyproject.toml but not copied (``bench`` was) fails here, not at deploy."""
    import sys

    context = tmp_path / "src"
    context.mkdir()
    for sources, destination in dockerfile_copies(dockerfile):
        for source in sources:
            origin = ROOT / source
            target = context / destination
            if destination.endswith("/"):
                target = target / origin.name
            if origin.is_dir():
                shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target)
    wheels = tmp_path / "wheels"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", str(wheels), str(context)],
        capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (wheel,) = wheels.glob("dallosh_stream-*.whl")
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    for package in ("stream_app/__init__.py", "connectors/__init__.py", "bench/__init__.py",
                    "stream_app/schemas/clickhouse/0001_init.sql"):
        assert package in names, f"{package} missing from the wheel"
