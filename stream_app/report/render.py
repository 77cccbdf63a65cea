"""The report page: one HTML file with everything inline."""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape
from pathlib import Path

from stream_app.report.charts import (alert_title, bar_rows, stacked_bar, timeline_legend,
                                      timeline_svg)
from stream_app.report.data import Alert, ReportData

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#162033;color:#fff;padding:20px 32px}header h1{margin:0 0 4px;font-size:22px}
header p{margin:0;color:#b8c2d6}main{max-width:1040px;margin:0 auto;padding:16px 32px 48px}
section{background:#fff;border-radius:8px;padding:16px 20px;margin:16px 0;box-shadow:0 1px 2px #0001}
h2{font-size:16px;margin:0 0 12px}.kpis{display:flex;gap:12px;flex-wrap:wrap}
.kpi{flex:1;min-width:140px;background:#fff;border-radius:8px;padding:12px 16px;box-shadow:0 1px 2px #0001}
.kpi b{display:block;font-size:24px}.kpi span{color:#5b6578;font-size:12px}
.chart{width:100%;height:auto}.bar{fill:#8fb3e8}.negative{fill:none;stroke:#d6453d;stroke-width:2;stroke-linejoin:round}
.alert-band{fill:#d6453d1a;stroke:#d6453d;stroke-dasharray:3 2}.alert-tie{stroke:#d6453d;stroke-width:1}
.alert-chip rect{fill:#fff5f4;stroke:#d6453d}.alert-label{font-size:11px;fill:#a3271f}
.negative-dot{fill:#d6453d}
.axis{font-size:11px;fill:#5b6578}.axis.neg{fill:#d6453d}.baseline{stroke:#9aa3b2}
.bars{display:grid;gap:6px}.bar-row{display:grid;grid-template-columns:150px 1fr 170px;gap:8px;align-items:center}
.bar-track{background:#eef1f5;border-radius:3px;height:14px}.bar-fill{display:block;height:14px;background:#8fb3e8;border-radius:3px;position:relative}
.bar-part{display:block;height:14px;background:#d6453d;border-radius:3px 0 0 3px}.bar-value{font-variant-numeric:tabular-nums}
.stacked{display:flex;height:22px;border-radius:4px;overflow:hidden}.seg{display:block;height:22px}
.key{display:inline-block;width:10px;height:10px;margin:0 4px 0 10px;border-radius:2px}
.key.swatch-bar{background:#8fb3e8}.key.swatch-line{background:#d6453d;height:3px;vertical-align:middle}
.key.swatch-band{background:#d6453d22;border:1px dashed #d6453d;box-sizing:border-box}
.p0{background:#d6453d}.p1{background:#f0a030}.p2{background:#8fb3e8}.neg{background:#d6453d}.neu{background:#b7bfcc}.pos{background:#3aa36b}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #eef1f5;vertical-align:top}
th{cursor:pointer;color:#5b6578;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.alert{border-left:4px solid #d6453d;padding:8px 12px;margin:8px 0;background:#fff5f4}.alert q{display:block;color:#5b6578;margin-top:4px}.alert .summary{font-weight:600}
.two{display:grid;grid-template-columns:1fr 1fr;gap:16px}@media(max-width:800px){.two{grid-template-columns:1fr}}
footer{color:#5b6578;font-size:12px;text-align:center}
"""

# Sortable tables, and a marker the tests (and anyone curious) can check for.
_JS = """
document.querySelectorAll('table.sortable th').forEach(function (th, column) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var numeric = rows.every(function (r) { return !isNaN(parseFloat(r.cells[column].dataset.v)); });
    var desc = th.dataset.desc !== '1'; th.dataset.desc = desc ? '1' : '0';
    rows.sort(function (a, b) {
      var x = a.cells[column].dataset.v, y = b.cells[column].dataset.v;
      var c = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
      return desc ? -c : c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
document.documentElement.dataset.rendered = String(document.querySelectorAll('svg.chart').length);
"""

PRIORITY_NAMES = {0: ("P0 high", "p0"), 1: ("P1", "p1"), 2: ("P2 low", "p2")}
SENTIMENT_CLASSES = {"negative": "neg", "neutral": "neu", "positive": "pos"}


def _table(headers: list[str], rows: list[list[object]]) -> str:
    def cell(value: object) -> str:
        if isinstance(value, (int, float)):
            text = f"{value:,.4f}" if isinstance(value, float) else f"{value:,}"
            return f'<td class="num" data-v="{value}">{text}</td>'
        return f'<td data-v="{escape(str(value))}">{escape(str(value))}</td>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _span(start: datetime, end: datetime) -> str:
    """``2026-03-12 14:25 → 17:30`` (the end's date too when it is another day)."""
    same_day = end.date() == start.date()
    return f"{start:%Y-%m-%d %H:%M} → {end.strftime('%H:%M' if same_day else '%Y-%m-%d %H:%M')}"


def _alert_html(number: int, alert: Alert) -> str:
    """One alert, numbered like its band on the timeline: every detector of the incident
    in the heading, how long it ran (as the terminal says it), the trigger window below."""
    if alert.resolved_at is not None:
        ran = f"{_span(alert.first_seen, alert.resolved_at)} UTC"
    else:
        ran = f"{alert.first_seen:%Y-%m-%d %H:%M} UTC → still firing at the end of the data"
    level = f" {alert.level}/10" if alert.level else ""
    why = []
    if alert.summary:
        why.append(f'<span class="summary">{escape(alert.summary)}</span>')
    if alert.terms:
        why.append("Distinctive terms: " + ", ".join(f"<b>{escape(t)}</b>" for t in alert.terms))
    for name, mix in (("Topics", alert.topic_mix), ("Sentiment", alert.sentiment_mix)):
        if mix:
            why.append(f"{name}: " + ", ".join(
                f"{escape(k)} {v}" for k, v in sorted(mix.items(), key=lambda kv: (-kv[1], kv[0]))))
    return (f'<div class="alert"><b>{number}. {escape(alert.severity.upper())}{level} · '
            f'{escape(alert_title(alert))}</b> — {ran} ({escape(alert.status)})<br>'
            + "".join(f"{line}<br>" for line in why)
            + f'{escape(alert.message)} <small>(triggered by the window '
            f'{_span(alert.window_start, alert.window_end)} UTC)</small>'
            + "".join(f"<q>{escape(t)}</q>" for t in alert.examples) + "</div>")


def render_report(data: ReportData, generated_at: datetime | None = None) -> str:
    generated_at = generated_at or datetime.now(timezone.utc)
    negative = data.sentiments.get("negative", 0)
    positive = data.sentiments.get("positive", 0)
    high = data.priorities.get(0, 0)
    cost = sum(row[4] for row in data.costs)
    kpis = [("tweets stored", f"{data.stored:,}"), ("dead-lettered", f"{data.dead_lettered:,}"),
            ("negative", f"{negative / data.stored:.0%}"),
            ("net sentiment", f"{(positive - negative) / data.stored:+.0%}"),
            ("high priority (P0)", f"{high / data.stored:.0%}"), ("alerts", str(len(data.alerts))),
            ("classifier cost", f"${cost:,.4f}")]
    alerts = "".join(_alert_html(n, a) for n, a in enumerate(data.alerts, 1)) \
        or "<p>No alert was raised during this replay.</p>"
    priorities = stacked_bar([(PRIORITY_NAMES.get(p, (f"P{p}", "p2"))[0], n,
                               PRIORITY_NAMES.get(p, ("", "p2"))[1])
                              for p, n in sorted(data.priorities.items())])
    sentiments = stacked_bar([(s, n, SENTIMENT_CLASSES.get(s, "neu"))
                              for s, n in data.sentiments.items()])
    tiers = _table(["tier", "provider", "tweets"], [list(row) for row in data.tiers])
    costs = _table(["provider", "requests", "input tokens", "output tokens", "cost (USD)"],
                   [list(row) for row in data.costs])
    examples = _table(["time (UTC)", "location", "topic", "team", "sentiment", "tweet"],
                      [[f"{t:%H:%M}", loc, topic, team, sentiment, text]
                       for t, loc, topic, team, sentiment, text in data.examples])
    kpi_html = "".join(f'<div class="kpi"><b>{v}</b><span>{escape(k)}</span></div>' for k, v in kpis)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Dallosh replay report — {escape(data.run_id)}</title>
<style>{_CSS}</style></head>
<body>
<header><h1>Dallosh replay report</h1>
<p>Run {escape(data.run_id)} · tweets from {data.first:%Y-%m-%d %H:%M} to {data.last:%Y-%m-%d %H:%M} UTC</p></header>
<main>
<div class="kpis">{kpi_html}</div>
<section><h2>Timeline</h2>
{timeline_svg(data.timeline, data.alerts, data.bucket_minutes)}{timeline_legend(data.bucket_minutes)}</section>
<section><h2>Alerts</h2>{alerts}</section>
<div class="two">
<section><h2>Topics (red: negative)</h2>{bar_rows(data.topics, second_label="negative")}</section>
<section><h2>Locations (red: high priority)</h2>{bar_rows([(loc, n, p0) for loc, n, _, p0 in data.locations], second_label="P0")}</section>
</div>
<section><h2>Priority mix</h2>{priorities}<h2>Sentiment</h2>{sentiments}</section>
<div class="two">
<section><h2>Classifier tiers</h2>{tiers}</section>
<section><h2>Classifier cost</h2>{costs}</section>
</div>
<section><h2>High-priority examples</h2>{examples}</section>
<footer>Generated {generated_at:%Y-%m-%d %H:%M} UTC by <code>dallosh report</code>. Self-contained: no network needed.</footer>
</main>
<script>{_JS}</script>
</body></html>
"""


def write_report(data: ReportData, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(data), encoding="utf-8")
    return path
