"""`dallosh report` / the demo's report: self-contained HTML rendered by a real headless
Chromium (Debian package) without console errors, with the replay's figures in it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from stream_app.cli import main
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
