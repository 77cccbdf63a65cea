"""Operations: is the pipeline keeping up, and what is failing — from Prometheus (the
workers' /metrics, stream_app/metrics.py). tests/test_prometheus_server.py runs every
query here against a real Prometheus scraping a real worker."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash_b

from stream_app.dashboards.panels import prom_timeseries, promql

UID = "dallosh-operations"
RATE = "$__rate_interval"

# (panel title, unit, [(expr, legend)]) in display order.
PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("Throughput per stage (messages/s)", "ops", [
        (f"sum by (stage) (rate(dallosh_messages_in_total[{RATE}]))", "{{stage}} in"),
        (f"sum by (stage) (rate(dallosh_messages_out_total[{RATE}]))", "{{stage}} out"),
    ]),
    ("Consumer lag (messages)", "short", [
        ("max by (topic) (dallosh_consumer_lag_messages)", "{{topic}}"),
    ]),
    ("Batch fill (mean items per batch)", "short", [
        (f"sum by (stage) (rate(dallosh_batch_size_sum[{RATE}])) / "
         f"sum by (stage) (rate(dallosh_batch_size_count[{RATE}]))", "{{stage}}"),
    ]),
    ("Tier in use (tweets/s)", "ops", [
        (f"sum by (tier, provider) (rate(dallosh_classified_total[{RATE}]))", "{{tier}}/{{provider}}"),
    ]),
    ("Fallback share (tweets not classified by a cloud tier)", "percentunit", [
        (f"1 - (sum(rate(dallosh_classified_total{{tier=\"cloud\"}}[{RATE}])) or vector(0)) / "
         f"sum(rate(dallosh_classified_total[{RATE}]))", "fallback share"),
    ]),
    ("Provider requests by outcome (circuit_open = breaker open)", "reqps", [
        (f"sum by (provider, outcome) (rate(dallosh_provider_requests_total[{RATE}]))",
         "{{provider}} {{outcome}}"),
    ]),
    ("Sink insert latency p95 (s)", "s", [
        (f"histogram_quantile(0.95, sum by (le, table) (rate(dallosh_sink_insert_seconds_bucket[{RATE}])))",
         "{{table}}"),
    ]),
    ("Dead letters and errors (per second)", "ops", [
        (f"sum by (stage, reason) (rate(dallosh_dead_letters_total[{RATE}]))", "dlq {{stage}}: {{reason}}"),
        (f"sum by (stage, kind) (rate(dallosh_errors_total[{RATE}]))", "error {{stage}}: {{kind}}"),
    ]),
    ("Workers up", "short", [
        ('up{job="dallosh-workers"}', "{{service}} {{instance}}"),
    ]),
]


def all_exprs() -> list[str]:
    return [expr for _, _, targets in PANELS for expr, _ in targets]


def build() -> dash_b.Dashboard:
    dashboard = (
        dash_b.Dashboard("Dallosh — operations").uid(UID)
        .description("Throughput, lag, batching, classifier tiers and providers, sink latency "
                     "and dead letters of the stream workers (Prometheus).")
        .tags(["dallosh", "operations"]).timezone("browser").refresh("30s")
        .time("now-1h", "now").readonly()
    )
    for title, unit, targets in PANELS:
        queries = [promql(expr, legend, ref_id=chr(ord("A") + i))
                   for i, (expr, legend) in enumerate(targets)]
        dashboard = dashboard.with_panel(prom_timeseries(
            title, queries, unit=unit,
            threshold_line=10_000 if title.startswith("Consumer lag") else None))
    return dashboard
