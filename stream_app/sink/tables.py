"""How each sink topic's records become ClickHouse rows.

One :class:`TableSpec` per table: its columns, which of them are timestamps, and the
record type that carries them. Column names equal record field names, so the mapping is
the schema itself rather than hand-written code per table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stream_app.records import (ClassifiedTweet, CleanDecision, DeadLetter, ProviderCall, Record,
                                parse_iso)


@dataclass(frozen=True)
class TableSpec:
    table: str
    record_type: type[Record]
    columns: tuple[str, ...]
    time_columns: frozenset[str]

    def to_row(self, payload: bytes) -> list[Any]:
        """Decode one message into a row; raises ValueError/TypeError/KeyError if it cannot."""
        record = self.record_type.from_json(payload).to_dict()
        return [parse_iso(record[c]) if c in self.time_columns else record[c]
                for c in self.columns]


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
