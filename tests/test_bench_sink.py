"""`dallosh bench sink` on a small scale: the figures docs/delivery.md quotes come from this
code, so it must count right (real broker, real worker processes, chdb)."""
from pathlib import Path

import pytest

from bench.sink import BenchInputError, bench_sink
from tests.conftest import isolated_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.network]


def test_sink_bench_measures_exactly_once_throughput_and_latency(
        kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DALLOSH_LOCAL_MODEL", "off")  # the bench's workers read the environment
    settings = isolated_settings(tmp_path / "data", kafka_bootstrap)
    result = bench_sink(settings, rows=20_000, latency_tweets=150, rate=50, say=print)

    throughput = result["throughput"]
    assert throughput["rows_sent"] == 22_000  # 10 % of the ids sent again, re-classified
    assert throughput["stored_final"] == 20_000 and throughput["exactly_once"]
    assert result["rows_per_s"] > 0
    latency = result["latency"]
    assert latency["stored"] == 150
    assert set(latency["classified_by"]) <= {"degraded/rules", "degraded/dedup"}
    assert 0 < result["latency_p50_s"] <= result["latency_p95_s"] <= result["latency_p99_s"]
    to_window, window_to_stored = (latency["to_classify_window_p50_p95_s"],
                                   latency["classify_window_to_stored_p50_p95_s"])
    assert 0 <= to_window[0] <= to_window[1] and 0 <= window_to_stored[0] <= window_to_stored[1]


def test_sink_bench_refuses_more_latency_tweets_than_it_has_before_starting(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path / "data", "127.0.0.1:1")  # never contacted
    with pytest.raises(BenchInputError, match="held-out tweets"):
        bench_sink(settings, rows=1_000, latency_tweets=100_000, rate=200, say=print)
