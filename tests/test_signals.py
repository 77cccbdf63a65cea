"""The signals core without Kafka: windows, watermark, late data, detectors, alerts."""

import random

from stream_app.signals.detectors import (DetectorConfig, burst, mann_kendall_z, poisson_tail,
                                          slow_rise, threshold)
from stream_app.signals.engine import SignalEngine
from stream_app.signals.windows import TweetEvent, WindowStore

T0 = 1_767_571_200.0  # 2026-01-05T00:00:00Z, a minute boundary
M0 = int(T0 // 60)    # detectors take absolute minute numbers


def ev(i, minute, negative=False, high=False, location="", topic="fibre", second=0.0):
    return TweetEvent(id=f"t{i}", time=T0 + minute * 60 + second, topic=topic, location=location,
                      negative=negative, high=high, author=f"a{i % 7}")


def test_poisson_tail_matches_known_values():
    assert poisson_tail(0, 3.0) == 1.0
    assert abs(poisson_tail(1, 2.0) - (1 - 2.718281828 ** -2)) < 1e-9
    assert abs(poisson_tail(10, 2.0) - 4.6498e-5) < 1e-7   # scipy.stats.poisson.sf(9, 2)
    assert 0 < poisson_tail(400, 50.0) < 1e-100


def test_mann_kendall_sign_and_size():
    assert mann_kendall_z(list(range(12))) > 4
    assert mann_kendall_z(list(range(12, 0, -1))) < -4
    assert abs(mann_kendall_z([1, 3, 2, 3, 1, 2, 3, 1, 2, 1, 3, 2])) < 1


def test_windows_close_on_the_watermark_of_the_slowest_partition():
    engine = SignalEngine(allowed_lateness_s=60, partitions=2)
    out = engine.feed([(0, ev(1, 0)), (0, ev(2, 10))])
    assert out.windows == [] and engine.watermark() is None      # partition 1 not seen yet
    out = engine.feed([(1, ev(3, 3))])
    # watermark = min(10, 3) min - 1 min of lateness -> minutes 0 and 1 are closed
    assert {(w["key"], w["window_start"][11:16]) for w in out.windows} == {
        ("all", "00:00"), ("topic:fibre", "00:00")}
    assert out.windows[0]["volume"] == 1


def test_late_tweets_revise_windows_and_converge_on_the_in_order_result():
    rng = random.Random(3)
    events = []
    for m in range(600):
        for k in range(rng.randint(2, 5)):
            events.append(ev(len(events), m, negative=rng.random() < 0.3, location="Lyon",
                             second=rng.random() * 59))
    for m in range(400, 440):      # a burst of Lyon complaints
        for k in range(12):
            events.append(ev(len(events), m, negative=True, high=True, location="Lyon",
                             second=k * 4.0))
    events.sort(key=lambda e: e.time)

    def run(pairs, size):
        engine = SignalEngine(partitions=2)
        windows, rows = {}, {}
        for i in range(0, len(pairs), size):
            out = engine.feed(pairs[i:i + size])
            for w in out.windows:
                windows[(w["key"], w["window_start"])] = w
            for a in out.alerts:      # what ClickHouse keeps: the last row per (detector, id)
                rows[(a["detector"], a["alert_id"])] = a
        live = sorted((k, r["status"], r["first_seen"]) for k, r in rows.items()
                      if r["status"] != "withdrawn")
        return engine, (windows, live)

    in_order = [(i % 2, e) for i, e in enumerate(events)]
    shuffled = in_order[:]
    # Partition 0 runs hours ahead of partition 1, and batches are scrambled: a --max replay.
    shuffled.sort(key=lambda pe: (pe[0], rng.random() < 0.2, pe[1].time))
    a, wa = run(in_order, 50)
    b, wb = run(shuffled, 300)
    assert a.late_events == 0 and b.late_events > 100
    assert wa == wb
    assert a.alerts() == b.alerts()
    assert [x["location"] for x in a.alerts()] == ["Lyon"]


def test_threshold_needs_the_last_hour_and_the_last_five_minutes():
    store = WindowStore()
    cfg = DetectorConfig()
    for m in range(60):
        for k in range(3):
            store.add(ev(m * 3 + k, m, high=(m < 50 and k == 0)))  # 33 % high until minute 50
    assert threshold(store, "all", M0 + 60, cfg) is None               # over: the last 5 min are calm
    for k in range(10):                                           # 60/190 over the hour
        store.add(ev(1000 + k, 59, high=True))
    assert threshold(store, "all", M0 + 60, cfg).detector == "threshold"
    assert threshold(store, "topic:fibre", M0 + 60, cfg) is None       # not on topics


def test_burst_fires_on_a_sustained_rise_not_on_calm_noise():
    store = WindowStore()
    rng = random.Random(5)
    n = 0
    for m in range(240):
        for _ in range(5):
            n += 1
            store.add(ev(n, m, negative=rng.random() < 0.3))
    cfg = DetectorConfig()
    assert all(burst(store, "all", M0 + step, cfg) is None for step in range(70, 241, 5))
    for m in range(240, 250):
        for _ in range(6):
            n += 1
            store.add(ev(n, m, negative=True))
    signal = burst(store, "all", M0 + 250, cfg)
    assert signal is not None and signal.observed > 3 * signal.expected


def test_slow_rise_sees_a_climbing_negative_share():
    store = WindowStore()
    n = 0
    for m in range(7 * 60):
        share = 0.15 + 0.5 * m / (7 * 60)
        for k in range(4):
            n += 1
            store.add(ev(n, m, negative=(n * 0.618) % 1 < share, location="Lille"))
    signal = slow_rise(store, "location:Lille", M0 + 7 * 60, DetectorConfig())
    assert signal is not None and signal.detector == "slow_rise"
    assert slow_rise(store, "all", M0 + 7 * 60, DetectorConfig()) is None  # per topic / location only


def test_one_incident_is_one_alert_that_resolves():
    engine = SignalEngine(partitions=1)
    events, n = [], 0
    for m in range(8 * 60):
        incident = 300 <= m < 360
        for k in range(6 if not incident else 16):
            n += 1
            loc = "Bordeaux" if incident and k >= 4 else ["Paris", "Lille", "Nice", ""][k % 4]
            events.append((0, ev(n, m, negative=(k % 3 == 0) or (incident and k >= 4),
                                  high=incident and k >= 4, location=loc, second=k)))
    engine.feed(events)
    engine.finish()
    alerts = engine.alerts()
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert["location"] == "Bordeaux" and alert["status"] == "resolved"
    assert alert["first_seen"] >= "2026-01-05T05:00" and alert["example_ids"]


def test_evaluation_json_has_the_documented_keys():
    import json
    from pathlib import Path
    result = json.loads((Path(__file__).parents[1] / "bench/results/signals.json").read_text())
    assert {"incidents", "false_alarms_per_week"} <= set(result)
    assert {"name", "detected", "delay_windows"} <= set(result["incidents"][0])


def test_a_tweet_counted_once_whatever_the_replays_and_redeliveries() -> None:
    from stream_app.signals.engine import SignalEngine
    from stream_app.signals.windows import TweetEvent
    base = 1_700_000_000.0
    events = [(0, TweetEvent(id=str(i), time=base + i * 7, topic="outage", location="Lyon",
                             negative=True, high=True, author=f"u{i}")) for i in range(300)]
    once = SignalEngine(partitions=1)
    once.feed(events)
    twice = SignalEngine(partitions=1)
    twice.feed(events[:200])
    twice.feed(events)              # a replay of the whole dump after a partial one
    twice.feed(events[150:160])     # and a redelivered batch
    assert twice.duplicates == 210 and once.duplicates == 0
    assert twice.store.minutes == once.store.minutes
    assert twice.alerts() == once.alerts()
