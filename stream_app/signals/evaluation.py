"""``dallosh eval signals``: generated timelines with incidents at known times, run
through the signals engine exactly as the worker runs it (no Kafka needed).

The timeline: a calm week of traffic with a daily rhythm (a few tweets an hour at
night, ~500 an hour in the evening; 30 % negative; 60 % of tweets name one of ten
cities; seven topics, 12 % of tweets about outages), then one incident a day, each
starting on the hour:

- ``national_outage``: negative volume x3 everywhere for 3 h (sudden);
- ``local_outage``: as many extra negatives as a national x3, all in Lyon, for 2 h;
- ``slow_local_rise``: Marseille's negatives grow linearly, x1 -> x4 over 12 h;
- ``short_spike``: negative volume x4 everywhere for 4 minutes, then calm again;
- ``single_author_flood``: one account posts as many complaints as a national x3, all
  in Toulouse, for an hour (a spam bot, an angry customer's thread);
- ``few_accounts_burst``: five accounts post copies of a complaint, as many as a
  national x4, for half an hour (a small campaign);
- ``local_outage_tail``: a two-hour fibre outage in Nantes (as many extra negatives as
  the whole country's), whose complaints fade over the next two hours (people saying it
  was down, or still is for them): the issue's Bordeaux case, where 55 minutes after
  the outage a second page opened as a national slow rise on its own tail.

The spike and the two floods are not incidents: they must not page (the floods are
tweets, not people). Measured per incident: detected or not, the delay in five-minute
windows from its start to the end of the window that fired, and, for the rise, the
ratio it had reached when detected; for each local incident, the echo pages (alerts of
another place, national included, opened while it ran or within three hours after).
Over the calm week: the alerts fired, i.e. false alarms.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from stream_app.records import parse_iso
from stream_app.signals.detectors import DetectorConfig
from stream_app.signals.engine import SignalEngine
from stream_app.signals.windows import MINUTE, STEP_MINUTES, TweetEvent

START = datetime(2026, 1, 5, tzinfo=timezone.utc)           # a Monday
DAY_S = 86400
CALM_DAYS = 7
HOURLY = (30, 18, 10, 8, 9, 20, 55, 100, 130, 140, 140, 150,
          145, 135, 130, 130, 140, 160, 175, 180, 170, 130, 80, 50)
PEAK_PER_HOUR = 500
NEGATIVE_SHARE = 0.30
CITIES = ("Paris", "Lyon", "Marseille", "Toulouse", "Lille", "Nantes", "Nice", "Rennes",
          "Strasbourg", "Montpellier")
CITY_WEIGHTS = (0.3, 0.12, 0.12, 0.08, 0.08, 0.08, 0.06, 0.06, 0.05, 0.05)
LOCATED_SHARE = 0.6
# The classifier's topics, with "outage" among the calm traffic too: a quiet day has
# complaints about outages, so ``topic:outage`` has a baseline before any incident
# (without it, an incident would light up a brand-new key and be trivially detected).
TOPICS = ("outage", "fibre", "mobile", "billing", "customer_service", "commercial_offer", "other")
TOPIC_WEIGHTS = (0.12, 0.20, 0.20, 0.14, 0.14, 0.08, 0.12)


@dataclass(frozen=True)
class Incident:
    name: str
    start_s: float           # offset from START
    duration_s: float
    location: str            # "" for national
    sustained: bool          # False: the spike and the floods, which must not page
    accounts: int = 0        # 0: every extra complaint from someone new; n: from n accounts
    factor: float = 2.0      # extra negatives, as a multiple of the country's
    topic: str = "outage"
    tail_s: float = 0.0      # complaints fading after the end (half the factor, then decaying)

    def extra_negative_factor(self, t: float) -> float:
        """Extra negatives as a multiple of the baseline negatives (of the whole
        country, or of the city for the slow rise) at offset t."""
        end = self.start_s + self.duration_s
        if self.tail_s and end <= t < end + self.tail_s:
            return 0.5 * self.factor * math.exp(-(t - end) / 1800)   # recovery: 30 min decay
        if not self.start_s <= t < end:
            return 0.0
        if self.name == "slow_local_rise":
            return 3.0 * (t - self.start_s) / self.duration_s
        return self.factor

    def ratio_at(self, t: float) -> float:
        return 1.0 + self.extra_negative_factor(t)


INCIDENTS = (
    Incident("national_outage", 7 * DAY_S + 10 * 3600, 3 * 3600, "", True),
    Incident("local_outage", 8 * DAY_S + 15 * 3600, 2 * 3600, "Lyon", True),
    Incident("slow_local_rise", 9 * DAY_S + 6 * 3600, 12 * 3600, "Marseille", True),
    Incident("short_spike", 10 * DAY_S + 12 * 3600, 4 * 60, "", False, factor=3.0),
    Incident("single_author_flood", 11 * DAY_S + 12 * 3600, 3600, "Toulouse", False, accounts=1),
    Incident("few_accounts_burst", 12 * DAY_S + 19 * 3600, 1800, "", False, accounts=5, factor=3.0),
    Incident("local_outage_tail", 13 * DAY_S + 18 * 3600, 2 * 3600, "Nantes", True, factor=1.0,
             topic="fibre", tail_s=2 * 3600),
)
TOTAL_DAYS = 14
ECHO_S = 3 * 3600            # after a local incident, alerts elsewhere this long are its echo


def _rate_per_minute(t: float) -> float:
    hour = int(t // 3600) % 24
    nxt = (hour + 1) % 24
    frac = (t % 3600) / 3600
    weight = HOURLY[hour] * (1 - frac) + HOURLY[nxt] * frac
    return PEAK_PER_HOUR * weight / max(HOURLY) / 60


def generate_timeline(seed: int = 8) -> list[TweetEvent]:
    """Every tweet of the timeline, in event-time order (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    events: list[TweetEvent] = []
    base = START.timestamp()
    serial = 0

    def emit(t: float, negative: bool, location: str, topic: str, high_p: float,
             author: str = "") -> None:
        nonlocal serial
        serial += 1
        events.append(TweetEvent(id=f"e{serial}", time=base + t, topic=topic, location=location,
                                 negative=negative, high=bool(rng.random() < high_p),
                                 author=author or f"u{int(rng.integers(0, 50_000))}"))

    for minute in range(TOTAL_DAYS * 24 * 60):
        t0 = minute * MINUTE
        rate = _rate_per_minute(t0)
        for _ in range(rng.poisson(rate)):
            negative = bool(rng.random() < NEGATIVE_SHARE)
            location = (str(rng.choice(CITIES, p=CITY_WEIGHTS))
                        if rng.random() < LOCATED_SHARE else "")
            emit(t0 + float(rng.random()) * MINUTE, negative, location,
                 str(rng.choice(TOPICS, p=TOPIC_WEIGHTS)), 0.3 if negative else 0.03)
        for incident in INCIDENTS:
            factor = incident.extra_negative_factor(t0)
            if not factor:
                continue
            if incident.name == "slow_local_rise":
                scope = rate * NEGATIVE_SHARE * LOCATED_SHARE * CITY_WEIGHTS[CITIES.index(incident.location)]
            else:
                scope = rate * NEGATIVE_SHARE
            for _ in range(rng.poisson(scope * factor)):
                location = incident.location or (str(rng.choice(CITIES, p=CITY_WEIGHTS))
                                                 if rng.random() < LOCATED_SHARE else "")
                # Flood accounts are named apart from the calm traffic's u0..u49999.
                author = (f"{incident.name}-{int(rng.integers(0, incident.accounts))}"
                          if incident.accounts else "")
                emit(t0 + float(rng.random()) * MINUTE, True, location, incident.topic, 0.6, author)
    events.sort(key=lambda e: (e.time, e.id))
    return events


def run_engine(events: list[TweetEvent], cfg: DetectorConfig | None = None,
               batch: int = 2000) -> SignalEngine:
    engine = SignalEngine(cfg or DetectorConfig(), allowed_lateness_s=120.0, partitions=1)
    for i in range(0, len(events), batch):
        engine.feed((0, e) for e in events[i:i + batch])
    engine.finish()
    return engine


def _offset(iso_time: str) -> float:
    return parse_iso(iso_time).timestamp() - START.timestamp()


def score_alerts(alerts: list[dict]) -> dict[str, Any]:
    """Match alerts to incidents; the rest are false alarms."""
    matched: set[str] = set()
    incidents = []
    for incident in INCIDENTS:
        window_from = incident.start_s - STEP_MINUTES * MINUTE
        window_to = incident.start_s + incident.duration_s + incident.tail_s + 1800
        hits = [a for a in alerts if window_from <= _offset(a["first_seen"]) <= window_to
                and (a["location"] == incident.location or not incident.location
                     or not incident.sustained)]   # a flood must page nowhere
        hit = min(hits, key=lambda a: _offset(a["first_seen"])) if hits else None
        matched.update(a["alert_id"] for a in hits)
        entry: dict[str, Any] = {"name": incident.name, "location": incident.location or "national",
                                 "sustained": incident.sustained, "detected": hit is not None,
                                 "delay_windows": None, "alert_location": None}
        if incident.location:
            echo_to = incident.start_s + incident.duration_s + incident.tail_s + ECHO_S
            echoes = [a for a in alerts if incident.start_s <= _offset(a["first_seen"]) <= echo_to
                      and a["location"] != incident.location]
            entry["echo_pages"] = len(echoes)
            entry["echo_examples"] = [{k: a[k] for k in ("detector", "key", "first_seen", "message")}
                                      for a in echoes][:3]
        if hit is not None:
            fired_at = _offset(hit["first_seen"]) + STEP_MINUTES * MINUTE  # end of the window
            entry["delay_windows"] = math.ceil((fired_at - incident.start_s) / (STEP_MINUTES * MINUTE))
            entry["alert_location"] = hit["location"] or "national"
            entry["detector"] = hit["detector"]
            if incident.name == "slow_local_rise":
                entry["ratio_when_detected"] = round(incident.ratio_at(fired_at), 2)
        incidents.append(entry)
    calm = [a for a in alerts if _offset(a["first_seen"]) < CALM_DAYS * DAY_S]
    stray = [a for a in alerts if a["alert_id"] not in matched
             and _offset(a["first_seen"]) >= CALM_DAYS * DAY_S]
    return {"incidents": incidents, "false_alarms_per_week": len(calm) * 7 / CALM_DAYS,
            "false_alarms_outside_incidents": len(stray),
            "false_alarm_examples": [{k: a[k] for k in ("detector", "key", "first_seen", "message")}
                                     for a in calm + stray][:10]}


def targets_met(result: dict[str, Any]) -> dict[str, bool]:
    incidents = {i["name"]: i for i in result["incidents"]}
    sustained = [i for i in result["incidents"] if i["sustained"] and i["name"] != "slow_local_rise"]
    rise = incidents["slow_local_rise"]
    return {
        "sustained_within_2_windows": all(i["detected"] and i["delay_windows"] <= 2 for i in sustained),
        "slow_rise_before_2x": rise["detected"] and rise.get("ratio_when_detected", 9) < 2.0,
        "at_most_one_false_alarm_per_week": result["false_alarms_per_week"] <= 1,
        "short_spike_does_not_page": not incidents["short_spike"]["detected"],
        "floods_do_not_page": not any(incidents[n]["detected"]
                                      for n in ("single_author_flood", "few_accounts_burst")),
        "no_echo_page_after_local_incident": not any(
            i.get("echo_pages") for i in result["incidents"]
            if i["name"] in ("local_outage", "local_outage_tail")),
    }


def evaluate_signals(seed: int = 8, cfg: DetectorConfig | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    events = generate_timeline(seed)
    generated = time.perf_counter()
    engine = run_engine(events, cfg)
    elapsed = time.perf_counter() - generated
    result = score_alerts(engine.alerts())
    result.update({
        "seed": seed, "tweets": len(events), "days": TOTAL_DAYS, "window_minutes": STEP_MINUTES,
        "alerts": len(engine.alerts()),
        "engine_seconds": round(elapsed, 2),
        "engine_tweets_per_s": round(len(events) / elapsed) if elapsed else None,
        "generate_seconds": round(generated - started, 2),
    })
    result["targets_met"] = targets_met(result)
    return result


def summarise_seeds(results: list[dict[str, Any]]) -> dict[str, Any]:
    """What a run over several seeds says, in the issue's terms: every sustained outage
    within two windows, the spike and the floods never paging, false alarms per calm
    week, no echo page, and the ratio at which the slow rise was caught (median)."""
    def incident(result: dict[str, Any], name: str) -> dict[str, Any]:
        return next(i for i in result["incidents"] if i["name"] == name)

    sustained = [i for r in results for i in r["incidents"]
                 if i["sustained"] and i["name"] != "slow_local_rise"]
    ratios = sorted(incident(r, "slow_local_rise").get("ratio_when_detected") or math.inf
                    for r in results)
    false_alarms = [r["false_alarms_per_week"] for r in results]
    return {
        "seeds": [r["seed"] for r in results],
        "sustained_within_2_windows": all(i["detected"] and i["delay_windows"] <= 2 for i in sustained),
        "sustained_delays": sorted({i["delay_windows"] for i in sustained if i["detected"]}),
        "paged_non_incidents": {name: sum(incident(r, name)["detected"] for r in results)
                                for name in ("short_spike", "single_author_flood", "few_accounts_burst")},
        "false_alarms_per_week_mean": round(sum(false_alarms) / len(false_alarms), 3),
        "false_alarms_per_week_max": max(false_alarms),
        "false_alarms_outside_incidents": sum(r["false_alarms_outside_incidents"] for r in results),
        "echo_pages": {name: sum(incident(r, name).get("echo_pages", 0) for r in results)
                       for name in ("local_outage", "slow_local_rise", "local_outage_tail")},
        "slow_rise_ratio_median": round(float(np.median(ratios)), 3),
        "slow_rise_ratios": ratios,
        "all_targets_met": [r["seed"] for r in results if all(r["targets_met"].values())],
    }


def evaluate_seeds(seeds: list[int], cfg: DetectorConfig | None = None,
                   progress: Any = None) -> dict[str, Any]:
    """:func:`evaluate_signals` for each seed, and their summary (:func:`summarise_seeds`)."""
    results = []
    for seed in seeds:
        results.append(evaluate_signals(seed, cfg))
        if progress is not None:
            progress(results[-1])
    return {"summary": summarise_seeds(results), "runs": results}
