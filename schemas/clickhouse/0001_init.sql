-- 0001: first version of the store. Later migrations refine it; never edit an applied
-- migration, add a new file instead (the runner records a checksum of each).

CREATE TABLE IF NOT EXISTS dallosh.tweets
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
    -- ReplacingMergeTree keeps the row with the highest version: a re-classification
    -- (or a replay) replaces the earlier row of the same tweet id.
    version        UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY id;

CREATE TABLE IF NOT EXISTS dallosh.dlq
(
    dead_letter_id String,
    at             DateTime64(3, 'UTC'),
    run_id         String,
    stage          LowCardinality(String),
    reason         String,
    tweet_id       String,
    source         String,
    payload        String
)
ENGINE = ReplacingMergeTree
ORDER BY (stage, dead_letter_id);

CREATE TABLE IF NOT EXISTS dallosh.provider_calls
(
    call_id        String,
    at             DateTime64(3, 'UTC'),
    run_id         String,
    tier           LowCardinality(String),
    provider       LowCardinality(String),
    model          LowCardinality(String),
    tweets         UInt32,
    input_tokens   UInt32,
    output_tokens  UInt32,
    cost_usd       Float64,
    latency_s      Float32,
    outcome        LowCardinality(String),
    error          String
)
ENGINE = ReplacingMergeTree
ORDER BY (provider, call_id);

CREATE TABLE IF NOT EXISTS dallosh.alerts
(
    alert_id       String,
    detector       LowCardinality(String),
    key            String,
    location       LowCardinality(String),
    severity       LowCardinality(String),
    status         LowCardinality(String),
    window_start   DateTime64(3, 'UTC'),
    window_end     DateTime64(3, 'UTC'),
    observed       Float64,
    expected       Float64,
    score          Float64,
    example_ids    Array(String),
    message        String,
    first_seen     DateTime64(3, 'UTC'),
    updated_at     DateTime64(3, 'UTC'),
    resolved_at    Nullable(DateTime64(3, 'UTC')),
    version        UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (detector, alert_id);
