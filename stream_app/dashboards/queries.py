"""Every ClickHouse query of the dashboards and alert rules, with what its panel needs.

Queries use the grafana-clickhouse-datasource macros (``$__timeFilter(col)``,
``$__timeInterval(col)``, ``$__fromTime``/``$__toTime``) and dashboard variables
(``${name}``); tests/test_grafana_sql.py expands them the way the plugin and Grafana do
and runs every query on the real schema after a replay.

Time series on the wall read the per-minute rollup ``dallosh.tweets_by_minute_v``
(schemas/clickhouse/0003), so a refreshing wall never scans raw tweets; only the
"latest high-priority tweets" table reads ``dallosh.tweets`` (bounded by LIMIT).
Priority 0 is the highest (P0-high).
"""

from __future__ import annotations

from dataclasses import dataclass

from stream_app.clean.location import COORDINATES


@dataclass(frozen=True)
class PanelSQL:
    sql: str
    columns: tuple[str, ...]   # result columns, in order; a time series starts with `time`
    time_series: bool
    demo_has_rows: bool        # the bundled demo guarantees at least one row


ROLLUP = "dallosh.tweets_by_minute_v"

# --------------------------------------------------------------------------- crisis wall

VOLUME = PanelSQL(f"""SELECT $__timeInterval(minute) AS time,
       sum(tweets) AS volume,
       sumIf(tweets, sentiment = 'negative') AS negative
FROM {ROLLUP}
WHERE $__timeFilter(minute)
GROUP BY time
ORDER BY time""", ("time", "volume", "negative"), True, True)

NEGATIVE_SHARE = PanelSQL(f"""SELECT $__timeInterval(minute) AS time,
       sumIf(tweets, sentiment = 'negative') / sum(tweets) AS negative_share
FROM {ROLLUP}
WHERE $__timeFilter(minute)
GROUP BY time
ORDER BY time""", ("time", "negative_share"), True, True)

NET_SENTIMENT = PanelSQL(f"""SELECT (sumIf(tweets, sentiment = 'positive') - sumIf(tweets, sentiment = 'negative'))
       / greatest(sum(tweets), 1) AS net_sentiment
FROM {ROLLUP}
WHERE $__timeFilter(minute)""", ("net_sentiment",), False, True)

HIGH_PRIORITY_SHARE = PanelSQL(f"""SELECT $__timeInterval(minute) AS time,
       sumIf(tweets, priority = 0) / sum(tweets) AS high_priority_share
FROM {ROLLUP}
WHERE $__timeFilter(minute)
GROUP BY time
ORDER BY time""", ("time", "high_priority_share"), True, True)

TOP_TOPICS = PanelSQL(f"""SELECT topic, sum(tweets) AS volume
FROM {ROLLUP}
WHERE $__timeFilter(minute)
GROUP BY topic
ORDER BY volume DESC
LIMIT 10""", ("topic", "volume"), False, True)

LOCATIONS = PanelSQL(f"""SELECT location,
       sum(tweets) AS volume,
       sumIf(tweets, sentiment = 'negative') / sum(tweets) AS negative_share,
       sumIf(tweets, priority = 0) / sum(tweets) AS high_priority_share
FROM {ROLLUP}
WHERE $__timeFilter(minute) AND location != ''
GROUP BY location
ORDER BY volume DESC
LIMIT 20""", ("location", "volume", "negative_share", "high_priority_share"), False, True)

# The gazetteer's coordinates (stream_app.clean.location.COORDINATES) as an inline table:
# one source for where a city is, no table to keep in step with the code.
_PLACES = ("(SELECT p.1 AS location, p.2 AS latitude, p.3 AS longitude FROM (SELECT arrayJoin("
           "CAST([" + ", ".join(f"('{name.replace(chr(39), chr(92) + chr(39))}', {lat}, {lon})"
                                for name, (lat, lon) in sorted(COORDINATES.items()))
           + "], 'Array(Tuple(String, Float64, Float64))')) AS p))")

