"""From detector signals to alerts an on-call engineer can act on.

At each step the signals are grouped into incidents: a location's own signals are a
local incident; a signal of ``all`` or a topic belongs to a location whose extra
negatives (over its baseline, over the signal's span) make most of the key's extra and
are significant on their own, or to an open local incident whose extra makes most of
it (a local outage big enough to move a topic or the national curve); else it is
national. Several locations rising at once are one national incident, which absorbs
the cities signalling meanwhile unless one rises significantly beyond the country.
One incident is one alert: it opens, escalates, resolves after ``resolve_minutes``
without a signal (hysteresis), and reopens (same alert) if it comes back within an
hour.
"""

from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

from stream_app.records import iso
from stream_app.signals.detectors import (DAY_MINUTES, DetectorConfig, Evidence, Signal,
                                          step_evidence)
from stream_app.signals.windows import (HOUR_MINUTES, KEY_ALL, LIVE_TIMELINE, MINUTE, STEP_MINUTES,
                                        WindowStore)

SEVERITY_RANK = {"warning": 1, "major": 2, "critical": 3}
REOPEN_MINUTES = 60
LOCATION_PREFIX = "location:"
MIN_LOCAL_NEGATIVES = 5
LOCAL_ALPHA = 1e-6        # a city holding far more than its usual share of complaints
LOCAL_Z = 3.0             # a city's own rise, in standard deviations
USUAL_GAP_MINUTES = 120   # a city's usual share of complaints: the day before, up to 2 h ago
EvidenceFn = Callable[[WindowStore, str, int], Evidence]


def minute_iso(minute: int) -> str:
    return iso(datetime.fromtimestamp(minute * MINUTE, timezone.utc))


@dataclass
class OpenAlert:
    alert_id: str
    detector: str
    key: str
    location: str
    severity: str
    first_minute: int
    window_start: int
    window_end: int
    observed: float
    expected: float
    score: float
    example_ids: list[str]
    scope: str
    detectors: list[str] = field(default_factory=list)
    timeline: str = LIVE_TIMELINE
    updated_minute: int = 0
    quiet_since: int | None = None
    resolved_minute: int | None = None

    def to_record(self) -> dict[str, Any]:
        status = "resolved" if self.resolved_minute is not None else "firing"
        where = self.location or "national"
        return {
            "alert_id": self.alert_id, "detector": self.detector, "key": self.key,
            "location": self.location, "severity": self.severity, "status": status,
            "window_start": minute_iso(self.window_start), "window_end": minute_iso(self.window_end),
            "observed": float(self.observed), "expected": float(self.expected),
            "score": float(self.score), "example_ids": list(self.example_ids),
            "message": (f"{self.scope} incident ({where}): {', '.join(self.detectors)}; "
                        f"observed {self.observed:g} vs expected {self.expected:g}"),
            "first_seen": minute_iso(self.first_minute), "updated_at": minute_iso(self.updated_minute),
            "resolved_at": minute_iso(self.resolved_minute) if self.resolved_minute is not None else None,
            "run_id": self.timeline, "detectors": list(self.detectors),
        }


def incident_of(signal: Signal, store: WindowStore, step: int, cfg: DetectorConfig,
                evidence: EvidenceFn = step_evidence, open_locations: Iterable[str] = ()) -> str:
    """The incident key a signal belongs to (a location key, a topic key, or ``all``)."""
    if signal.key.startswith(LOCATION_PREFIX):
        return signal.key
    top = (explaining_location(signal, store, step, cfg, evidence, open_locations)
           or excess_location(signal, store, step, cfg, evidence)
           or dominant_location(store, step, cfg))
    return top if top else signal.key


def _counts(store: WindowStore, key: str, step: int, minutes: int,
            evidence: EvidenceFn) -> tuple[int, float, float]:
    """Observed and expected negatives of ``key`` over ``[step - minutes, step)``, by
    five-minute steps, and the variance of their difference (the baseline's included).
    A step without a baseline (a key new in the last hour) counts as expecting none:
    a city nobody complained about before is all excess."""
    observed, expected, variance = 0, 0.0, 0.0
    for s in range(step - minutes + STEP_MINUTES, step + 1, STEP_MINUTES):
        x, mu, periods = evidence(store, key, s)
        observed += x
        if not math.isnan(mu):
            expected += mu
            variance += mu * (1 + 1 / max(periods, 1))
    return observed, expected, variance


