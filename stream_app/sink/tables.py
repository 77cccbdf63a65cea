"""How each sink topic's records become ClickHouse rows.

One :class:`TableSpec` per table: its columns and the record type that carries them.
Column names equal record field names, so the mapping is the schema itself rather than
hand-written code per table (:mod:`stream_app.sink.rows` checks and inserts the
messages as they are).
"""

from __future__ import annotations

from dataclasses import dataclass

from stream_app.records import Alert, ClassifiedTweet, CleanDecision, DeadLetter, ProviderCall, Record


@dataclass(frozen=True)
class TableSpec:
    table: str
    record_type: type[Record]   # its defaults fill the optional fields a message lacks
    columns: tuple[str, ...]


TWEETS = TableSpec(
    table="dallosh.tweets", record_type=ClassifiedTweet,
    columns=("id", "created_at", "author", "author_location", "in_reply_to", "retweet_count",
             "favorite_count", "is_retweet", "text", "text_clean", "text_scrubbed", "mentions",
             "hashtags", "emojis", "pii_kinds", "duplicate_of", "dedup_kind", "relevance", "brand",
             "lang", "location",
             "region_code", "sentiment", "priority", "topic", "team", "confidence", "tier",
             "provider", "model", "reason", "run_id", "source", "ingested_at",
             "classified_at", "version"),
)
DLQ = TableSpec(
    table="dallosh.dlq", record_type=DeadLetter,
    columns=("dead_letter_id", "at", "run_id", "stage", "reason", "tweet_id", "source", "payload"),
)
PROVIDER_CALLS = TableSpec(
    table="dallosh.provider_calls", record_type=ProviderCall,
    columns=("call_id", "at", "run_id", "tier", "provider", "model", "tweets", "input_tokens",
             "output_tokens", "cost_usd", "latency_s", "outcome", "error"),
)
CLEAN_DECISIONS = TableSpec(
    table="dallosh.clean_decisions", record_type=CleanDecision,
    columns=("decision_id", "at", "run_id", "tweet_id", "created_at", "decision", "action",
             "duplicate_of", "detail"),
)
ALERTS = TableSpec(
    table="dallosh.alerts", record_type=Alert,
    columns=("alert_id", "detector", "key", "location", "severity", "status", "window_start",
             "window_end", "observed", "expected", "score", "example_ids", "message", "first_seen",
             "updated_at", "resolved_at", "version", "run_id", "detectors", "severity_level",
             "authors", "terms", "summary", "representative_ids", "representative_texts",
             "topic_mix", "sentiment_mix"),
)
