"""What the report shows, read from ClickHouse for one run (a replay's run id).

A run's alerts are those of its own timeline (``dallosh.alerts.run_id``, migration 0005):
a replay of another dump, or the live stream, over the same dates never shows up in this
run's report. Alerts stored before 0005 have no timeline (``run_id = ''``) and appear in
no run's report; ``dallosh demo`` on a fresh store writes them with one.

An alert comes with its explanation (migrations 0007, 0008): severity level, people,
summary, distinctive terms, topic and sentiment mix, and its representative complaints,
quoted SCRUBBED (``text_scrubbed``: a report is shared, personal data stays out). An
alert stored before 0008 has its example ids looked up in the tweets' scrubbed text."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from clickhouse_connect.driver.client import Client

BUCKETS_MINUTES = (1, 5, 10, 15, 30, 60, 120, 240, 720, 1440)
TARGET_BUCKETS = 96
# This run's timeline, withdrawn alerts (disproved by late data of the replay) left out.
RUN_ALERTS = "dallosh.alerts FINAL WHERE run_id = {run:String} AND status != 'withdrawn'"


class ReportError(RuntimeError):
    """Nothing to report (no such run, empty store): a user-facing message."""


@dataclass
class Alert:
    """One incident of the run, as the report shows it."""
    detectors: list[str]        # every detector of the incident, never empty
    location: str
    severity: str
    status: str
    window_start: datetime      # the window that triggered it (not how long it lasted)
    window_end: datetime
    first_seen: datetime
    resolved_at: datetime | None
    until: datetime             # resolved_at, or the run's last tweet while still firing
    message: str
    examples: list[str]         # representative complaints, scrubbed text
    level: int = 0              # severity 1-10 (0: stored before 0007)
    people: int = 0             # distinct people complaining
    summary: str = ""
    terms: list[str] = field(default_factory=list)
    topic_mix: dict[str, int] = field(default_factory=dict)
    sentiment_mix: dict[str, int] = field(default_factory=dict)


def incident_detectors(detectors: list[str], detector: str) -> list[str]:
    """The ``detectors`` column; rows stored before migration 0005 have an empty one and
    name their (first) detector only."""
    return list(detectors) or [detector]


@dataclass
class ReportData:
    run_id: str
    first: datetime
    last: datetime
    bucket_minutes: int
    stored: int
    dead_lettered: int
    timeline: list[tuple[datetime, int, int, int]]  # (bucket, tweets, negative, positive)
    alerts: list[Alert] = field(default_factory=list)
    topics: list[tuple[str, int, int]] = field(default_factory=list)      # topic, tweets, negative
    locations: list[tuple[str, int, int, int]] = field(default_factory=list)  # + negative, P0
    priorities: dict[int, int] = field(default_factory=dict)
    sentiments: dict[str, int] = field(default_factory=dict)
    tiers: list[tuple[str, str, int]] = field(default_factory=list)       # tier, provider, tweets
    costs: list[tuple[str, int, int, int, float]] = field(default_factory=list)  # provider, calls, in, out, usd
    examples: list[tuple[datetime, str, str, str, str, str]] = field(default_factory=list)


def _bucket_minutes(first: datetime, last: datetime) -> int:
    span = max((last - first).total_seconds() / 60, 1)
    return next((m for m in BUCKETS_MINUTES if span / m <= TARGET_BUCKETS), BUCKETS_MINUTES[-1])


def latest_run_id(client: Client) -> str:
    rows = client.query("SELECT run_id FROM dallosh.tweets FINAL GROUP BY run_id "
                        "ORDER BY max(ingested_at) DESC LIMIT 1").result_rows
    if not rows:
        raise ReportError("there are no tweets in ClickHouse yet: replay a dump first "
                          "(`dallosh demo` or `dallosh replay FILE` with a worker running)")
    return rows[0][0]


def load_report_data(client: Client, run_id: str | None = None) -> ReportData:
    run_id = run_id or latest_run_id(client)
    params = {"run": run_id}

    def rows(sql: str, **extra: object) -> list[tuple]:
        return client.query(sql, parameters=params | extra).result_rows

    tweets = "dallosh.tweets FINAL WHERE run_id = {run:String}"
    stored, first, last = rows(f"SELECT count(), min(created_at), max(created_at) FROM {tweets}")[0]
    if not stored:
        raise ReportError(f"run {run_id!r} has no stored tweets (see `dallosh demo` output "
                          "for run ids)")
    minutes = _bucket_minutes(first, last)
    timeline = rows(
        f"SELECT toStartOfInterval(created_at, INTERVAL {minutes} MINUTE) AS bucket, count(), "
        f"countIf(sentiment = 'negative'), countIf(sentiment = 'positive') FROM {tweets} "
        "GROUP BY bucket ORDER BY bucket WITH FILL STEP INTERVAL {step:UInt32} MINUTE",
        step=minutes)
    alerts = [Alert(incident_detectors(detectors, detector), location, severity, status,
                    window_start, window_end, first_seen, resolved_at, resolved_at or last,
                    message, [t for t in texts if t], level, people, summary, list(terms),
                    dict(topic_mix), dict(sentiment_mix))
              for (detectors, detector, location, severity, status, window_start, window_end,
                   first_seen, resolved_at, message, texts, level, people, summary, terms,
                   topic_mix, sentiment_mix) in rows(
        "SELECT a.detectors, a.detector, a.location, a.severity, a.status, a.window_start, "
        "a.window_end, a.first_seen, a.resolved_at, a.message, "
        "if(notEmpty(a.representative_texts), a.representative_texts, "
        "   arrayMap(i -> t.texts[indexOf(t.ids, i)], arraySlice(a.example_ids, 1, 3))), "
        "a.severity_level, a.authors, a.summary, a.terms, a.topic_mix, a.sentiment_mix "
        f"FROM (SELECT * FROM {RUN_ALERTS}) AS a "
        "CROSS JOIN (SELECT groupArray(id) AS ids, groupArray(text_scrubbed) AS texts "
        f"            FROM {tweets} AND id IN (SELECT arrayJoin(example_ids) "
        f"             FROM {RUN_ALERTS})) AS t ORDER BY a.first_seen, a.alert_id")]
    return ReportData(
        run_id=run_id, first=first, last=last, bucket_minutes=minutes, stored=stored,
        dead_lettered=rows("SELECT count() FROM dallosh.dlq FINAL WHERE run_id = {run:String}")[0][0],
        timeline=timeline, alerts=alerts,
        topics=rows(f"SELECT topic, count() c, countIf(sentiment = 'negative') FROM {tweets} "
                    "GROUP BY topic ORDER BY c DESC"),
        locations=rows(f"SELECT location, count() c, countIf(sentiment = 'negative'), "
                       f"countIf(priority = 0) FROM {tweets} AND location != '' "
                       "GROUP BY location ORDER BY c DESC LIMIT 12"),
        priorities=dict(rows(f"SELECT priority, count() FROM {tweets} GROUP BY priority "
                             "ORDER BY priority")),
        sentiments=dict(rows(f"SELECT sentiment, count() c FROM {tweets} GROUP BY sentiment "
                             "ORDER BY c DESC")),
        tiers=rows(f"SELECT tier, provider, count() c FROM {tweets} GROUP BY tier, provider "
                   "ORDER BY c DESC"),
        costs=rows("SELECT provider, count(), sum(input_tokens), sum(output_tokens), sum(cost_usd) "
                   "FROM dallosh.provider_calls WHERE run_id = {run:String} GROUP BY provider "
                   "ORDER BY sum(cost_usd) DESC, provider"),
        examples=rows(f"SELECT created_at, location, topic, team, sentiment, text FROM {tweets} "
                      "AND priority = 0 ORDER BY confidence DESC, created_at LIMIT 8"),
    )
