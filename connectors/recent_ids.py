"""The ids a connector produced most recently: a bounded LRU window, so duplicates
(export overlaps, redelivery after a reconnect) are skipped with constant memory.

With :meth:`RecentIds.check` the window also remembers a 32-bit hash of each id's text
and the line it came from, packed into one int (~36 bytes an id): the same id with the
same text is a duplicate, the same id with a *different* text is a conflict that must
be reported, never skipped as a duplicate (it is how a spreadsheet's rounded ids show).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterable, NamedTuple

_UNKNOWN_TEXT = -1  # remembered by add()/seen(): the text was not given
_HASH_MASK = 0xFFFF_FFFF


class Seen(NamedTuple):
    same_text: bool
    line: int  # where the id was first seen (0: not known)


class RecentIds:
    def __init__(self, capacity: int, ids: Iterable[str] = ()) -> None:
        self._capacity = capacity
        self._ids: OrderedDict[str, int] = OrderedDict()
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
        self._remember(id_, _UNKNOWN_TEXT)

    def _remember(self, id_: str, value: int) -> None:
        self._ids[id_] = value
        self._ids.move_to_end(id_)
        while len(self._ids) > self._capacity:
            self._ids.popitem(last=False)

    def seen(self, id_: str) -> bool:
        """True if ``id_`` is in the window; remembers it either way."""
        if id_ in self:
            return True
        self.add(id_)
        return False

    def check(self, id_: str, text: str, line: int = 0) -> Seen | None:
        """None for an id new to the window (remembered with its text and line), else
        whether it was seen with the same text, and where. An id remembered without its
        text (by :meth:`add`) counts as the same text."""
        ids = self._ids
        known = ids.get(id_)
        if known is None:  # the hot path (~30k rows/s): a new key is already the newest
            ids[id_] = (line << 32) | (hash(text) & _HASH_MASK)
            if len(ids) > self._capacity:
                ids.popitem(last=False)
            return None
        ids.move_to_end(id_)
        if known == _UNKNOWN_TEXT:
            return Seen(True, 0)
        return Seen((known & _HASH_MASK) == (hash(text) & _HASH_MASK), known >> 32)

    def newest(self, n: int) -> list[str]:
        """The ``n`` most recent ids, oldest first."""
        return list(self._ids)[-n:] if n else []
