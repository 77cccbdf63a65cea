"""Inline SVG and HTML charts for the report: no library, no network."""

from __future__ import annotations

from datetime import datetime
from html import escape

from stream_app.report.data import Alert

WIDTH, HEIGHT, PAD_L, PAD_R, PAD_T, PAD_B = 960, 280, 48, 48, 24, 36


def timeline_svg(timeline: list[tuple[datetime, int, int, int]], alerts: list[Alert],
                 bucket_minutes: int) -> str:
    """Volume bars, negative-share line (right axis) and alert windows as red bands."""
    if not timeline:
        return "<p>No tweets.</p>"
    start = timeline[0][0].timestamp()
    end = timeline[-1][0].timestamp() + bucket_minutes * 60
    peak = max(row[1] for row in timeline) or 1
    plot_w, plot_h = WIDTH - PAD_L - PAD_R, HEIGHT - PAD_T - PAD_B

    def x(t: float) -> float:
        return PAD_L + (t - start) / (end - start) * plot_w

    def y(value: float, top: float) -> float:
        return PAD_T + plot_h - value / top * plot_h

    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'aria-label="Tweets and negative share over time">']
    for alert in alerts:
        x0 = max(x(alert.window_start.timestamp()), PAD_L)
        x1 = min(max(x(alert.window_end.timestamp()), x0 + 2), PAD_L + plot_w)
        parts.append(f'<rect class="alert-band" x="{x0:.1f}" y="{PAD_T}" width="{x1 - x0:.1f}" '
                     f'height="{plot_h}"><title>{escape(alert.message)}</title></rect>'
                     f'<text class="alert-label" x="{x0 + 3:.1f}" y="{PAD_T + 12}">⚠ '
                     f'{escape(alert.detector)} {escape(alert.location)}</text>')
    bar_w = max(plot_w / len(timeline) - 1, 1)
    for bucket, tweets, negative, _ in timeline:
        bx, label = x(bucket.timestamp()), f"{bucket:%H:%M} — {tweets} tweets, {negative} negative"
        parts.append(f'<rect class="bar" x="{bx:.1f}" y="{y(tweets, peak):.1f}" width="{bar_w:.1f}" '
                     f'height="{plot_h - (y(tweets, peak) - PAD_T):.1f}"><title>{label}</title></rect>')
    points = " ".join(f"{x(b.timestamp()) + bar_w / 2:.1f},{y(n / t if t else 0, 1):.1f}"
                      for b, t, n, _ in timeline)
    parts.append(f'<polyline class="negative" points="{points}"/>')
    for fraction in (0, 0.5, 1):
        parts.append(f'<text class="axis" x="{PAD_L - 6}" y="{y(peak * fraction, peak) + 4:.1f}" '
                     f'text-anchor="end">{round(peak * fraction)}</text>'
                     f'<text class="axis neg" x="{WIDTH - PAD_R + 6}" '
                     f'y="{y(fraction, 1) + 4:.1f}">{fraction:.0%}</text>')
    ticks = max(len(timeline) // 8, 1)
    for bucket, *_ in timeline[::ticks]:
        parts.append(f'<text class="axis" x="{x(bucket.timestamp()):.1f}" y="{HEIGHT - 12}">'
                     f'{bucket:%H:%M}</text>')
    parts.append(f'<line class="baseline" x1="{PAD_L}" x2="{WIDTH - PAD_R}" y1="{PAD_T + plot_h}" '
                 f'y2="{PAD_T + plot_h}"/></svg>')
    return "".join(parts)


def bar_rows(rows: list[tuple[str, int, int]], *, second_label: str) -> str:
    """One labelled horizontal bar per row: total, with the ``second`` part darker."""
    if not rows:
        return "<p>None.</p>"
    peak = max(total for _, total, _ in rows) or 1
    html = ['<div class="bars">']
    for name, total, part in rows:
        share = part / total if total else 0
        html.append(
            f'<div class="bar-row"><span class="bar-name">{escape(name or "—")}</span>'
            f'<span class="bar-track"><span class="bar-fill" style="width:{total / peak:.1%}">'
            f'<span class="bar-part" style="width:{share:.1%}"></span></span></span>'
            f'<span class="bar-value">{total:,} <small>({share:.0%} {second_label})</small></span></div>')
    html.append("</div>")
    return "".join(html)


def stacked_bar(parts: list[tuple[str, int, str]]) -> str:
    """A 100 % bar of (label, count, css class) parts with a legend."""
    total = sum(count for _, count, _ in parts) or 1
    segments = "".join(f'<span class="seg {css}" style="width:{count / total:.2%}" '
                       f'title="{escape(label)}: {count:,}"></span>' for label, count, css in parts)
    legend = " ".join(f'<span class="key {css}"></span>{escape(label)} {count:,} '
                      f'({count / total:.0%})' for label, count, css in parts)
    return f'<div class="stacked">{segments}</div><p class="legend">{legend}</p>'
