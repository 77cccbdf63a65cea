"""Event-time tumbling windows: one-minute aggregates per key, summed into the
five-minute detector step and the hour on demand.

Keys: ``all`` (every tweet), ``topic:<topic>`` and ``location:<city>``. Aggregates
are commutative (counts, sets, the smallest example ids), so the windows of a stream
do not depend on the order its tweets arrive in.

Distinct voices: the detectors count people, not tweets (one author's 50 tweets are one
voice; a bot flood is not an outage). A cell keeps its authors as keyed hashes (never
the handle: :func:`author_key`) with what each of them said in that minute (any tweet,
a negative one, a priority-0 one: bit flags, OR-ed, so commutative). A cell's *voices*
are its authors who had not said the same kind of thing in that key during the
``VOICE_MEMORY_MINUTES`` before: Downdetector's "a user's first report only", over a
sliding hour. Summed over any span they count the people who started complaining in
it, in the same unit for a window and for its baseline, so the Poisson tests keep
their meaning; someone who complains every ten minutes for a day is one voice, once.
They are derived from the sets (:meth:`WindowStore.voices_of`), cached per cell and
recomputed when late data changes a cell of the hour before; once a cell's details
are dropped (``engine.DETAIL_MINUTES``), its voices are kept as counts.

Explanations: a cell also keeps what an alert's explanation reads (see
:func:`stream_app.signals.alerts.explain`): its tweets' topics and sentiments (counts:
a handful of labels) and the scrubbed text (``text_scrubbed``, PII replaced: never the
raw text, which would put personal data in the state, the alert and the page) of its
``MAX_EXAMPLES`` example complaints, cut at ``SAMPLE_CHARS``. Bounded like the
examples: a cell of a 6,000-tweet burst holds five short texts, not six thousand.

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
import hashlib
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
SAMPLE_CHARS = 200                # an example complaint's scrubbed text is cut here (state size)
HISTORY_GAP_MINUTES = 24 * 60     # no tweet for this long: the history before is not a baseline
TOP_TERMS = 5
HIGH_PRIORITY = 0                 # priority 0 is the most urgent
VOICE_MEMORY_MINUTES = 60         # an author counts again after this long without a word
SAID, NEGATIVE, HIGH = 1, 2, 4    # what an author said in a cell (bit flags)
Voices = tuple[int, int, int]     # new voices of a cell: any tweet, negative, priority 0
_WORD = re.compile(r"[^\W\d_]{4,}", re.UNICODE)
_STOPWORDS = frozenset("""avec dans depuis pour plus mais tout tous toute cette sont suis elle
elles nous vous leur leurs quoi quand comme encore toujours rien votre notre être avoir fait
faire très bien aussi just that this with have from your they what when there been were will
about would free freebox https sans""".split())


def author_key(author: str, tweet_id: str = "") -> str:
    """A tweet's author as the signals stage keeps it: 12 hex digits of a keyed BLAKE2b
    of the handle (48 bits: one collision in ~10^5 among a million authors), so that
    the state (the changelog topic) and the alerts hold no handle. A tweet without an
    author (a dump with no user column) is a voice of its own: the key of its id."""
    name = f"a\x1f{author}" if author else f"t\x1f{tweet_id}"
    return hashlib.blake2b(name.encode(), digest_size=6, person=b"dallosh-voice").hexdigest()


def text_terms(text: str) -> tuple[str, ...]:
    """The terms of a text as the windows count them: words of four letters or more,
    lower-cased, stopwords and the brand's own name left out; sorted, each once."""
    return tuple(sorted({w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS}))


