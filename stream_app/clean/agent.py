"""Faust wiring of the clean stage: ``tweets.raw`` -> ``tweets.clean``, with every
decision on ``tweets.decisions`` and bad input on ``tweets.dlq``.

Clean tweets are keyed by the id of their original (their own id for an original), so
a copy or retweet lands on the same classify partition as the tweet it copies and can
reuse its classification instead of costing a model call.

Messages are cleaned in batches (``CLEAN_BATCH``, or what arrived within
``CLEAN_MAX_WAIT_S``) and the batch's output is handed to the producer in input order:
per message, Faust's own send path and the labelled metric updates cost more than the
cleaning itself (``dallosh bench pipeline`` measures both).

The dedup state lives in the worker process (bounded by the event-time horizon): with
one clean worker it sees the whole stream; with several, copies that land on another
worker's partitions are not matched to their original (they are then classified as
originals: more cost, never a lost tweet).
"""

from __future__ import annotations

import logging
from collections import Counter

import faust

from stream_app import metrics
from stream_app.clean.cleaning import STAGE, CleanResult, Cleaner
from stream_app.clean.dedup import Deduplicator
from stream_app.clean.relevance import load_brand
from stream_app.records import DeadLetter
from stream_app.settings import Settings
from stream_app.topics import PipelineTopics, encode

log = logging.getLogger(__name__)
MAX_TWEET_ID_CHARS = 64   # the raw schema's maxLength for `id`
CLEAN_BATCH = 500         # messages cleaned and sent per batch
CLEAN_MAX_WAIT_S = 0.05   # the most a message waits for its batch to fill (low traffic)
_IN, _OUT = metrics.MESSAGES_IN.labels(STAGE), metrics.MESSAGES_OUT.labels(STAGE)


def build_cleaner(settings: Settings) -> Cleaner:
    return Cleaner(load_brand(settings),
                   lambda: Deduplicator(horizon_s=settings.dedup_horizon_s,
                                        capacity=settings.dedup_capacity,
                                        threshold=settings.dedup_threshold),
                   max_future_skew_s=settings.max_future_skew_s)


def clean_message(cleaner: Cleaner, key: bytes | None, payload: bytes) -> CleanResult:
    """One ``tweets.raw`` message through the clean stage.

    The record decides (:meth:`Cleaner.clean`); the message key (the tweet id, by the
    topic contract) only names the tweet of a dead letter whose record could not: an
    independent producer's non-JSON record, or one without an id, is still traceable to
    its tweet. A key that is not a plausible id (not UTF-8, blank, too long) is ignored.
    """
    try:
        result = cleaner.clean(payload)
    except RecursionError:   # json.loads on thousands of nested brackets (found by fuzzing)
        result = CleanResult(dead_letter=DeadLetter.build(
            stage=STAGE, reason="invalid JSON: nested too deeply", payload=payload))
    letter = result.dead_letter
    if letter is not None and not letter.tweet_id:
        tweet_id = key_as_tweet_id(key)
        if tweet_id:
            result.dead_letter = DeadLetter.build(stage=letter.stage, reason=letter.reason,
                                                  payload=payload, run_id=letter.run_id,
                                                  tweet_id=tweet_id, source=letter.source)
    return result


def key_as_tweet_id(key: bytes | None) -> str:
    """The message key as a tweet id, or "" when it cannot be one."""
    if not key or len(key) > MAX_TWEET_ID_CHARS * 4:
        return ""
    try:
        text = key.decode("utf-8").strip()
    except UnicodeDecodeError:
        return ""
    return text if 0 < len(text) <= MAX_TWEET_ID_CHARS and text.isprintable() else ""


def register_clean_agent(app: faust.App, topics: PipelineTopics, settings: Settings) -> None:
    cleaner = build_cleaner(settings)
    timer = cleaner.timer

    @app.agent(topics.raw, name="clean")
    async def clean(stream: faust.StreamT[bytes]) -> None:
        # Batches, not one message at a time: the per-message awaits, metric updates and
        # sends of the one-by-one loop cost more than cleaning the tweet (bench pipeline).
        # A batch is taken as soon as CLEAN_BATCH messages are there, so under load this
        # adds no wait; at low traffic a message waits at most CLEAN_MAX_WAIT_S. Faust acks
        # a batch's messages only after this loop body has handled all of them.
        async for events in stream.take_events(CLEAN_BATCH, within=CLEAN_MAX_WAIT_S):
            _IN.inc(len(events))
            await publish(topics, [clean_event(cleaner, event.key, event.value) for event in events],
                          timer)
            timer.flush()


def clean_event(cleaner: Cleaner, key: bytes | None, payload: bytes) -> CleanResult:
    """:func:`clean_message`, with a bug turned into a dead letter instead of a lost tweet."""
    try:
        return clean_message(cleaner, key, payload)
    except Exception as exc:  # a bug must not silently skip the tweet
        log.exception("clean stage failed on a record; dead-lettering it")
        metrics.ERRORS.labels(STAGE, "internal").inc()
        return CleanResult(dead_letter=DeadLetter.build(
            stage=STAGE, payload=payload, reason=f"internal error: {type(exc).__name__}: {exc}",
            tweet_id=key_as_tweet_id(key)))


async def publish(topics: PipelineTopics, results: list[CleanResult], timer: metrics.StepTimer) -> None:
    """One batch's output, in input order: decisions, clean tweets, dead letters."""
    timer.start()
    decisions: Counter[tuple[str, str]] = Counter()
    out = 0
    for result in results:
        for decision in result.decisions:
            decisions[decision.decision, decision.action] += 1
            await topics.send(topics.decisions, decision.tweet_id.encode(), encode(decision))
        if result.tweet is not None:
            tweet = result.tweet
            await topics.send(topics.clean, (tweet.duplicate_of or tweet.id).encode(), encode(tweet))
            out += 1
        elif result.dead_letter is not None:
            await topics.send_dead_letter(result.dead_letter)
    for (decision, action), n in decisions.items():
        metrics.CLEAN_DECISIONS.labels(decision, action).inc(n)
    _OUT.inc(out)
    timer.lap("produce")
