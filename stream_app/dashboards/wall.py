"""The crisis wall: what a customer-care lead watches on the big screen (kiosk mode:
``/d/dallosh-wall?kiosk``), refreshed every 30 s, all from ClickHouse."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash_b

from stream_app.dashboards import queries as q
from stream_app.dashboards.panels import sql_bars, sql_geomap, sql_stat, sql_table, sql_timeseries
from stream_app.signals.alerts import PAGE_LEVEL

UID = "dallosh-wall"
HIGH_PRIORITY_LINE = 0.30  # the ">30 % high-priority in an hour" rule of the detectors
FRANCE = (46.6, 2.4)       # the map's centre: metropolitan France at zoom 5
# A location's colour on the map: its open incident's severity level (0: none), with the
# wall's words for it (signals.alerts.severity_word): major from 4, critical (paging) from 7.
INCIDENT_STEPS = ((None, "green"), (1, "yellow"), (4, "orange"), (PAGE_LEVEL, "red"))


def build() -> dash_b.Dashboard:
    return (
        dash_b.Dashboard("Dallosh — crisis wall").uid(UID)
        .description("Live picture of the tweets about the brand: volume, mood, priorities, "
                     "topics, places, open alerts and the tweets to answer first.")
        .tags(["dallosh", "wall"]).timezone("browser").refresh("30s").time("now-6h", "now")
        .readonly().tooltip(dash_b.dashboard.DashboardCursorSync.CROSSHAIR)
        .with_panel(sql_timeseries(
            "Volume and negative tweets", q.VOLUME, width=16,
            description="Tweets per interval (per-minute rollup), all and negative."))
        .with_panel(sql_stat(
            "Net sentiment score", q.NET_SENTIMENT, unit="percentunit", height=8, width=8,
            description="(positive - negative) / all tweets over the time range.",
            steps=((None, "red"), (-0.2, "orange"), (0.0, "green"))))
        .with_panel(sql_timeseries(
            "Negative share", q.NEGATIVE_SHARE, unit="percentunit", width=12))
        .with_panel(sql_timeseries(
            "High-priority share vs the 30 % line", q.HIGH_PRIORITY_SHARE, unit="percentunit",
            width=12, threshold_line=HIGH_PRIORITY_LINE,
            description="Share of P0 (high priority) tweets; above the dashed line for an "
                        "hour, the detectors raise an alert."))
        .with_panel(sql_bars("Top topics", q.TOP_TOPICS, width=8))
        .with_panel(sql_table(
            "By location", q.LOCATIONS, width=16,
            description="Localised vs national: where the volume, the anger and the "
                        "urgent tweets are."))
        .with_panel(sql_geomap(
            "Map: complaints and incidents by location", q.MAP, color_field="incident_level",
            size_field="complaints", label_field="location", steps=INCIDENT_STEPS,
            center=FRANCE, zoom=5, height=12, width=10,
            description="One circle per location of the gazetteer that tweeted in the range, "
                        "sized by its complaints (negative tweets), coloured by its open "
                        "incident's severity (green: none, yellow: warning, orange: major, "
                        "red: paging). The tooltip has the incident's summary."))
        .with_panel(sql_table(
            "Alerts (open, or raised in the time range) and why", q.ALERTS, height=12, width=14,
            description="Each alert with its explanation: the summary, the terms that set it "
                        "apart from its baseline, its most representative complaint (scrubbed "
                        "text), the topic and sentiment mix of its tweets, the people complaining."))
        .with_panel(sql_table(
            "Latest high-priority tweets and their routing team", q.LATEST_HIGH_PRIORITY,
            height=10, width=24))
    )
