-- 0003: the store for exactly-once delivery and for the wall (issue #7).
--
-- tweets is rebuilt with a layout for time-range queries: PARTITION BY month and
-- ORDER BY (created_at, id). ReplacingMergeTree only replaces rows that share the sort
-- key and the partition, so both may only depend on what never changes for a tweet id:
-- its id and its created_at (event time). Labels (sentiment, topic, ...) change on a
-- re-classification and therefore stay out of the key. Monthly, not daily, partitions:
-- an insert may touch at most 100 partitions, and a replayed multi-year dump must fit.
-- Retention (TTL) is applied when the sink opens the store, from settings, so that it
-- stays configurable without a migration (stream_app/storage/retention.py).
--
-- non_replicated_deduplication_window: a retried insert with the same
-- insert_deduplication_token is dropped by ClickHouse instead of written twice.

CREATE TABLE IF NOT EXISTS dallosh.tweets_v3
(
    id             String,
    created_at     DateTime64(3, 'UTC'),
    author         String,
    author_location String,
    in_reply_to    String,
    retweet_count  UInt32,
    favorite_count UInt32,
    is_retweet     Bool,
    text           String,
    text_clean     String,
    mentions       Array(String),
    hashtags       Array(String),
    emojis         Array(String),
    pii_kinds      Array(LowCardinality(String)),
    duplicate_of   String,
    dedup_kind     LowCardinality(String),
    relevance      LowCardinality(String),
    brand          LowCardinality(String),
    lang           LowCardinality(String),
    location       LowCardinality(String),
    region_code    LowCardinality(String),
    sentiment      LowCardinality(String),
    priority       UInt8,
    topic          LowCardinality(String),
    team           LowCardinality(String),
    confidence     Float32,
    tier           LowCardinality(String),
    provider       LowCardinality(String),
    model          LowCardinality(String),
    reason         String,
    run_id         String,
    source         String,
    ingested_at    DateTime64(3, 'UTC'),
    classified_at  DateTime64(3, 'UTC'),
    stored_at      DateTime64(3, 'UTC') DEFAULT now64(3),
    version        UInt64,
    INDEX id_lookup id TYPE bloom_filter GRANULARITY 4,
    -- Rows ClickHouse itself refuses (the sink dead-letters them with the reason).
    CONSTRAINT id_not_empty CHECK id != '',
    CONSTRAINT priority_0_1_2 CHECK priority <= 2
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(created_at)
ORDER BY (created_at, id)
SETTINGS non_replicated_deduplication_window = 1000;

INSERT INTO dallosh.tweets_v3 SELECT * FROM dallosh.tweets;

EXCHANGE TABLES dallosh.tweets AND dallosh.tweets_v3;

DROP TABLE IF EXISTS dallosh.tweets_v3;

ALTER TABLE dallosh.dlq MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE dallosh.provider_calls MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE dallosh.clean_decisions MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE dallosh.alerts MODIFY SETTING non_replicated_deduplication_window = 1000;

-- Per-minute rollup for the wall and the alerts: one cell per minute x topic x sentiment
-- x priority x location x team x relevance, holding the *set* of tweet ids
-- (uniqExact state), not a counter. A materialized view fires on every insert, and a
-- redelivered or replayed tweet is inserted again: a set counts that id once where a
-- SummingMergeTree counter would count it twice. What it cannot undo: a tweet whose
-- labels change on a re-classification (another tier, a re-run with another model) is
-- in the set of its old cell and of its new one, so it is counted in both (the README
-- "Delivery guarantee" section states this; exact counts come from tweets FINAL).
-- last_stored drives the rollup's retention like stored_at does for tweets.
CREATE TABLE IF NOT EXISTS dallosh.tweets_by_minute
(
    minute       DateTime('UTC'),
    topic        LowCardinality(String),
    sentiment    LowCardinality(String),
    priority     UInt8,
    location     LowCardinality(String),
    team         LowCardinality(String),
    relevance    LowCardinality(String),
    ids          AggregateFunction(uniqExact, String),
    last_stored  SimpleAggregateFunction(max, DateTime('UTC'))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, topic, sentiment, priority, location, team, relevance);

CREATE MATERIALIZED VIEW IF NOT EXISTS dallosh.tweets_by_minute_mv TO dallosh.tweets_by_minute AS
SELECT toStartOfMinute(created_at) AS minute, topic, sentiment, priority, location, team,
       relevance, uniqExactState(id) AS ids, max(toDateTime(stored_at, 'UTC')) AS last_stored
FROM dallosh.tweets
GROUP BY minute, topic, sentiment, priority, location, team, relevance;

-- Backfill what was stored before this migration (latest version of each tweet only).
INSERT INTO dallosh.tweets_by_minute
SELECT toStartOfMinute(created_at) AS minute, topic, sentiment, priority, location, team,
       relevance, uniqExactState(id) AS ids, max(toDateTime(stored_at, 'UTC')) AS last_stored
FROM dallosh.tweets FINAL
GROUP BY minute, topic, sentiment, priority, location, team, relevance;

-- The finalised rollup that dashboards and reports read: tweets per cell, each id once.
CREATE VIEW IF NOT EXISTS dallosh.tweets_by_minute_v AS
SELECT minute, topic, sentiment, priority, location, team, uniqExactMerge(ids) AS tweets
FROM dallosh.tweets_by_minute
GROUP BY minute, topic, sentiment, priority, location, team;
