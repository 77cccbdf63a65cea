"""The detectors: pure functions of a key's window sums at one five-minute step.

Each returns a :class:`Signal` when it fires, else None. ``step`` is the minute number
where the step's window ends (exclusive): the window is ``[step - 5, step)``.

They count people, not tweets: ``Sums.voices`` (distinct complaining authors, see
:mod:`stream_app.signals.windows`) against a baseline in the same unit, and the share of
priority-0 voices. One author's flood, or copies from a handful of accounts, adds a
voice per account and hour, never an outage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

from stream_app.signals.windows import HOUR_MINUTES, STEP_MINUTES, WindowStore

WEEK_MINUTES = 7 * 24 * 60
SEASONAL_WEEKS = 2                # the engine keeps 16 days of minutes: two past weeks
MIN_WEEKS = 2                     # one past week is one sample: until two, past days
DAY_MINUTES = 24 * 60
SEASONAL_DAYS = 6
PAST_INCIDENT_SD = 4.0


@dataclass(frozen=True)
class DetectorConfig:
    high_share: float = 0.30          # threshold detector: share of priority-0 tweets
    high_min_volume_hour: int = 60    # a 30 % share of fewer voices is too often chance
    high_min_volume_step: int = 5
    burst_alpha: float = 1e-6         # Poisson tail probability
    burst_ratio: float = 2.8          # last 10 min vs expected
    burst_min_negative: int = 8       # complaining voices, over the 10 minutes
    trend_hours: int = 6              # slow rise: the CUSUM looks back this many hours
    trend_design_ratio: float = 2.0   # the rate ratio the CUSUM is tuned to detect
    trend_threshold: float = 8.5      # log-likelihood ratio (nats) from which it fires
    trend_ratio: float = 1.5          # least observed / expected over the span it accumulates
    trend_min_negative: int = 20      # least complaining voices over that span
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
    minutes: int = STEP_MINUTES       # the span the observed / expected counts cover


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
    """Expected complaining voices in ``[step - minutes, step)``; see :func:`baseline_negative`."""
    return baseline_negative(store, key, step, minutes)[0]


def baseline_negative(store: WindowStore, key: str, step: int, minutes: int) -> tuple[float, int]:
    """Expected complaining voices (``Sums.voices``) in ``[step - minutes, step)`` and the
    number of past periods the estimate averages (0 for the trailing estimate), from the
    best history the key has:

    - the same hour of week, averaged over the two past weeks once the key has them
      (one week is a single sample, noisier than six days);
    - else the same hour of day, averaged over up to six past days;
    - else the trailing three hours (ending 10 minutes before the window), scaled by how
      the key's other voices changed since: they carry the daily rhythm but not the
      incident, so a morning ramp does not read as a burst.

    A past period standing far above the others (an incident then) is left out; see
    :func:`without_past_incident`. NaN when the key has less than an hour of history.
    History starts with the key's first tweet, or after the timeline's last day-long
    gap without tweets (:meth:`WindowStore.history_start`), whichever is later.
    """
    start = step - minutes
    first = max(store.first_minute.get(key, start), store.history_start(start) or start)
    for period, count in ((WEEK_MINUTES, SEASONAL_WEEKS), (DAY_MINUTES, SEASONAL_DAYS)):
        back = [n for n in range(1, count + 1) if start - n * period - 30 >= first]
        if len(back) >= (MIN_WEEKS if period == WEEK_MINUTES else 1):
            # The surrounding hour of each past period, scaled to the window: smoother
            # than the same few minutes alone.
            counts = [store.sums(key, start - n * period - 30, start - n * period + 30).voices
                      for n in back]
            counts = without_past_incident(counts)
            return sum(counts) / len(counts) * minutes / 60, len(counts)
    trail_end = start - 10
    trail_start = max(trail_end - 180, first)
    span = trail_end - trail_start
    if span < 60:
        return math.nan, 0
    trail = store.sums(key, trail_start, trail_end)
    now = store.sums(key, start, step)
    rate = trail.voices / span
    calm_then = max(trail.authors - trail.voices, 0) / span
    calm_now = max(now.authors - now.voices, 0) / minutes
    rhythm = min(max(calm_now / calm_then, 1.0), 4.0) if calm_then > 0 else 1.0
    return rate * rhythm * minutes, 0


def without_past_incident(counts: list[int]) -> list[int]:
    """The counts of the past periods, less the largest when it stands more than
    ``PAST_INCIDENT_SD`` Poisson standard deviations above the mean of the others (with
    four periods or more, so that three remain): an incident last week or yesterday must
    not raise today's baseline and hide a new one."""
    if len(counts) < 4:
        return counts
    top = max(counts)
    others = list(counts)
    others.remove(top)
    mean = sum(others) / len(others)
    if top > mean + PAST_INCIDENT_SD * math.sqrt(mean + 1):
        return others
    return counts


