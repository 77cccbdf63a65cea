"""``dallosh bench replay``: rows/s and peak memory of the CSV replayer into a real broker.

Generated dumps of two sizes are replayed, each by a separate ``dallosh replay``
process so its peak RSS is its own; equal peaks at both sizes show memory is flat in
file size. The bench writes to throwaway topics (deleted afterwards) and a throwaway
data dir, never into the installation's pipeline.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable

from aiokafka.admin import AIOKafkaAdminClient

from bench.dumps import write_dump
from stream_app.records import iso, utc_now
from stream_app.settings import Settings

Say = Callable[[str], None]


def _run_replay(dump: Path, settings: Settings, data_dir: Path, topic_prefix: str) -> dict:
    result_path = data_dir / f"{dump.stem}.json"
    env = os.environ | {"DALLOSH_DATA_DIR": str(data_dir),
                        "DALLOSH_KAFKA_BOOTSTRAP": settings.bootstrap_servers,
                        "DALLOSH_TOPIC_RAW": f"{topic_prefix}.raw",
                        "DALLOSH_TOPIC_DLQ": f"{topic_prefix}.dlq",
                        "DALLOSH_PARTITIONS": str(settings.partitions)}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "stream_app", "replay", "--no-progress",
                             "--json", str(result_path), str(dump)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"replay of {dump.name} failed:\n{output[-2000:]}")
    run = json.loads(result_path.read_text())[0]
    return {"rows": run["rows_read"], "rows_per_s": run["rows_per_s"],
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux reports KiB
            "file_mb": round(dump.stat().st_size / 2**20, 1), "wall_s": round(wall, 2),
            "reconciles": run["reconciles"]}


async def _delete_topics(settings: Settings, prefix: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        await admin.delete_topics([f"{prefix}.raw", f"{prefix}.dlq"])
    finally:
        await admin.close()


def bench_replay(settings: Settings, rows: int, small_rows: int, say: Say = print) -> dict:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    sizes = []
    with tempfile.TemporaryDirectory(prefix="dallosh-bench-") as tmp:
        work = Path(tmp)
        try:
            for n in (small_rows, rows):
                say(f"Generating a {n:,}-row dump...")
                dump = write_dump(work / f"dump-{n}.csv", n)
                say(f"Replaying {n:,} rows into {settings.bootstrap_servers}...")
                sizes.append(_run_replay(dump, settings, work / "data", f"{prefix}-{n}"))
                dump.unlink()
                say(f"  {sizes[-1]['rows_per_s']:,.0f} rows/s, peak RSS {sizes[-1]['peak_rss_mb']} MB")
        finally:
            for n in (small_rows, rows):
                asyncio.run(_delete_topics(settings, f"{prefix}-{n}"))
    big, small = sizes[-1], sizes[0]
    return {
        "benchmark": "replay", "at": iso(utc_now()),
        "rows": big["rows"], "rows_per_s": big["rows_per_s"], "peak_rss_mb": big["peak_rss_mb"],
        "file_mb": big["file_mb"],
        "peak_rss_ratio_large_vs_small": round(big["peak_rss_mb"] / small["peak_rss_mb"], 3),
        "sizes": sizes, "target_rows_per_s": 30_000,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
    }