@dataclass(frozen=True)
class TweetEvent:
    """What the signals stage needs of a classified tweet. ``author`` is the author's
    key (:func:`author_key`), never the handle."""
    id: str
    time: float            # event time, epoch seconds
    topic: str
    location: str
    negative: bool
    high: bool
    author: str
    terms: tuple[str, ...] = ()
    timeline: str = LIVE_TIMELINE
    sentiment: str = ""
    text: str = ""         # the scrubbed text, cut at SAMPLE_CHARS ("" when the tweet has none)

    @classmethod
    def from_tweet(cls, tweet: ClassifiedTweet) -> "TweetEvent":
        terms = text_terms(tweet.text_clean or tweet.text)[:20]
        return cls(id=tweet.id, time=parse_iso(tweet.created_at).timestamp(), topic=tweet.topic,
                   location=tweet.location, negative=tweet.sentiment == "negative",
                   high=tweet.priority == HIGH_PRIORITY, author=author_key(tweet.author, tweet.id),
                   terms=terms,
                   timeline=timeline_of(tweet.run_id), sentiment=tweet.sentiment or "",
                   # Never text_clean in its place: an empty scrubbed text stays empty.
                   text=" ".join(tweet.text_scrubbed.split())[:SAMPLE_CHARS])

    @property
    def flags(self) -> int:
        return SAID | (NEGATIVE if self.negative else 0) | (HIGH if self.high else 0)

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
    authors: dict[str, int] = field(default_factory=dict)  # author key -> flags (SAID|NEGATIVE|HIGH)
    terms: Counter = field(default_factory=Counter)
    examples: list[tuple[float, str]] = field(default_factory=list)  # smallest (time, id) negatives
    texts: dict[str, str] = field(default_factory=dict)   # example id -> its scrubbed text
    topics: Counter = field(default_factory=Counter)      # topic -> tweets
    sentiments: Counter = field(default_factory=Counter)  # sentiment -> tweets
    ids: set[str] = field(default_factory=set)  # kept on the KEY_ALL cells only: replay/redelivery guard
    voices: Voices | None = field(default=None, compare=False)  # derived (WindowStore.voices_of); not state

    def add(self, event: TweetEvent) -> None:
        self.volume += 1
        self.negative += event.negative
        self.high += event.high
        author = event.author or author_key("", event.id)
        self.authors[author] = self.authors.get(author, 0) | event.flags
        self.terms.update(event.terms)
        self.topics[event.topic or "other"] += 1
        self.sentiments[event.sentiment or "unknown"] += 1
        if event.negative:
            self.examples.append((event.time, event.id))
            self.examples.sort()
            del self.examples[MAX_EXAMPLES:]
            if event.text:
                self.texts[event.id] = event.text[:SAMPLE_CHARS]
            if len(self.texts) > MAX_EXAMPLES:   # texts follow the examples kept, nothing more
                kept = {i for _, i in self.examples}
                self.texts = {i: t for i, t in self.texts.items() if i in kept}

    def to_dict(self) -> dict[str, Any]:
        return {"volume": self.volume, "negative": self.negative, "high": self.high,
                "authors": dict(sorted(self.authors.items())), "terms": dict(self.terms),
                "examples": [[t, i] for t, i in self.examples], "ids": sorted(self.ids),
                "texts": dict(sorted(self.texts.items())), "topics": dict(self.topics),
                "sentiments": dict(self.sentiments)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Aggregate":
        agg = cls(volume=data["volume"], negative=data["negative"], high=data["high"],
                  terms=Counter(data["terms"]), examples=[(t, i) for t, i in data["examples"]],
                  ids=set(data.get("ids", ())), texts=dict(data.get("texts", {})),
                  topics=Counter(data.get("topics", {})),
                  sentiments=Counter(data.get("sentiments", {})))
        authors = data.get("authors", {})
        if isinstance(authors, dict):
            agg.authors = {str(k): int(v) for k, v in authors.items()}
        else:
            # State written before distinct voices: a list of handles, without what each
            # said. Not kept (handles are personal data); the cell counts its tweets as
            # voices, as the detectors did then.
            agg.voices = (len(set(authors)) or agg.volume, agg.negative, agg.high)
        return agg

    def counts_only(self) -> "Aggregate":
        """The cell without its details (authors, terms, examples, texts, mixes), voices kept."""
        return Aggregate(self.volume, self.negative, self.high, voices=self.voices)


@dataclass(slots=True)
class Sums:
    """Counts of a key over a span of minutes (what detectors read): tweets (the wall's
    volumes) and voices (people who started saying so in the span; what detectors test)."""
    volume: int = 0
    negative: int = 0
    high: int = 0
    authors: int = 0          # voices of any tweet
    voices: int = 0           # voices of a negative tweet: distinct complaining people
    high_voices: int = 0      # voices of a priority-0 tweet

    @property
    def negative_share(self) -> float:
        return self.negative / self.volume if self.volume else 0.0

    @property
    def high_share(self) -> float:
        return self.high / self.volume if self.volume else 0.0


@dataclass
class _VoiceCursor:
    """Where a key's voices are computed up to, sliding one minute at a time: ``counts``
    holds, for each (author, flag), the cells of ``[minute - VOICE_MEMORY_MINUTES,
    minute)`` where the author said it."""
    minute: int
    counts: Counter = field(default_factory=Counter)

    def new_voices(self, cell: Aggregate) -> Voices:
        said = negative = high = 0
        counts = self.counts
        for author, flags in cell.authors.items():
            said += (author, SAID) not in counts
            if flags & NEGATIVE and (author, NEGATIVE) not in counts:
                negative += 1
            if flags & HIGH and (author, HIGH) not in counts:
                high += 1
        return said, negative, high

    def count(self, cell: Aggregate | None, sign: int) -> None:
        if cell is None:
            return
        counts = self.counts
        for author, flags in cell.authors.items():
            for bit in (SAID, NEGATIVE, HIGH):
                if flags & bit:
                    key = (author, bit)
                    left = counts[key] + sign
                    if left:
                        counts[key] = left
                    else:
                        del counts[key]


class WindowStore:
    """One-minute aggregates per key, indexed by minute number (epoch seconds // 60)."""

    def __init__(self) -> None:
        self.minutes: dict[str, dict[int, Aggregate]] = {}
        self.first_minute: dict[str, int] = {}
        self._data_minutes: list[int] | None = []  # sorted minutes holding data; None: stale
        self._stretches: list[int] = []            # first minute of each stretch of data
        self._cursors: dict[str, _VoiceCursor] = {}
        self._last_minute: dict[str, int] = {}    # newest minute of each key
        self._settled_until: int | None = None     # voices of every cell before are computed

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
            self._changed(key, minute)
        return minute, keys

    def _changed(self, key: str, minute: int) -> None:
        """A cell's authors changed: its voices, and those of the hour after it, are to be
        recomputed. (In order, a tweet lands in the key's newest minute: nothing after.)"""
        series = self.minutes[key]
        last = self._last_minute.get(key)
        if last is None or minute >= last:
            self._last_minute[key] = minute
            series[minute].voices = None
            cursor = self._cursors.get(key)
            if cursor is not None and minute < cursor.minute:
                del self._cursors[key]
            return
        for m in range(minute, minute + VOICE_MEMORY_MINUTES + 1):
            cell = series.get(m)
            if cell is not None:
                cell.voices = None
        cursor = self._cursors.get(key)
        if cursor is not None and minute < cursor.minute + VOICE_MEMORY_MINUTES:
            del self._cursors[key]

    def voices_of(self, key: str, minute: int) -> Voices:
        """The new voices of a cell (see the module docstring): its authors who said the
        same kind of thing in no cell of the ``VOICE_MEMORY_MINUTES`` before. Computed by a
        per-key cursor that slides minute by minute (each cell counted in and out once),
        and cached on the cell."""
        series = self.minutes[key]
        cell = series[minute]
        if cell.voices is not None:
            return cell.voices
        cursor = self._cursors.get(key)
        if cursor is None or not cursor.minute <= minute <= cursor.minute + VOICE_MEMORY_MINUTES:
            cursor = self._cursors[key] = _VoiceCursor(minute)
            for m in range(minute - VOICE_MEMORY_MINUTES, minute):
                cursor.count(series.get(m), +1)
        for m in range(cursor.minute, minute + 1):
            each = series.get(m)
            if each is not None:
                if each.voices is None:
                    each.voices = cursor.new_voices(each)
                cursor.count(each, +1)
            cursor.count(series.get(m - VOICE_MEMORY_MINUTES), -1)
        cursor.minute = minute + 1
        return cell.voices  # type: ignore[return-value]

    def settle_voices(self, before: int) -> None:
        """Compute the voices of every cell before ``before`` (and of the hour after, whose
        voices read them), before their details are dropped; then forget the cursors,
        whose counts would still hold the dropped authors."""
        until = before + VOICE_MEMORY_MINUTES
        since = self._settled_until
        for key, series in self.minutes.items():
            if since is None or until - since > len(series):
                minutes: Iterable[int] = sorted(m for m in series if m < until)
            else:
                minutes = range(since, until)
            for minute in minutes:
                cell = series.get(minute)
                if cell is not None and cell.voices is None:
                    self.voices_of(key, minute)
        self._settled_until = until
        self._cursors.clear()

    def add_cell(self, key: str, minute: int, agg: Aggregate) -> None:
        """Put back a recovered one-minute aggregate (changelog restore)."""
        self.minutes.setdefault(key, {})[minute] = agg
        if minute < self.first_minute.get(key, minute + 1):
            self.first_minute[key] = minute
        if agg.authors:
            self._changed(key, minute)
        else:
            self._last_minute[key] = max(minute, self._last_minute.get(key, minute))
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
        cursor = self._cursors.get(key)
        if cursor is not None and minute >= cursor.minute - VOICE_MEMORY_MINUTES:
            del self._cursors[key]
        if key == KEY_ALL:
            self._data_minutes = None

    def sums(self, key: str, start_minute: int, end_minute: int) -> Sums:
        """Counts over minutes [start, end)."""
        series = self.minutes.get(key)
        if not series:
            return Sums()
        volume = negative = high = said = voices = high_voices = 0
        if end_minute - start_minute > len(series):
            minutes: Iterable[int] = [m for m in series if start_minute <= m < end_minute]
        else:
            minutes = range(start_minute, end_minute)
        get = series.get
        for m in minutes:
            agg = get(m)
            if agg is None:
                continue
            volume += agg.volume
            negative += agg.negative
            high += agg.high
            cell = agg.voices
            if cell is None:
                cell = self.voices_of(key, m)
            said += cell[0]
            voices += cell[1]
            high_voices += cell[2]
        return Sums(volume, negative, high, said, voices, high_voices)

    def examples(self, key: str, start_minute: int, end_minute: int) -> list[str]:
        series = self.minutes.get(key, {})
        pairs = sorted(p for m in range(start_minute, end_minute) if m in series
                       for p in series[m].examples)
        return [i for _, i in pairs[:MAX_EXAMPLES]]

    def samples(self, key: str, start_minute: int, end_minute: int) -> list[tuple[float, str, str]]:
        """(time, id, scrubbed text) of the example complaints of a key over minutes
        [start, end) that have a text, oldest first: an alert's candidate quotes."""
        series = self.minutes.get(key, {})
        found = []
        for m in range(start_minute, end_minute):
            cell = series.get(m)
            if cell is not None and cell.texts:
                found.extend((t, i, cell.texts[i]) for t, i in cell.examples if i in cell.texts)
        return sorted(found)

    def mix(self, key: str, start_minute: int, end_minute: int) -> tuple[Counter, Counter]:
        """(topics, sentiments) of a key's tweets over minutes [start, end): tweets per label
        (cells that still hold their details)."""
        series = self.minutes.get(key, {})
        topics: Counter = Counter()
        sentiments: Counter = Counter()
        for m in range(start_minute, end_minute):
            cell = series.get(m)
            if cell is not None:
                topics.update(cell.topics)
                sentiments.update(cell.sentiments)
        return topics, sentiments

    def people(self, key: str, start_minute: int, end_minute: int) -> tuple[int, int]:
        """Distinct authors of a key over minutes [start, end), and those of them who posted
        a priority-0 tweet: a share of people within one span (unlike voices, which count
        who *started* saying something, and so are not shares of each other). Reads the
        cells' details: spans within ``engine.DETAIL_MINUTES``."""
        series = self.minutes.get(key, {})
        said: dict[str, int] = {}
        for m in range(start_minute, end_minute):
            cell = series.get(m)
            if cell is not None:
                for author, flags in cell.authors.items():
                    said[author] = said.get(author, 0) | flags
        return len(said), sum(1 for flags in said.values() if flags & HIGH)

    def complainers(self, key: str, start_minute: int, end_minute: int) -> int:
        """Distinct authors of a negative tweet of a key over minutes [start, end): the
        people an alert names (unlike voices, someone complaining again after an hour is
        still one person). Reads the cells' details (``engine.DETAIL_MINUTES``)."""
        series = self.minutes.get(key, {})
        found: set[str] = set()
        for m in range(start_minute, end_minute):
            cell = series.get(m)
            if cell is not None:
                found.update(a for a, flags in cell.authors.items() if flags & NEGATIVE)
        return len(found)

    def terms(self, key: str, start_minute: int, end_minute: int) -> Counter:
        """The terms of a key's tweets over minutes [start, end) (cells that still hold
        their details: ``engine.DETAIL_MINUTES``)."""
        series = self.minutes.get(key, {})
        total: Counter = Counter()
        for m in range(start_minute, end_minute):
            cell = series.get(m)
            if cell is not None:
                total.update(cell.terms)
        return total

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
