"""Inline SVG and HTML charts for the report: no library, no network.

The timeline must tell the same story as the terminal and the pager, so:

- an alert's band runs from when the incident was first seen to when it resolved (or to
  the end of the run's data while it is still firing), not over the one window that
  triggered it;
- alert labels sit in a lane above the plot, numbered like the alert list below the
  chart, and are stacked in rows so that no two labels ever overlap, however close the
  incidents are;
- the negative share is only drawn for buckets with at least ``MIN_SHARE_TWEETS``
  tweets: at night 1-3 tweets a bucket swing the share between 0 and 100 % and say
  nothing (with 10 tweets the 95 % Wilson interval of a 50 % share is still +-26
  points, with 2 tweets it is +-41); the line breaks there and the legend says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from html import escape

from stream_app.report.data import Alert

WIDTH, HEIGHT, PAD_L, PAD_R, PAD_T, PAD_B = 960, 280, 48, 48, 24, 36
MIN_SHARE_TWEETS = 10     # below this a bucket's negative share is noise: not drawn

# Alert labels: 11 px text. CHAR_PX over-estimates an average glyph of system-ui at 11 px
# (about 6 px) so that a chip is never narrower than its text; labels longer than
# LABEL_MAX_CHARS are cut (the full text is in the band's tooltip and the alert list).
LABEL_FONT_PX, CHAR_PX, CHIP_PAD_PX, LABEL_MAX_CHARS = 11, 7.0, 4.0, 44
ROW_H, ROW_GAP, LABEL_GAP = 16, 3, 6


@dataclass(frozen=True)
class LabelBox:
    """Where one alert label goes: its chip's box in SVG user units."""
    x: float
    y: float
    width: float
    height: float
    row: int


def alert_title(alert: Alert) -> str:
    """Every detector of the incident, and where: the heading of an alert."""
    return f"{' + '.join(alert.detectors)} · {alert.location or 'national'}"


def label_text(number: int, alert: Alert) -> str:
    text = f"{number}. {alert_title(alert)}"
    return text if len(text) <= LABEL_MAX_CHARS else text[:LABEL_MAX_CHARS - 1] + "…"


def label_width(text: str) -> float:
    return len(text) * CHAR_PX + 2 * CHIP_PAD_PX


def layout_labels(anchors: list[float], widths: list[float], left: float, right: float,
                  top: float) -> list[LabelBox]:
    """Place each label at its anchor (kept inside ``[left, right]``), from left to right,
    in the first row whose labels all end before it; open a new row when none does.
    Labels never overlap: two boxes in one row are ``LABEL_GAP`` apart, rows are
    ``ROW_H + ROW_GAP`` apart and ``ROW_H`` high."""
    row_ends: list[float] = []      # right edge of each row's rightmost label
    boxes: dict[int, LabelBox] = {}
    xs = [max(min(anchor, right - width), left) for anchor, width in zip(anchors, widths)]
    for i in sorted(range(len(xs)), key=lambda i: (xs[i], i)):
        x = xs[i]
        row = next((r for r, end in enumerate(row_ends) if end + LABEL_GAP <= x), len(row_ends))
        if row == len(row_ends):
            row_ends.append(x + widths[i])
        else:
            row_ends[row] = x + widths[i]
        boxes[i] = LabelBox(x, top + row * (ROW_H + ROW_GAP), widths[i], ROW_H, row)
    return [boxes[i] for i in range(len(anchors))]


def share_path(points: list[tuple[float, float] | None]) -> str:
    """An SVG path through the points, broken wherever a point is ``None``."""
    commands, pen_down = [], False
    for point in points:
        if point is None:
            pen_down = False
            continue
        commands.append(f"{'L' if pen_down else 'M'}{point[0]:.1f},{point[1]:.1f}")
        pen_down = True
    return " ".join(commands)