def _excess(store: WindowStore, key: str, step: int, minutes: int,
            evidence: EvidenceFn) -> tuple[float, float]:
    """Observed minus expected negatives (see :func:`_counts`) and its variance."""
    observed, expected, variance = _counts(store, key, step, minutes, evidence)
    return observed - expected, variance


def rises_beyond_country(key: str, minutes: int, store: WindowStore, step: int,
                         evidence: EvidenceFn) -> bool:
    """Whether a location's negatives over the last ``minutes`` are significantly above
    its baseline times the country's own ratio over that span (``LOCAL_Z`` standard
    deviations): a city rising with the rest of the country has about the country's
    ratio; a city with an incident of its own has more."""
    observed, expected, variance = _counts(store, key, step, minutes, evidence)
    national_observed, national_expected, _ = _counts(store, KEY_ALL, step, minutes, evidence)
    ratio = max(national_observed / national_expected, 1.0) if national_expected > 0 else 1.0
    return observed - expected * ratio >= LOCAL_Z * math.sqrt(max(variance * ratio, 1.0))


def explaining_location(signal: Signal, store: WindowStore, step: int, cfg: DetectorConfig,
                        evidence: EvidenceFn, open_locations: Iterable[str]) -> str | None:
    """The location, among those with a local incident open, whose extra complaints over
    the last hour (or the signal's span, if longer) make at least ``local_share`` of the
    signal key's, or that holds at least ``local_share`` of the negative tweets naming a
    place over the last hour: a city's incident growing enough to move a topic or the
    national curve, or fading while it still makes most complaints, is still that
    city's incident (one incident, one alert)."""
    open_locations = sorted(open_locations)
    if not open_locations:
        return None
    minutes = max(signal.minutes, HOUR_MINUTES)
    key_excess, _ = _excess(store, signal.key, step, minutes, evidence)
    best, best_excess = None, max(cfg.local_share * key_excess, MIN_LOCAL_NEGATIVES)
    for key in open_locations:
        excess, _ = _excess(store, key, step, minutes, evidence)
        if excess >= best_excess:
            best, best_excess = key, excess
    if best is not None:
        return best
    counts = {key: store.sums(key, step - HOUR_MINUTES, step).negative
              for key in store.minutes if key.startswith(LOCATION_PREFIX)}
    total = sum(counts.values())
    for key in open_locations:
        if counts.get(key, 0) >= max(cfg.local_share * total, MIN_LOCAL_NEGATIVES):
            return key
    return None


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    if k > n or p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    return min(1.0, sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                                 + i * log_p + (n - i) * log_q) for i in range(k, n + 1)))


def dominant_location(store: WindowStore, step: int, cfg: DetectorConfig) -> str | None:
    """The location key holding at least ``local_share`` of the negative tweets that name
    a location (and at least ``MIN_LOCAL_NEGATIVES`` of them) over the last 10 minutes
    (an outage that just started) or the last hour (one that is fading), far more than
    its usual share of them (binomial tail below ``LOCAL_ALPHA``; usual: its share over
    the day before, up to ``USUAL_GAP_MINUTES`` ago): a calm day or a national incident
    spreads complaints over the cities in their usual proportions, a local outage
    concentrates them. (The usual share matters: a city holding a third of the
    complaints reaches half of a few dozen now and then by chance.)"""
    locations = sorted(k for k in store.minutes if k.startswith(LOCATION_PREFIX))
    usual_counts: dict[str, int] | None = None
    for span in (2 * STEP_MINUTES, HOUR_MINUTES):
        counts = {key: store.sums(key, step - span, step).negative for key in locations}
        total = sum(counts.values())
        if not total:
            continue
        best = min(counts, key=lambda k: (-counts[k], k))
        if counts[best] / total < cfg.local_share or counts[best] < MIN_LOCAL_NEGATIVES:
            continue
        if usual_counts is None:
            before = step - USUAL_GAP_MINUTES
            usual_counts = {key: store.sums(key, before - DAY_MINUTES, before).negative
                            for key in locations}
        usual_total = sum(usual_counts.values())
        usual = usual_counts[best] / usual_total if usual_total else 0.0
        if binomial_tail(counts[best], total, usual) < LOCAL_ALPHA:
            return best
    return None


