"""Recognising a tweet dump's columns and turning one CSV row into a raw tweet dict.

Each product field has a list of column names seen in real exports (the seed's export,
Twitter API v1.1 flattened, API v2, the Kaggle airline set); the first one present in
the header wins. ``--map field=column`` overrides any of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from datetime import datetime, timezone
from typing import Mapping

from stream_app.records import iso, parse_iso

FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("id_str", "id", "tweet_id"),  # id_str first: spreadsheets mangle big numeric ids
    "text": ("full_text", "text"),
    "created_at": ("created_at", "tweet_created"),
    "author": ("screen_name", "user.screen_name", "user_screen_name", "user_name", "author_id",
               "name"),
    "author_name": ("name", "user.name"),
    "author_location": ("user_location", "user.location", "tweet_location"),
    "lang": ("lang",),
    "in_reply_to": ("in_reply_to_screen_name", "in_reply_to_status_id"),
    "retweet_count": ("retweet_count", "public_metrics.retweet_count"),
    "favorite_count": ("favorite_count", "like_count", "public_metrics.like_count"),
    "is_retweet": ("retweeted",),
}
REQUIRED_FIELDS = ("id", "text")


class FormatError(ValueError):
    """The file's header cannot be mapped to tweets."""


@dataclass(frozen=True)
class ColumnMapping:
    columns: Mapping[str, str]  # product field -> CSV column

    @classmethod
    def detect(cls, header: list[str], overrides: Mapping[str, str] | None = None) -> "ColumnMapping":
        overrides = dict(overrides or {})
        unknown = set(overrides) - set(FIELD_ALIASES)
        if unknown:
            raise FormatError(f"--map names unknown field(s) {sorted(unknown)}; "
                              f"known fields: {', '.join(FIELD_ALIASES)}")
        missing_columns = {c for c in overrides.values() if c not in header}
        if missing_columns:
            raise FormatError(f"--map names column(s) not in the header: {sorted(missing_columns)}")
        present = set(header)
        columns: dict[str, str] = {}
        for field, aliases in FIELD_ALIASES.items():
            if field in overrides:
                columns[field] = overrides[field]
                continue
            found = next((a for a in aliases if a in present and a not in columns.values()), None)
            if found:
                columns[field] = found
        missing = [f for f in REQUIRED_FIELDS if f not in columns]
        if missing:
            raise FormatError(f"no column for {', '.join(missing)} in header {header[:12]}; "
                              "name it with --map FIELD=COLUMN")
        return cls(columns)

    def to_raw(self, row: Mapping[str, str | None]) -> dict[str, object]:
        """The raw-tweet fields of one row (values not validated here)."""
        cells = [(row.get(column) or "") if column else "" for column in self._ordered_columns]
        (tweet_id, text, created_at, author, author_name, author_location, lang, in_reply_to,
         retweets, favorites, retweeted) = cells
        return {
            "id": tweet_id.strip(),
            "text": text,
            "created_at": normalise_time(created_at.strip()),
            "author": author.strip().lstrip("@"),
            "author_name": author_name.strip(),
            "author_location": author_location.strip(),
            "lang": lang.strip(),
            "in_reply_to": in_reply_to.strip(),
            "retweet_count": _count(retweets),
            "favorite_count": _count(favorites),
            "is_retweet": retweeted.strip().lower() in ("true", "1", "yes") or text.startswith("RT @"),
        }

    @cached_property
    def _ordered_columns(self) -> tuple[str | None, ...]:
        return tuple(self.columns.get(f) for f in FIELD_ALIASES)


# 2026-03-12T14:03:27Z or 2026-03-12T14:03:27.123Z (validity is checked downstream,
# where raw_tweet_problem parses every created_at).
_CANONICAL_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z\Z")
_TIME_FORMATS = (
    "%a %b %d %H:%M:%S %z %Y",   # API v1.1: Wed Oct 10 20:19:24 +0000 2018
    "%Y-%m-%d %H:%M:%S %z",      # Kaggle airline: 2015-02-24 11:35:52 -0800
    "%Y-%m-%d %H:%M:%S",
)


def normalise_time(value: str) -> str:
    """An ISO-8601 UTC string for the time formats of known exports.

    An unparsable value is returned unchanged, so the dead letter shows what was there.
    """
    if not value:
        return ""
    if _CANONICAL_UTC.match(value):  # already ISO UTC: no parse/format round trip needed
        return value[:-1] + ".000Z" if len(value) == 20 else value
    try:
        return iso(parse_iso(value))
    except ValueError:
        pass
    for fmt in _TIME_FORMATS:
        try:
            parsed = datetime.strptime(value, fmt)
        except ValueError:
            continue
        return iso(parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc))
    return value


def _count(value: str) -> int:
    if value.isdigit():
        return int(value)
    try:
        return max(0, int(float(value)))
    except ValueError:
        return 0
