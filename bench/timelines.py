"""``dallosh bench timelines``: what a second dump costs when it is years away from the first.

An analyst replays dump A (dated 2026), then dump B (the same number of tweets, dated
``--years-apart`` years earlier) into the same installation, through a real worker
process on the real broker, each timed from the first row sent to the last row stored.
Before every replay was its own timeline, B's replay evaluated every five-minute step of
the calendar between the two dumps (321 s against 23 s for 200 tweets a year apart); now
signals work follows the tweets, so B costs about what A cost. A third dump spans the
same years within one file (half its tweets at each end): the gap inside one timeline is
skipped too.

Runs in a throwaway data dir, app id and topics; the installation's own pipeline is never
touched.
"""

from __future__ import annotations

import asyncio
import os
import platform
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from bench.dumps import write_dump
from bench.sink import child_settings
from connectors.csv_replay import ReplayOptions, replay_file
from stream_app.demo import WorkerProcess, wait_until_drained
from stream_app.kafka_admin import ensure_topics, pipeline_topics
from stream_app.records import iso, utc_now
from stream_app.settings import Settings
from stream_app.storage.clickhouse import store_session

Say = Callable[[str], None]
RECENT = datetime(2026, 3, 12, tzinfo=timezone.utc)


def _write_spanning_dump(path: Path, rows: int, years: int) -> Path:
    """Half the rows ``years`` before RECENT, half at RECENT: one file, a gap of years."""
    old, new = path.with_suffix(".old.csv"), path.with_suffix(".new.csv")
    write_dump(old, rows // 2, seed=11, start=RECENT - timedelta(days=365 * years),
               first_id=1_930_000_000_000_000_000)
    write_dump(new, rows - rows // 2, seed=12, start=RECENT, first_id=1_940_000_000_000_000_000)
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write(old.read_text(encoding="utf-8"))
        out.writelines(new.read_text(encoding="utf-8").splitlines(keepends=True)[1:])
    old.unlink()
    new.unlink()
    return path


def _timed_replay(dump: Path, settings: Settings, worker: WorkerProcess, say: Say) -> dict:
    started = time.perf_counter()
    replay = asyncio.run(replay_file(dump, settings, ReplayOptions(show_progress=False)))
    asyncio.run(wait_until_drained(settings, worker, lambda line: None, timeout_s=1800))
    elapsed = time.perf_counter() - started
    say(f"  {dump.name}: {replay.rows_read} rows, {elapsed:.1f} s from first row sent to last stored")
    return {"dump": dump.name, "rows": replay.rows_read, "seconds": round(elapsed, 2),
            "run_id": replay.run_id}


def bench_timelines(settings: Settings, rows: int, years: int, say: Say = print) -> dict:
    with tempfile.TemporaryDirectory(prefix="dallosh-bench-") as tmp:
        work = Path(tmp)
        # The rules tier: what is timed is the signals stage's share, not a model's.
        bench_settings = child_settings(settings, work / "data", f"bench-{uuid.uuid4().hex[:8]}",
                                        local_model="off")
        asyncio.run(ensure_topics(bench_settings.bootstrap_servers, pipeline_topics(bench_settings)
                                  + [bench_settings.topic_windows], bench_settings.partitions))
        dumps = [write_dump(work / "a_recent.csv", rows, seed=7, start=RECENT),
                 write_dump(work / f"b_{years}_years_earlier.csv", rows, seed=9,
                            start=RECENT - timedelta(days=365 * years),
                            first_id=1_920_000_000_000_000_000),  # a tweet id is one tweet
                 _write_spanning_dump(work / f"c_spanning_{years}_years.csv", rows, years)]
        say(f"Worker on {bench_settings.bootstrap_servers}; {rows} tweets a dump, {years} years apart")
        worker = WorkerProcess(bench_settings)
        try:
            # Not timed: the worker's start (joining the groups, first fetches) would be
            # charged to the first dump.
            warm_up = write_dump(work / "warm_up.csv", 20, seed=5, start=RECENT,
                                 first_id=1_950_000_000_000_000_000)
            _timed_replay(warm_up, bench_settings, worker, lambda line: None)
            runs = [_timed_replay(dump, bench_settings, worker, say) for dump in dumps]
        finally:
            worker.stop()
        with store_session(bench_settings.clickhouse_dsn) as client:  # the worker has let go
            for run in runs:
                run["stored"] = client.query(
                    "SELECT count() FROM dallosh.tweets FINAL WHERE run_id = {r:String}",
                    parameters={"r": run["run_id"]}).result_rows[0][0]
                run["alerts"] = client.query(
                    "SELECT count() FROM dallosh.alerts FINAL WHERE run_id = {r:String} "
                    "AND status != 'withdrawn'", parameters={"r": run["run_id"]}).result_rows[0][0]
    first, second, spanning = runs
    return {
        "benchmark": "timelines", "at": iso(utc_now()), "rows_per_dump": rows, "years_apart": years,
        "runs": runs,
        "second_vs_first": round(second["seconds"] / first["seconds"], 3),
        "spanning_vs_first": round(spanning["seconds"] / first["seconds"], 3),
        "target_second_vs_first": 2.0,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
    }
