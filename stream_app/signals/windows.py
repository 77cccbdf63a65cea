"""Event-time tumbling windows: one-minute aggregates per key, summed into the
five-minute detector step and the hour on demand.

Keys: ``all`` (every tweet), ``topic:<topic>`` and ``location:<city>``. Aggregates
are commutative (counts, sets, the smallest example ids), so the windows of a stream
do not depend on the order its tweets arrive in.

Timelines: windows belong to one timeline. Each replay is its own (its run id): an
analyst's dump of 2019 replayed into an installation that holds 2026 is a separate
history, so it never shifts the other's baselines, watermark or alerts, and replaying
the same dump again rebuilds the same windows. Every live connector feeds the one
``live`` timeline (the world as it happens, whatever network it comes from). A replay of
a period the live timeline also saw stays separate: an analysis of the past never pages
on-call nor rewrites what live raised.
"""

from __future__ import annotations

import bisect
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

from stream_app.records import LIVE_TIMELINE, ClassifiedTweet, iso, parse_iso, timeline_of
from datetime import datetime, timezone

MINUTE = 60
STEP_MINUTES = 5                  # the detectors' window
HOUR_MINUTES = 60
KEY_ALL = "all"
MAX_EXAMPLES = 5
HISTORY_GAP_MINUTES = 24 * 60     # no tweet for this long: the history before is not a baseline
TOP_TERMS = 5
HIGH_PRIORITY = 0                 # priority 0 is the most urgent
_WORD = re.compile(r"[^\W\d_]{4,}", re.UNICODE)
_STOPWORDS = frozenset("""avec dans depuis pour plus mais tout tous toute cette sont suis elle
elles nous vous leur leurs quoi quand comme encore toujours rien votre notre être avoir fait
faire très bien aussi just that this with have from your they what when there been were will
about would free freebox https""".split())


@dataclass(frozen=True)
class TweetEvent:
    """What the signals stage needs of a classified tweet."""
    id: str
    time: float            # event time, epoch seconds
    topic: str
    location: str
    negative: bool
    high: bool
    author: str
    terms: tuple[str, ...] = ()
    timeline: str = LIVE_TIMELINE

    @classmethod
    def from_tweet(cls, tweet: ClassifiedTweet) -> "TweetEvent":
        text = (tweet.text_clean or tweet.text).lower()
        terms = tuple(sorted({w for w in _WORD.findall(text) if w not in _STOPWORDS}))[:20]
        return cls(id=tweet.id, time=parse_iso(tweet.created_at).timestamp(), topic=tweet.topic,
                   location=tweet.location, negative=tweet.sentiment == "negative",
                   high=tweet.priority == HIGH_PRIORITY, author=tweet.author, terms=terms,
                   timeline=timeline_of(tweet.run_id))

    def keys(self) -> list[str]:
        keys = [KEY_ALL, f"topic:{self.topic or 'other'}"]
        if self.location:
            keys.append(f"location:{self.location}")
        return keys


