"""Copies and retweets reuse their original's classification: counted in volume and
windows, never paying a model call. The clean stage keys a copy by its original's id,
so both reach the same classify partition, where this bounded cache remembers recent
classifications.

Memory is bounded two ways, oldest remembered first out past either: a count of
originals (``capacity``) and a budget of characters held (``max_chars``: the sum of the
lengths of the strings kept per original). Only what a copy needs is kept (the label and
who gave it), never the tweet's texts: a raw tweet may be 100,000 characters (the raw
schema's limit), and 100,000 of those would be tens of GB where the labels are a few MB.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from stream_app.records import ClassifiedTweet, CleanTweet

REUSED_PROVIDER = "dedup"
MAX_REASON_CHARS = 500   # what a copy's reason keeps anyway (see reuse_for)


@dataclass(frozen=True, slots=True)
class _Remembered:
    """The label of one classified original, as a copy reuses it."""
    sentiment: str
    priority: int
    topic: str
    team: str
    confidence: float
    tier: str
    model: str
    reason: str

    @property
    def chars(self) -> int:
        return (len(self.sentiment) + len(self.topic) + len(self.team) + len(self.tier)
                + len(self.model) + len(self.reason))


class RecentClassifications:
    def __init__(self, capacity: int = 100_000, max_chars: int = 32_000_000) -> None:
        if capacity < 1 or max_chars < 1:
            raise ValueError("capacity >= 1 and max_chars >= 1 required")
        self._capacity = capacity
        self._max_chars = max_chars
        self._chars = 0
        self._by_id: OrderedDict[str, _Remembered] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_id)

    @property
    def chars(self) -> int:
        """Characters held now (never more than ``max_chars``)."""
        return self._chars

    def remember(self, tweet: ClassifiedTweet) -> None:
        entry = _Remembered(tweet.sentiment, tweet.priority, tweet.topic, tweet.team,
                            tweet.confidence, tweet.tier, tweet.model,
                            tweet.reason[:MAX_REASON_CHARS])
        size = len(tweet.id) + entry.chars
        self._forget(tweet.id)
        if size > self._max_chars:
            return  # alone over the budget (absurd settings): not remembered
        self._by_id[tweet.id] = entry
        self._chars += size
        while len(self._by_id) > self._capacity or self._chars > self._max_chars:
            old_id, old = self._by_id.popitem(last=False)
            self._chars -= len(old_id) + old.chars

    def _forget(self, tweet_id: str) -> None:
        old = self._by_id.pop(tweet_id, None)
        if old is not None:
            self._chars -= len(tweet_id) + old.chars

    def reuse_for(self, tweet: CleanTweet, classified_at: str, version: int) -> ClassifiedTweet | None:
        """The copy classified as its original was, or None if the original is unknown here."""
        original_id = tweet.duplicate_of
        original = self._by_id.get(original_id) if original_id else None
        if original is None:
            return None
        return ClassifiedTweet(
            **tweet.to_dict(), sentiment=original.sentiment, priority=original.priority,
            topic=original.topic, team=original.team, confidence=original.confidence,
            tier=original.tier, provider=REUSED_PROVIDER, model=original.model,
            reason=f"{tweet.dedup_kind} of {original_id}: {original.reason}"[:MAX_REASON_CHARS],
            classified_at=classified_at, version=version)
