"""Faust wiring of the classify stage: ``tweets.clean`` -> ``tweets.classified``.

Tweets are taken in batches (``classify_batch_size`` or ``classify_max_wait``); each
batch yields its classified tweets and one ledger record on ``provider.calls``.
"""

from __future__ import annotations

import logging
import time

import faust

from stream_app import metrics
from stream_app.classify.degraded import classify_batch_with_rules
from stream_app.classify.reuse import ClassificationCache
from stream_app.records import ClassifiedTweet, CleanTweet, DeadLetter, iso, utc_now
from stream_app.settings import Settings
from stream_app.topics import PipelineTopics

log = logging.getLogger(__name__)
STAGE = metrics.STAGE_CLASSIFY


def decode_clean(payloads: list[bytes]) -> tuple[list[CleanTweet], list[DeadLetter]]:
    tweets, dead = [], []
    for payload in payloads:
        try:
            tweets.append(CleanTweet.from_json(payload))
        except (ValueError, TypeError) as exc:
            dead.append(DeadLetter.build(stage=STAGE, payload=payload,
                                         reason=f"undecodable clean record: {exc}"))
    return tweets, dead


def register_classify_agent(app: faust.App, topics: PipelineTopics, settings: Settings) -> None:
    cache = ClassificationCache()

    @app.agent(topics.clean, name="classify")
    async def classify(stream: faust.StreamT[bytes]) -> None:
        async for payloads in stream.take(settings.classify_batch_size,
                                          within=settings.classify_max_wait):
            metrics.MESSAGES_IN.labels(STAGE).inc(len(payloads))
            metrics.BATCH_SIZE.labels(STAGE).observe(len(payloads))
            tweets, dead = decode_clean(payloads)
            for letter in dead:
                await topics.send_dead_letter(letter)
            reused, to_classify = split_reusable(tweets, cache)
            classified = list(reused)
            if to_classify:
                fresh, call = classify_batch_with_rules(to_classify)
                for tweet in fresh:
                    cache.remember(tweet)
                classified += fresh
                await topics.provider_calls.send(key=call.call_id.encode(), value=call.to_json())
            for tweet in classified:
                await topics.classified.send(key=tweet.id.encode(), value=tweet.to_json())
                metrics.CLASSIFIED.labels(tweet.tier, tweet.provider).inc()
            metrics.MESSAGES_OUT.labels(STAGE).inc(len(classified))


def split_reusable(tweets: list[CleanTweet], cache: ClassificationCache
                   ) -> tuple[list[ClassifiedTweet], list[CleanTweet]]:
    """Copies whose original is known take its classification; the rest need classifying."""
    now, version = iso(utc_now()), time.time_ns() // 1000
    reused, to_classify = [], []
    for tweet in tweets:
        copy = cache.reuse_for(tweet, now, version)
        if copy is not None:
            reused.append(copy)
        else:
            to_classify.append(tweet)
    return reused, to_classify
