"""Prometheus metrics of a worker, served on ``/metrics`` (``DALLOSH_METRICS_PORT``).

Label values are bounded sets (stage, topic, table, reason codes): never a tweet id or
free text, so the series count stays small.
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram, start_http_server

MESSAGES_IN = Counter("dallosh_messages_in_total", "Messages a stage consumed", ["stage"])
MESSAGES_OUT = Counter("dallosh_messages_out_total", "Messages a stage produced downstream",
                       ["stage"])
DEAD_LETTERS = Counter("dallosh_dead_letters_total", "Records sent to the dead-letter path",
                       ["stage", "reason"])
ERRORS = Counter("dallosh_errors_total", "Errors handled by a stage (retried or dead-lettered)",
                 ["stage", "kind"])
BATCH_SIZE = Histogram("dallosh_batch_size", "Items per batch taken by a stage", ["stage"],
                       buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000))
CLEAN_DECISIONS = Counter("dallosh_clean_decisions_total",
                          "Tweets the clean stage dropped or tagged, by decision and action",
                          ["decision", "action"])
CLASSIFIED = Counter("dallosh_classified_total", "Tweets classified, by tier and provider",
                     ["tier", "provider"])
PROVIDER_REQUESTS = Counter("dallosh_provider_requests_total",
                            "Classifier requests by provider and outcome (ok, partial, error kinds)",
                            ["provider", "outcome"])
PROVIDER_COST_USD = Counter("dallosh_provider_cost_usd_total", "Spend on classifier requests (USD)",
                            ["provider"])
PROVIDER_TOKENS = Counter("dallosh_provider_tokens_total", "Tokens billed by providers",
                          ["provider", "direction"])
CLASSIFIER_CACHE_HITS = Counter("dallosh_classifier_cache_hits_total",
                                "Tweets answered from the classification cache (no request)")
SINK_ROWS = Counter("dallosh_sink_rows_total", "Rows inserted into ClickHouse", ["table"])
SINK_INSERT_SECONDS = Histogram("dallosh_sink_insert_seconds", "Duration of one ClickHouse insert",
                                ["table"],
                                buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
SINK_RETRIES = Counter("dallosh_sink_insert_retries_total",
                       "ClickHouse inserts retried after a transient error", ["table"])
SINK_REFUSED_ROWS = Counter("dallosh_sink_refused_rows_total",
                            "Rows ClickHouse refused for good (dead-lettered with the reason)",
                            ["table"])
SINK_BLOCKED = Gauge("dallosh_sink_blocked",
                     "1 while a batch waits for ClickHouse (retrying; the sink fetches "
                     "nothing more from Kafka meanwhile)", ["table"])
SINK_PENDING_ROWS = Gauge("dallosh_sink_pending_rows",
                          "Rows taken from Kafka and not yet durable in ClickHouse", ["table"])
CONSUMER_LAG = Gauge("dallosh_consumer_lag_messages",
                     "Messages of a topic not yet committed by its slowest consumer group "
                     "(Faust agents or the ClickHouse sink)", ["topic"])

STEP_SECONDS = Counter("dallosh_step_seconds_total",
                       "Seconds each stage spent in each step of its work (decode, clean, "
                       "language, dedup, classify, produce, signals, sink): over the tweets "
                       "it handled, the cost per tweet of each step (`dallosh bench pipeline`)",
                       ["stage", "step"])

# Stage names used as label values.
STAGE_CLEAN = "clean"
STAGE_CLASSIFY = "classify"
STAGE_SINK = "sink"


def serve_metrics(port: int, addr: str = "127.0.0.1") -> None:
    """Start the ``/metrics`` endpoint in a daemon thread (no-op for port 0).

    Loopback by default: metrics name topics, providers and volumes, and nothing on the
    network should read them unless the deployment says so (a container scraped by
    Prometheus over its network passes its own address, e.g. ``0.0.0.0``)."""
    if port:
        start_http_server(port, addr=addr)


class StepTimer:
    """Seconds per step of one stage, added up in plain floats and handed to
    :data:`STEP_SECONDS` once per batch (``flush``): timing a step costs two
    ``perf_counter`` calls, not a labelled counter update per message.

    ``lap(step)`` charges the time since the previous lap (or ``start``) to ``step``, so
    consecutive steps of one message cost one clock read each."""

    __slots__ = ("_children", "seconds", "_mark")

    def __init__(self, stage: str, steps: tuple[str, ...]) -> None:
        self._children = {step: STEP_SECONDS.labels(stage, step) for step in steps}
        self.seconds = dict.fromkeys(steps, 0.0)
        self._mark = 0.0

    def start(self) -> float:
        self._mark = time.perf_counter()
        return self._mark

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] += now - self._mark
        self._mark = now

    def flush(self) -> None:
        for step, seconds in self.seconds.items():
            if seconds:
                self._children[step].inc(seconds)
                self.seconds[step] = 0.0
