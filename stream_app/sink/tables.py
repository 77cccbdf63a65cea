"""How each sink topic's records become ClickHouse rows.

One :class:`TableSpec` per table: its columns, which of them are timestamps, and the
record type that carries them. Column names equal record field names, so the mapping is
the schema itself rather than hand-written code per table.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, dataclass, fields
from datetime import datetime, timezone
from functools import cached_property
from typing import Any

from stream_app.records import Alert, ClassifiedTweet, CleanDecision, DeadLetter, ProviderCall, Record


_REQUIRED = object()


def epoch_millis(text: str) -> int:
    """ISO-8601 text (naive = UTC) as DateTime64(3) ticks: clickhouse-connect writes ints
    as they are, where it would convert a datetime object per value in Python."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return math.floor(moment.timestamp()) * 1000 + moment.microsecond // 1000


@dataclass(frozen=True)
class TableSpec:
    table: str
    record_type: type[Record]
    columns: tuple[str, ...]
    time_columns: frozenset[str]

    def to_row(self, payload: bytes) -> list[Any]:
        """Decode one message into a row; raises ValueError/TypeError/KeyError if it cannot.

        The hot path of the sink: straight from the JSON object to the row, without
        building the record (that cost ~4x more). A required field that is missing
        raises KeyError, as building the record would; a value of the wrong type is
        left for ClickHouse to refuse."""
        data = json.loads(payload)
        if type(data) is not dict:
            raise TypeError(f"expected a JSON object, got {type(data).__name__}")
        get = data.get
        row = [get(column, default) for column, default in self._defaults]
        if _REQUIRED in row:
            raise KeyError(f"missing field {self.columns[row.index(_REQUIRED)]!r}")
        for i in self._time_indexes:
            if row[i] is not None:  # None: a Nullable time (e.g. an alert not resolved yet)
                row[i] = epoch_millis(row[i])
        return row

    @cached_property
    def _defaults(self) -> list[tuple[str, Any]]:
        defaults = {}
        for f in fields(self.record_type):
            if f.default is not MISSING:
                defaults[f.name] = f.default
            elif f.default_factory is not MISSING:
                defaults[f.name] = f.default_factory()
        return [(c, defaults.get(c, _REQUIRED)) for c in self.columns]

    @cached_property
    def _time_indexes(self) -> list[int]:
        return [i for i, c in enumerate(self.columns) if c in self.time_columns]


TWEETS = TableSpec(
    table="dallosh.tweets", record_type=ClassifiedTweet,
    columns=("id", "created_at", "author", "author_location", "in_reply_to", "retweet_count",
             "favorite_count", "is_retweet", "text", "text_clean", "mentions", "hashtags",
             "emojis", "pii_kinds", "duplicate_of", "dedup_kind", "relevance", "brand",
             "lang", "location",
             "region_code", "sentiment", "priority", "topic", "team", "confidence", "tier",
             "provider", "model", "reason", "run_id", "source", "ingested_at",
             "classified_at", "version"),
    time_columns=frozenset({"created_at", "ingested_at", "classified_at"}),
)
DLQ = TableSpec(
    table="dallosh.dlq", record_type=DeadLetter,
    columns=("dead_letter_id", "at", "run_id", "stage", "reason", "tweet_id", "source", "payload"),
    time_columns=frozenset({"at"}),
)
PROVIDER_CALLS = TableSpec(
    table="dallosh.provider_calls", record_type=ProviderCall,
    columns=("call_id", "at", "run_id", "tier", "provider", "model", "tweets", "input_tokens",
             "output_tokens", "cost_usd", "latency_s", "outcome", "error"),
    time_columns=frozenset({"at"}),
)
CLEAN_DECISIONS = TableSpec(
    table="dallosh.clean_decisions", record_type=CleanDecision,
    columns=("decision_id", "at", "run_id", "tweet_id", "created_at", "decision", "action",
             "duplicate_of", "detail"),
    time_columns=frozenset({"at", "created_at"}),
)
ALERTS = TableSpec(
    table="dallosh.alerts", record_type=Alert,
    columns=("alert_id", "detector", "key", "location", "severity", "status", "window_start",
             "window_end", "observed", "expected", "score", "example_ids", "message", "first_seen",
             "updated_at", "resolved_at", "version"),
    time_columns=frozenset({"window_start", "window_end", "first_seen", "updated_at", "resolved_at"}),
)
