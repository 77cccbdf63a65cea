"""Faust wiring of the signals stage: ``tweets.classified`` -> windows (``signals.windows``)
and alerts (``alerts``, stored by the sink in ClickHouse ``alerts``).

A thin shell around :class:`SignalEngine`. The stage needs every partition of the
classified topic (the watermark is the minimum over partitions, and the detectors compare
locations), so it runs in one process: the ``all`` and ``sink`` roles, which are
singletons. Its state is recoverable: every touched one-minute aggregate and each
partition's latest event time are written to a compacted changelog topic
(``<app_id>-signals-state``), and after a restart the engine is rebuilt from it before
the first batch and re-evaluated (alerts keep their ids, so re-published alerts replace
their rows).

Why not a Faust ``Table``: a worker whose app has a table goes through Faust's changelog
recovery on start, and that races with the other agents of the process (faust-streaming
issue #596): in about one restart in three, the clean agent skipped a message of each
``tweets.raw`` partition and processed the last one twice — tweets lost. Reading
the changelog ourselves, inside this agent, leaves the other agents alone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import faust

from stream_app import metrics
from stream_app.kafka_admin import ensure_topics, read_latest_values
from stream_app.records import Alert, ClassifiedTweet, DeadLetter
from stream_app.settings import Settings
from stream_app.signals.detectors import DetectorConfig
from stream_app.signals.engine import SignalEngine
from stream_app.signals.windows import MINUTE, Aggregate, TweetEvent
from stream_app.topics import PipelineTopics

log = logging.getLogger(__name__)
STAGE = "signals"
BATCH = 500
PARTITION_PREFIX = "__partition__|"


def detector_config(settings: Settings) -> DetectorConfig:
    return DetectorConfig(high_share=settings.signals_high_share,
                          burst_alpha=settings.signals_burst_alpha,
                          burst_ratio=settings.signals_burst_ratio,
                          trend_hours=settings.signals_trend_hours,
                          trend_threshold=settings.signals_trend_threshold,
                          resolve_minutes=settings.signals_resolve_minutes)


def build_engine(settings: Settings) -> SignalEngine:
    return SignalEngine(detector_config(settings), settings.signals_allowed_lateness_s,
                        settings.signals_revision_horizon_s, partitions=settings.partitions)


def state_topic_name(settings: Settings) -> str:
    return f"{settings.app_id}-signals-state"


async def read_state(settings: Settings) -> dict[str, dict]:
    """The signals changelog (created compacted on first use), latest value per key."""
    name = state_topic_name(settings)
    await ensure_topics(settings.bootstrap_servers, [name], 1,
                        configs={"cleanup.policy": "compact"})
    values = await read_latest_values(settings.bootstrap_servers, name)
    return {key.decode(): json.loads(value) for key, value in values.items() if value}


def restore_engine(engine: SignalEngine, state: dict[str, dict]) -> None:
    """Load recovered state (``key|minute`` -> aggregate, partition -> latest time)."""
    for name, value in state.items():
        if name.startswith(PARTITION_PREFIX):
            engine.partition_max[int(name[len(PARTITION_PREFIX):])] = value["time"]
            continue
        key, _, minute = name.rpartition("|")
        engine.store.minutes.setdefault(key, {})[int(minute)] = Aggregate.from_dict(value)
        first = engine.store.first_minute.get(key)
        engine.store.first_minute[key] = int(minute) if first is None else min(first, int(minute))


def register_signals_agent(app: faust.App, topics: PipelineTopics, settings: Settings) -> None:
    state_topic = app.topic(state_topic_name(settings), key_type=bytes, value_type=bytes,
                            key_serializer="raw", value_serializer="raw", partitions=1)
    holder: list[SignalEngine] = []

    async def save(name: str, value: dict) -> None:
        await state_topic.send(key=name.encode(), value=json.dumps(value).encode())

    @app.agent(topics.classified, name="signals")
    async def signals(stream: faust.StreamT[bytes]) -> None:
        async for events in stream.take_events(BATCH, within=1.0):
            if not holder:
                engine = build_engine(settings)
                restore_engine(engine, await read_state(settings))
                holder.append(engine)
                if engine.store.minutes:
                    log.info("signals: state recovered (%d keys)", len(engine.store.minutes))
            engine = holder[0]
            metrics.MESSAGES_IN.labels(STAGE).inc(len(events))
            batch = []
            for event in events:
                try:
                    tweet = ClassifiedTweet.from_json(event.value)
                    batch.append((event.message.partition, TweetEvent.from_tweet(tweet)))
                except (ValueError, TypeError, KeyError) as exc:
                    await topics.send_dead_letter(DeadLetter.build(
                        stage=STAGE, payload=event.value,
                        reason=f"undecodable classified record: {exc}"))
            late_before = engine.late_events + engine.dropped_late
            duplicates_before = engine.duplicates
            # In a thread: revising late windows can take a while, and the clean and
            # classify agents share this event loop.
            output = await asyncio.to_thread(engine.feed, batch)
            metrics.ERRORS.labels(STAGE, "late_tweet").inc(engine.late_events + engine.dropped_late
                                                           - late_before)
            metrics.ERRORS.labels(STAGE, "duplicate_tweet").inc(engine.duplicates - duplicates_before)
            # Each touched cell once per batch: a batch often holds hundreds of tweets of
            # the same few minutes, and every write is a changelog message.
            touched = {(key, int(tweet_event.time // MINUTE))
                       for _, tweet_event in batch for key in tweet_event.keys()}
            for key, minute in touched:
                aggregate = engine.store.minutes.get(key, {}).get(minute)
                if aggregate is not None:
                    await save(f"{key}|{minute}", aggregate.to_dict())
            for partition, latest in engine.partition_max.items():
                await save(f"{PARTITION_PREFIX}{partition}", {"time": latest})
            for window in output.windows:
                await topics.windows.send(key=f"{window['key']}|{window['window_start']}".encode(),
                                          value=json.dumps(window, ensure_ascii=False).encode())
            version = time.time_ns() // 1000
            for i, record in enumerate(output.alerts):
                alert = Alert(**record, version=version + i)
                await topics.alerts.send(key=alert.alert_id.encode(), value=alert.to_json())
            metrics.MESSAGES_OUT.labels(STAGE).inc(len(output.alerts))