def threshold(store: WindowStore, key: str, step: int, cfg: DetectorConfig) -> Signal | None:
    """High-priority share over the last hour AND the last five minutes (a spike that is
    already over does not page; a slow drift the last minutes do not confirm neither),
    of the tweets and of the people alike: an account posting forty urgent tweets is one
    urgent person among the distinct authors of the span (:meth:`WindowStore.people`),
    so a flood raises the tweet share alone. Not run on topic keys: a topic such as
    ``outage`` is high priority by nature."""
    if key.startswith("topic:"):
        return None
    hour = store.sums(key, step - HOUR_MINUTES, step)
    last = store.sums(key, step - STEP_MINUTES, step)
    if hour.volume < cfg.high_min_volume_hour or last.volume < cfg.high_min_volume_step:
        return None
    if hour.high_share <= cfg.high_share or last.high_share <= cfg.high_share:
        return None
    hour_people, hour_high = store.people(key, step - HOUR_MINUTES, step)
    last_people, last_high = store.people(key, step - STEP_MINUTES, step)
    if hour_high <= cfg.high_share * hour_people or last_high <= cfg.high_share * last_people:
        return None
    return Signal("threshold", key, round(hour.high_share, 4), cfg.high_share,
                  round(hour.high_share / cfg.high_share, 3), "critical", HOUR_MINUTES)


def burst(store: WindowStore, key: str, step: int, cfg: DetectorConfig) -> Signal | None:
    """Complaining voices of the last 10 minutes against the seasonal baseline (Poisson tail),
    confirmed by each of its two five-minute windows alone being above twice the baseline
    and significant: an incident that lasts, not a spike of a few minutes (which, on a key
    it is concentrated in, such as its topic, would dwarf the 10-minute baseline alone)."""
    span = 2 * STEP_MINUTES
    observed = store.sums(key, step - span, step).voices
    if observed < cfg.burst_min_negative:
        return None
    expected = expected_negative(store, key, step, span)
    if math.isnan(expected):
        return None
    expected = max(expected, 0.5)
    if observed < cfg.burst_ratio * expected:
        return None
    last = store.sums(key, step - STEP_MINUTES, step).voices
    expected_half = expected * STEP_MINUTES / span
    for half in (observed - last, last):
        # Each half alone: twice the baseline, and significant at the square root of
        # alpha (the two halves together then meet alpha).
        if half < 2 * expected_half or poisson_tail(half, expected_half) >= math.sqrt(cfg.burst_alpha):
            return None
    p = poisson_tail(observed, expected)
    if p >= cfg.burst_alpha:
        return None
    ratio = observed / expected
    return Signal("burst", key, observed, round(expected, 3), round(-math.log10(max(p, 1e-300)), 2),
                  "critical" if ratio >= 5 else "major", span)


Evidence = tuple[int, float, int]
"""One five-minute step of a key: (complaining voices, expected voices, past periods behind the
expectation; 0 for the trailing estimate). Expected is NaN without an hour of history."""


def step_evidence(store: WindowStore, key: str, step: int) -> Evidence:
    """The evidence of the five-minute window ``[step - 5, step)``. It reads only minutes
    before ``step``, so it is final once those minutes are (the engine memoises it and
    forgets it when late data revises the window or its history)."""
    expected, periods = baseline_negative(store, key, step, STEP_MINUTES)
    return store.sums(key, step - STEP_MINUTES, step).voices, expected, periods


@dataclass(frozen=True)
class Alarm:
    """A CUSUM crossing: where it happened and what the run that crossed holds."""
    index: int           # position of the step in the evidence
    statistic: float     # log-likelihood ratio of the run (nats)
    observed: int        # negatives of the run
    expected: float      # expected negatives of the run
    steps: int           # length of the run, in steps


