"""The ids a connector produced most recently: a bounded LRU window, so duplicates
(export overlaps, redelivery after a reconnect) are skipped with constant memory."""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterable


class RecentIds:
    def __init__(self, capacity: int, ids: Iterable[str] = ()) -> None:
        self._capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()
        for id_ in ids:
            self.add(id_)

    def __contains__(self, id_: str) -> bool:
        if id_ in self._ids:
            self._ids.move_to_end(id_)
            return True
        return False

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, id_: str) -> None:
        self._ids[id_] = None
        self._ids.move_to_end(id_)
        while len(self._ids) > self._capacity:
            self._ids.popitem(last=False)

    def seen(self, id_: str) -> bool:
        """True if ``id_`` is in the window; remembers it either way."""
        if id_ in self:
            return True
        self.add(id_)
        return False

    def newest(self, n: int) -> list[str]:
        """The ``n`` most recent ids, oldest first."""
        return list(self._ids)[-n:] if n else []
