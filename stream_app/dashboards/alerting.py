"""Grafana alerting as provisioning files: rules, contact points, notification policy.

* Detector alerts (issue #8's weak signals, rows of ``dallosh.alerts``) page from
  ClickHouse, one alert instance per open alert, with example tweets in the message.
* Operational alerts are evaluated by Prometheus (deploy/prometheus/rules/, tested with
  promtool); Grafana relays each one from Prometheus' ``ALERTS`` series, so there is
  one definition of every operational condition and Grafana does the routing.

Detector alerts page on-call (webhook) from severity level 7 of 10
(:data:`stream_app.signals.alerts.PAGE_LEVEL`; the level grows with magnitude, people,
places and persistence); operational alerts page when Prometheus says ``critical``;
everything goes to the SAV team (email), the channel below paging.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from grafana_foundation_sdk.builders import alerting, expr
from grafana_foundation_sdk.models import alerting as alerting_m
from grafana_foundation_sdk.models.dashboard import DataSourceRef

from stream_app.dashboards import queries as q
from stream_app.dashboards.clickhouse_query import CLICKHOUSE_UID, PROMETHEUS_UID, ClickHouseQuery
from stream_app.dashboards.panels import promql
from stream_app.signals.alerts import PAGE_LEVEL

FOLDER = "Dallosh"
ORG_ID = 1
ONCALL, SAV = "dallosh-oncall", "dallosh-sav"
EXPRESSIONS = DataSourceRef(type_val="__expr__", uid="__expr__")
RUNBOOKS = "docs/runbooks.md"  # one `## Runbook: <alert>` section per alert


def _reduce_and_threshold(rule: alerting.Rule) -> alerting.Rule:
    """B = last value of each series of A; C = B > 0 (the rule's condition)."""
    reduce = (expr.TypeReduce().ref_id("B").expression("A").reducer("last").datasource(EXPRESSIONS)
              .settings(expr.ExprTypeReduceSettings().mode("dropNN")))
    threshold = (expr.TypeThreshold().ref_id("C").expression("B").datasource(EXPRESSIONS)
                 .conditions([expr.ExprTypeThresholdConditions().evaluator(
                     expr.ExprTypeThresholdConditionsEvaluator().type("gt").params([0]))]))
    return (rule.with_query(alerting.Query("B").datasource_uid("__expr__").model(reduce))
            .with_query(alerting.Query("C").datasource_uid("__expr__").model(threshold))
            .condition("C"))


def detector_rule() -> alerting.Rule:
    query = (alerting.Query("A").datasource_uid(CLICKHOUSE_UID)
             .relative_time_range(alerting_m.RelativeTimeRange(from_val=6 * 3600, to=0))
             .model(ClickHouseQuery(q.DETECTOR_ALERTS.sql, time_series=False)))
    return _reduce_and_threshold(
        alerting.Rule("Weak signal detected").uid("dallosh-weak-signal").with_query(query)
        .for_val("0s").no_data_state("OK").exec_err_state("Error")
        .labels({"source": "detectors"})
        .annotations({
            "summary": "Severity {{ $labels.severity_level }}/10: {{ $labels.detector }} "
                       "{{ with $labels.location }}in {{ . }}{{ else }}national{{ end }}, "
                       "{{ $labels.people }} people",
            "description": "{{ with $labels.summary }}{{ . }}. {{ end }}"
                           "{{ with $labels.examples }}Representative: {{ . }}. {{ end }}"
                           "{{ with $labels.topics }}Topics: {{ . }}. {{ end }}"
                           "{{ with $labels.sentiments }}Sentiment: {{ . }}. {{ end }}"
                           "{{ with $labels.terms }}Terms: {{ . }}. {{ end }}"
                           "{{ $labels.message }} (score {{ $labels.score }}).",
            "runbook_url": f"{RUNBOOKS}#runbook-weak-signal-alert",
            "dashboard": "/d/dallosh-wall",
        }))


def prometheus_rules(rules_file: Path) -> list[alerting.Rule]:
    """One Grafana rule per Prometheus alert, firing while Prometheus says it fires."""
    rules = []
    for group in yaml.safe_load(rules_file.read_text(encoding="utf-8"))["groups"]:
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            name, annotations = rule["alert"], rule.get("annotations") or {}
            query = (alerting.Query("A").datasource_uid(PROMETHEUS_UID)
                     .relative_time_range(alerting_m.RelativeTimeRange(from_val=600, to=0))
                     .model(promql(f'ALERTS{{alertname="{name}", alertstate="firing"}}',
                                   name).instant()))
            anchor = annotations.get("runbook_url", "").partition("#")[2]
            rules.append(_reduce_and_threshold(
                alerting.Rule(name).uid(f"prom-{name.lower()}"[:40]).with_query(query)
                .for_val("0s").no_data_state("OK").exec_err_state("Error")
                .labels({"source": "prometheus", **(rule.get("labels") or {})})
                .annotations({
                    "summary": f"{name} is firing in Prometheus",
                    "description": " ".join(str(annotations.get("description", "")).split()),
                    "runbook_url": f"{RUNBOOKS}#{anchor}",
                })))
    return rules


_PROVISIONED_RULE_KEYS = ("uid", "title", "condition", "data", "noDataState", "execErrState",
                          "for", "annotations", "labels", "isPaused")


def _plain(obj: object) -> object:
    """SDK models -> plain dicts/lists (what yaml can dump)."""
    import json

    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    return json.loads(json.dumps(obj, cls=JSONEncoder))


def rules_file(prometheus_rules_file: Path) -> dict:
    groups = [("dallosh-signals", "1m", [detector_rule()]),
              ("dallosh-operations", "1m", prometheus_rules(prometheus_rules_file))]
    return {"apiVersion": 1, "groups": [
        {"orgId": ORG_ID, "name": name, "folder": FOLDER, "interval": interval,
         "rules": [{k: v for k, v in _plain(rule.build()).items() if k in _PROVISIONED_RULE_KEYS}
                   for rule in rules]}
        for name, interval, rules in groups]}


def contact_points_file() -> dict:
    points = [
        alerting.ContactPoint().name(ONCALL).uid("dallosh-oncall-webhook").type("webhook")
        .settings({"url": "${ONCALL_WEBHOOK_URL}", "httpMethod": "POST"}),
        alerting.ContactPoint().name(SAV).uid("dallosh-sav-email").type("email")
        .settings({"addresses": "${SAV_ALERT_EMAILS}", "singleEmail": True}),
    ]
    return {"apiVersion": 1, "contactPoints": [
        {"orgId": ORG_ID, "name": point["name"], "receivers": [
            {"uid": point["uid"], "type": point["type"], "settings": point["settings"],
             "disableResolveMessage": False}]}
        for point in map(_plain, (p.build() for p in points))]}


def page_level_matcher(level: int = PAGE_LEVEL) -> str:
    """A label regex for severity levels ``level``..10 (Grafana anchors matcher regexes)."""
    return "|".join(str(n) for n in range(level, 11))


def policies_file() -> dict:
    policy = (alerting.NotificationPolicy().receiver(SAV)
              .group_by(["alertname", "location"]).group_wait("30s").group_interval("5m")
              .repeat_interval("4h")
              .routes([alerting.NotificationPolicy().receiver(ONCALL)
                       .object_matchers([["source", "=", "detectors"],
                                         ["severity_level", "=~", page_level_matcher()]])
                       .continue_val(True).repeat_interval("1h"),
                       alerting.NotificationPolicy().receiver(ONCALL)
                       .object_matchers([["source", "=", "prometheus"],
                                         ["severity", "=", "critical"]])
                       .continue_val(True).repeat_interval("1h"),
                       alerting.NotificationPolicy().receiver(SAV)]))
    return {"apiVersion": 1, "policies": [{"orgId": ORG_ID, **_plain(policy.build())}]}