def excess_location(signal: Signal, store: WindowStore, step: int, cfg: DetectorConfig,
                    evidence: EvidenceFn = step_evidence) -> str | None:
    """Where a signal of a topic or of ``all`` is: the location key whose own negatives
    over the signal's span rise significantly (``LOCAL_Z`` standard deviations over its
    baseline, the baseline's own variance included) and make at least ``local_share`` of
    the key's excess over its baseline (and ``MIN_LOCAL_NEGATIVES``). Where the extra
    complaints are, not where most complaints are: a big city always holds many, and
    holds half of a few dozen now and then by chance; a national incident raises every
    city in proportion, a local one raises one city."""
    key_excess, _ = _excess(store, signal.key, step, signal.minutes, evidence)
    needed = max(cfg.local_share * key_excess, MIN_LOCAL_NEGATIVES)
    best, best_excess = None, 0.0
    for key in sorted(k for k in store.minutes if k.startswith(LOCATION_PREFIX)):
        excess, variance = _excess(store, key, step, signal.minutes, evidence)
        if excess >= needed and excess > best_excess and excess >= LOCAL_Z * math.sqrt(max(variance, 1.0)):
            best, best_excess = key, excess
    return best


def group_signals(signals: list[Signal], store: WindowStore, step: int, cfg: DetectorConfig,
                  national_open: bool = False, evidence: EvidenceFn = step_evidence,
                  national_resolved: int | None = None, open_locations: Iterable[str] = ()
                  ) -> dict[str, list[Signal]]:
    """Incidents of one step: incident key -> its signals. ``national_resolved``: the
    minute the last national incident resolved, if it has; ``open_locations``: the
    location keys with a local incident open."""
    if national_resolved is not None and not national_open:
        # A city's slow rise whose run began before the last national incident ended is
        # that incident's tail (a small city's evidence can finish adding up after it):
        # already paged, not a new incident.
        signals = [s for s in signals if not (s.detector == "slow_rise" and s.key.startswith(
            LOCATION_PREFIX) and step - s.minutes < national_resolved)]
    groups: dict[str, list[Signal]] = {}
    for signal in signals:
        groups.setdefault(incident_of(signal, store, step, cfg, evidence, open_locations),
                          []).append(signal)
    # Topic incidents that no location explains are one national incident.
    for key in [k for k in groups if k.startswith("topic:")]:
        groups.setdefault(KEY_ALL, []).extend(groups.pop(key))
    rising = [k for k, sigs in groups.items() if k.startswith(LOCATION_PREFIX)
              and any(s.detector in ("burst", "slow_rise") for s in sigs)]
    national = KEY_ALL in groups or national_open or len(rising) >= cfg.national_locations
    if national:
        # During a national incident, cities signalling with the rest of the country are
        # part of it; a city that dominates the complaints, or rises significantly more
        # than the country over the span of its signals, is an incident of its own.
        dominant = dominant_location(store, step, cfg)
        for key in [k for k in groups if k.startswith(LOCATION_PREFIX) and k != dominant]:
            minutes = max([HOUR_MINUTES] + [s.minutes for s in groups[key]])
            if not rises_beyond_country(key, minutes, store, step, evidence):
                groups.setdefault(KEY_ALL, []).extend(groups.pop(key))
    return groups