def timeline_svg(timeline: list[tuple[datetime, int, int, int]], alerts: list[Alert],
                 bucket_minutes: int) -> str:
    """Volume bars, negative-share line (right axis), alerts as numbered red bands."""
    if not timeline:
        return "<p>No tweets.</p>"
    start = timeline[0][0].timestamp()
    end = timeline[-1][0].timestamp() + bucket_minutes * 60
    peak = max(row[1] for row in timeline) or 1
    plot_w = WIDTH - PAD_L - PAD_R

    def x(t: float) -> float:
        return PAD_L + (t - start) / (end - start) * plot_w

    texts = [label_text(n, alert) for n, alert in enumerate(alerts, 1)]
    spans = [(max(x(a.first_seen.timestamp()), PAD_L), min(x(a.until.timestamp()), PAD_L + plot_w))
             for a in alerts]
    boxes = layout_labels([x0 for x0, _ in spans], [label_width(t) for t in texts],
                          PAD_L, PAD_L + plot_w, PAD_T)
    lane = (max(b.row for b in boxes) + 1) * (ROW_H + ROW_GAP) if boxes else 0
    top, plot_h = PAD_T + lane, HEIGHT - PAD_T - PAD_B
    height = HEIGHT + lane

    def y(value: float, peak_value: float) -> float:
        return top + plot_h - value / peak_value * plot_h

    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" '
             f'aria-label="Tweets and negative share over time, with alerts">']
    for alert, (x0, x1), box, text in zip(alerts, spans, boxes, texts):
        x1 = max(x1, x0 + 2)
        parts.append(f'<rect class="alert-band" x="{x0:.1f}" y="{top}" width="{x1 - x0:.1f}" '
                     f'height="{plot_h}"><title>{escape(text)}: {escape(alert.message)}</title></rect>'
                     f'<line class="alert-tie" x1="{x0:.1f}" x2="{x0:.1f}" '
                     f'y1="{box.y + box.height:.1f}" y2="{top}"/>')
    bar_w = max(plot_w / len(timeline) - 1, 1)
    shares: list[tuple[float, float] | None] = []
    for bucket, tweets, negative, _ in timeline:
        bx, label = x(bucket.timestamp()), f"{bucket:%H:%M} — {tweets} tweets, {negative} negative"
        parts.append(f'<rect class="bar" x="{bx:.1f}" y="{y(tweets, peak):.1f}" width="{bar_w:.1f}" '
                     f'height="{plot_h - (y(tweets, peak) - top):.1f}"><title>{label}</title></rect>')
        shares.append((bx + bar_w / 2, y(negative / tweets, 1))
                      if tweets >= MIN_SHARE_TWEETS else None)
    parts.append(f'<path class="negative" d="{share_path(shares)}"/>')
    for i, point in enumerate(shares):   # a lone bucket between gaps: a dot, not nothing
        if point and (i == 0 or shares[i - 1] is None) and (i + 1 == len(shares) or shares[i + 1] is None):
            parts.append(f'<circle class="negative-dot" cx="{point[0]:.1f}" cy="{point[1]:.1f}" r="2"/>')
    for fraction in (0, 0.5, 1):
        parts.append(f'<text class="axis" x="{PAD_L - 6}" y="{y(peak * fraction, peak) + 4:.1f}" '
                     f'text-anchor="end">{round(peak * fraction)}</text>'
                     f'<text class="axis neg" x="{WIDTH - PAD_R + 6}" '
                     f'y="{y(fraction, 1) + 4:.1f}">{fraction:.0%}</text>')
    ticks = max(len(timeline) // 8, 1)
    for bucket, *_ in timeline[::ticks]:
        parts.append(f'<text class="axis" x="{x(bucket.timestamp()):.1f}" y="{height - 12}">'
                     f'{bucket:%H:%M}</text>')
    parts.append(f'<line class="baseline" x1="{PAD_L}" x2="{WIDTH - PAD_R}" y1="{top + plot_h}" '
                 f'y2="{top + plot_h}"/>')
    for alert, box, text in zip(alerts, boxes, texts):  # last: chips cover the ties
        parts.append(f'<g class="alert-chip"><title>{escape(alert.message)}</title>'
                     f'<rect x="{box.x:.1f}" y="{box.y:.1f}" width="{box.width:.1f}" '
                     f'height="{box.height}" rx="3"/><text class="alert-label" '
                     f'x="{box.x + CHIP_PAD_PX:.1f}" y="{box.y + box.height - 4:.1f}">'
                     f'{escape(text)}</text></g>')
    parts.append("</svg>")
    return "".join(parts)


def timeline_legend(bucket_minutes: int) -> str:
    """What the timeline's marks mean, including where the share line is left out."""
    return (f'<p class="legend"><span class="key swatch-bar"></span>tweets per {bucket_minutes} min '
            f'<span class="key swatch-line"></span>negative share (right axis), drawn only '
            f'where a bucket holds at least {MIN_SHARE_TWEETS} tweets: the gaps are buckets '
            f'too small for a share to mean anything '
            f'<span class="key swatch-band"></span>alerts, numbered as listed below, from '
            f'first seen to resolved (to the end of the data while still firing)</p>')


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
