"""Recognising a tweet dump's columns and turning one CSV row into a raw tweet dict.

Each product field has a list of column names seen in real exports (the seed's export,
Twitter API v1.1 flattened, API v2 as ``twarc2 csv`` writes it, the Kaggle airline set);
the first one present in the header wins. ``--map field=column`` overrides any of them.

Dumps that went through a spreadsheet
-------------------------------------
Analysts open dumps in Excel or LibreOffice and save them again. What comes back looks
valid row by row but is damaged:

- **ids become numbers**: shown in scientific notation (``1,89705E+18``, ``1.89705E+18``)
  or rounded to 15 significant digits (``1897050123456780000``). Different tweets then
  share one id, and the real ids are gone for good.
- **dates follow the spreadsheet's locale** (``12/03/2026 14:25``, no seconds, no zone)
  and the file is saved as CP1252 with ``;`` between fields (the reader handles those).

Decision: a file whose ids a spreadsheet mangled is **refused before anything is sent**.
Replaying it would merge different tweets under wrong ids, which nothing downstream can
undo, and a one-line error that says how to re-export costs the analyst a minute.
:class:`DumpScan` reads the first :data:`SCAN_ROWS` data rows first and refuses when it
sees a scientific-notation id, ids rounded past their 15th digit, or one id carrying
many different texts. Past the scanned rows, a row whose id is in scientific notation
is dead-lettered (``mangled id``); rounding is only judged over many ids, since a single
genuine id may end in zeros by chance.

Dates: ``dd/mm/yyyy`` or ``mm/dd/yyyy`` is decided by evidence in the scanned rows (a first
number above 12 can only be a day); without evidence the day comes first (European
spreadsheets, this product's users). A time without a zone is taken as UTC. Both
assumptions are said before the replay starts, so a wrong guess is seen, not silent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import Mapping

from stream_app.records import iso

FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("id_str", "id", "tweet_id"),  # id_str first: spreadsheets mangle big numeric ids
    "text": ("full_text", "text"),
    "created_at": ("created_at", "tweet_created"),
    # A handle first (v1.1 screen_name, twarc2's author.username); the Kaggle set names
    # its handle column `name`; a numeric author_id only when nothing readable is there.
    "author": ("screen_name", "user.screen_name", "user_screen_name", "author.username",
               "username", "user_name", "name", "author_id"),
    "author_name": ("name", "user.name", "author.name"),
    "author_location": ("user_location", "user.location", "author.location", "tweet_location"),
    "lang": ("lang",),
    "in_reply_to": ("in_reply_to_screen_name", "in_reply_to_username", "in_reply_to_status_id",
                    "referenced_tweets.replied_to.id"),
    "retweet_count": ("retweet_count", "public_metrics.retweet_count"),
    "favorite_count": ("favorite_count", "like_count", "public_metrics.like_count"),
    # v1.1's flag, or twarc2's id of the retweeted tweet (twarc2 replaces a retweet's
    # "RT @..." text with the original's, so the prefix test below cannot see it).
    "is_retweet": ("retweeted", "referenced_tweets.retweeted.id"),
}
REQUIRED_FIELDS = ("id", "text")
# Spreadsheet and pandas spellings of "no"; anything else in a retweet column means yes.
_FALSY = frozenset({"", "false", "0", "no", "n", "none", "null", "nan", "faux"})


class FormatError(ValueError):
    """The file's header cannot be mapped to tweets."""


@dataclass(frozen=True)
class ColumnMapping:
    columns: Mapping[str, str]  # product field -> CSV column
    # How a d/m/yyyy date is read (decided over the file by DumpScan, see the docstring).
    day_first: bool = True

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
        for field_, aliases in FIELD_ALIASES.items():
            if field_ in overrides:
                columns[field_] = overrides[field_]
                continue
            found = next((a for a in aliases if a in present and a not in columns.values()), None)
            if found:
                columns[field_] = found
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
            "created_at": normalise_time(created_at.strip(), self.day_first),
            "author": author.strip().lstrip("@"),
            "author_name": author_name.strip(),
            "author_location": author_location.strip(),
            "lang": lang.strip(),
            "in_reply_to": in_reply_to.strip(),
            "retweet_count": _count(retweets),
            "favorite_count": _count(favorites),
            "is_retweet": retweeted.strip().lower() not in _FALSY or text.startswith("RT @"),
        }

    @cached_property
    def _ordered_columns(self) -> tuple[str | None, ...]:
        return tuple(self.columns.get(f) for f in FIELD_ALIASES)


# --------------------------------------------------------------------------- times

