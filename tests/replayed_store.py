"""One real replay of the bundled sample (``dallosh demo`` flow: broker, worker process,
chdb) shared by the dashboard-SQL and report tests, so the session pays for it once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stream_app.demo import DemoResult, run_demo
from stream_app.settings import Settings
from tests.conftest import isolated_settings

_CACHE: dict[str, "ReplayedStore"] = {}


@dataclass
class ReplayedStore:
    settings: Settings
    demo: DemoResult
    report_path: Path | None


def replayed_store(root: Path, bootstrap: str) -> ReplayedStore:
    if bootstrap not in _CACHE:
        settings = isolated_settings(root / "data", bootstrap)
        demo = run_demo(settings, say=print, timeout_s=300)
        assert demo.reconciles, "the demo replay did not reconcile"
        _CACHE[bootstrap] = ReplayedStore(settings, demo, getattr(demo, "report_path", None))
    return _CACHE[bootstrap]
