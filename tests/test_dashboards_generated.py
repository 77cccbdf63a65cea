"""The Grafana provisioning files are generated as code (grafana-foundation-sdk) and the
committed files are exactly what the code generates; their wiring is consistent."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from stream_app.dashboards import generate, operations
from stream_app.dashboards.__main__ import main as generator_main

ROOT = Path(__file__).resolve().parents[1]
DATASOURCE_UIDS = {"dallosh-clickhouse", "dallosh-prometheus", "__expr__"}


def load(relative: str):
    text = (ROOT / relative).read_text(encoding="utf-8")
    return json.loads(text) if relative.endswith(".json") else yaml.safe_load(text)


def test_committed_files_equal_the_generated_ones():
    assert generate.stale() == [], "run `make dashboards` (python -m stream_app.dashboards)"
    assert generator_main(["--check"]) == 0


def test_check_reports_a_hand_edited_file(tmp_path):
    for relative, content in generate.render().items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(content, encoding="utf-8")
    (tmp_path / "deploy/prometheus/rules").mkdir(parents=True)
    (tmp_path / "deploy/prometheus/rules/dallosh.rules.yml").write_text(
        (ROOT / "deploy/prometheus/rules/dallosh.rules.yml").read_text())
    assert generate.stale(tmp_path) == []
    wall = tmp_path / "grafana/dashboards/dallosh-wall.json"
    wall.write_text(wall.read_text().replace('"30s"', '"5s"'))
    assert generate.stale(tmp_path) == [Path("grafana/dashboards/dallosh-wall.json")]


def test_dashboards_have_the_panels_the_issue_asks_for():
    titles = {uid: [p["title"] for p in load(f"grafana/dashboards/{uid}.json")["panels"]]
              for uid in ("dallosh-wall", "dallosh-operations", "dallosh-finops")}
    wall = " | ".join(titles["dallosh-wall"]).lower()
    for words in ("volume", "negative share", "net sentiment", "30 %", "topics", "location",
                  "alerts", "high-priority tweets"):
        assert words in wall, words
    ops = " | ".join(titles["dallosh-operations"]).lower()
    for words in ("throughput", "lag", "batch fill", "tier", "fallback", "breaker",
                  "sink insert latency", "dead letters"):
        assert words in ops, words
    finops = " | ".join(titles["dallosh-finops"]).lower()
    for words in ("per hour", "per day", "tokens", "per 1,000 tweets", "budget"):
        assert words in finops, words
    assert load("grafana/dashboards/dallosh-wall.json")["refresh"] == "30s"


def test_every_query_names_a_provisioned_datasource():
    provisioned = {d["uid"] for d in load("grafana/provisioning/datasources/datasources.yaml")["datasources"]}
    assert DATASOURCE_UIDS - {"__expr__"} <= provisioned
    for uid in ("dallosh-wall", "dallosh-operations", "dallosh-finops"):
        for panel in load(f"grafana/dashboards/{uid}.json")["panels"]:
            assert panel["datasource"]["uid"] in provisioned, panel["title"]
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == panel["datasource"]["uid"]
    for group in load("grafana/provisioning/alerting/rules.yaml")["groups"]:
        for rule in group["rules"]:
            assert {d["datasourceUid"] for d in rule["data"]} <= DATASOURCE_UIDS
            assert rule["condition"] in {d["refId"] for d in rule["data"]}


def test_alert_rules_route_to_provisioned_contact_points_with_runbooks():
    points = {p["name"] for p in load("grafana/provisioning/alerting/contact_points.yaml")["contactPoints"]}
    (policy,) = load("grafana/provisioning/alerting/policies.yaml")["policies"]
    receivers = {policy["receiver"]} | {r["receiver"] for r in policy.get("routes", [])}
    assert receivers <= points
    assert any(r.get("object_matchers") == [["severity", "=", "critical"]]
               for r in policy["routes"])
    prometheus_alerts = {r["alert"] for g in load("deploy/prometheus/rules/dallosh.rules.yml")["groups"]
                         for r in g["rules"]}
    import re

    from tests.test_docker_compose import github_anchor
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    anchors = {github_anchor(m) for m in re.findall(r"^#+\s+(.+?)\s*#*$", readme, re.MULTILINE)}
    titles = set()
    for group in load("grafana/provisioning/alerting/rules.yaml")["groups"]:
        for rule in group["rules"]:
            titles.add(rule["title"])
            anchor = rule["annotations"]["runbook_url"].partition("#")[2]
            assert anchor in anchors, f"{rule['title']}: README.md has no heading #{anchor}"
    assert prometheus_alerts <= titles, "every Prometheus alert is relayed by Grafana"
    assert "Weak signal detected" in titles


def test_operations_queries_use_existing_metrics():
    from tests.test_docker_compose import exposed_metric_names, promql_metric_names
    known = exposed_metric_names() | {"up"}
    for expr in operations.all_exprs():
        assert promql_metric_names(expr.replace("$__rate_interval", "1m")) <= known, expr