class AlertTracker:
    """Hysteresis and deduplication: one alert per incident key at a time."""

    def __init__(self, cfg: DetectorConfig, timeline: str = LIVE_TIMELINE) -> None:
        self.cfg = cfg
        self.timeline = timeline
        self.alerts: dict[str, OpenAlert] = {}   # incident key -> latest alert (open or recent)
        self.history: dict[str, OpenAlert] = {}  # alert_id -> alert, within the revision horizon

    def snapshot(self) -> tuple[dict[str, OpenAlert], dict[str, OpenAlert]]:
        return copy.deepcopy((self.alerts, self.history))  # one deepcopy keeps shared objects shared

    def restore(self, state: tuple[dict[str, OpenAlert], dict[str, OpenAlert]]) -> None:
        self.alerts, self.history = copy.deepcopy(state)

    def any_open(self) -> bool:
        return any(alert.resolved_minute is None for alert in self.alerts.values())

    def national_open(self) -> bool:
        alert = self.alerts.get(KEY_ALL)
        return alert is not None and alert.resolved_minute is None

    def open_locations(self) -> list[str]:
        """The location keys with a local incident open."""
        return sorted(key for key, alert in self.alerts.items()
                      if key.startswith(LOCATION_PREFIX) and alert.resolved_minute is None)

    def national_resolved(self) -> int | None:
        """The minute the last national incident resolved (None: none, or still open)."""
        alert = self.alerts.get(KEY_ALL)
        return alert.resolved_minute if alert is not None else None

    def forget_resolved_before(self, minute: int) -> list[str]:
        """Drop alerts resolved before ``minute`` (no revision can reach them); their ids."""
        forgotten = []
        for alert_id, alert in list(self.history.items()):
            if alert.resolved_minute is not None and alert.updated_minute < minute:
                del self.history[alert_id]
                forgotten.append(alert_id)
                if self.alerts.get(alert.key) is alert:
                    del self.alerts[alert.key]
        return forgotten

    def step(self, step: int, groups: dict[str, list[Signal]], store: WindowStore) -> list[dict]:
        """Apply one step's incidents; return the alert records that changed."""
        changed: list[OpenAlert] = []
        for key in sorted(groups):
            strongest = max(groups[key], key=lambda s: (SEVERITY_RANK[s.severity], s.score, s.detector))
            alert = self.alerts.get(key)
            reopen = alert is not None and (alert.resolved_minute is None or
                                            step - alert.resolved_minute <= REOPEN_MINUTES)
            if not reopen:
                alert = self._open(key, step, strongest, store)
                self.alerts[key] = self.history[alert.alert_id] = alert
                changed.append(alert)
                continue
            assert alert is not None
            was_resolved = alert.resolved_minute is not None
            escalated = SEVERITY_RANK[strongest.severity] > SEVERITY_RANK[alert.severity]
            new_detectors = sorted({s.detector for s in groups[key]} - set(alert.detectors))
            alert.quiet_since, alert.resolved_minute = None, None
            if escalated or was_resolved or new_detectors:
                if escalated:
                    alert.severity = strongest.severity
                alert.detectors += new_detectors
                self._measure(alert, step, strongest)
                changed.append(alert)
        for key, alert in sorted(self.alerts.items()):
            if key in groups or alert.resolved_minute is not None:
                continue
            if alert.quiet_since is None:
                alert.quiet_since = step - STEP_MINUTES
            if step - alert.quiet_since >= self.cfg.resolve_minutes:
                alert.resolved_minute = alert.quiet_since
                alert.updated_minute = step
                changed.append(alert)
        return [a.to_record() for a in changed]

    def _open(self, key: str, step: int, signal: Signal, store: WindowStore) -> OpenAlert:
        location = key[len(LOCATION_PREFIX):] if key.startswith(LOCATION_PREFIX) else ""
        # The timeline is part of the id: the same incident in two replays is two alerts.
        # (The live timeline keeps the ids it always had.)
        seed = f"{key}\x1f{step}" if self.timeline == LIVE_TIMELINE else f"{self.timeline}\x1f{key}\x1f{step}"
        digest = hashlib.sha256(seed.encode()).hexdigest()[:24]
        alert = OpenAlert(alert_id=digest, detector=signal.detector, key=key, location=location,
                          severity=signal.severity, first_minute=step - STEP_MINUTES,
                          window_start=step - STEP_MINUTES, window_end=step,
                          observed=signal.observed, expected=signal.expected, score=signal.score,
                          example_ids=store.examples(key, step - HOUR_MINUTES, step),
                          scope="local" if location else "national", detectors=[signal.detector],
                          timeline=self.timeline)
        alert.updated_minute = step
        return alert

    def _measure(self, alert: OpenAlert, step: int, signal: Signal) -> None:
        alert.window_start, alert.window_end = step - STEP_MINUTES, step
        alert.observed, alert.expected, alert.score = signal.observed, signal.expected, signal.score
        alert.updated_minute = step
