"""Prometheus metrics of the live connectors. Label values are bounded: the network
(``x``, ``mastodon``), a :class:`~connectors.live.backoff.Failure` value, a
dead-letter reason kind."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONNECTS = Counter("dallosh_stream_connects_total",
                   "Stream connections that were accepted (HTTP 200)", ["network"])
RECONNECTS = Counter("dallosh_stream_reconnects_total",
                     "Connections that ended or failed and were retried, by reason",
                     ["network", "reason"])
CONNECTED = Gauge("dallosh_stream_connections_open", "Stream connections open now",
                  ["network"])
RECEIVED = Counter("dallosh_stream_received_total",
                   "Posts and malformed lines/events received (keep-alives and control "
                   "messages excluded)", ["network"])
PRODUCED = Counter("dallosh_stream_produced_total", "Posts produced to the raw topic",
                   ["network"])
DUPLICATES = Counter("dallosh_stream_duplicates_total",
                     "Posts skipped because their id was already produced", ["network"])
DEAD_LETTERS = Counter("dallosh_stream_dead_letters_total",
                       "Lines/events dead-lettered, by reason kind", ["network", "reason"])
MALFORMED = Counter("dallosh_stream_malformed_total",
                    "Lines/events that are not parseable JSON posts", ["network"])
KEEPALIVES = Counter("dallosh_stream_keepalives_total", "Keep-alive heartbeats received",
                     ["network"])
BACKFILLED = Counter("dallosh_stream_backfilled_total",
                     "Posts fetched by a gap-filling request after a reconnect", ["network"])
SECONDS_SINCE_LAST_BYTE = Gauge("dallosh_stream_seconds_since_last_byte",
                                "Seconds since the stream last delivered a byte", ["network"])
EVENT_LAG = Histogram("dallosh_stream_event_lag_seconds",
                      "now - created_at of each produced post", ["network"],
                      buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600, 21600, 86400))
LAST_EVENT_LAG = Gauge("dallosh_stream_last_event_lag_seconds",
                       "now - created_at of the last produced post", ["network"])