def poisson_cusum(evidence: Sequence[Evidence], design_ratio: float, threshold: float,
                  min_negative: int = 0, min_ratio: float = 0.0) -> Alarm | None:
    """One-sided Poisson CUSUM for a rise of the rate by ``design_ratio`` over the
    expectation, run over ``evidence`` (oldest step first): the alarm still in force at
    its last step, or None.

    Per step the log-likelihood ratio of "rate x design_ratio" against "rate as expected"
    is ``x ln(r) - mu (r - 1)``; the statistic is Page's CUSUM, the largest sum of these
    over the runs that end at the step (it restarts from zero when it falls below). The
    expectation is itself an estimate from ``n`` past periods, so observed minus expected
    has ``1 + 1/n`` times the Poisson variance: each term is divided by that factor
    (quasi-likelihood), which keeps a key with one day or week of history from paging on
    the noise of its baseline. Steps without an expectation add nothing. No step adds
    more than a quarter of ``threshold``: a slow rise shows over several windows, and a
    spike of a few minutes (whose likelihood ratio alone can be huge) is not one.

    An alarm is a step where the statistic reaches ``threshold`` with a run holding at
    least ``min_negative`` negatives at ``min_ratio`` times the expectation or more, and
    whose last hour still adds evidence (the tail of an incident that is over does not
    raise one). It stays in force until the mirror CUSUM, for "back to the expectation"
    against "still x design_ratio" (the same terms, negated), restarted at the alarm,
    reaches a quarter of ``threshold``; then the statistic starts again from zero. So a
    rise that goes on keeps one alarm, and one that is over ends it, the sooner the more
    tweets the key has.
    """
    log_ratio, slope = math.log(design_ratio), design_ratio - 1
    recent, cap = HOUR_MINUTES // STEP_MINUTES, threshold / 4
    statistic, observed, expected, terms = 0.0, 0, 0.0, []
    alarm, back = None, 0.0
    for index, (x, mu, periods) in enumerate(evidence):
        if mu != mu:                      # NaN: no baseline yet
            continue
        term = (x * log_ratio - mu * slope) * (periods / (periods + 1) if periods > 1 else 0.5)
        if term > cap:
            term = cap
        if alarm is not None:
            back = max(0.0, back - term)
            if back >= threshold / 4:
                alarm = None
            continue
        statistic += term
        observed += x
        expected += mu
        terms.append(term)
        if statistic <= 0:
            statistic, observed, expected, terms = 0.0, 0, 0.0, []
        elif (statistic >= threshold and observed >= min_negative
              and observed >= min_ratio * expected and sum(terms[-recent:]) > 0):
            alarm, back = Alarm(index, statistic, observed, expected, len(terms)), 0.0
            statistic, observed, expected, terms = 0.0, 0, 0.0, []
    return alarm


def slow_rise(store: WindowStore, key: str, step: int, cfg: DetectorConfig,
              evidence: Callable[[WindowStore, str, int], Evidence] = step_evidence) -> Signal | None:
    """A sustained rise of the complaining voices against the seasonal baseline: a Poisson
    CUSUM (:func:`poisson_cusum`) over the five-minute steps of the last ``trend_hours``,
    tuned to a rate ratio of ``trend_design_ratio``, with alarms at ``trend_threshold``
    nats over runs of at least ``trend_min_negative`` voices at ``trend_ratio`` times
    the expectation or more (a minimum volume, and no paging on a large key for a rise
    too small to matter). It fires while an alarm is in force. Counts, not shares, so
    the few extra complaints of a small city add up step after step; on every key.

    ``evidence`` gives a step's :data:`Evidence`; the engine passes a memoised
    :func:`step_evidence`, the result is the same."""
    first = step - cfg.trend_hours * HOUR_MINUTES + STEP_MINUTES
    rows = [evidence(store, key, s) for s in range(first, step + 1, STEP_MINUTES)]
    alarm = poisson_cusum(rows, cfg.trend_design_ratio, cfg.trend_threshold,
                          cfg.trend_min_negative, cfg.trend_ratio)
    if alarm is None:
        return None
    minutes = (alarm.steps + len(rows) - 1 - alarm.index) * STEP_MINUTES
    return Signal("slow_rise", key, alarm.observed, round(alarm.expected, 3),
                  round(alarm.statistic, 2), "warning", minutes)


DETECTORS = (threshold, burst, slow_rise)
