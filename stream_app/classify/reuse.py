"""Copies and retweets reuse their original's classification: counted in volume and
windows, never paying a model call. The clean stage keys a copy by its original's id,
so both reach the same classify partition, where this bounded cache remembers recent
classifications."""

from __future__ import annotations

from collections import OrderedDict

from stream_app.records import ClassifiedTweet, CleanTweet

REUSED_PROVIDER = "dedup"


class RecentClassifications:
    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._by_id: OrderedDict[str, ClassifiedTweet] = OrderedDict()

    def remember(self, tweet: ClassifiedTweet) -> None:
        self._by_id[tweet.id] = tweet
        self._by_id.move_to_end(tweet.id)
        while len(self._by_id) > self._capacity:
            self._by_id.popitem(last=False)

    def reuse_for(self, tweet: CleanTweet, classified_at: str, version: int) -> ClassifiedTweet | None:
        """The copy classified as its original was, or None if the original is unknown here."""
        original = self._by_id.get(tweet.duplicate_of) if tweet.duplicate_of else None
        if original is None:
            return None
        return ClassifiedTweet(
            **tweet.to_dict(), sentiment=original.sentiment, priority=original.priority,
            topic=original.topic, team=original.team, confidence=original.confidence,
            tier=original.tier, provider=REUSED_PROVIDER, model=original.model,
            reason=f"{tweet.dedup_kind} of {original.id}: {original.reason}"[:500],
            classified_at=classified_at, version=version)


