"""Faust wiring of the clean stage: ``tweets.raw`` -> ``tweets.clean``, with every
decision on ``tweets.decisions`` and bad input on ``tweets.dlq``.

Clean tweets are keyed by the id of their original (their own id for an original), so
a copy or retweet lands on the same classify partition as the tweet it copies and can
reuse its classification instead of costing a model call.

The dedup state lives in the worker process (bounded by the event-time horizon): with
one clean worker it sees the whole stream; with several, copies that land on another
worker's partitions are not matched to their original (they are then classified as
originals: more cost, never a lost tweet).
"""

from __future__ import annotations

import logging

import faust

from stream_app import metrics
from stream_app.clean.cleaning import STAGE, CleanResult, Cleaner
from stream_app.clean.dedup import Deduplicator
from stream_app.clean.relevance import load_brand
from stream_app.records import DeadLetter
from stream_app.settings import Settings
from stream_app.topics import PipelineTopics

log = logging.getLogger(__name__)
MAX_TWEET_ID_CHARS = 64   # the raw schema's maxLength for `id`


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

    @app.agent(topics.raw, name="clean")
    async def clean(stream: faust.StreamT[bytes]) -> None:
        async for key, payload in stream.items():
            metrics.MESSAGES_IN.labels(STAGE).inc()
            try:
                result = clean_message(cleaner, key, payload)
            except Exception as exc:  # a bug must not silently skip the tweet
                log.exception("clean stage failed on a record; dead-lettering it")
                metrics.ERRORS.labels(STAGE, "internal").inc()
                await topics.send_dead_letter(DeadLetter.build(
                    stage=STAGE, payload=payload, reason=f"internal error: {type(exc).__name__}: {exc}",
                    tweet_id=key_as_tweet_id(key)))
                continue
            for decision in result.decisions:
                metrics.CLEAN_DECISIONS.labels(decision.decision, decision.action).inc()
                await topics.decisions.send(key=decision.tweet_id.encode(), value=decision.to_json())
            if result.tweet is not None:
                tweet = result.tweet
                await topics.clean.send(key=(tweet.duplicate_of or tweet.id).encode(),
                                        value=tweet.to_json())
                metrics.MESSAGES_OUT.labels(STAGE).inc()
            elif result.dead_letter is not None:
                await topics.send_dead_letter(result.dead_letter)