# The map: every location that tweeted in the range, at its coordinates, sized by its
# complaints and coloured by its incident: `incident_level` is the severity (1-10) of
# its alert open at the end of the range, 0 when none is; `incident` says firing,
# resolved (one was raised in the range and is over) or calm. Local alerts only (a
# national incident has no place); every timeline, like the alerts table.
MAP = PanelSQL(f"""SELECT v.location AS location, pl.latitude AS latitude, pl.longitude AS longitude,
       v.volume AS volume, v.complaints AS complaints,
       a.open_level AS incident_level,
       multiIf(a.open_level > 0, 'firing', a.raised > 0, 'resolved', 'calm') AS incident,
       a.summary AS summary
FROM (SELECT location, sum(tweets) AS volume, sumIf(tweets, sentiment = 'negative') AS complaints
      FROM {ROLLUP}
      WHERE $__timeFilter(minute) AND location != ''
      GROUP BY location) AS v
INNER JOIN {_PLACES} AS pl ON pl.location = v.location
LEFT JOIN (SELECT location,
                  toUInt8(maxIf(severity_level, resolved_at IS NULL OR resolved_at > $__toTime)) AS open_level,
                  count() AS raised,
                  argMax(summary, updated_at) AS summary
           FROM dallosh.alerts FINAL
           WHERE status != 'withdrawn' AND location != '' AND first_seen <= $__toTime
             AND (resolved_at IS NULL OR resolved_at >= $__fromTime)
           GROUP BY location) AS a ON a.location = v.location
ORDER BY complaints DESC, location""", ("location", "latitude", "longitude", "volume", "complaints",
                                        "incident_level", "incident", "summary"), False, True)

# Open alerts, and any raised in the time range (a replayed day shows its alerts, named
# by their run; live ones say `live`), with their explanation: the one-sentence summary,
# what distinguishes them (terms), their most representative complaint (scrubbed text:
# no personal data on the big screen) and the topic and sentiment mix of their tweets.
_MIX = ("arrayStringConcat(arrayMap(x -> concat(x.1, ' ', toString(x.2)), "
        "arrayReverseSort(x -> x.2, arrayZip(mapKeys({m}), mapValues({m})))), ', ')")
ALERTS = PanelSQL(f"""SELECT window_start, severity_level, location, summary,
       arrayStringConcat(terms, ', ') AS terms,
       representative_texts[1] AS representative,
       {_MIX.format(m="topic_mix")} AS topics,
       {_MIX.format(m="sentiment_mix")} AS sentiments,
       authors AS people, status, detector, severity, observed, expected, score, message, run_id
FROM dallosh.alerts FINAL
WHERE status != 'withdrawn' AND (resolved_at IS NULL OR $__timeFilter(window_start))
ORDER BY window_start DESC
LIMIT 50""", ("window_start", "severity_level", "location", "summary", "terms", "representative",
              "topics", "sentiments", "people", "status", "detector", "severity", "observed",
              "expected", "score", "message", "run_id"), False, True)

LATEST_HIGH_PRIORITY = PanelSQL("""SELECT created_at, team, topic, location, sentiment, author, text
FROM dallosh.tweets FINAL
WHERE priority = 0 AND $__timeFilter(created_at)
ORDER BY created_at DESC
LIMIT 25""", ("created_at", "team", "topic", "location", "sentiment", "author", "text"), False, True)

# --------------------------------------------------------------------------- finops

COST_PER_HOUR = PanelSQL("""SELECT toStartOfHour(at) AS time, provider, sum(cost_usd) AS usd
FROM dallosh.provider_calls
WHERE $__timeFilter(at)
GROUP BY time, provider
ORDER BY time""", ("time", "provider", "usd"), True, True)

COST_PER_DAY = PanelSQL("""SELECT toDate(at) AS day, provider, sum(cost_usd) AS usd,
       sum(tweets) AS tweets_sent
FROM dallosh.provider_calls
WHERE $__timeFilter(at)
GROUP BY day, provider
ORDER BY day DESC, usd DESC""", ("day", "provider", "usd", "tweets_sent"), False, True)

TOKENS = PanelSQL("""SELECT $__timeInterval(at) AS time,
       sum(input_tokens) AS input_tokens,
       sum(output_tokens) AS output_tokens
FROM dallosh.provider_calls
WHERE $__timeFilter(at)
GROUP BY time
ORDER BY time""", ("time", "input_tokens", "output_tokens"), True, True)

COST_PER_1K_TWEETS = PanelSQL("""SELECT tier, provider,
       sumIf(tweets, outcome IN ('ok', 'partial')) AS tweets_classified,
       sum(cost_usd) AS usd,
       sum(cost_usd) / greatest(sumIf(tweets, outcome IN ('ok', 'partial')), 1) * 1000 AS usd_per_1k_tweets,
       countIf(outcome NOT IN ('ok', 'partial')) AS failed_requests
FROM dallosh.provider_calls
WHERE $__timeFilter(at)
GROUP BY tier, provider
ORDER BY usd DESC""", ("tier", "provider", "tweets_classified", "usd", "usd_per_1k_tweets",
                             "failed_requests"), False, True)

