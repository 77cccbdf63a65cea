"""The Grafana provisioning files are generated as code (grafana-foundation-sdk) and the
committed files are exactly what the code generates; their wiring is consistent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
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
    # On-call is paged by detector alerts from severity level 7 of 10, and by Prometheus'
    # critical alerts; the SAV channel gets everything.
    paging = {tuple(map(tuple, r["object_matchers"])) for r in policy["routes"]
              if r["receiver"] == "dallosh-oncall"}
    assert paging == {(("source", "=", "detectors"), ("severity_level", "=~", "7|8|9|10")),
                      (("source", "=", "prometheus"), ("severity", "=", "critical"))}
    assert policy["routes"][-1] == {"receiver": "dallosh-sav"}
    import re
    from stream_app.dashboards.alerting import page_level_matcher
    pages = re.compile(f"^(?:{page_level_matcher()})$")   # Grafana anchors matcher regexes
    assert [level for level in range(1, 11) if pages.match(str(level))] == [7, 8, 9, 10]
    prometheus_alerts = {r["alert"] for g in load("deploy/prometheus/rules/dallosh.rules.yml")["groups"]
                         for r in g["rules"]}
    from tests.project_docs import RUNBOOKS, anchors
    headings = anchors(RUNBOOKS)
    titles = set()
    for group in load("grafana/provisioning/alerting/rules.yaml")["groups"]:
        for rule in group["rules"]:
            titles.add(rule["title"])
            page, _, anchor = rule["annotations"]["runbook_url"].partition("#")
            assert page == RUNBOOKS, f"{rule['title']}: runbook_url must be {RUNBOOKS}#..."
            assert anchor in headings, f"{rule['title']}: {RUNBOOKS} has no heading #{anchor}"
    assert prometheus_alerts <= titles, "every Prometheus alert is relayed by Grafana"
    assert "Weak signal detected" in titles


def test_operations_queries_use_existing_metrics():
    from tests.test_docker_compose import exposed_metric_names, promql_metric_names
    known = exposed_metric_names() | {"up"}
    for expr in operations.all_exprs():
        assert promql_metric_names(expr.replace("$__rate_interval", "1m")) <= known, expr


def test_the_wall_maps_locations_at_the_gazetteers_coordinates():
    """A geomap panel reads each location's latitude/longitude columns (what MAP selects)
    and is coloured by the open incident's level; every city the clean stage can name
    has coordinates in metropolitan France (with Corsica), so no location is left off."""
    from stream_app.clean.location import _CITIES, COORDINATES
    from stream_app.dashboards import queries
    (panel,) = [p for p in load("grafana/dashboards/dallosh-wall.json")["panels"]
                if p["type"] == "geomap"]
    (layer,) = panel["options"]["layers"]
    assert layer["location"] == {"mode": "coords", "latitude": "latitude", "longitude": "longitude"}
    style = layer["config"]["style"]
    assert {"latitude", "longitude", style["color"]["field"], style["size"]["field"]} <= \
        set(queries.MAP.columns)
    assert panel["fieldConfig"]["defaults"]["color"]["mode"] == "thresholds"
    assert [s["value"] for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]] == \
        [None, 1, 4, 7]
    assert {city for city, *_ in _CITIES} == set(COORDINATES)
    for city, (lat, lon) in COORDINATES.items():
        assert 41.3 < lat < 51.1 and -5.2 < lon < 9.6, city
    assert COORDINATES["Bordeaux"] == pytest.approx((44.84, -0.58), abs=0.05)
    assert COORDINATES["Strasbourg"] == pytest.approx((48.57, 7.75), abs=0.05)


def test_the_pager_and_the_wall_carry_the_explanation():
    """The detector rule's labels (its pager message) and the wall's alerts table show
    the summary, the representative complaint (scrubbed), terms and mixes."""
    (rule,) = [r for g in load("grafana/provisioning/alerting/rules.yaml")["groups"]
               for r in g["rules"] if r["title"] == "Weak signal detected"]
    description = rule["annotations"]["description"]
    for label in ("summary", "examples", "topics", "sentiments", "terms"):
        assert f"$labels.{label}" in description, label
    sql = next(d["model"]["rawSql"] for d in rule["data"] if d["datasourceUid"] == "dallosh-clickhouse")
    assert "representative_texts" in sql and " text " not in sql and "t.text " not in sql
    from stream_app.dashboards import queries
    for column in ("summary", "terms", "representative", "topics", "sentiments", "people"):
        assert column in queries.ALERTS.columns, column