# 2026-03-12T14:03:27Z or 2026-03-12T14:03:27.123Z (validity is checked downstream,
# where raw_tweet_problem parses every created_at).
_CANONICAL_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z\Z")
_TIME_FORMATS = (
    "%a %b %d %H:%M:%S %z %Y",   # API v1.1: Wed Oct 10 20:19:24 +0000 2018
)
# What spreadsheets write: 12/03/2026 14:25, 12/03/2026 14:25:07, 12.03.2026, 3/12/2026 2:25 PM
_DAY_MONTH_YEAR = re.compile(
    r"(?P<a>\d{1,2})[/.-](?P<b>\d{1,2})[/.-](?P<year>\d{4})"
    r"(?:[ T]+(?P<hour>\d{1,2}):(?P<minute>\d\d)(?::(?P<second>\d\d)(?:[.,](?P<fraction>\d{1,6}))?)?"
    r"\s*(?P<ampm>[AaPp][Mm])?)?"
    r"\s*(?P<zone>Z|UTC|GMT|[+-]\d\d:?\d\d)?\Z")
_UTC_NAMES = (" UTC", " GMT")


def normalise_time(value: str, day_first: bool = True) -> str:
    """An ISO-8601 UTC string for the time formats of known exports and spreadsheets.

    ``day_first`` reads ``03/04/2026`` as 3 April (else as March 4). A time without a
    zone is UTC. An unparsable value is returned unchanged, so the dead letter shows
    what was there.
    """
    if not value:
        return ""
    if _CANONICAL_UTC.match(value):  # already ISO UTC: no parse/format round trip needed
        return value[:-1] + ".000Z" if len(value) == 20 else value
    parsed = parse_time(value, day_first)
    return iso(parsed[0]) if parsed else value


def parse_time(value: str, day_first: bool = True) -> tuple[datetime, bool] | None:
    """``(time in UTC, whether the value stated its zone)``, or None when unreadable."""
    if value.endswith(_UTC_NAMES):
        value = value[:-4] + "+00:00"
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        parsed = _spreadsheet_time(value, day_first)
        if parsed is None:
            for fmt in _TIME_FORMATS:
                try:
                    parsed = datetime.strptime(value, fmt)
                    break
                except ValueError:
                    continue
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc), False
    try:
        return parsed.astimezone(timezone.utc), True
    except OverflowError:  # 9999-12-31T23:00-05:00 is past the last representable UTC time
        return None


def _spreadsheet_time(value: str, day_first: bool) -> datetime | None:
    match = _DAY_MONTH_YEAR.match(value)
    if not match:
        return None
    a, b = int(match["a"]), int(match["b"])
    day, month = (a, b) if day_first else (b, a)
    hour = int(match["hour"] or 0)
    if match["ampm"]:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if match["ampm"].lower() == "pm" else 0)
    zone = match["zone"]
    tz = None
    if zone in ("Z", "UTC", "GMT"):
        tz = timezone.utc
    elif zone:
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        tz = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    try:
        return datetime(int(match["year"]), month, day, hour, int(match["minute"] or 0),
                        int(match["second"] or 0), int((match["fraction"] or "0").ljust(6, "0")),
                        tzinfo=tz)
    except ValueError:  # 31/02, 13 as a month under the file's order, 25:00, ...
        return None


def _count(value: str) -> int:
    """A count cell as an int; anything unreadable (``²``, ``n/a``, ``1e999``) is 0."""
    if value.isascii() and value.isdigit():   # "²".isdigit() is True, int("²") fails
        return int(value)
    try:
        return max(0, int(float(value)))
    except (ValueError, OverflowError):
        return 0


# --------------------------------------------------------------------------- spreadsheet damage

SCAN_ROWS = 1000  # data rows read before the first one is sent
# 1,89705E+18 / 1.89705E+18 / 1.89705e18: a number a spreadsheet displayed; 1.897e+18.0
# never happens. 1897050123456789000.0 / 570306133677760513,0: a float written back.
_SCIENTIFIC_ID = re.compile(r"\d+(?:[.,]\d+)?[eE]\+?\d+\Z")
_DECIMAL_ID = re.compile(r"\d+[.,]0+\Z")
EXCEL_DIGITS = 15  # significant digits a spreadsheet keeps in a number
# The scan refuses a file as "rounded" only when chance cannot explain its zeros: genuine
# 19-digit ids end in 0000 one time in 10,000.
_ROUNDING_CHANCE = 1e-6
# Refused as "different texts under one id" from this share of the scanned rows
# (genuine conflicts are rare: an edited tweet gets a new id).
_COLLAPSE_SHARE = 0.10
_COLLAPSE_MIN = 3


def mangled_id(value: str) -> str | None:
    """How a spreadsheet damaged this id (one row's evidence), or None."""
    if _SCIENTIFIC_ID.match(value):
        return "scientific notation"
    if _DECIMAL_ID.match(value):
        return "a decimal number"
    return None


def rounded_tail(value: str) -> int:
    """How many trailing digits a 15-digit rounding zeroed in this id (0: not rounded)."""
    tail = len(value) - EXCEL_DIGITS
    if tail > 0 and value.isdigit() and value.endswith("0" * tail):
        return tail
    return 0