@dataclass
class Aggregate:
    volume: int = 0
    negative: int = 0
    high: int = 0
    authors: set[str] = field(default_factory=set)
    terms: Counter = field(default_factory=Counter)
    examples: list[tuple[float, str]] = field(default_factory=list)  # smallest (time, id) negatives
    ids: set[str] = field(default_factory=set)  # kept on the KEY_ALL cells only: replay/redelivery guard

    def add(self, event: TweetEvent) -> None:
        self.volume += 1
        self.negative += event.negative
        self.high += event.high
        if event.author:
            self.authors.add(event.author)
        self.terms.update(event.terms)
        if event.negative:
            self.examples.append((event.time, event.id))
            self.examples.sort()
            del self.examples[MAX_EXAMPLES:]

    def to_dict(self) -> dict[str, Any]:
        return {"volume": self.volume, "negative": self.negative, "high": self.high,
                "authors": sorted(self.authors), "terms": dict(self.terms),
                "examples": [[t, i] for t, i in self.examples], "ids": sorted(self.ids)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Aggregate":
        return cls(volume=data["volume"], negative=data["negative"], high=data["high"],
                   authors=set(data["authors"]), terms=Counter(data["terms"]),
                   examples=[(t, i) for t, i in data["examples"]], ids=set(data.get("ids", ())))


@dataclass(frozen=True)
class Sums:
    """Counts of a key over a span of minutes (what detectors read)."""
    volume: int = 0
    negative: int = 0
    high: int = 0

    @property
    def negative_share(self) -> float:
        return self.negative / self.volume if self.volume else 0.0

    @property
    def high_share(self) -> float:
        return self.high / self.volume if self.volume else 0.0


class WindowStore:
    """One-minute aggregates per key, indexed by minute number (epoch seconds // 60)."""

    def __init__(self) -> None:
        self.minutes: dict[str, dict[int, Aggregate]] = {}
        self.first_minute: dict[str, int] = {}
        self._data_minutes: list[int] | None = []  # sorted minutes holding data; None: stale
        self._stretches: list[int] = []            # first minute of each stretch of data

    def seen(self, event: TweetEvent) -> bool:
        """Whether this tweet id is already counted (a replayed dump, a redelivery after a
        crash, a re-classification): windows count each tweet once, with its first label."""
        cell = self.minutes.get(KEY_ALL, {}).get(int(event.time // MINUTE))
        return cell is not None and event.id in cell.ids

    def add(self, event: TweetEvent) -> tuple[int, list[str]]:
        minute = int(event.time // MINUTE)
        keys = event.keys()
        overall = self.minutes.setdefault(KEY_ALL, {})
        if minute not in overall:
            self._data_minutes = None
        overall.setdefault(minute, Aggregate()).ids.add(event.id)
        for key in keys:
            self.minutes.setdefault(key, {}).setdefault(minute, Aggregate()).add(event)
            if minute < self.first_minute.get(key, minute + 1):
                self.first_minute[key] = minute
        return minute, keys

    def add_cell(self, key: str, minute: int, agg: Aggregate) -> None:
        """Put back a recovered one-minute aggregate (changelog restore)."""
        self.minutes.setdefault(key, {})[minute] = agg
        if minute < self.first_minute.get(key, minute + 1):
            self.first_minute[key] = minute
        if key == KEY_ALL:
            self._data_minutes = None

    def data_minutes(self) -> list[int]:
        """The minutes holding at least one tweet, sorted (what makes the signals' work
        proportional to the data, not to the calendar between tweets)."""
        if self._data_minutes is None:
            self._data_minutes = index = sorted(self.minutes.get(KEY_ALL, {}))
            self._stretches = [m for i, m in enumerate(index)
                               if i == 0 or m - index[i - 1] >= HISTORY_GAP_MINUTES]
        return self._data_minutes

    def history_start(self, minute: int) -> int | None:
        """Where the timeline's history behind ``minute`` starts: after its last gap of a
        day or more without a single tweet (a dump spanning two years, a collector down
        for a day). Baselines must not read a gap as a calm period: it is missing data."""
        self.data_minutes()
        i = bisect.bisect_right(self._stretches, minute)
        return self._stretches[i - 1] if i else None

    def has_data(self, start_minute: int, end_minute: int) -> bool:
        """Whether any tweet falls in minutes [start, end)."""
        index = self.data_minutes()
        i = bisect.bisect_left(index, start_minute)
        return i < len(index) and index[i] < end_minute

    def next_data_minute(self, minute: int) -> int | None:
        """The first minute >= ``minute`` holding a tweet, if any."""
        index = self.data_minutes()
        i = bisect.bisect_left(index, minute)
        return index[i] if i < len(index) else None

    def forget(self, key: str, minute: int) -> None:
        """Drop one cell (pruning, restore)."""
        del self.minutes[key][minute]
        if key == KEY_ALL:
            self._data_minutes = None

    def sums(self, key: str, start_minute: int, end_minute: int) -> Sums:
        """Counts over minutes [start, end)."""
        series = self.minutes.get(key)
        if not series:
            return Sums()
        volume = negative = high = 0
        if end_minute - start_minute > len(series):
            items: Iterable = ((m, a) for m, a in series.items() if start_minute <= m < end_minute)
        else:
            items = ((m, series[m]) for m in range(start_minute, end_minute) if m in series)
        for _, agg in items:
            volume += agg.volume
            negative += agg.negative
            high += agg.high
        return Sums(volume, negative, high)

    def examples(self, key: str, start_minute: int, end_minute: int) -> list[str]:
        series = self.minutes.get(key, {})
        pairs = sorted(p for m in range(start_minute, end_minute) if m in series
                       for p in series[m].examples)
        return [i for _, i in pairs[:MAX_EXAMPLES]]

    def keys_active_since(self, minute: int) -> list[str]:
        # Newest cells are usually the last inserted: scanning backwards stops early.
        return sorted(k for k, series in self.minutes.items()
                      if any(m >= minute for m in reversed(series)))

    def forget_before(self, minute: int) -> None:
        for key, series in self.minutes.items():
            for m in [m for m in series if m < minute]:
                self.forget(key, m)


def window_record(key: str, minute: int, agg: Aggregate,
                  timeline: str = LIVE_TIMELINE) -> dict[str, Any]:
    """A closed one-minute window of one timeline, as published on the windows topic."""
    start = datetime.fromtimestamp(minute * MINUTE, timezone.utc)
    end = datetime.fromtimestamp((minute + 1) * MINUTE, timezone.utc)
    return {"run_id": timeline, "key": key, "window_start": iso(start), "window_end": iso(end),
            "volume": agg.volume, "negative": agg.negative,
            "negative_share": round(agg.negative / agg.volume, 4) if agg.volume else 0.0,
            "high": agg.high, "high_share": round(agg.high / agg.volume, 4) if agg.volume else 0.0,
            "authors": len(agg.authors),
            "top_terms": [t for t, _ in sorted(agg.terms.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_TERMS]]}
