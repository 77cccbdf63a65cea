"""The deterministic core of the signals stage: fed classified tweets (with the Kafka
partition each came from), it closes event-time windows and emits window records and
alert changes. No Kafka, no clock: the same tweets give the same windows and alerts
whatever the speed or the order they arrive in, within the revision horizon.

Watermark: the smallest, over the partitions seen, of the latest event time of that
partition, minus the allowed lateness; a one-minute window closes when the watermark
passes its end, and the detectors run at every five-minute step the watermark closes.

Late data: a tweet for an already closed window is counted as late and still applied:
its windows are re-emitted (same key, newer content) and the detectors re-run from its
step with the alert state as it was then, so alerts converge on what an in-order run
would have produced; an alert that the corrected history no longer contains is
re-published with status ``withdrawn``. A replay at ``--max`` interleaves partitions
and classification batches hours apart, so this is what makes replays speed-independent.
Tweets older than the revision horizon behind the watermark are counted and left out
of the windows (they still reach ClickHouse through the sink). A tweet id already in the
windows (a redelivery after a crash) is counted once.

One engine is one timeline (see :mod:`stream_app.signals.windows`): the agent keeps one per
replay run and one for the live stream, so their watermarks, baselines and alerts never mix.

Cost is bound to the data: a step is evaluated only while some tweet lies within the
detectors' look-back (``trend_hours``) or an alert is still open; across a gap with
neither (a dump spanning two years, a night without a tweet) the engine jumps to the step
of the next tweet. Skipped steps change nothing: no detector fires without tweets, and an
alert with nothing open has nothing to resolve.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from stream_app.signals.alerts import AlertTracker, group_signals
from stream_app.signals.detectors import (SEASONAL_WEEKS, WEEK_MINUTES, DetectorConfig, Evidence,
                                          burst, slow_rise, step_evidence, threshold)
from stream_app.signals.windows import (MINUTE, STEP_MINUTES, TweetEvent, WindowStore,
                                        LIVE_TIMELINE, window_record)

DETAIL_MINUTES = 26 * 60      # minutes keeping authors/terms/examples; older: counts only
RETENTION_MINUTES = 16 * 24 * 60
# The seasonal baseline reads back SEASONAL_WEEKS weeks (plus half an hour), from steps
# up to the revision horizon (24 h) old: those minutes must still be there.
assert RETENTION_MINUTES > SEASONAL_WEEKS * WEEK_MINUTES + 25 * 60


@dataclass
class EngineOutput:
    windows: list[dict] = field(default_factory=list)
    alerts: list[dict] = field(default_factory=list)

    def extend(self, other: "EngineOutput") -> None:
        self.windows += other.windows
        self.alerts += other.alerts


class SignalEngine:
    def __init__(self, cfg: DetectorConfig | None = None, allowed_lateness_s: float = 120.0,
                 revision_horizon_s: float = 24 * 3600.0, partitions: int = 1,
                 timeline: str = LIVE_TIMELINE) -> None:
        self.cfg = cfg or DetectorConfig()
        self.timeline = timeline
        self.lateness = allowed_lateness_s
        self.horizon_minutes = int(revision_horizon_s // MINUTE)
        self.partitions = partitions             # the watermark waits until each has been seen
        self.store = WindowStore()
        self.tracker = AlertTracker(self.cfg, timeline)
        self.partition_max: dict[int, float] = {}
        self.closed_until: int | None = None     # minutes < this are closed
        self.evaluated_until: int | None = None  # last evaluated step (a multiple of 5)
        self.snapshots: dict[int, tuple] = {}    # step -> tracker state before that step
        self.evidence: dict[tuple[str, int], Evidence] = {}  # (key, step) -> slow-rise evidence
        self.published: dict[str, dict] = {}     # alert_id -> last alert record emitted
        self.settled: set[str] = set()           # resolved beyond the horizon: final
        self._pruned_at = -10**12
        self.events = 0
        self.late_events = 0                     # applied to closed windows (revisions)
        self.dropped_late = 0                    # older than the revision horizon
        self.duplicates = 0                      # tweet ids already counted (redeliveries)
        self.steps_evaluated = 0                 # what the work is proportional to

    # ------------------------------------------------------------------ feeding

    def feed(self, batch: Iterable[tuple[int, TweetEvent]]) -> EngineOutput:
        """Apply a batch of (partition, tweet); return closed/revised windows and alert changes."""
        revised: set[tuple[str, int]] = set()
        dirty_step: int | None = None
        for partition, event in batch:
            if self.store.seen(event):
                self.duplicates += 1
                continue
            minute = int(event.time // MINUTE)
            if self.closed_until is not None and minute < self.closed_until:
                if minute < self.closed_until - self.horizon_minutes:
                    self.dropped_late += 1
                    continue
                self.late_events += 1
                step = (minute // STEP_MINUTES + 1) * STEP_MINUTES
                dirty_step = step if dirty_step is None else min(dirty_step, step)
                revised.update((key, minute) for key in event.keys())
            self.store.add(event)
            self.events += 1
            if event.time > self.partition_max.get(partition, float("-inf")):
                self.partition_max[partition] = event.time
        out = EngineOutput()
        out.windows += [window_record(k, m, self.store.minutes[k][m], self.timeline)
                        for k, m in sorted(revised)]
        if dirty_step is not None and self.evaluated_until is not None and dirty_step <= self.evaluated_until:
            self._rewind(dirty_step)
        out.extend(self._advance())
        return out

    def watermark(self) -> float | None:
        if len(self.partition_max) < self.partitions:
            return None
        return min(self.partition_max.values()) - self.lateness

    def heartbeat(self, event_time: float) -> EngineOutput:
        """The live timeline's clock when traffic stops: no partition is behind
        ``event_time`` (the wall clock less a margin, given by the agent's timer). An idle
        partition would otherwise hold the watermark forever, so a live incident would never
        resolve and the wall would show the last busy minute at 3 a.m. A tweet that still
        arrives older than that is late data, revised as any other. No-op before the
        timeline's first tweet (nothing to close, and a first tweet must not arrive late)."""
        if not self.store.minutes:
            return EngineOutput()
        for partition in range(max(self.partitions, len(self.partition_max))):
            if self.partition_max.get(partition, float("-inf")) < event_time:
                self.partition_max[partition] = event_time
        return self._advance()

    def finish(self) -> EngineOutput:
        """Close everything (end of a finite timeline, as in the evaluation harness)."""
        if not self.partition_max:
            return EngineOutput()
        end = max(self.partition_max.values()) + self.lateness + STEP_MINUTES * MINUTE
        self.partition_max = {p: end for p in range(max(self.partitions, len(self.partition_max)))}
        return self._advance()

    # ------------------------------------------------------------------ closing and evaluating

    def _advance(self) -> EngineOutput:
        out = EngineOutput()
        watermark = self.watermark()
        if watermark is None:
            return out
        closed = int(watermark // MINUTE)
        previous = self.closed_until
        if previous is None:
            previous = min(self.store.first_minute.values(), default=closed)
        if closed > previous:
            for key in sorted(self.store.minutes):
                series = self.store.minutes[key]
                for minute in sorted(m for m in series if previous <= m < closed):
                    out.windows.append(window_record(key, minute, series[minute], self.timeline))
            self.closed_until = closed
        elif self.closed_until is None:
            self.closed_until = closed
        last_step = (self.closed_until // STEP_MINUTES) * STEP_MINUTES
        first_step = (self.evaluated_until + STEP_MINUTES if self.evaluated_until is not None
                      else (min(self.store.first_minute.values()) // STEP_MINUTES + 1) * STEP_MINUTES)
        step = first_step
        while step <= last_step:
            if not self._has_work(step):
                step = self._next_step_with_data(step)
                if step is None or step > last_step:
                    self.evaluated_until = last_step  # the quiet steps are settled
                    break
                continue
            self._evaluate(step)
            self.evaluated_until = step
            step += STEP_MINUTES
        out.alerts = self._alert_changes()
        self._prune()
        return out

    def _has_work(self, step: int) -> bool:
        """Whether evaluating ``step`` can change anything: a tweet within the detectors'
        look-back, or an alert still open (it must see its quiet steps to resolve)."""
        lookback = self.cfg.trend_hours * 60
        return self.tracker.any_open() or self.store.has_data(step - lookback, step)

    def _next_step_with_data(self, step: int) -> int | None:
        """The first step after ``step`` whose window holds a tweet (None: no tweet yet)."""
        minute = self.store.next_data_minute(step)
        return None if minute is None else (minute // STEP_MINUTES + 1) * STEP_MINUTES

    def _evaluate(self, step: int) -> None:
        self.steps_evaluated += 1
        self.snapshots[step] = self.tracker.snapshot()
        keys = self.store.keys_active_since(step - self.cfg.trend_hours * 60)
        signals = []
        for key in keys:
            for detector in (threshold, burst):
                signal = detector(self.store, key, step, self.cfg)
                if signal:
                    signals.append(signal)
            signal = slow_rise(self.store, key, step, self.cfg, self._evidence)
            if signal:
                signals.append(signal)
        groups = group_signals(signals, self.store, step, self.cfg, self.tracker.national_open(),
                               self._evidence, self.tracker.national_resolved(),
                               self.tracker.open_locations(), self.tracker.resolved_locations())
        self.tracker.step(step, groups, self.store, self._evidence)

    def _evidence(self, store: WindowStore, key: str, step: int) -> Evidence:
        """:func:`step_evidence`, memoised: a step's evidence reads only minutes before it,
        and :meth:`_rewind` forgets it when late data changes one of those minutes."""
        cached = self.evidence.get((key, step))
        if cached is None:
            cached = self.evidence[(key, step)] = step_evidence(store, key, step)
        return cached

    def _rewind(self, step: int) -> None:
        """Forget evaluations from ``step`` on: restore the alert state as it was then.
        A tweet of minute m changes the evidence of the step holding m (``step``) and of
        later steps whose baseline reads m, never of an earlier step."""
        for cached in [k for k in self.evidence if k[1] >= step]:
            del self.evidence[cached]
        steps = [s for s in self.snapshots if s >= step]
        if steps:
            first = min(steps)
            self.tracker.restore(self.snapshots[first])
            for s in steps:
                del self.snapshots[s]
        # Steps from ``step`` to the first evaluated one were skipped as quiet: they left
        # the alert state as it was, so evaluation resumes at ``step`` itself.
        self.evaluated_until = step - STEP_MINUTES

    def _alert_changes(self) -> list[dict]:
        current = {a.alert_id: a.to_record() for a in self.tracker.history.values()}
        changes = []
        for alert_id, record in current.items():
            before = self.published.get(alert_id)
            if before != record:
                if before is not None and before["detector"] != record["detector"] \
                        and before["status"] != "withdrawn":
                    # ClickHouse keys alerts by (detector, alert_id): retire the old row.
                    changes.append(before | {"status": "withdrawn"})
                changes.append(record)
        for alert_id, record in self.published.items():
            if alert_id not in current and alert_id not in self.settled and record["status"] != "withdrawn":
                changes.append(record | {"status": "withdrawn"})
        for record in changes:
            if record["status"] != "withdrawn" or record["alert_id"] not in current:
                self.published[record["alert_id"]] = record
        return sorted(changes, key=lambda r: (r["updated_at"], r["alert_id"]))

    def _prune(self) -> None:
        if self.evaluated_until is None or self.evaluated_until - self._pruned_at < 60:
            return
        self._pruned_at = self.evaluated_until
        horizon = self.evaluated_until - self.horizon_minutes
        for step in [s for s in self.snapshots if s < horizon]:
            del self.snapshots[step]
        # Only the next evaluations read evidence, as far back as trend_hours (a rewind
        # that reads older evidence again recomputes it, to the same values).
        oldest = self.evaluated_until - self.cfg.trend_hours * 60
        for cached in [k for k in self.evidence if k[1] <= oldest]:
            del self.evidence[cached]
        self.settled.update(self.tracker.forget_resolved_before(horizon))
        detail_until = self.evaluated_until - DETAIL_MINUTES
        # Voices are derived from the authors: computed before the authors go.
        self.store.settle_voices(detail_until)
        for key, series in self.store.minutes.items():
            for minute in [m for m in series if m < self.evaluated_until - RETENTION_MINUTES]:
                self.store.forget(key, minute)
            for minute, agg in series.items():
                if minute < detail_until and (agg.authors or agg.ids):
                    series[minute] = agg.counts_only()

    # ------------------------------------------------------------------ state for recovery

    def alerts(self) -> list[dict]:
        """Every alert record published and not withdrawn, by first-seen time."""
        return sorted((r for r in self.published.values() if r["status"] != "withdrawn"),
                      key=lambda r: (r["first_seen"], r["alert_id"]))
