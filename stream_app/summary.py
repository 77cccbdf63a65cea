"""What one replay produced, read back from ClickHouse: the demo's closing summary."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from clickhouse_connect.driver.client import Client

from stream_app.records import reason_kind

# FINAL: rows of a replayed id are collapsed even before background merges run.
_TWEETS = "dallosh.tweets FINAL WHERE run_id = {run:String}"
_DLQ = "dallosh.dlq FINAL WHERE run_id = {run:String}"
_DECISIONS = "dallosh.clean_decisions FINAL WHERE run_id = {run:String}"


@dataclass
class RunSummary:
    run_id: str
    stored: int
    dead_lettered: int
    by_sentiment: dict[str, int] = field(default_factory=dict)
    by_priority: dict[int, int] = field(default_factory=dict)
    by_topic: dict[str, int] = field(default_factory=dict)
    by_tier: dict[str, int] = field(default_factory=dict)
    top_locations: dict[str, int] = field(default_factory=dict)
    dead_letters_by_reason: dict[str, int] = field(default_factory=dict)
    dropped_by_clean: int = 0
    clean_decisions: dict[str, int] = field(default_factory=dict)  # "decision (action)" -> n

    def rows_accounted(self, skipped_by_replayer: int = 0) -> int:
        """Rows a replay's reconciliation can account for: stored, dead-lettered,
        dropped by the clean stage, skipped as duplicates by the replayer."""
        return self.stored + self.dead_lettered + self.dropped_by_clean + skipped_by_replayer


def _rows(client: Client, sql: str, run_id: str) -> list[tuple]:
    return client.query(sql, parameters={"run": run_id}).result_rows


def _counts(client: Client, sql: str, run_id: str) -> dict:
    return {row[0]: row[1] for row in _rows(client, sql, run_id)}


def summarise_run(client: Client, run_id: str) -> RunSummary:
    return RunSummary(
        run_id=run_id,
        stored=_rows(client, f"SELECT count() FROM {_TWEETS}", run_id)[0][0],
        dead_lettered=_rows(client, f"SELECT count() FROM {_DLQ}", run_id)[0][0],
        by_sentiment=_counts(client, f"SELECT sentiment, count() c FROM {_TWEETS} "
                                     "GROUP BY sentiment ORDER BY c DESC", run_id),
        by_priority=_counts(client, f"SELECT priority, count() FROM {_TWEETS} "
                                    "GROUP BY priority ORDER BY priority", run_id),
        by_topic=_counts(client, f"SELECT topic, count() c FROM {_TWEETS} "
                                 "GROUP BY topic ORDER BY c DESC", run_id),
        by_tier=_counts(client, f"SELECT concat(tier, '/', provider), count() c FROM {_TWEETS} "
                                "GROUP BY 1 ORDER BY c DESC", run_id),
        top_locations=_counts(client, f"SELECT location, count() c FROM {_TWEETS} "
                                      "AND location != '' GROUP BY location ORDER BY c DESC LIMIT 8",
                              run_id),
        dead_letters_by_reason=_dead_letter_kinds(client, run_id),
        dropped_by_clean=_rows(client, f"SELECT count() FROM {_DECISIONS} AND action = 'dropped'",
                               run_id)[0][0],
        clean_decisions=_counts(client, f"SELECT concat(decision, ' (', action, ')'), count() c "
                                        f"FROM {_DECISIONS} GROUP BY 1 ORDER BY c DESC", run_id),
    )


def _dead_letter_kinds(client: Client, run_id: str) -> dict[str, int]:
    kinds: Counter[str] = Counter()
    for stage, reason, count in _rows(
            client, f"SELECT stage, reason, count() FROM {_DLQ} GROUP BY stage, reason", run_id):
        kinds[f"{stage}: {reason_kind(reason)}"] += count
    return dict(kinds.most_common())


def format_summary(summary: RunSummary, rows_in: int, duplicates_skipped: int = 0) -> str:
    def line(title: str, counts: dict) -> str:
        total = sum(counts.values()) or 1
        parts = [f"{k}={v} ({100 * v / total:.0f}%)" for k, v in counts.items()]
        return f"  {title:<13} " + (", ".join(parts) if parts else "(none)")

    verdict = "OK" if rows_in == summary.rows_accounted(duplicates_skipped) else "MISMATCH"
    skipped = f" + skipped by the replayer {duplicates_skipped}" if duplicates_skipped else ""
    dropped = f" + dropped by clean {summary.dropped_by_clean}" if summary.dropped_by_clean else ""
    priority_names = {0: "P0-high", 1: "P1", 2: "P2-low"}
    return "\n".join([
        f"Run {summary.run_id}",
        f"  rows in {rows_in} = stored {summary.stored} + dead-lettered "
        f"{summary.dead_lettered}{dropped}{skipped}  [{verdict}]",
        line("sentiment", summary.by_sentiment),
        line("priority", {priority_names.get(k, k): v for k, v in summary.by_priority.items()}),
        line("topic", summary.by_topic),
        line("tier", summary.by_tier),
        line("locations", summary.top_locations),
        line("dead letters", summary.dead_letters_by_reason),
        line("clean stage", summary.clean_decisions),
    ])


def run_alerts(client: Client, run_id: str) -> list[dict]:
    """The weak-signal alerts of one run's timeline (withdrawn ones, which late data of
    the replay disproved, left out). A run is its own timeline: another dump replayed
    into the same installation, even of the same days, has alerts of its own."""
    rows = client.query(
        "SELECT severity, severity_level, detector, detectors, location, key, status, first_seen, "
        "resolved_at, observed, expected, message, example_ids, summary, representative_texts "
        "FROM dallosh.alerts FINAL "
        "WHERE run_id = {run:String} AND status != 'withdrawn' ORDER BY first_seen, alert_id",
        parameters={"run": run_id})
    return [dict(zip(rows.column_names, row)) for row in rows.result_rows]


def format_alerts(alerts: list[dict]) -> str:
    if not alerts:
        return "Alerts: none"
    lines = [f"Alerts: {len(alerts)}"]
    for a in alerts:
        until = f" -> resolved {a['resolved_at']:%H:%M}" if a["resolved_at"] else " (still firing)"
        lines.append(f"  [{a['severity']} {a['severity_level']}/10] {a['location'] or 'national'} "
                     f"({a['key']}): first seen {a['first_seen']:%Y-%m-%d %H:%M} UTC{until}; "
                     f"{', '.join(a['detectors']) or a['detector']}")
        # What the on-call reads first: the incident in one sentence, then one of its
        # complaints (scrubbed text, as paged); the detectors' own figures stay in `message`.
        if a["summary"]:
            lines.append(f"    {a['summary']}")
        if a["representative_texts"]:
            lines.append(f"    e.g. \"{a['representative_texts'][0]}\"")
        lines.append(f"    tweets {', '.join(a['example_ids'][:3])}")
    return "\n".join(lines)
