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
hour. The tail of a local incident is not a new one: a signal of a topic or of ``all``
whose evidence began before a city's incident resolved, and that the rest of the
country does not explain, is that incident's echo and pages nobody (see
:func:`group_signals`). Each alert carries a severity level from 1 to 10
(:func:`severity_level`), which decides who is paged.

Each alert also explains itself (:func:`explain`), so the person paged needs to open
nothing: the terms that set it apart from its key's baseline, the representative
complaints of its main cluster (scrubbed text, never the raw one), the distinct people
complaining, the topic and sentiment mix of its tweets, and one sentence built from
those. Explained when it opens, escalates or reopens (what the page says), and again
when it resolves, over the whole incident (what the wall and the report keep).

"Negatives" and "complaints" below are complaining voices (distinct people, see
:mod:`stream_app.signals.windows`), as everywhere the detectors count.
"""

from __future__ import annotations

import copy
import hashlib
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

from stream_app.records import iso
from stream_app.signals.detectors import (DAY_MINUTES, DetectorConfig, Evidence, Signal,
                                          slow_rise, step_evidence)
from stream_app.signals.windows import (HOUR_MINUTES, KEY_ALL, LIVE_TIMELINE, MINUTE, STEP_MINUTES,
                                        WindowStore, text_terms)

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
    severity: str             # the level's word (severity_word), for the wall and reports
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
    level: int = 1            # severity 1-10 (severity_level), never lowered while open
    authors: int = 0          # distinct complaining people of the incident (explain)
    terms: list[str] = field(default_factory=list)   # distinctive terms (distinctive_terms)
    summary: str = ""         # one sentence for the pager (explain)
    representative_ids: list[str] = field(default_factory=list)    # quotes of its main cluster
    representative_texts: list[str] = field(default_factory=list)  # their scrubbed texts
    topic_mix: dict[str, int] = field(default_factory=dict)        # topic -> tweets
    sentiment_mix: dict[str, int] = field(default_factory=dict)    # sentiment -> tweets

    def to_record(self) -> dict[str, Any]:
        status = "resolved" if self.resolved_minute is not None else "firing"
        where = self.location or "national"
        return {
            "alert_id": self.alert_id, "detector": self.detector, "key": self.key,
            "location": self.location, "severity": self.severity, "status": status,
            "window_start": minute_iso(self.window_start), "window_end": minute_iso(self.window_end),
            "observed": float(self.observed), "expected": float(self.expected),
            "score": float(self.score), "example_ids": list(self.example_ids),
            "message": (f"{self.scope} incident ({where}), severity {self.level}/10: "
                        f"{', '.join(self.detectors)}; {self.authors} people complaining; "
                        f"observed {self.observed:g} vs expected {self.expected:g}"
                        + (f'; e.g. "{self.representative_texts[0]}"'
                           if self.representative_texts else "")),
            "first_seen": minute_iso(self.first_minute), "updated_at": minute_iso(self.updated_minute),
            "resolved_at": minute_iso(self.resolved_minute) if self.resolved_minute is not None else None,
            "run_id": self.timeline, "detectors": list(self.detectors),
            "severity_level": self.level, "authors": self.authors,
            "terms": list(self.terms), "summary": self.summary,
            "representative_ids": list(self.representative_ids),
            "representative_texts": list(self.representative_texts),
            "topic_mix": dict(self.topic_mix), "sentiment_mix": dict(self.sentiment_mix),
        }


PAGE_LEVEL = 7            # from this severity level on-call is paged (Grafana's policy)
INCIDENT_SPAN_MINUTES = 6 * HOUR_MINUTES   # the most an incident's measures look back


def severity_level(ratio: float, extra_people: float, places: int, firing_minutes: int) -> int:
    """The severity of an incident, 1 (a faint signal) to 10 (a national outage that lasts):

        level = round(1 + magnitude + people + spread + persistence), within [1, 10]

        magnitude   = log2(observed / expected complaining voices), within [0, 3]
                      (x2 -> 1, x4 -> 2, x8 or more -> 3)
        people      = log2(extra complaining people / 5), within [0, 3]
                      (10 more people than usual -> 1, 20 -> 2, 40 or more -> 3)
        spread      = log2(places rising), within [0, 2]
                      (one city -> 0, two -> 1, four or more -> 2)
        persistence = hours the incident has been firing, within [0, 1]

    Why: the on-call acts on how bad (magnitude), how many customers (people: distinct
    voices, so a flood by a few accounts never scores), how wide (places) and whether
    it lasts (persistence, Sprinklr's filter). Logarithms because each doubling matters
    about as much as the previous one; the caps keep one factor from paging alone.
    Calibration, on ``dallosh eval signals``: a national outage x3 opens at 7-8 (pages),
    a city outage at x20 with dozens of people at 7 (pages), a city's slow rise caught at
    x2 with a score of people at 4 (the channel), rising to 6-7 as it grows and lasts.
    :data:`PAGE_LEVEL` (7) is where the Grafana notification policy pages on-call; below,
    it notifies the SAV channel.
    """
    magnitude = min(3.0, max(0.0, math.log2(ratio))) if ratio > 0 else 0.0
    people = min(3.0, max(0.0, math.log2(extra_people / 5))) if extra_people > 0 else 0.0
    spread = min(2.0, max(0.0, math.log2(places))) if places > 0 else 0.0
    persistence = min(1.0, max(0, firing_minutes) / HOUR_MINUTES)
    return max(1, min(10, int(1 + magnitude + people + spread + persistence + 0.5)))


def severity_word(level: int) -> str:
    """The word of a level (the wall's colour, the report): critical pages."""
    return "critical" if level >= PAGE_LEVEL else "major" if level >= 4 else "warning"


def incident_measures(key: str, signals: list[Signal], first_minute: int, store: WindowStore,
                      step: int, evidence: EvidenceFn) -> tuple[float, float, int, int]:
    """(ratio, extra people, places rising, complaining people) of an incident at ``step``.
    The ratio is over the span of its longest signal (10 minutes at least); people and
    places over the whole incident so far (from its first window, within six hours): a
    city's incident rises in one place; a national one in every place whose complaining
    voices are up by three or more and ``LOCAL_Z`` standard deviations."""
    recent = min(max([2 * STEP_MINUTES] + [s.minutes for s in signals]), INCIDENT_SPAN_MINUTES)
    recent -= recent % STEP_MINUTES
    observed, expected, _ = _counts(store, key, step, recent, evidence)
    ratio = observed / max(expected, 0.5)
    span = min(max(step - first_minute, recent), INCIDENT_SPAN_MINUTES)
    span -= span % STEP_MINUTES
    observed, expected, _ = _counts(store, key, step, span, evidence)
    if key.startswith(LOCATION_PREFIX):
        places = 1
    else:
        places = 0
        for location in sorted(k for k in store.minutes if k.startswith(LOCATION_PREFIX)):
            excess, variance = _excess(store, location, step, span, evidence)
            places += excess >= max(3.0, LOCAL_Z * math.sqrt(max(variance, 1.0)))
    return ratio, max(observed - expected, 0.0), places, observed


TERMS_SHOWN = 5
TERMS_PRIOR = 100.0       # weight of the pooled counts as the prior of both vocabularies
TERMS_Z = 1.96            # a term must be this many standard errors more likely now
TERMS_MIN_COUNT = 3


def distinctive_terms(store: WindowStore, key: str, start: int, end: int,
                      baseline_minutes: int = DAY_MINUTES) -> list[str]:
    """The terms that distinguish a key's tweets in ``[start, end)`` from the same key's
    day before: weighted log-odds with an informative Dirichlet prior (Monroe, Colaresi
    & Quinn 2008, "Fightin' Words"). For a term w with counts y (now) and b (baseline)
    out of n and m terms, and a prior a_w = A (y + b) / (n + m) (A = ``TERMS_PRIOR``):

        delta = log((y + a_w) / (n + A - y - a_w)) - log((b + a_w) / (m + A - b - a_w))
        z     = delta / sqrt(1 / (y + a_w) + 1 / (b + a_w))

    Raw frequency would name what the key always says ("internet", "box"); the log-odds
    against its own baseline name what is new ("panne", "coupure"), and z discounts the
    terms too rare to tell. Kept: z >= ``TERMS_Z`` and seen ``TERMS_MIN_COUNT`` times.
    A key whose day before says less than it says now (a city nobody tweeted from) is
    compared with the whole stream's day before as well: what is usual anywhere. A
    location's own name is left out: "Bordeaux" tells nothing on Bordeaux's page."""
    now, before = store.terms(key, start, end), store.terms(key, start - baseline_minutes, start)
    if key.startswith(LOCATION_PREFIX):
        for word in text_terms(key[len(LOCATION_PREFIX):]):
            now.pop(word, None)
    n, m = sum(now.values()), sum(before.values())
    if m < n and key != KEY_ALL:
        before.update(store.terms(KEY_ALL, start - baseline_minutes, start))
        m = sum(before.values())
    if not n:
        return []
    scored = []
    for term, y in now.items():
        if y < TERMS_MIN_COUNT:
            continue
        b = before.get(term, 0)
        prior = TERMS_PRIOR * (y + b) / (n + m)
        delta = (math.log((y + prior) / (n + TERMS_PRIOR - y - prior))
                 - math.log((b + prior) / (m + TERMS_PRIOR - b - prior)))
        z = delta / math.sqrt(1 / (y + prior) + 1 / (b + prior))
        if z >= TERMS_Z:
            scored.append((-z, term))
    return [term for _, term in sorted(scored)[:TERMS_SHOWN]]


REPRESENTATIVES = 3       # quotes an alert carries (the first one is paged)
CLUSTER_CANDIDATES = 200  # complaints compared pairwise to find the main cluster's centre
MIX_SHOWN = 4             # topics kept in an alert's mix (the rest summed as "other")
QUOTE_SAME = 0.8          # quotes whose terms overlap this much are one quote
_PLACEHOLDER = re.compile(r"<[A-Z_]+>")


def representatives(samples: list[tuple[float, str, str]], terms: list[str],
                    shown: int = REPRESENTATIVES) -> list[tuple[str, str]]:
    """(id, scrubbed text) of the tweets that best stand for an incident's main cluster,
    most central first, one per distinct text.

    The main cluster, as TwitInfo labels a peak by its words: the incident's complaints
    (``samples``: the examples the windows keep) that say its most shared distinctive
    term, i.e. the term of ``terms`` found in the most complaints (all complaints when
    none says one). Within it, each tweet is scored by its mean Jaccard similarity of
    terms with the others (its centrality: the medoid says what most of them say) plus
    the share of the distinctive terms it contains; ties go to the earliest. At most
    ``CLUSTER_CANDIDATES`` complaints, the most recent, are compared (quadratic)."""
    candidates = samples[-CLUSTER_CANDIDATES:]
    if not candidates:
        return []
    # Scrubbing placeholders (<HANDLE>, <PHONE>) are no words of the complaint.
    words = [set(text_terms(_PLACEHOLDER.sub(" ", text))) for _, _, text in candidates]
    saying = {term: sum(term in w for w in words) for term in terms}
    main = max(terms, key=lambda t: (saying[t], -terms.index(t))) if terms else None
    cluster = [k for k, w in enumerate(words) if main is None or not saying[main] or main in w]
    wanted = set(terms)

    def centrality(k: int) -> float:
        others = [len(words[k] & words[j]) / max(1, len(words[k] | words[j]))
                  for j in cluster if j != k]
        return (sum(others) / len(others) if others else 0.0) + (
            len(words[k] & wanted) / len(wanted) if wanted else 0.0)

    ranked = sorted(cluster, key=lambda k: (-centrality(k), candidates[k][0], candidates[k][1]))
    chosen: list[tuple[str, str]] = []
    said: list[set[str]] = []
    for k in ranked:
        _, tweet_id, text = candidates[k]
        # A retweet or a copy (the same words, give or take the "RT <HANDLE>" and a
        # word or two: Jaccard >= QUOTE_SAME) of a chosen quote says nothing more.
        if any(len(words[k] & w) >= QUOTE_SAME * max(1, len(words[k] | w)) for w in said):
            continue
        said.append(words[k])
        chosen.append((tweet_id, text))
        if len(chosen) == shown:
            break
    return chosen


def top_mix(counts: Counter, shown: int = MIX_SHOWN) -> dict[str, int]:
    """The ``shown`` largest labels of a mix, the rest summed as ``other`` (bounded, for
    the record and the page)."""
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    mix = dict(top[:shown])
    rest = sum(n for _, n in top[shown:])
    if rest:
        mix["other"] = mix.get("other", 0) + rest
    return mix


def explain(alert: "OpenAlert", store: WindowStore, step: int, evidence: EvidenceFn) -> None:
    """The alert's explanation: its distinctive terms, representative complaints
    (:func:`representatives`, scrubbed text), topic and sentiment mix of its tweets, and
    its one-sentence summary, e.g. "Bordeaux: 88 complaints from 61 people in 30 min,
    x40 usual, 90% network; 'fibre', 'panne'; started 18:00 UTC". Complaints are
    negative tweets; people, the distinct complaining voices; all over the incident so
    far (within six hours), the ratio against the key's baseline."""
    span = min(max(step - alert.first_minute, 2 * STEP_MINUTES), INCIDENT_SPAN_MINUTES)
    span -= span % STEP_MINUTES
    start = step - span
    alert.terms = distinctive_terms(store, alert.key, start, step)
    quotes = representatives(store.samples(alert.key, start, step), alert.terms)
    alert.representative_ids = [i for i, _ in quotes]
    alert.representative_texts = [t for _, t in quotes]
    topics, sentiments = store.mix(alert.key, start, step)
    alert.topic_mix, alert.sentiment_mix = top_mix(topics), top_mix(sentiments)
    sums = store.sums(alert.key, start, step)
    alert.authors = store.complainers(alert.key, start, step)
    observed, expected = _usual(store, alert.key, alert.first_minute + STEP_MINUTES, step, span,
                                evidence)
    where = alert.location or "France (national)"
    if not alert.location:
        places = sorted(((store.complainers(k, start, step), k[len(LOCATION_PREFIX):])
                         for k in store.minutes if k.startswith(LOCATION_PREFIX)), reverse=True)
        shown = [f"{name} {count}" for count, name in places[:3] if count]
        if shown:
            where += f" ({', '.join(shown)})"
    # Under a quarter of a voice expected, a ratio would be noise: "none usually".
    times = observed / expected if expected >= 0.25 else 0.0
    ratio = (f"x{times:.0f} usual" if times >= 10 else f"x{times:.1f} usual" if times
             else "none usually")
    terms = ", ".join(f"'{t}'" for t in alert.terms[:3])
    # The main topic, when there is one (two tweets in five or more): what kind of
    # incident, for the team that takes it; a topic key is its own topic, not repeated.
    topic = ""
    tweets = sum(topics.values())
    if tweets and not alert.key.startswith("topic:"):
        name, count = max(topics.items(), key=lambda kv: (kv[1], kv[0]))
        if 5 * count >= 2 * tweets:
            topic = f", {100 * count // tweets}% {name}"
    alert.summary = (f"{where}: {sums.negative} complaints from {alert.authors} people in "
                     f"{span} min, {ratio}{topic}" + (f"; {terms}" if terms else "")
                     + f"; started {minute_iso(alert.first_minute)[11:16]} UTC")


def incident_of(signal: Signal, store: WindowStore, step: int, cfg: DetectorConfig,
                evidence: EvidenceFn = step_evidence, open_locations: Iterable[str] = ()) -> str:
    """The incident key a signal belongs to (a location key, a topic key, or ``all``)."""
    if signal.key.startswith(LOCATION_PREFIX):
        return signal.key
    top = (explaining_location(signal, store, step, cfg, evidence, open_locations)
           or excess_location(signal, store, step, cfg, evidence)
           or dominant_location(store, step, cfg))
    return top if top else signal.key


def _usual(store: WindowStore, key: str, first_step: int, step: int, minutes: int,
           evidence: EvidenceFn) -> tuple[int, float]:
    """Observed and usual complaining voices of ``key`` over ``[step - minutes, step)``,
    for the summary's "xN usual". A seasonal baseline (same hour of past days or weeks)
    is usual at every step; a trailing one (a key without a day of history) is taken as
    it was at the incident's first window (``first_step``) for all of them: later, it
    trails over the incident itself, and a three-hour outage would read "x0.9 usual"."""
    _, before, _ = evidence(store, key, first_step)
    observed, expected = 0, 0.0
    for s in range(step - minutes + STEP_MINUTES, step + 1, STEP_MINUTES):
        x, mu, periods = evidence(store, key, s)
        observed += x
        if periods == 0 or math.isnan(mu):
            mu = before
        if not math.isnan(mu):
            expected += mu
    return observed, expected


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
    counts = {key: store.sums(key, step - HOUR_MINUTES, step).voices
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
        counts = {key: store.sums(key, step - span, step).voices for key in locations}
        total = sum(counts.values())
        if not total:
            continue
        best = min(counts, key=lambda k: (-counts[k], k))
        if counts[best] / total < cfg.local_share or counts[best] < MIN_LOCAL_NEGATIVES:
            continue
        if usual_counts is None:
            before = step - USUAL_GAP_MINUTES
            usual_counts = {key: store.sums(key, before - DAY_MINUTES, before).voices
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


def local_echo(signal: Signal, store: WindowStore, step: int, cfg: DetectorConfig,
               resolved_locations: dict[str, int], evidence: EvidenceFn) -> str | None:
    """The resolved local incident that a signal of a topic or of ``all`` is the tail of,
    if any: its evidence began before that city's incident resolved (a CUSUM keeps
    adding up the incident's complaints, and its fading tail, after the city's own
    alert has gone quiet), and the key without that city does not signal: the same
    detector, run on the key's complaining voices and baseline less the city's, stays
    quiet (for a slow rise: the CUSUM over the key minus the city raises no alarm; for
    the others: the key's excess less the city's is under ``LOCAL_Z`` standard
    deviations). A national rise that happens to overlap a city's incident still pages."""
    if signal.key.startswith(LOCATION_PREFIX):
        return None
    for location, resolved in sorted(resolved_locations.items(), key=lambda kv: (-kv[1], kv[0])):
        if step - signal.minutes >= resolved:
            continue
        if signal.detector == "slow_rise":
            def rest(store: WindowStore, key: str, s: int, location: str = location) -> Evidence:
                x, mu, periods = evidence(store, key, s)
                x_city, mu_city, _ = evidence(store, location, s)
                return (max(x - x_city, 0), mu if math.isnan(mu_city) else max(mu - mu_city, 0.0),
                        periods)
            if slow_rise(store, signal.key, step, cfg, rest) is None:
                return location
            continue
        minutes = max(signal.minutes - signal.minutes % STEP_MINUTES, STEP_MINUTES)
        key_excess, variance = _excess(store, signal.key, step, minutes, evidence)
        local_excess, _ = _excess(store, location, step, minutes, evidence)
        if key_excess - max(local_excess, 0.0) < LOCAL_Z * math.sqrt(max(variance, 1.0)):
            return location
    return None


def group_signals(signals: list[Signal], store: WindowStore, step: int, cfg: DetectorConfig,
                  national_open: bool = False, evidence: EvidenceFn = step_evidence,
                  national_resolved: int | None = None, open_locations: Iterable[str] = (),
                  resolved_locations: dict[str, int] | None = None) -> dict[str, list[Signal]]:
    """Incidents of one step: incident key -> its signals. ``national_resolved``: the
    minute the last national incident resolved, if it has; ``open_locations``: the
    location keys with a local incident open; ``resolved_locations``: location key ->
    minute its last local incident resolved."""
    if national_resolved is not None and not national_open:
        # A city's slow rise whose run began before the last national incident ended is
        # that incident's tail (a small city's evidence can finish adding up after it):
        # already paged, not a new incident.
        signals = [s for s in signals if not (s.detector == "slow_rise" and s.key.startswith(
            LOCATION_PREFIX) and step - s.minutes < national_resolved)]
    open_locations = sorted(open_locations)
    groups: dict[str, list[Signal]] = {}
    # The mirror case: the tail of a city's incident, seen on its topic or on the
    # national curve (issue #17: a second page, "national incident: slow_rise", 55
    # minutes after a Bordeaux outage ended). The city's incident still open: the signal
    # updates it; resolved: already paged, dropped.
    echo_of = {key: math.inf for key in open_locations} | dict(resolved_locations or {})
    for signal in signals:
        echo = local_echo(signal, store, step, cfg, echo_of, evidence) if echo_of else None
        if echo is None:
            groups.setdefault(incident_of(signal, store, step, cfg, evidence, open_locations),
                              []).append(signal)
        elif echo in open_locations:
            groups.setdefault(echo, []).append(signal)
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

    def resolved_locations(self) -> dict[str, int]:
        """Location key -> the minute its last local incident resolved."""
        return {key: alert.resolved_minute for key, alert in self.alerts.items()
                if key.startswith(LOCATION_PREFIX) and alert.resolved_minute is not None}

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

    def step(self, step: int, groups: dict[str, list[Signal]], store: WindowStore,
             evidence: EvidenceFn = step_evidence) -> list[dict]:
        """Apply one step's incidents; return the alert records that changed."""
        changed: list[OpenAlert] = []
        for key in sorted(groups):
            strongest = max(groups[key], key=lambda s: (SEVERITY_RANK[s.severity], s.score, s.detector))
            alert = self.alerts.get(key)
            reopen = alert is not None and (alert.resolved_minute is None or
                                            step - alert.resolved_minute <= REOPEN_MINUTES)
            if not reopen:
                alert = self._open(key, step, strongest, store)
                self._grade(alert, groups[key], store, step, evidence)
                explain(alert, store, step, evidence)
                self.alerts[key] = self.history[alert.alert_id] = alert
                changed.append(alert)
                continue
            assert alert is not None
            was_resolved = alert.resolved_minute is not None
            level_before = alert.level
            self._grade(alert, groups[key], store, step, evidence)
            escalated = alert.level > level_before
            new_detectors = sorted({s.detector for s in groups[key]} - set(alert.detectors))
            alert.quiet_since, alert.resolved_minute = None, None
            if escalated or was_resolved or new_detectors:
                alert.detectors += new_detectors
                self._measure(alert, step, strongest)
                explain(alert, store, step, evidence)
                changed.append(alert)
        for key, alert in sorted(self.alerts.items()):
            if key in groups or alert.resolved_minute is not None:
                continue
            if alert.quiet_since is None:
                alert.quiet_since = step - STEP_MINUTES
            if step - alert.quiet_since >= self.cfg.resolve_minutes:
                alert.resolved_minute = alert.quiet_since
                alert.updated_minute = step
                # The whole incident explained, from its first window to its last
                # signal: what the wall and the report keep of it.
                explain(alert, store, alert.resolved_minute, evidence)
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

    def _grade(self, alert: OpenAlert, signals: list[Signal], store: WindowStore, step: int,
               evidence: EvidenceFn) -> None:
        """The incident's severity level (:func:`severity_level`), raised, never lowered
        while it is open (a page is not taken back by a quieter window), and its people.
        A reopened incident is graded afresh."""
        ratio, extra, places, _ = incident_measures(alert.key, signals, alert.first_minute,
                                                         store, step, evidence)
        level = severity_level(ratio, extra, places, step - alert.first_minute - STEP_MINUTES)
        if alert.resolved_minute is not None:
            alert.level = level
        alert.level = max(alert.level, level)
        alert.severity = severity_word(alert.level)

    def _measure(self, alert: OpenAlert, step: int, signal: Signal) -> None:
        alert.window_start, alert.window_end = step - STEP_MINUTES, step
        alert.observed, alert.expected, alert.score = signal.observed, signal.expected, signal.score
        alert.updated_minute = step
