"""The signals core without Kafka: windows, watermark, late data, detectors, alerts."""

import random

import numpy as np

from stream_app.signals.alerts import binomial_tail, dominant_location
from stream_app.signals.detectors import (DetectorConfig, burst, poisson_cusum, poisson_tail,
                                          slow_rise, threshold, without_past_incident)
from stream_app.signals.engine import SignalEngine
from stream_app.signals.windows import TweetEvent, WindowStore

T0 = 1_767_571_200.0  # 2026-01-05T00:00:00Z, a minute boundary
M0 = int(T0 // 60)    # detectors take absolute minute numbers


def ev(i, minute, negative=False, high=False, location="", topic="fibre", second=0.0):
    return TweetEvent(id=f"t{i}", time=T0 + minute * 60 + second, topic=topic, location=location,
                      negative=negative, high=high, author=f"a{i}")


def test_poisson_tail_matches_known_values():
    assert poisson_tail(0, 3.0) == 1.0
    assert abs(poisson_tail(1, 2.0) - (1 - 2.718281828 ** -2)) < 1e-9
    assert abs(poisson_tail(10, 2.0) - 4.6498e-5) < 1e-7   # scipy.stats.poisson.sf(9, 2)
    assert 0 < poisson_tail(400, 50.0) < 1e-100


def test_poisson_cusum_fires_on_a_rising_count_and_not_on_a_flat_one():
    mu, steps = 2.0, 72                      # six hours of five-minute steps
    fired_flat = fired_rise = 0
    for seed in range(30):
        rng = np.random.default_rng(seed)
        flat = [(int(rng.poisson(mu)), mu, 6) for _ in range(steps)]
        rise = [(int(rng.poisson(mu * (1 + 2 * i / steps))), mu, 6) for i in range(steps)]  # x1 -> x3
        fired_flat += poisson_cusum(flat, 2.0, 8.5, 20, 1.5) is not None
        alarm = poisson_cusum(rise, 2.0, 8.5, 20, 1.5)
        if alarm is not None:
            fired_rise += 1
            assert alarm.observed >= 1.5 * alarm.expected and alarm.statistic >= 8.5
    assert fired_flat == 0
    assert fired_rise >= 28


def test_poisson_cusum_ignores_a_spike_ends_with_the_rise_and_discounts_a_thin_baseline():
    mu = 2.0
    spike = [(2, mu, 6)] * 30 + [(60, mu, 6)] + [(2, mu, 6)] * 30
    assert poisson_cusum(spike, 2.0, 8.5) is None              # one window adds at most h / 4
    rise = [(5, mu, 6)] * 24
    assert poisson_cusum(rise, 2.0, 8.5) is not None
    assert poisson_cusum(rise + [(2, mu, 6)] * 36, 2.0, 8.5) is None   # over: the alarm ends
    # The same counts against a baseline of one past period need more evidence.
    thin = [(x, m, 1) for x, m, _ in rise]
    assert poisson_cusum(thin, 2.0, 8.5).index > poisson_cusum(rise, 2.0, 8.5).index


def test_slow_rise_sees_a_city_s_climbing_complaints_against_its_past_days():
    rng = np.random.default_rng(4)
    store, n = WindowStore(), 0
    rise_start = 3 * 24 * 60 + 6 * 60
    for m in range(3 * 24 * 60 + 18 * 60):
        factor = 1 + 3 * max(0, m - rise_start) / (12 * 60)     # x1 -> x4 over 12 h
        for _ in range(int(rng.poisson(0.6))):
            n += 1
            store.add(ev(n, m, location="Lille"))
        for _ in range(int(rng.poisson(0.3 * factor))):
            n += 1
            store.add(ev(n, m, negative=True, location="Lille"))
    cfg = DetectorConfig()
    calm_day = range(2 * 24 * 60 + 5, 3 * 24 * 60, 5)
    assert not any(slow_rise(store, "location:Lille", M0 + s, cfg) for s in calm_day)
    fired = [s for s in range(rise_start, rise_start + 12 * 60, 5)
             if slow_rise(store, "location:Lille", M0 + s, cfg)]
    assert fired
    assert 1 + 3 * (fired[0] - rise_start) / (12 * 60) < 2.5    # caught early in the rise
    signal = slow_rise(store, "location:Lille", M0 + fired[0], cfg)
    assert signal.detector == "slow_rise" and signal.observed > signal.expected


def test_a_past_incident_is_left_out_of_the_baseline():
    assert without_past_incident([8, 7, 9, 25, 8, 6]) == [8, 7, 9, 8, 6]
    assert without_past_incident([8, 7, 9, 12, 8, 6]) == [8, 7, 9, 12, 8, 6]
    assert without_past_incident([1, 9, 2]) == [1, 9, 2]        # too few periods to tell


def test_a_city_holding_its_usual_share_is_not_a_local_incident():
    assert binomial_tail(16, 32, 0.3) > 1e-3
    assert binomial_tail(30, 40, 0.12) < 1e-12
    store, n = WindowStore(), 0
    for m in range(2 * 24 * 60 + 600):          # Paris holds half the located complaints...
        for city in ("Paris", "Paris", "Lyon", "Nice"):
            n += 1
            store.add(ev(n, m, negative=m % 3 == 0, location=city))
    step = M0 + 2 * 24 * 60 + 600
    assert dominant_location(store, step, DetectorConfig()) is None    # ...as usual
    for k in range(40):                          # a Lyon outage concentrates them
        n += 1
        store.add(ev(n, 2 * 24 * 60 + 595 + k % 5, negative=True, location="Lyon"))
    assert dominant_location(store, step, DetectorConfig()) == "location:Lyon"


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


def test_a_spike_of_a_few_minutes_on_the_key_it_concentrates_in_does_not_burst():
    store, n = WindowStore(), 0
    rng = random.Random(6)
    for m in range(24 * 60 + 120):
        for _ in range(6):
            n += 1
            store.add(ev(n, m, negative=rng.random() < 0.3, topic=rng.choice(["fibre", "outage"])))
    spike = 24 * 60 + 60
    for m in range(spike, spike + 4):             # four minutes, all about outages
        for _ in range(10):
            n += 1
            store.add(ev(n, m, negative=True, topic="outage"))
    cfg = DetectorConfig()
    assert all(burst(store, "topic:outage", M0 + spike + d, cfg) is None for d in (5, 10, 15))
    for m in range(spike + 4, spike + 10):        # the same, lasting ten minutes: an incident
        for _ in range(10):
            n += 1
            store.add(ev(n, m, negative=True, topic="outage"))
    assert burst(store, "topic:outage", M0 + spike + 10, cfg) is not None


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


def _incident_day(start_minute: int, first_id: int, location: str = "Bordeaux") -> list:
    """Eight hours of calm traffic over several cities with a one-hour local outage."""
    events, n = [], first_id
    for m in range(start_minute, start_minute + 8 * 60):
        incident = start_minute + 300 <= m < start_minute + 360
        for k in range(6 if not incident else 16):
            n += 1
            loc = location if incident and k >= 4 else ["Paris", "Lille", "Nice", ""][k % 4]
            events.append((0, ev(n, m, negative=(k % 3 == 0) or (incident and k >= 4),
                                  high=incident and k >= 4, location=loc, second=k)))
    return events


def test_signals_work_follows_the_tweets_not_the_calendar_between_them():
    """A timeline holding a day of 2026 and a day three years later: the engine evaluates
    the steps of both days plus the detectors' look-back after the first (six hours, while
    its tweets can still move the slow-rise test), not the 315,000 steps of the years
    between them (a replay of a dump of another year took 321 s instead of 23 s before)."""
    one_day = SignalEngine(partitions=1)
    one_day.feed(_incident_day(0, 0))
    one_day.finish()
    three_years = 3 * 365 * 24 * 60
    spanning = SignalEngine(partitions=1)
    spanning.feed(_incident_day(0, 0))
    spanning.feed(_incident_day(three_years, 100_000))
    spanning.finish()
    assert one_day.steps_evaluated <= 8 * 12 + 12 * 6 + 12
    lookback_steps = DetectorConfig().trend_hours * 12
    assert spanning.steps_evaluated <= 2 * one_day.steps_evaluated + lookback_steps + 2
    # Both incidents are found, each once, and resolved: the skipped gap changed nothing.
    assert [(a["location"], a["status"]) for a in spanning.alerts()] == [("Bordeaux", "resolved")] * 2


def test_late_tweets_inside_a_skipped_gap_are_evaluated_after_a_rewind():
    """Steps skipped as quiet are re-evaluated when late data lands in them: fed in any
    order, the timeline raises the alerts of an in-order feed."""
    day = _incident_day(0, 0)
    before = [(0, ev(900_000 + i, -3000 + i // 3)) for i in range(30)]  # ten minutes, two days before
    in_order = SignalEngine(partitions=1)
    in_order.feed(before + day)
    in_order.finish()
    rng = random.Random(3)
    shuffled_batches = [day[i:i + 500] for i in range(0, len(day), 500)]
    late_first = SignalEngine(partitions=1)
    late_first.feed(before)           # the watermark passes the start; the rest is a gap
    late_first.feed(day[-100:])       # the end of the day arrives first: the gap is skipped
    rng.shuffle(shuffled_batches)
    for batch in shuffled_batches:
        late_first.feed(batch)
    late_first.finish()
    strip = lambda alerts: [{k: v for k, v in a.items() if k != "updated_at"} for a in alerts]
    assert strip(late_first.alerts()) == strip(in_order.alerts())
    assert [a["location"] for a in in_order.alerts()] == ["Bordeaux"]


def test_each_timeline_has_its_own_alert_ids_and_records_its_run():
    from stream_app.signals.windows import LIVE_TIMELINE, timeline_of
    assert timeline_of("replay-20260312T101500-dump-abc123") == "replay-20260312T101500-dump-abc123"
    assert timeline_of("stream-x-20260312T101500-abc123") == LIVE_TIMELINE
    assert timeline_of("") == LIVE_TIMELINE
    alerts = {}
    for timeline in (LIVE_TIMELINE, "replay-a", "replay-b"):
        engine = SignalEngine(partitions=1, timeline=timeline)
        engine.feed(_incident_day(0, 0))
        engine.finish()
        (alert,) = engine.alerts()
        assert alert["run_id"] == timeline and alert["detectors"]
        alerts[timeline] = alert
    assert len({a["alert_id"] for a in alerts.values()}) == 3
    same = {k: v for k, v in alerts["replay-a"].items() if k not in ("alert_id", "run_id")}
    assert same == {k: v for k, v in alerts["replay-b"].items() if k not in ("alert_id", "run_id")}


def test_a_live_incident_resolves_when_the_traffic_stops():
    """Live streams close their windows by the heartbeat when partitions go idle: the
    outage's alert resolves after its quiet time instead of staying open forever."""
    engine = SignalEngine(partitions=4)
    assert engine.heartbeat(T0).alerts == []          # before any tweet: nothing, no error
    events = [(i % 4, e) for i, (_, e) in enumerate(_incident_day(0, 0)) if e.time < T0 + 361 * 60]
    engine.feed(events)                                # traffic stops right after the outage
    assert [a["status"] for a in engine.alerts()] == ["firing"]
    engine.feed([])                                    # no new tweet: the watermark cannot move
    assert [a["status"] for a in engine.alerts()] == ["firing"]
    engine.heartbeat(T0 + 361 * 60 + 45 * 60)          # 45 quiet minutes of wall clock
    assert [(a["location"], a["status"]) for a in engine.alerts()] == [("Bordeaux", "resolved")]
