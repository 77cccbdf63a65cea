"""`dallosh report` / the demo's report: self-contained HTML rendered by a real headless
Chromium (Debian package) without console errors, with the replay's figures in it; and,
on a real chdb store written row by row, a report that tells the truth: the run's own
alerts, each band as long as its incident, labels that never overprint, no share line
drawn through near-empty night buckets, every detector of an incident in its heading."""

from __future__ import annotations

import html as htmllib
import itertools
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

from stream_app.cli import main
from stream_app.report import ReportData, load_report_data, render_report
from stream_app.report.charts import MIN_SHARE_TWEETS, layout_labels, share_path
from stream_app.storage.clickhouse import store_session
from tests.replayed_store import ReplayedStore, replayed_store

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (apt-get install chromium; `make test-tools`)")


def chromium(*args: str, timeout: int = 60) -> subprocess.CompletedProcess:
    """Headless Chromium with console messages logged to stderr (root needs no sandbox)."""
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                           "--enable-logging=stderr", "--v=0", "--no-first-run",
                           "--disable-dev-shm-usage", *args],
                          capture_output=True, text=True, timeout=timeout)


def console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines()
            if "CONSOLE" in line and re.search(r"Uncaught|Error|Failed", line)]


@pytest.fixture(scope="module")
def store(tmp_path_factory, kafka_bootstrap) -> ReplayedStore:
    return replayed_store(tmp_path_factory.getbasetemp() / "replayed-demo", kafka_bootstrap)


@pytest.mark.integration
def test_demo_writes_a_self_contained_report(store):
    path = store.demo.report_path
    assert path is not None and path.exists()
    html = path.read_text(encoding="utf-8")
    assert store.demo.replay.run_id in html
    # Nothing fetched: no external scripts, styles, images, fonts or frames.
    assert not re.search(r"<(link|img|iframe)\b|\bsrc=|@import|url\(", html)
    assert f"{store.demo.summary.stored:,}" in html and "Bordeaux" in html


