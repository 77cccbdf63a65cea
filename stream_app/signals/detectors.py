"""The detectors: pure functions of a key's window sums at one five-minute step.

Each returns a :class:`Signal` when it fires, else None. ``step`` is the minute number
where the step's window ends (exclusive): the window is ``[step - 5, step)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from stream_app.signals.windows import HOUR_MINUTES, KEY_ALL, STEP_MINUTES, WindowStore

WEEK_MINUTES = 7 * 24 * 60
SEASONAL_WEEKS = 4
DAY_MINUTES = 24 * 60
SEASONAL_DAYS = 6


@dataclass(frozen=True)
class DetectorConfig:
    high_share: float = 0.30          # threshold detector: share of priority-0 tweets
    high_min_volume_hour: int = 30
    high_min_volume_step: int = 5
    burst_alpha: float = 1e-6         # Poisson tail probability
    burst_ratio: float = 2.8          # last 10 min vs expected
    burst_min_negative: int = 8
    trend_hours: int = 6              # slow rise: Mann-Kendall over this many hours
    trend_z: float = 3.0
    trend_ratio: float = 1.5          # last 2 h negative share vs the start of the span
    trend_min_negative: int = 20
    local_share: float = 0.5          # a location holding this share of negatives is local
    national_locations: int = 3       # this many locations bursting at once is national
    resolve_minutes: int = 30         # quiet time before an alert resolves


@dataclass(frozen=True)
class Signal:
    detector: str
    key: str
    observed: float
    expected: float
    score: float
    severity: str


def poisson_tail(k: int, lam: float) -> float:
    """P(X >= k) for X ~ Poisson(lam), computed in log space (stable for large k)."""
    if k <= 0:
        return 1.0
    lam = max(lam, 1e-9)
    # P(X >= k) = 1 - sum_{i<k} pmf(i); sum the upper tail directly when k > lam.
    if k > lam:
        log_pmf = -lam + k * math.log(lam) - math.lgamma(k + 1)
        total, term, i = 0.0, math.exp(log_pmf), k
        while term > 1e-18 * max(total, 1e-300) and i < k + 10_000:
            total += term
            i += 1
            term *= lam / i
        return min(1.0, total)
    lower, term = 0.0, math.exp(-lam)
    for i in range(k):
        lower += term
        term *= lam / (i + 1)
    return max(0.0, 1.0 - lower)


def expected_negative(store: WindowStore, key: str, step: int, minutes: int) -> float:
    """Expected negatives in ``[step - minutes, step)``, from the best history the key has:

    - the same hour of week, averaged over up to four past weeks;
    - else the same hour of day, averaged over up to six past days;
    - else the trailing three hours (ending 10 minutes before the window), scaled by how
      the key's non-negative traffic changed since: that traffic carries the daily
      rhythm but not the incident, so a morning ramp does not read as a burst.

    NaN when the key has less than an hour of history.
    """
    start = step - minutes
    first = store.first_minute.get(key, start)
    for period, count in ((WEEK_MINUTES, SEASONAL_WEEKS), (DAY_MINUTES, SEASONAL_DAYS)):
        back = [n for n in range(1, count + 1) if start - n * period - 30 >= first]
        if back:
            # The surrounding hour of each past period, scaled to the window: smoother
            # than the same few minutes alone.
            total = sum(store.sums(key, start - n * period - 30, start - n * period + 30).negative
                        for n in back)
            return total / len(back) * minutes / 60
    trail_end = start - 10
    trail_start = max(trail_end - 180, first)
    span = trail_end - trail_start
    if span < 60:
        return math.nan
    trail = store.sums(key, trail_start, trail_end)
    now = store.sums(key, start, step)
    rate = trail.negative / span
    calm_then = (trail.volume - trail.negative) / span
    calm_now = (now.volume - now.negative) / minutes
    rhythm = min(max(calm_now / calm_then, 1.0), 4.0) if calm_then > 0 else 1.0
    return rate * rhythm * minutes


def threshold(store: WindowStore, key: str, step: int, cfg: DetectorConfig) -> Signal | None:
    """High-priority share over the last hour AND the last five minutes (a spike that is
    already over does not page; a slow drift the last minutes do not confirm neither).
    Not run on topic keys: a topic such as ``outage`` is high priority by nature."""
    if key.startswith("topic:"):
        return None
    hour = store.sums(key, step - HOUR_MINUTES, step)
    last = store.sums(key, step - STEP_MINUTES, step)
    if hour.volume < cfg.high_min_volume_hour or last.volume < cfg.high_min_volume_step:
        return None
    if hour.high_share > cfg.high_share and last.high_share > cfg.high_share:
        return Signal("threshold", key, round(hour.high_share, 4), cfg.high_share,
                      round(hour.high_share / cfg.high_share, 3), "critical")
    return None


def burst(store: WindowStore, key: str, step: int, cfg: DetectorConfig) -> Signal | None:
    """Negative count of the last 10 minutes against the seasonal baseline (Poisson tail),
    confirmed by the last five minutes alone still being above twice the baseline."""
    span = 2 * STEP_MINUTES
    observed = store.sums(key, step - span, step).negative
    if observed < cfg.burst_min_negative:
        return None
    expected = expected_negative(store, key, step, span)
    if math.isnan(expected):
        return None
    expected = max(expected, 0.5)
    last = store.sums(key, step - STEP_MINUTES, step).negative
    expected_last = expected * STEP_MINUTES / span
    if observed < cfg.burst_ratio * expected or last < 2 * expected_last:
        return None
    p = poisson_tail(observed, expected)
    if p >= cfg.burst_alpha:
        return None
    ratio = observed / expected
    return Signal("burst", key, observed, round(expected, 3), round(-math.log10(max(p, 1e-300)), 2),
                  "critical" if ratio >= 5 else "major")


def mann_kendall_z(values: list[float]) -> float:
    """Mann-Kendall trend statistic, normal approximation (no tie correction)."""
    n = len(values)
    if n < 4:
        return 0.0
    s = sum((values[j] > values[i]) - (values[j] < values[i])
            for i in range(n - 1) for j in range(i + 1, n))
    var = n * (n - 1) * (2 * n + 5) / 18
    if s == 0:
        return 0.0
    return (s - 1) / math.sqrt(var) if s > 0 else (s + 1) / math.sqrt(var)


def slow_rise(store: WindowStore, key: str, step: int, cfg: DetectorConfig) -> Signal | None:
    """Mann-Kendall over the negative share of half-hour buckets of the last hours: the
    share is free of the daily rhythm, so a steady climb stands out. Per topic and
    location (the overall share moves with the mix of topics)."""
    if key == KEY_ALL:
        return None
    buckets = cfg.trend_hours * 2
    start = step - buckets * 30
    if store.first_minute.get(key, step) > start:
        return None
    sums = [store.sums(key, start + i * 30, start + (i + 1) * 30) for i in range(buckets)]
    recent = store.sums(key, step - 120, step)
    early = store.sums(key, start, start + 120)
    if recent.negative < cfg.trend_min_negative or early.volume == 0 or recent.volume == 0:
        return None
    base_share = max(early.negative_share, 0.02)
    if recent.negative_share < cfg.trend_ratio * base_share:
        return None
    z = mann_kendall_z([s.negative_share for s in sums if s.volume])
    if z < cfg.trend_z:
        return None
    return Signal("slow_rise", key, round(recent.negative_share, 4), round(base_share, 4),
                  round(z, 2), "warning")


DETECTORS = (threshold, burst, slow_rise)
