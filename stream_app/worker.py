"""A worker process: the Faust app with the agents of its role(s), plus ``/metrics``.

Roles (``dallosh worker --role``): ``pipeline`` runs clean + classify and may run as
many processes as there are partitions; ``sink`` is the one ClickHouse writer (the
embedded engine allows one process per data path) plus the signals agent; ``all`` runs
everything in one process, the embedded default. The Faust agents of all workers of an
installation share one consumer group (``app_id``), so Kafka spreads partitions among
them; the ClickHouse sink is a plain aiokafka consumer in its own group
(``<app_id>-sink``, see :mod:`stream_app.sink.consumer`), started and stopped with the app.
"""

from __future__ import annotations

import logging
from enum import Enum

import faust

from stream_app import metrics
from stream_app.classify.agent import register_classify_agent
from stream_app.clean.agent import register_clean_agent
from stream_app.kafka_admin import consumer_groups, pipeline_lag
from stream_app.settings import Settings
from stream_app.signals.agent import register_signals_agent
from stream_app.sink.consumer import SinkConsumer
from stream_app.sink.chaos import ChaosSwitch
from stream_app.sink.writer import ClickHouseWriter
from stream_app.storage.clickhouse import open_store
from stream_app.storage.retention import Retention
from stream_app.topics import PipelineTopics

log = logging.getLogger(__name__)
LAG_INTERVAL_S = 5.0
PRODUCER_BATCH_BYTES = 256 << 10


class Role(str, Enum):
    ALL = "all"
    PIPELINE = "pipeline"
    SINK = "sink"


def create_app(settings: Settings, role: Role = Role.ALL) -> faust.App:
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{server}" for server in settings.bootstrap_servers.split(",")],
        store="memory://",
        datadir=str(settings.data_dir / "faust"),
        autodiscover=False,
        web_enabled=False,  # metrics come from prometheus-client on metrics_port
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # aiokafka keeps one produce request in flight per broker; meanwhile each
        # partition buffers at most one batch and a send to a full batch waits. At the
        # 16 KiB default (~10 clean tweets) the agents spent most of their time waiting
        # on the producer and a quarter of the CPU went into tiny socket writes. Kafka
        # takes batches up to message.max.bytes (1 MB by default): stay well under it.
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        broker_commit_interval=1.0,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        broker_rebalance_timeout=20.0,
        stream_buffer_maxsize=settings.stream_buffer_max,  # bounds what a stalled agent holds
    )
    topics = PipelineTopics.declare(app, settings)
    if role in (Role.ALL, Role.PIPELINE):
        register_clean_agent(app, topics, settings)
        register_classify_agent(app, topics, settings)
    if role in (Role.ALL, Role.SINK):
        # Signals need every partition of tweets.classified: they run in the singleton role.
        register_signals_agent(app, topics, settings)
        store = open_store(settings.clickhouse_dsn, Retention.from_settings(settings))
        writer = ClickHouseWriter(store, max_backoff_s=settings.sink_max_backoff_s,
                                  chaos=ChaosSwitch(settings.sink_chaos_file))
        app.add_dependency(SinkConsumer(settings, writer))  # starts and stops with the app

    @app.timer(LAG_INTERVAL_S)
    async def export_consumer_lag() -> None:
        try:
            lags = await pipeline_lag(settings.bootstrap_servers, consumer_groups(settings))
        except Exception as exc:  # a metric must never take the worker down
            log.debug("consumer lag unavailable: %s", exc)
            return
        for topic, lag in lags.items():
            metrics.CONSUMER_LAG.labels(topic).set(lag)

    return app


def run_worker(settings: Settings, role: Role = Role.ALL) -> None:
    """Run until SIGTERM/SIGINT; Faust stops agents and commits offsets on the way out."""
    app = create_app(settings, role)
    metrics.serve_metrics(settings.metrics_port, settings.metrics_addr)
    worker = faust.Worker(app, loglevel=settings.log_level.upper(), quiet=True)
    worker.execute_from_commandline()
