"""Faust wiring of the signals stage: ``tweets.classified`` -> windows (``signals.windows``)
and alerts (``alerts``, stored by the sink in ClickHouse ``alerts``).

A thin shell around :class:`SignalEngine`. The stage needs every partition of the
classified topic (the watermark is the minimum over partitions, and the detectors compare
locations), so it runs in one process: the ``all`` and ``sink`` roles, which are
singletons. Its state is recoverable: every touched one-minute aggregate and each
partition's latest event time are written to a compacted changelog topic
(``<app_id>-signals-state``, keys prefixed by their timeline), and after a restart each
timeline's engine is rebuilt from it before the first batch and re-evaluated (alerts keep
their ids, so re-published alerts replace their rows).

Timelines: one engine per replay run and one for the live stream (see
:mod:`stream_app.signals.windows`), so a dump of another year never moves another
timeline's watermark, baselines or alerts.

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
from stream_app.records import LIVE_TIMELINE, REPLAY_PREFIX, PerTimeline
from stream_app.signals.windows import MINUTE, Aggregate, TweetEvent
from stream_app.topics import PipelineTopics

log = logging.getLogger(__name__)
STAGE = "signals"
BATCH = 500
PARTITION_PREFIX = "__partition__|"
MAX_TIMELINES = 8         # replays followed at once, besides live (records.PerTimeline)
# A one-minute cell of a burst carries every tweet id, author and term of that minute:
# ~934 KiB at 24,000 ordinary tweets a minute, ~1.9 MiB at 6,000 spam tweets with random
# words, past Kafka's 1 MB message limit exactly when the product matters most. Larger
# cells are written as a head record and chunks of this many characters (see
# :func:`state_records`); escaping can at most double a chunk, still under 1 MB.
MAX_STATE_CHARS = 256 * 1024
CHUNK_MARK = "#"


def detector_config(settings: Settings) -> DetectorConfig:
    return DetectorConfig(high_share=settings.signals_high_share,
                          burst_alpha=settings.signals_burst_alpha,
                          burst_ratio=settings.signals_burst_ratio,
                          trend_hours=settings.signals_trend_hours,
                          trend_threshold=settings.signals_trend_threshold,
                          resolve_minutes=settings.signals_resolve_minutes)


def build_engine(settings: Settings, timeline: str = LIVE_TIMELINE) -> SignalEngine:
    return SignalEngine(detector_config(settings), settings.signals_allowed_lateness_s,
                        settings.signals_revision_horizon_s, partitions=settings.partitions,
                        timeline=timeline)


def state_topic_name(settings: Settings) -> str:
    return f"{settings.app_id}-signals-state"


async def read_state(settings: Settings) -> dict[str, dict]:
    """The signals changelog (created compacted on first use), latest value per key."""
    name = state_topic_name(settings)
    await ensure_topics(settings.bootstrap_servers, [name], 1,
                        configs={"cleanup.policy": "compact"})
    values = await read_latest_values(settings.bootstrap_servers, name)
    return {key.decode(): json.loads(value) for key, value in values.items() if value}


def state_records(name: str, value: dict) -> list[tuple[str, dict]]:
    """The changelog records of one state value: itself, or when its JSON is longer than
    ``MAX_STATE_CHARS``, a head ``{"chunks": n}`` and n chunks ``name#i`` of the text."""
    text = json.dumps(value)
    if len(text) <= MAX_STATE_CHARS:
        return [(name, value)]
    parts = [text[i:i + MAX_STATE_CHARS] for i in range(0, len(text), MAX_STATE_CHARS)]
    return [(name, {"chunks": len(parts)})] + [(f"{name}{CHUNK_MARK}{i}", {"chunk": part})
                                               for i, part in enumerate(parts)]


def join_chunks(state: dict[str, dict]) -> dict[str, dict]:
    """Recovered state with chunked values put back together (the inverse of
    :func:`state_records`). A value missing a chunk (a crash between two writes) is left
    out and logged: its cell is rebuilt by the tweets that still arrive, not invented."""
    joined = {}
    for name, value in state.items():
        if CHUNK_MARK in name:
            continue
        if set(value) == {"chunks"}:
            parts = [state.get(f"{name}{CHUNK_MARK}{i}") for i in range(value["chunks"])]
            if any(part is None for part in parts):
                log.warning("signals: state %s lost a chunk; left out", name)
                continue
            value = json.loads("".join(part["chunk"] for part in parts))
        joined[name] = value
    return joined


def state_key(timeline: str, name: str) -> str:
    """A changelog key: ``<timeline>|<key>|<minute>`` or ``<timeline>|__partition__|<p>``."""
    return f"{timeline}|{name}"


def split_state_key(name: str) -> tuple[str, str]:
    """(timeline, rest) of a changelog key. Keys written before timelines existed
    (``<key>|<minute>``) belong to the live timeline."""
    first, _, rest = name.partition("|")
    if first == LIVE_TIMELINE or first.startswith(REPLAY_PREFIX):
        return first, rest
    return LIVE_TIMELINE, name


def restore_engines(settings: Settings, state: dict[str, dict]) -> dict[str, SignalEngine]:
    """One engine per timeline found in the recovered state."""
    by_timeline: dict[str, dict[str, dict]] = {}
    for name, value in join_chunks(state).items():
        timeline, rest = split_state_key(name)
        by_timeline.setdefault(timeline, {})[rest] = value
    engines = {}
    for timeline, cells in by_timeline.items():
        engines[timeline] = engine = build_engine(settings, timeline)
        restore_engine(engine, cells)
    return engines


