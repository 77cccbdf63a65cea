-- 0002: what the clean stage derives (features, dedup, relevance, PII kinds) and its
-- decision log (every dropped, tagged or deduplicated tweet, with the reason).

ALTER TABLE dallosh.tweets
    ADD COLUMN IF NOT EXISTS mentions     Array(String)                 AFTER text_clean,
    ADD COLUMN IF NOT EXISTS hashtags     Array(String)                 AFTER mentions,
    ADD COLUMN IF NOT EXISTS emojis       Array(String)                 AFTER hashtags,
    ADD COLUMN IF NOT EXISTS pii_kinds    Array(LowCardinality(String)) AFTER emojis,
    ADD COLUMN IF NOT EXISTS duplicate_of String                        AFTER pii_kinds,
    ADD COLUMN IF NOT EXISTS dedup_kind   LowCardinality(String)        AFTER duplicate_of,
    ADD COLUMN IF NOT EXISTS relevance    LowCardinality(String)        AFTER dedup_kind,
    ADD COLUMN IF NOT EXISTS brand        LowCardinality(String)        AFTER relevance;

CREATE TABLE IF NOT EXISTS dallosh.clean_decisions
(
    decision_id  String,
    at           DateTime64(3, 'UTC'),
    run_id       String,
    tweet_id     String,
    created_at   DateTime64(3, 'UTC'),
    decision     LowCardinality(String),
    action       LowCardinality(String),
    duplicate_of String,
    detail       String
)
ENGINE = ReplacingMergeTree
ORDER BY (decision, decision_id);
