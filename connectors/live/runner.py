"""The run loop shared by the live sources: convert, validate, deduplicate, produce,
checkpoint, and stop cleanly on Ctrl-C / SIGTERM.

Every event a source yields is counted once as received and ends in exactly one of
produced, dead-lettered or duplicate, so ``received = produced + dead-lettered +
duplicates`` holds at any moment (keep-alives and protocol control messages are not
events and are counted apart). The checkpoint is written only after the sink confirmed
everything sent so far.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncGenerator, Iterator, Mapping, Protocol

from connectors.live import metrics
from connectors.live.checkpoint import load_checkpoint, save_checkpoint
from connectors.live.stream import Event, Malformed, Post, StreamStats
from connectors.recent_ids import RecentIds
from stream_app.records import DeadLetter, iso, parse_iso, raw_tweet_problem, reason_kind, utc_now

log = logging.getLogger(__name__)

STAGE = "stream"
# What a source's to_raw may raise on a hostile payload (a count of 1e308 * 10 is inf:
# int() raises OverflowError; a structure nested too deep, RecursionError).
CONVERSION_ERRORS = (KeyError, TypeError, ValueError, AttributeError, OverflowError,
                     RecursionError)


class Sink(Protocol):
    """Where records go: :class:`connectors.raw_producer.RawProducer` in production."""

    async def send_raw(self, record: Mapping[str, Any]) -> None: ...
    async def send_dead_letter(self, dead: DeadLetter) -> None: ...
    async def flush(self) -> None: ...


class LiveSource(Protocol):
    network: str   # metric label and checkpoint owner: "x", "mastodon"
    source: str    # the raw tweets' ``source`` field: "x-stream", "mastodon:<host>"
    stats: StreamStats

    def events(self) -> AsyncGenerator[Event, None]: ...
    def to_raw(self, post: Post) -> dict[str, Any]: ...
    def position(self) -> dict[str, Any]: ...
    def restore(self, position: dict[str, Any]) -> None: ...


@dataclass
class LiveCounts:
    run_id: str
    received: int = 0
    produced: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    malformed: int = 0  # part of dead_lettered: not even parseable
    dead_letter_reasons: Counter = field(default_factory=Counter)

    @property
    def reconciles(self) -> bool:
        return self.received == self.produced + self.dead_lettered + self.duplicates

    def summary_line(self) -> str:
        verdict = "OK" if self.reconciles else "MISMATCH"
        return (f"received {self.received} = produced {self.produced} + dead-lettered "
                f"{self.dead_lettered} + duplicates {self.duplicates}  [{verdict}]")


def new_run_id(network: str) -> str:
    return f"stream-{network}-{utc_now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


class LiveRunner:
    def __init__(self, source: LiveSource, sink: Sink, *, checkpoint: Path | None = None,
                 run_id: str | None = None, recent_capacity: int = 100_000,
                 checkpoint_ids: int = 10_000, checkpoint_every: float = 5.0,
                 max_events: int | None = None) -> None:
        self.source = source
        self.sink = sink
        self.counts = LiveCounts(run_id=run_id or new_run_id(source.network))
        self._checkpoint = checkpoint
        self._checkpoint_ids = min(checkpoint_ids, recent_capacity)
        self._checkpoint_every = checkpoint_every
        self._max_events = max_events
        self._recent = RecentIds(recent_capacity)
        self._net = source.network

    async def run(self, stop: asyncio.Event | None = None) -> LiveCounts:
        """Until ``stop`` is set, ``max_events`` were received, or the source fails
        (its error is raised after the flush and the checkpoint)."""
        stop = stop or asyncio.Event()
        self._restore()
        events = self.source.events()
        stopping = asyncio.ensure_future(stop.wait())
        upcoming: asyncio.Future | None = None
        last_save = time.monotonic()
        try:
            while not stop.is_set():
                upcoming = asyncio.ensure_future(_next(events))
                await asyncio.wait({upcoming, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not upcoming.done():  # stop requested while waiting on the network
                    break
                event = upcoming.result()
                if event is None:
                    break
                await self._handle(event)
                if self._max_events and self.counts.received >= self._max_events:
                    break
                if time.monotonic() - last_save >= self._checkpoint_every:
                    await self._save()
                    last_save = time.monotonic()
        except BaseException:
            await _close(events, upcoming, stopping)
            with contextlib.suppress(Exception):
                await self._save()  # what was handled is kept; if the sink fails, so does this
            raise
        await _close(events, upcoming, stopping)
        await self._save()
        return self.counts

    def _restore(self) -> None:
        if self._checkpoint is None:
            return
        state = load_checkpoint(self._checkpoint, self._net)
        if state is None:
            return
        for id_ in state.get("recent_ids") or []:
            self._recent.add(str(id_))
        self.source.restore(state.get("position") or {})
        log.info("%s: resuming from %s (%d recent ids)", self._net, self._checkpoint,
                 len(self._recent))

    async def _save(self) -> None:
        await self.sink.flush()
        if self._checkpoint is not None:
            save_checkpoint(self._checkpoint, self._net, {
                "run_id": self.counts.run_id,
                "position": self.source.position(),
                "recent_ids": self._recent.newest(self._checkpoint_ids),
            })

    async def _handle(self, event: Event) -> None:
        self.counts.received += 1
        metrics.RECEIVED.labels(self._net).inc()
        if isinstance(event, Malformed):
            self.counts.malformed += 1
            metrics.MALFORMED.labels(self._net).inc()
            await self._dead_letter(event.reason, event.raw)
            return
        record = self.convert(event)
        if isinstance(record, str):
            await self._dead_letter(record, event.raw, event.id)
        elif record["id"] in self._recent:
            self.counts.duplicates += 1
            metrics.DUPLICATES.labels(self._net).inc()
        else:
            await self.sink.send_raw(record)
            self._recent.add(record["id"])
            self.counts.produced += 1
            metrics.PRODUCED.labels(self._net).inc()
            lag = max(0.0, (utc_now() - parse_iso(record["created_at"])).total_seconds())
            metrics.EVENT_LAG.labels(self._net).observe(lag)
            metrics.LAST_EVENT_LAG.labels(self._net).set(lag)

    def convert(self, post: Post) -> dict[str, Any] | str:
        """The valid raw tweet of ``post``, or the reason it is dead-lettered; whatever the
        payload holds, nothing else (no exception) comes out."""
        try:
            record = self.source.to_raw(post) | {
                "run_id": self.counts.run_id, "source": self.source.source,
                "ingested_at": iso(utc_now())}
        except CONVERSION_ERRORS as exc:
            return f"unconvertible post: {type(exc).__name__}: {str(exc)[:200]}"
        problem = raw_tweet_problem(record)
        return record if problem is None else problem

    async def _dead_letter(self, reason: str, payload: str, tweet_id: str = "") -> None:
        dead = DeadLetter.build(stage=STAGE, reason=reason, payload=payload,
                                run_id=self.counts.run_id, tweet_id=tweet_id,
                                source=self.source.source)
        await self.sink.send_dead_letter(dead)
        kind = reason_kind(reason)
        self.counts.dead_lettered += 1
        self.counts.dead_letter_reasons[kind] += 1
        metrics.DEAD_LETTERS.labels(self._net, kind).inc()


async def _close(events: AsyncGenerator[Event, None], upcoming: asyncio.Future | None,
                 stopping: asyncio.Future) -> None:
    """Stop reading: cancel a pending read (that closes the connection), close the source."""
    stopping.cancel()
    if upcoming is not None and not upcoming.done():
        upcoming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await upcoming
    await events.aclose()


async def _next(events: AsyncGenerator[Event, None]) -> Event | None:
    try:
        return await events.__anext__()
    except StopAsyncIteration:
        return None


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """Set ``stop`` on the first SIGINT/SIGTERM; a second one interrupts as usual."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []

    def on_signal(signum: signal.Signals) -> None:
        log.warning("%s: stopping (flushing and saving the checkpoint)", signum.name)
        stop.set()
        for sig in installed:
            loop.remove_signal_handler(sig)
        installed.clear()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread / Windows
            pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def describe_stats(stats: StreamStats) -> str:
    reconnects = ", ".join(f"{k}={v}" for k, v in sorted(stats.reconnects.items())) or "none"
    return (f"connections {stats.connects}, reconnects: {reconnects}; keep-alives "
            f"{stats.keepalives}, control messages {stats.control}, backfilled {stats.backfilled}")


async def stream_to_kafka(source: LiveSource, settings: Any, *, name: str,
                          max_events: int | None = None) -> LiveCounts:
    """What ``dallosh stream x|mastodon`` runs: ``source`` (opened by the caller) into
    ``tweets.raw`` through :class:`~connectors.raw_producer.RawProducer`, resuming from
    ``DATA_DIR/connectors/<name>.json``, until Ctrl-C / SIGTERM or ``max_events``."""
    from connectors.live.checkpoint import checkpoint_path
    from connectors.raw_producer import RawProducer

    stop = asyncio.Event()
    async with RawProducer(settings) as producer:
        runner = LiveRunner(source, producer, max_events=max_events,
                            checkpoint=checkpoint_path(settings.data_dir, name))
        with stop_on_signals(stop):
            return await runner.run(stop)
