"""``dallosh bench pipeline`` on a small run, and the hot-path codec it led to.

The bench test is an integration test: a real broker, a real ``dallosh worker`` process,
chdb. It checks the JSON's contract (``rules.tweets_per_s``, ``local``), that every tweet
produced is stored exactly once, and that each stage reported its step timings.
"""

import json
import math

import pytest

from bench.pipeline import STEPS, bench_pipeline, stage_profile
from stream_app.records import CleanDecision, ClassifiedTweet, RawTweet
from stream_app.topics import decode, encode
from tests.conftest import isolated_settings


@pytest.mark.integration
def test_small_run_stores_every_tweet_once_and_reports_each_stage(tmp_path, kafka_bootstrap):
    settings = isolated_settings(tmp_path / "data", kafka_bootstrap)
    result = bench_pipeline(settings, 500, say=print, fetch=False)
    rules = result["rules"]
    assert rules["produced"] == 500 and rules["stored"] == 500 and rules["exactly_once"]
    assert rules["tweets_per_s"] > 0 and rules["seconds"] > 0
    assert sum(rules["classified_by"].values()) == 500
    assert all(key.startswith("degraded/") for key in rules["classified_by"])  # rules tier only
    assert result["local"] is None and "--local-model" in result["local_skipped_reason"]
    profile = rules["profile"]
    assert set(profile["steps"]) == set(STEPS)
    # Every stage of the `all` worker timed its own work during the timed replay.
    for pair in ("clean/decode", "clean/clean", "clean/dedup", "clean/produce", "classify/classify",
                 "classify/produce", "signals/signals", "sink/decode", "sink/sink"):
        assert profile["by_stage_and_step"][pair]["ms_per_tweet"] > 0, pair
    assert profile["worker_cpu_ms_per_tweet"] > 0
    waits = rules["waits"]
    assert {"raw", "clean", "classified"} <= set(waits["consumer_lag_messages"])
    assert len(waits["latency_p50_p95_s"]) == 2
    json.dumps(result)  # what --json writes


def test_stage_profile_is_a_difference_of_two_scrapes():
    def snap(cpu, clean, sink):
        return {("process_cpu_seconds_total", ()): cpu,
                ("dallosh_step_seconds_total", (("stage", "clean"), ("step", "clean"))): clean,
                ("dallosh_step_seconds_total", (("stage", "sink"), ("step", "sink"))): sink}
    profile = stage_profile(snap(10.0, 1.0, 0.5), snap(12.0, 1.5, 1.5), tweets=1000)
    assert profile["worker_cpu_ms_per_tweet"] == 2.0
    assert profile["steps_ms_per_tweet"] == 1.5
    assert profile["steps"]["clean"] == {"ms_per_tweet": 0.5, "share": 0.3333}
    assert profile["steps"]["sink"] == {"ms_per_tweet": 1.0, "share": 0.6667}
    assert profile["steps"]["dedup"] == {"ms_per_tweet": 0.0, "share": 0.0}
    assert profile["by_stage_and_step"]["sink/sink"]["ms_per_tweet"] == 1.0


# ------------------------------------------------------------------ the hot-path codec

def test_encode_is_the_records_own_json():
    raw = RawTweet(id="1", text="Toujours pas de 4G à Lille 😡 \"enfin\"\n", created_at="2026-03-12T10:00:00Z",
                   run_id="r", source="s", ingested_at="2026-03-12T10:00:00Z", retweet_count=3)
    tweet = ClassifiedTweet(**raw.to_dict(), text_clean="x", mentions=["free"], sentiment="negative",
                            priority=2, topic="outage", team="network_ops", confidence=0.8125,
                            tier="degraded", provider="rules", model="lexicon-v1", reason="",
                            classified_at="2026-03-12T10:00:01Z", version=1)
    decision = CleanDecision.build(raw, "retweet", "tagged", "0", "similarity 1.00")
    for record in (raw, tweet, decision):
        assert json.loads(encode(record)) == json.loads(record.to_json())
        assert decode(encode(record)) == record.to_dict()


def test_encode_falls_back_where_orjson_refuses():
    raw = RawTweet(id="1", text="x", created_at="t", run_id="r", source="s", ingested_at="t",
                   retweet_count=2 ** 70)  # past 64 bits: orjson refuses, json does not
    assert encode(raw) == raw.to_json()
    lone = RawTweet(id="1", text="\ud800", created_at="t", run_id="r", source="s", ingested_at="t")
    with pytest.raises(UnicodeEncodeError):  # as Record.to_json fails: the stage dead-letters it
        encode(lone)


def test_decode_accepts_and_refuses_what_json_does():
    assert math.isnan(decode(b'{"a": NaN}')["a"])
    assert decode(b'{"n": 123456789012345678901234567890}')["n"] == 123456789012345678901234567890
    assert decode('{"s": "\\ud800"}'.encode())["s"] == "\ud800"
    for bad, error in ((b"{not json", json.JSONDecodeError), (b"\xff\xfe\x00", UnicodeDecodeError),
                       (b"[" * 100_000, RecursionError)):
        with pytest.raises(error):
            decode(bad)