def restore_engine(engine: SignalEngine, state: dict[str, dict]) -> None:
    """Load one timeline's recovered state (``key|minute`` -> aggregate, partition -> latest time)."""
    for name, value in state.items():
        if name.startswith(PARTITION_PREFIX):
            engine.partition_max[int(name[len(PARTITION_PREFIX):])] = value["time"]
            continue
        key, _, minute = name.rpartition("|")
        engine.store.add_cell(key, int(minute), Aggregate.from_dict(value))


def register_signals_agent(app: faust.App, topics: PipelineTopics, settings: Settings) -> None:
    state_topic = app.topic(state_topic_name(settings), key_type=bytes, value_type=bytes,
                            key_serializer="raw", value_serializer="raw", partitions=1)
    # Past MAX_TIMELINES replays, the one fed least recently is dropped and its changelog
    # cells deleted (tombstones); its alerts are in ClickHouse already, and a replay
    # resumed after that starts a fresh timeline for the rows it still sends.
    holder: list[PerTimeline[SignalEngine]] = []
    chunked: dict[str, int] = {}   # changelog key -> chunks written under it (for tombstones)

    async def save(timeline: str, name: str, value: dict | None) -> None:
        key = state_key(timeline, name)
        if value is None:  # a tombstone, for the value and any chunks of it
            names = [key] + [f"{key}{CHUNK_MARK}{i}" for i in range(chunked.pop(key, 0))]
            for each in names:
                await state_topic.send(key=each.encode(), value=None)
            return
        records = state_records(key, value)
        if len(records) > 1:
            chunked[key] = len(records) - 1
        for each, record in records:
            await state_topic.send(key=each.encode(), value=json.dumps(record).encode())

    async def forget(engine: SignalEngine) -> None:
        for key, series in engine.store.minutes.items():
            for minute in series:
                await save(engine.timeline, f"{key}|{minute}", None)
        for partition in engine.partition_max:
            await save(engine.timeline, f"{PARTITION_PREFIX}{partition}", None)
        log.info("signals: timeline %s dropped from memory (least recently fed)", engine.timeline)

    lock = asyncio.Lock()   # the agent and the heartbeat never touch an engine at once
    timer = metrics.StepTimer(STAGE, ("decode", "signals"))

    if settings.signals_heartbeat_s > 0:
        @app.timer(interval=settings.signals_heartbeat_s)
        async def signals_heartbeat() -> None:
            engine = holder[0].items.get(LIVE_TIMELINE) if holder else None
            if engine is None:
                return
            async with lock:
                output = await asyncio.to_thread(engine.heartbeat,
                                                 time.time() - settings.signals_heartbeat_s)
                await _publish(engine, output, set(), save, topics)

    @app.agent(topics.classified, name="signals")
    async def signals(stream: faust.StreamT[bytes]) -> None:
        async for events in stream.take_events(BATCH, within=1.0):
            if not holder:
                recovered = await read_state(settings)
                chunked.update({name: value["chunks"] for name, value in recovered.items()
                                if set(value) == {"chunks"}})
                engines = restore_engines(settings, recovered)
                holder.append(PerTimeline(lambda name: build_engine(settings, name),
                                          MAX_TIMELINES, engines))
                if engines:
                    log.info("signals: state recovered (%d timelines)", len(engines))
            timelines = holder[0]
            metrics.MESSAGES_IN.labels(STAGE).inc(len(events))
            timer.start()
            batches: dict[str, list[tuple[int, TweetEvent]]] = {}
            for event in events:
                try:
                    tweet = ClassifiedTweet.from_json(event.value)
                    tweet_event = TweetEvent.from_tweet(tweet)
                except (ValueError, TypeError, KeyError) as exc:
                    await topics.send_dead_letter(DeadLetter.build(
                        stage=STAGE, payload=event.value,
                        reason=f"undecodable classified record: {exc}"))
                    continue
                batches.setdefault(tweet_event.timeline, []).append(
                    (event.message.partition, tweet_event))
            timer.lap("decode")
            async with lock:
                for timeline, batch in batches.items():
                    engine, evicted = timelines.get(timeline)
                    for old in evicted:
                        await forget(old)
                    await _feed(engine, batch, save, topics)
            timer.lap("signals")
            timer.flush()


async def _feed(engine: SignalEngine, batch: list[tuple[int, TweetEvent]], save, topics: PipelineTopics) -> None:
    """One timeline's share of a batch: windows, changelog, alerts."""
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
    await _publish(engine, output, touched, save, topics)


async def _publish(engine: SignalEngine, output, touched: set[tuple[str, int]], save,
                   topics: PipelineTopics) -> None:
    """The changelog (touched cells, partition clocks), then windows and alert changes."""
    for key, minute in touched:
        aggregate = engine.store.minutes.get(key, {}).get(minute)
        if aggregate is not None:
            await save(engine.timeline, f"{key}|{minute}", aggregate.to_dict())
    for partition, latest in engine.partition_max.items():
        await save(engine.timeline, f"{PARTITION_PREFIX}{partition}", {"time": latest})
    for window in output.windows:
        await topics.windows.send(
            key=f"{window['run_id']}|{window['key']}|{window['window_start']}".encode(),
            value=json.dumps(window, ensure_ascii=False).encode())
    version = time.time_ns() // 1000
    for i, record in enumerate(output.alerts):
        alert = Alert(**record, version=version + i)
        await topics.alerts.send(key=alert.alert_id.encode(), value=alert.to_json())
    metrics.MESSAGES_OUT.labels(STAGE).inc(len(output.alerts))
