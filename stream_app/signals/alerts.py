"""From detector signals to alerts an on-call engineer can act on.

At each step the signals are grouped into incidents: a location's own signals are a
local incident; signals of ``all`` or a topic are attributed to a location when that
location holds most of the key's negative tweets of the last hour (a local outage big
enough to move the national curves), else they are national; several locations
bursting at once are one national incident. One incident is one alert: it opens,
escalates, resolves after ``resolve_minutes`` without a signal (hysteresis), and
reopens (same alert) if it comes back within an hour.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from stream_app.records import iso
from stream_app.signals.detectors import DetectorConfig, Signal
from stream_app.signals.windows import HOUR_MINUTES, KEY_ALL, MINUTE, STEP_MINUTES, WindowStore

SEVERITY_RANK = {"warning": 1, "major": 2, "critical": 3}
REOPEN_MINUTES = 60
LOCATION_PREFIX = "location:"
MIN_LOCAL_NEGATIVES = 5


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
        }


def incident_of(signal: Signal, store: WindowStore, step: int, cfg: DetectorConfig) -> str:
    """The incident key a signal belongs to (a location key, a topic key, or ``all``)."""
    if signal.key.startswith(LOCATION_PREFIX):
        return signal.key
    top = dominant_location(store, step, cfg)
    return top if top else signal.key


def dominant_location(store: WindowStore, step: int, cfg: DetectorConfig) -> str | None:
    """The location key holding at least ``local_share`` of the negative tweets that name
    a location (and at least ``MIN_LOCAL_NEGATIVES`` of them) over the last 10 minutes
    (an outage that just started) or the last hour (one that is fading): a calm day
    spreads its complaints over many cities, a local outage concentrates them."""
    for span in (2 * STEP_MINUTES, HOUR_MINUTES):
        counts = {key: store.sums(key, step - span, step).negative
                  for key in store.minutes if key.startswith(LOCATION_PREFIX)}
        total = sum(counts.values())
        if not total:
            continue
        best = min(counts, key=lambda k: (-counts[k], k))
        if counts[best] / total >= cfg.local_share and counts[best] >= MIN_LOCAL_NEGATIVES:
            return best
    return None


def group_signals(signals: list[Signal], store: WindowStore, step: int, cfg: DetectorConfig,
                  national_open: bool = False) -> dict[str, list[Signal]]:
    """Incidents of one step: incident key -> its signals."""
    groups: dict[str, list[Signal]] = {}
    for signal in signals:
        groups.setdefault(incident_of(signal, store, step, cfg), []).append(signal)
    # Topic incidents that no location explains are one national incident.
    for key in [k for k in groups if k.startswith("topic:")]:
        groups.setdefault(KEY_ALL, []).extend(groups.pop(key))
    bursting = [k for k, sigs in groups.items() if k.startswith(LOCATION_PREFIX)
                and any(s.detector == "burst" for s in sigs)]
    national = KEY_ALL in groups or national_open or len(bursting) >= cfg.national_locations
    if national:
        # During a national incident, cities bursting with the rest of the country are
        # part of it; only the city that dominates the complaints stays local.
        dominant = dominant_location(store, step, cfg)
        for key in bursting:
            if key != dominant:
                groups.setdefault(KEY_ALL, []).extend(groups.pop(key))
    return groups


class AlertTracker:
    """Hysteresis and deduplication: one alert per incident key at a time."""

    def __init__(self, cfg: DetectorConfig) -> None:
        self.cfg = cfg
        self.alerts: dict[str, OpenAlert] = {}   # incident key -> latest alert (open or recent)
        self.history: dict[str, OpenAlert] = {}  # alert_id -> alert, within the revision horizon

    def snapshot(self) -> tuple[dict[str, OpenAlert], dict[str, OpenAlert]]:
        return copy.deepcopy((self.alerts, self.history))  # one deepcopy keeps shared objects shared

    def restore(self, state: tuple[dict[str, OpenAlert], dict[str, OpenAlert]]) -> None:
        self.alerts, self.history = copy.deepcopy(state)

    def national_open(self) -> bool:
        alert = self.alerts.get(KEY_ALL)
        return alert is not None and alert.resolved_minute is None

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
        digest = hashlib.sha256(f"{key}\x1f{step}".encode()).hexdigest()[:24]
        alert = OpenAlert(alert_id=digest, detector=signal.detector, key=key, location=location,
                          severity=signal.severity, first_minute=step - STEP_MINUTES,
                          window_start=step - STEP_MINUTES, window_end=step,
                          observed=signal.observed, expected=signal.expected, score=signal.score,
                          example_ids=store.examples(key, step - HOUR_MINUTES, step),
                          scope="local" if location else "national", detectors=[signal.detector])
        alert.updated_minute = step
        return alert

    def _measure(self, alert: OpenAlert, step: int, signal: Signal) -> None:
        alert.window_start, alert.window_end = step - STEP_MINUTES, step
        alert.observed, alert.expected, alert.score = signal.observed, signal.expected, signal.score
        alert.updated_minute = step
