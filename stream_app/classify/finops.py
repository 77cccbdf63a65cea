"""Money and repeats: the budget governor and the classification cache.

The governor keeps spend under ``max cost per hour/day`` by refusing a paid request
*before* it would cross the limit, which shifts traffic to the next (cheaper) tier
instead of discovering the overrun on the invoice. The cache makes duplicates and
replays free: it is keyed by (normalised text, prompt version, model).
"""

from __future__ import annotations

import hashlib
import time
import unicodedata
from collections import OrderedDict, deque
from functools import lru_cache
from typing import Callable

from stream_app.classify.types import Label

HOUR_S, DAY_S = 3600.0, 86400.0


class BudgetGovernor:
    """Rolling one-hour and one-day spend; 0 means no limit."""

    def __init__(self, max_per_hour: float = 0.0, max_per_day: float = 0.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.max_per_hour, self.max_per_day = max_per_hour, max_per_day
        self._clock = clock
        self._spend: deque[tuple[float, float]] = deque()  # (when, usd)

    def _spent_since(self, horizon_s: float) -> float:
        now = self._clock()
        while self._spend and self._spend[0][0] < now - DAY_S:
            self._spend.popleft()
        return sum(usd for when, usd in self._spend if when >= now - horizon_s)

    def allows(self, estimated_usd: float) -> bool:
        if estimated_usd <= 0:
            return True
        if self.max_per_hour and self._spent_since(HOUR_S) + estimated_usd > self.max_per_hour:
            return False
        if self.max_per_day and self._spent_since(DAY_S) + estimated_usd > self.max_per_day:
            return False
        return True

    def record(self, usd: float) -> None:
        if usd:
            self._spend.append((self._clock(), usd))

    def reserve(self, estimated_usd: float) -> bool:
        """Count an estimate as spent now, if the budget allows it: concurrent requests
        then cannot each pass the check and overrun together. ``settle`` corrects it."""
        if not self.allows(estimated_usd):
            return False
        self.record(estimated_usd)
        return True

    def settle(self, estimated_usd: float, actual_usd: float) -> None:
        self.record(actual_usd - estimated_usd)

    def spent_last_hour(self) -> float:
        return self._spent_since(HOUR_S)

    def spent_last_day(self) -> float:
        return self._spent_since(DAY_S)


@lru_cache(maxsize=65_536)
def text_key(text: str) -> str:
    """The cache identity of a text: case, accents and spacing do not make it new.

    Memoised: the cascade looks each pending tweet up once per configured provider."""
    folded = unicodedata.normalize("NFKD", text.casefold()).encode("ascii", "ignore").decode()
    return hashlib.sha1(" ".join(folded.split()).encode()).hexdigest()


class ClassificationCache:
    """Bounded LRU of labels by (text key, prompt version, model)."""

    def __init__(self, capacity: int = 200_000) -> None:
        self._capacity = capacity
        self._labels: OrderedDict[tuple[str, str, str], Label] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, text: str, prompt_version: str, model: str) -> Label | None:
        key = (text_key(text), prompt_version, model)
        label = self._labels.get(key)
        if label is None:
            self.misses += 1
            return None
        self._labels.move_to_end(key)
        self.hits += 1
        return label

    def put(self, text: str, prompt_version: str, model: str, label: Label) -> None:
        key = (text_key(text), prompt_version, model)
        self._labels[key] = label
        self._labels.move_to_end(key)
        while len(self._labels) > self._capacity:
            self._labels.popitem(last=False)