@pytest.mark.integration
def test_report_command_writes_the_same_run_and_explains_a_bad_run_id(store, tmp_path, monkeypatch):
    for key, value in store.settings.as_env().items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "r.html"
    result = CliRunner().invoke(main, ["report", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert str(out.resolve()) in result.output and store.demo.replay.run_id in out.read_text()
    result = CliRunner().invoke(main, ["report", "--out", str(out), "--run", "no-such-run"])
    assert result.exit_code == 2 and "no-such-run" in result.output
    assert "Traceback" not in result.output


@needs_chromium
def test_console_error_detection_catches_a_broken_page(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>notDefined();</script></body></html>")
    result = chromium("--dump-dom", page.as_uri())
    assert console_errors(result.stderr), result.stderr[-2000:]


@needs_chromium
@pytest.mark.integration
def test_report_renders_in_headless_chromium_without_errors(store, tmp_path):
    page = store.demo.report_path
    result = chromium("--dump-dom", page.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    assert not console_errors(result.stderr), console_errors(result.stderr)
    # The inline script ran to its end and saw the timeline chart.
    assert re.search(r'<html[^>]*data-rendered="1"', result.stdout), result.stdout[:500]
    shot = tmp_path / "report.png"
    result = chromium(f"--screenshot={shot}", "--window-size=1200,2400",
                      "--hide-scrollbars", page.as_uri())
    assert shot.exists() and shot.stat().st_size > 20_000, result.stderr[-2000:]


# --------------------------------------------------------------------------- one run, row by row

RUN, DAY = "r-report", datetime(2026, 3, 12, tzinfo=timezone.utc)
EVIL = "<script>alert(1)</script>"


def at(hhmm: str) -> datetime:
    return DAY + timedelta(hours=int(hhmm[:2]), minutes=int(hhmm[3:]))


def tweet_rows(run_id: str) -> list[list]:
    """12:00-17:55: 12 tweets per 5 minutes, 3 negative (25 %); 18:00-19:55 (night): 1-3
    tweets per 5 minutes, all negative or none (a 0-100 % swing); the last at 19:55."""
    rows = []
    for step in range(96):
        start = at("12:00") + timedelta(minutes=5 * step)
        night = step >= 72
        count = 1 + step % 3 if night else 12
        for i in range(count):
            negative = step % 2 == 1 if night else i < 3
            # The raw text names someone; the report quotes the scrubbed one only.
            rows.append([f"{run_id}-{step}-{i}", start, f"tweet {step}/{i} @jean_dupont",
                         f"tweet {step}/{i} <HANDLE>", "Bordeaux",
                         "negative" if negative else "neutral", 1, "outage", run_id])
    return rows


ALERT_COLUMNS = ["alert_id", "detector", "detectors", "location", "severity", "status",
                 "window_start", "window_end", "example_ids", "message", "first_seen",
                 "updated_at", "resolved_at", "version", "run_id", "key", "severity_level",
                 "authors", "summary", "terms", "representative_ids", "representative_texts",
                 "topic_mix", "sentiment_mix"]
EXPLAINED = [8, 61, "Bordeaux: 88 complaints from 61 people in 30 min, x40.0 usual; 'fibre'",
             ["fibre", "panne"], [f"{RUN}-31-0"], ["plus de fibre <HANDLE>"],
             {"network": 80, "billing": 8}, {"negative": 88, "neutral": 2}]


def alert_row(alert_id: str, detectors: list[str], location: str, first_seen: str,
              resolved: str | None, window: str, *, run_id: str = RUN, detector: str = "",
              status: str | None = None, version: int = 1, message: str = "",
              explained: list | None = None) -> list:
    detector = detector or detectors[0]
    return [alert_id, detector, detectors, location, "critical",
            status or ("resolved" if resolved else "firing"), at(window),
            at(window) + timedelta(minutes=5), [f"{RUN}-30-0", f"{RUN}-30-1"],
            message or f"incident ({location or 'national'}): {', '.join(detectors or [detector])}",
            at(first_seen), at(resolved or first_seen), at(resolved) if resolved else None,
            version, run_id, f"location:{location}"] + (
                explained or [0, 0, "", [], [], [], {}, {}])  # as stored before 0007/0008


# Four incidents opening within 15 minutes of each other (labels that used to overprint).
ALERTS = [
    # The user's case: triggered by 14:40-14:45, ran 14:25 -> 17:30, three detectors.
    alert_row("a1", ["burst", "slow_rise", "threshold"], "Bordeaux", "14:25", "17:30", "14:40",
              explained=EXPLAINED),
    # Stored before migration 0005's sink change: no detectors array; still firing.
    alert_row("a2", [], "Lyon", "14:30", None, "14:30", detector="threshold"),
    alert_row("a3", ["burst", "slow_rise"], "", "14:35", "15:00", "14:35"),
    alert_row("a4", ["slow_rise"], EVIL, "14:40", "14:50", "14:40"),
    # Not this run's report: withdrawn (its latest version), another run, no timeline.
    alert_row("w1", ["burst"], "Nantes", "15:00", None, "15:00", message="WITHDRAWN-MARK"),
    alert_row("w1", ["burst"], "Nantes", "15:00", None, "15:00", status="withdrawn", version=2,
              message="WITHDRAWN-MARK"),
    alert_row("o1", ["burst"], "Paris", "15:00", None, "15:00", run_id="r-other",
              message="OTHER-RUN-MARK"),
    alert_row("l1", ["burst"], "Lille", "15:00", None, "15:00", run_id="",
              message="LEGACY-MARK"),
]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[ReportData, str]:
    """The report data and page of RUN, read from a real chdb store (closed afterwards, so
    that other tests can open theirs)."""
    dsn = f"chdb://{tmp_path_factory.mktemp('report-rows') / 'ch'}"
    with store_session(dsn) as client:
        client.insert("dallosh.tweets", tweet_rows(RUN) + tweet_rows("r-other"),
                      column_names=["id", "created_at", "text", "text_scrubbed", "location", "sentiment",
                                    "priority", "topic", "run_id"])
        client.insert("dallosh.alerts", ALERTS, column_names=ALERT_COLUMNS)
        data = load_report_data(client, RUN)
    return data, render_report(data)


def svg_of(page: str) -> ET.Element:
    return ET.fromstring(re.search(r"<svg class=\"chart\".*?</svg>", page, re.S)[0])


def bar_x(svg: ET.Element) -> dict[str, tuple[float, float]]:
    """Bucket 'HH:MM' -> (x, width) of its bar."""
    return {bar.find("title").text[:5]: (float(bar.get("x")), float(bar.get("width")))
            for bar in svg.iter("rect") if bar.get("class") == "bar"}


def boxes_intersect(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah


def chip_boxes(svg: ET.Element) -> list[tuple[float, float, float, float]]:
    return [tuple(float(r.get(k)) for k in ("x", "y", "width", "height"))
            for g in svg.iter("g") if g.get("class") == "alert-chip" for r in g.iter("rect")]


def test_the_report_shows_the_runs_own_alerts_and_no_withdrawn_one(run):
    data, page = run
    assert [a.location for a in data.alerts] == ["Bordeaux", "Lyon", "", EVIL]
    for mark in ("WITHDRAWN-MARK", "OTHER-RUN-MARK", "LEGACY-MARK"):
        assert mark not in page
    # Its explanation, as stored; the representative complaint quoted scrubbed.
    first = data.alerts[0]
    assert (first.level, first.people, first.terms) == (8, 61, ["fibre", "panne"])
    assert first.examples == ["plus de fibre <HANDLE>"]
    assert htmllib.escape(first.summary) in page and "8/10" in page and "network 80, billing 8" in page
    assert "negative 88, neutral 2" in page and "<b>panne</b>" in page
    # An alert stored before 0008 quotes its example tweets, scrubbed, never raw.
    assert data.alerts[1].examples == ["tweet 30/0 <HANDLE>", "tweet 30/1 <HANDLE>"]
    assert "@jean_dupont" not in page


def test_an_alert_band_spans_the_incident_not_its_trigger_window(run):
    data, page = run
    svg = svg_of(page)
    bars = bar_x(svg)
    bands = [(float(r.get("x")), float(r.get("width")))
             for r in svg.iter("rect") if r.get("class") == "alert-band"]
    assert len(bands) == 4
    (x0, w0), (x1, w1) = bands[0], bands[1]
    assert x0 == pytest.approx(bars["14:25"][0], abs=0.2)           # first seen
    assert x0 + w0 == pytest.approx(bars["17:30"][0], abs=0.2)      # resolved
    assert x1 == pytest.approx(bars["14:30"][0], abs=0.2)
    assert x1 + w1 == pytest.approx(bars["19:55"][0], abs=0.2)      # still firing: end of data
    # The heading says it too, like the terminal does; the trigger window stays readable.
    assert "2026-03-12 14:25 → 17:30 UTC (resolved)" in page
    assert "2026-03-12 14:30 UTC → still firing at the end of the data" in page
    assert "triggered by the window 2026-03-12 14:40 → 14:45 UTC" in page


def test_alert_labels_close_together_never_overlap(run):
    _, page = run
    svg = svg_of(page)
    chips = chip_boxes(svg)
    assert len(chips) == 4
    for a, b in itertools.combinations(chips, 2):
        assert not boxes_intersect(a, b), (a, b)
    plot_top = min(float(r.get("y")) for r in svg.iter("rect") if r.get("class") == "alert-band")
    assert all(y + h <= plot_top for _, y, _, h in chips)       # above the plot, not on the bars
    labels = [t.text for g in svg.iter("g") if g.get("class") == "alert-chip" for t in g.iter("text")]
    assert labels[0] == "1. burst + slow_rise + threshold · Bordeaux"
    assert labels[1] == "2. threshold · Lyon" and labels[2] == "3. burst + slow_rise · national"


def test_label_layout_keeps_labels_apart_and_inside_the_plot():
    anchors = [100, 102, 104, 106, 600, 890, 890, 310]
    widths = [200, 120, 90, 300, 250, 180, 60, 40]
    boxes = layout_labels(anchors, widths, left=48, right=912, top=24)
    for a, b in itertools.combinations(boxes, 2):
        assert not boxes_intersect((a.x, a.y, a.width, a.height), (b.x, b.y, b.width, b.height))
    assert all(48 <= b.x and b.x + b.width <= 912 for b in boxes)
    assert boxes[0].row == 0 and boxes[7].row == 0        # 310 is clear of the first label (100-300)
    assert boxes[5].x == 912 - 180                          # pulled back inside, not cut off


def test_the_negative_share_is_not_drawn_through_near_empty_buckets(run):
    data, page = run
    svg = svg_of(page)
    bars = bar_x(svg)
    path = next(p for p in svg.iter("path") if p.get("class") == "negative").get("d")
    points = [(float(px), float(py)) for px, py in re.findall(r"[ML]([\d.]+),([\d.]+)", path)]
    counts = {f"{bucket:%H:%M}": tweets for bucket, tweets, *_ in data.timeline}
    assert min(counts.values()) < MIN_SHARE_TWEETS <= 12
    drawn = {round(x + w / 2, 1) for hhmm, (x, w) in bars.items() if counts[hhmm] >= MIN_SHARE_TWEETS}
    assert {round(px, 1) for px, _ in points} == drawn         # night buckets left out
    band = next(r for r in svg.iter("rect") if r.get("class") == "alert-band")
    top, plot_h = float(band.get("y")), float(band.get("height"))
    assert all(py == pytest.approx(top + 0.75 * plot_h, abs=0.2) for _, py in points)  # 25 %
    assert f"at least {MIN_SHARE_TWEETS} tweets" in page     # the legend says why it breaks


def test_share_path_breaks_at_every_gap():
    assert share_path([(1, 2), (3, 4), None, (5, 6), None, None, (7, 8), (9, 1)]) == \
        "M1.0,2.0 L3.0,4.0 M5.0,6.0 M7.0,8.0 L9.0,1.0"


def test_the_alert_heading_names_every_detector_of_the_incident(run):
    _, page = run
    headings = re.findall(r'<div class="alert"><b>(.*?)</b>', page)
    assert headings == ["1. CRITICAL 8/10 · burst + slow_rise + threshold · Bordeaux",
                        "2. CRITICAL · threshold · Lyon",      # pre-0005 row: its one detector
                        "3. CRITICAL · burst + slow_rise · national",
                        "4. CRITICAL · slow_rise · &lt;script&gt;alert(1)&lt;/script&gt;"]
    assert EVIL not in page


# Measures the labels as Chromium draws them: each text inside its chip, no two chips over.
_MEASURE = """<script>
var boxes = Array.prototype.map.call(document.querySelectorAll('g.alert-chip'), function (g) {
  var r = g.querySelector('rect').getBBox(), t = g.querySelector('text').getBBox();
  return [r.x, r.y, r.width, r.height, t.x, t.y, t.width, t.height];
});
document.documentElement.dataset.labels = JSON.stringify(boxes);
</script></body>"""


@needs_chromium
def test_the_rendered_labels_fit_their_chips_and_do_not_overlap(run, tmp_path):
    _, page = run
    plain = tmp_path / "run.html"
    plain.write_text(page, encoding="utf-8")
    result = chromium("--dump-dom", plain.as_uri())
    assert result.returncode == 0 and not console_errors(result.stderr), result.stderr[-2000:]
    measured = tmp_path / "measured.html"
    measured.write_text(page.replace("</body>", _MEASURE), encoding="utf-8")
    result = chromium("--dump-dom", measured.as_uri())
    boxes = json.loads(htmllib.unescape(re.search(r'data-labels="([^"]*)"', result.stdout)[1]))
    assert len(boxes) == 4
    for rx, ry, rw, rh, tx, ty, tw, th in boxes:
        assert rx <= tx and tx + tw <= rx + rw and ry <= ty + 1 and ty + th <= ry + rh + 1, \
            (rx, ry, rw, rh, tx, ty, tw, th)
    texts = [tuple(box[4:]) for box in boxes]
    for a, b in itertools.combinations(texts, 2):
        assert not boxes_intersect(a, b), (a, b)