@dataclass
class DumpScan:
    """What a dump's first rows say about it, read before anything is sent:
    ids a spreadsheet mangled (a refusal), and how its dates must be read."""

    mapping: ColumnMapping
    header: list[str]
    rows: int = 0
    _mangled: tuple[str, int] | None = None               # (id, line) of the first one
    _long_ids: int = 0                                     # ids of 16+ digits
    _rounded: list[tuple[str, int]] = field(default_factory=list)
    _rounding_chance: float = 1.0
    _texts: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> (text hash, line)
    _conflicts: int = 0
    _first_conflict: tuple[str, int, int] | None = None    # id, first line, conflicting line
    _day_first_at: tuple[str, int] | None = None           # a date whose first number > 12
    _month_first_at: tuple[str, int] | None = None         # a date whose second number > 12
    _dmy_dates: int = 0
    _zoneless: tuple[str, int] | None = None

    def add(self, line: int, cells: Mapping[str, str]) -> None:
        self.rows += 1
        columns = self.mapping.columns
        tweet_id = (cells.get(columns["id"]) or "").strip()
        if tweet_id:
            self._add_id(tweet_id, cells.get(columns["text"]) or "", line)
        created_at = (cells.get(columns.get("created_at", "")) or "").strip()
        if created_at:
            self._add_time(created_at, line)

    def _add_id(self, tweet_id: str, text: str, line: int) -> None:
        if self._mangled is None and mangled_id(tweet_id):
            self._mangled = (tweet_id, line)
        if len(tweet_id) > EXCEL_DIGITS and tweet_id.isdigit():
            self._long_ids += 1
            tail = rounded_tail(tweet_id)
            if tail:
                self._rounded.append((tweet_id, line))
                self._rounding_chance *= 10.0 ** -tail
        digest = hash(text)
        seen = self._texts.setdefault(tweet_id, (digest, line))
        if seen[0] != digest:
            self._conflicts += 1
            if self._first_conflict is None:
                self._first_conflict = (tweet_id, seen[1], line)

    def _add_time(self, value: str, line: int) -> None:
        match = _DAY_MONTH_YEAR.match(value)
        if match:
            self._dmy_dates += 1
            a, b = int(match["a"]), int(match["b"])
            if a > 12 >= b and self._day_first_at is None:
                self._day_first_at = (value, line)
            elif b > 12 >= a and self._month_first_at is None:
                self._month_first_at = (value, line)
            if not match["zone"] and self._zoneless is None:
                self._zoneless = (value, line)
            return
        if self._zoneless is None and not _CANONICAL_UTC.match(value):
            parsed = parse_time(value)
            if parsed is not None and not parsed[1]:
                self._zoneless = (value, line)

    @property
    def day_first(self) -> bool:
        return self._month_first_at is None or self._day_first_at is not None

    def refusal(self) -> str | None:
        """Why the file must not be replayed (one line that says how to fix it), or None."""
        column = self.mapping.columns["id"]
        fix = (f"re-export with the {column} column formatted as text"
               + (", or use the id_str column (--map id=id_str)"
                  if "id_str" in self.header and column != "id_str" else ""))
        if self._mangled is not None:
            value, line = self._mangled
            return (f"column {column} holds spreadsheet-mangled ids ({value} at line {line}): "
                    f"Excel/LibreOffice turned them into numbers and rounded them; {fix}")
        if (self._rounded and len(self._rounded) * 2 >= self._long_ids
                and self._rounding_chance <= _ROUNDING_CHANCE):
            value, line = self._rounded[0]
            return (f"column {column} holds spreadsheet-rounded ids ({len(self._rounded)} of "
                    f"{self._long_ids} long ids end in zeros past the {EXCEL_DIGITS}th digit, e.g. "
                    f"{value} at line {line}): Excel/LibreOffice keeps {EXCEL_DIGITS} significant "
                    f"digits; {fix}")
        if self._first_conflict is not None and self._conflicts >= max(
                _COLLAPSE_MIN, _COLLAPSE_SHARE * self.rows):
            value, first, again = self._first_conflict
            return (f"column {column} gives different texts the same id ({self._conflicts} of "
                    f"the first {self.rows} rows; e.g. {value} at lines {first} and {again}): "
                    f"these are not tweet ids, or a spreadsheet rounded them; {fix}, "
                    "or name the id column with --map id=COLUMN")
        if self._day_first_at is not None and self._month_first_at is not None:
            (day_value, day_line), (month_value, month_line) = self._day_first_at, self._month_first_at
            return (f"column {self.mapping.columns['created_at']} mixes day-first and month-first "
                    f"dates ({day_value} at line {day_line}, {month_value} at line {month_line}); "
                    "re-export the dates as yyyy-mm-dd hh:mm:ss")
        return None

    def notes(self) -> list[str]:
        """The assumptions the replay makes about this file's times (said before it starts)."""
        notes = []
        if self._dmy_dates:
            order = "dd/mm/yyyy" if self.day_first else "mm/dd/yyyy"
            evidence = self._day_first_at if self.day_first else self._month_first_at
            why = (f"{evidence[0]} at line {evidence[1]}" if evidence else
                   f"assumed: no day above 12 in the first {self.rows} rows, European order")
            notes.append(f"dates read as {order} ({why})")
        if self._zoneless is not None:
            notes.append(f"zone assumed UTC (none stated, e.g. {self._zoneless[0]} at line "
                         f"{self._zoneless[1]})")
        return notes