# Spend of the day the time range ends in, against the daily budget variable.
#
# The budget is a textbox: whatever a viewer types (or puts in the URL as
# ?var-daily_budget_usd=...) reaches this SQL. The ClickHouse plugin pastes a single
# value raw (its format() returns it unchanged), and neither Grafana's `singlequote`
# (escapes ' with \' ) nor `sqlstring` (doubles ') is safe in ClickHouse, where a
# backslash also escapes: a value ending in \ reopens the string. `percentencode`
# leaves only [A-Za-z0-9-_.~%] (no quote, no backslash), so the value stays inside its
# string literal whatever it is; ClickHouse decodes it back and reads a number from it.
# Not a number (or <= 0): no burn (NULL), never an error, never SQL.
BUDGET_USD = ("toFloat64OrZero(decodeURLComponent('${daily_budget_usd:percentencode}'))")
BUDGET_BURN = PanelSQL(f"""SELECT sum(cost_usd) AS spent_usd,
       sum(cost_usd) / if({BUDGET_USD} > 0, {BUDGET_USD}, NULL) AS budget_burn
FROM dallosh.provider_calls
WHERE at >= toStartOfDay($__toTime) AND at <= $__toTime""", ("spent_usd", "budget_burn"), False, True)

# --------------------------------------------------------------------------- alert rules

# One row per detector alert open at the evaluation time ($__toTime, event time: the
# detectors stamp alerts with the tweets' time, which is now for a live stream) and
# updated within the rule's range; withdrawn alerts (retracted by the detectors) never
# page. String columns become the alert instance's labels, `open` (1) its value.
# Example tweets are the alert's representative complaints (their text_scrubbed, carried
# by the alert: personal data replaced by placeholders): labels go to the on-call pager
# and to e-mail, outside the system. An alert stored before it carried them (0008) has
# its example ids looked up in the tweets, scrubbed text only: a tweet stored before
# that column existed is left out of the examples, never quoted raw.
# `severity_level` (1-10, signals.alerts.severity_level) drives the notification policy;
# rows stored before it existed (0) get the level of their severity word.
# Only the live timeline pages on-call (a replay is an analysis of the past; rows stored
# before alerts had a timeline have run_id '').
_OPEN_AT_TO_TIME = """run_id IN ('live', '') AND status != 'withdrawn' AND first_seen <= $__toTime
        AND (resolved_at IS NULL OR resolved_at > $__toTime) AND updated_at >= $__fromTime"""
DETECTOR_ALERTS = PanelSQL(f"""SELECT a.detector AS detector, a.location AS location, a.severity AS severity,
       toString(if(a.severity_level > 0, a.severity_level,
                   multiIf(a.severity = 'critical', 7, a.severity = 'major', 4, 1))) AS severity_level,
       toString(a.authors) AS people,
       a.summary AS summary,
       a.message AS message,
       arrayStringConcat(a.terms, ', ') AS terms,
       {_MIX.format(m="a.topic_mix")} AS topics,
       {_MIX.format(m="a.sentiment_mix")} AS sentiments,
       if(notEmpty(a.representative_texts),
          arrayStringConcat(arraySlice(a.representative_texts, 1, 3), ' | '),
          arrayStringConcat(arrayFilter(x -> x != '', arrayMap(i -> t.texts[indexOf(t.ids, i)],
                            arraySlice(a.example_ids, 1, 3))), ' | ')) AS examples,
       toString(round(a.score, 2)) AS score,
       1 AS open
FROM (SELECT * FROM dallosh.alerts FINAL
      WHERE {_OPEN_AT_TO_TIME}) AS a
CROSS JOIN (SELECT groupArray(id) AS ids, groupArray(text_scrubbed) AS texts FROM dallosh.tweets FINAL
            WHERE id IN (SELECT arrayJoin(example_ids) FROM dallosh.alerts FINAL
                         WHERE {_OPEN_AT_TO_TIME})) AS t""",
                           ("detector", "location", "severity", "severity_level", "people", "summary",
                            "message", "terms", "topics", "sentiments", "examples", "score", "open"),
                           False, True)

WALL = (VOLUME, NEGATIVE_SHARE, NET_SENTIMENT, HIGH_PRIORITY_SHARE, TOP_TOPICS, LOCATIONS,
        MAP, ALERTS, LATEST_HIGH_PRIORITY)
FINOPS = (COST_PER_HOUR, COST_PER_DAY, TOKENS, COST_PER_1K_TWEETS, BUDGET_BURN)
ALERT_RULES = (DETECTOR_ALERTS,)
ALL = WALL + FINOPS + ALERT_RULES
