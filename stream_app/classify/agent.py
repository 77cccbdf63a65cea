"""Faust wiring of the classify stage: ``tweets.clean`` -> ``tweets.classified``, plus
one ledger record per classifier request on ``provider.calls``.

Tweets are taken in windows (``classify_batch_size`` tweets or ``classify_max_wait``
seconds, whichever comes first); in each window:
- copies and retweets whose original is known reuse its classification (no request);
- customer tweets go through the provider cascade (token-budgeted requests, cheapest
  tier that is up, degraded rules at worst);
- the brand's own posts and off-topic tweets are classified by the free tiers (the local
  model when there is one, else the rules), so they never cost a paid request.
"""

from __future__ import annotations

import logging
import time

import faust

from stream_app import metrics
from stream_app.classify.local_tier import load_local_tier
from stream_app.classify.cascade import Cascade
from stream_app.classify.finops import BudgetGovernor
from stream_app.classify.provider_client import OpenAICompatibleClient
from stream_app.classify.provider_config import load_providers
from stream_app.classify.reuse import RecentClassifications
from stream_app.classify.rules import DEFAULT_TEAMS, TOPICS
from stream_app.classify.tokens import TokenCounter
from stream_app.classify.types import Item, Outcome
from stream_app.clean.relevance import CUSTOMER
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


def build_cascade(settings: Settings) -> Cascade:
    return Cascade(load_providers(settings.providers), OpenAICompatibleClient(),
                   TokenCounter(cache_dir=settings.cache_dir), TOPICS, DEFAULT_TEAMS,
                   governor=BudgetGovernor(settings.max_cost_per_hour, settings.max_cost_per_day),
                   local_tier=load_local_tier(settings.local_model, settings.local_model_threads),
                   escalate_below=settings.local_escalate_below,
                   deadline_s=settings.classify_deadline_s, max_items=settings.classify_max_items)


def as_item(tweet: CleanTweet) -> Item:
    return Item(tweet.id, tweet.text_clean, tweet.text_scrubbed or tweet.text_clean, tweet.lang,
                tweet.location)


def classified(tweet: CleanTweet, outcome: Outcome, classified_at: str, version: int) -> ClassifiedTweet:
    label = outcome.label
    return ClassifiedTweet(**tweet.to_dict(), sentiment=label.sentiment, priority=label.priority,
                           topic=label.topic, team=label.team, confidence=label.confidence,
                           tier=outcome.tier, provider=outcome.provider, model=outcome.model,
                           reason=label.reason, classified_at=classified_at, version=version)


def register_classify_agent(app: faust.App, topics: PipelineTopics, settings: Settings) -> None:
    recent = RecentClassifications()
    cascade_holder: list[Cascade] = []  # built on first use: its HTTP client needs the loop

    @app.agent(topics.clean, name="classify")
    async def classify(stream: faust.StreamT[bytes]) -> None:
        async for payloads in stream.take(settings.classify_batch_size,
                                          within=settings.classify_max_wait):
            if not cascade_holder:
                cascade_holder.append(build_cascade(settings))
            metrics.MESSAGES_IN.labels(STAGE).inc(len(payloads))
            metrics.BATCH_SIZE.labels(STAGE).observe(len(payloads))
            tweets, dead = decode_clean(payloads)
            for letter in dead:
                await topics.send_dead_letter(letter)
            results, calls = await classify_window(tweets, cascade_holder[0], recent)
            for call in calls:
                await topics.provider_calls.send(key=call.call_id.encode(), value=call.to_json())
            for tweet in results:
                await topics.classified.send(key=tweet.id.encode(), value=tweet.to_json())
                metrics.CLASSIFIED.labels(tweet.tier, tweet.provider).inc()
            metrics.MESSAGES_OUT.labels(STAGE).inc(len(results))


async def classify_window(tweets: list[CleanTweet], cascade: Cascade, recent: RecentClassifications):
    """Classify one window of tweets; every tweet comes back classified exactly once."""
    now, version = iso(utc_now()), time.time_ns() // 1000
    results: list[ClassifiedTweet] = []
    calls = []
    fresh: list[CleanTweet] = []
    for tweet in tweets:
        copy = recent.reuse_for(tweet, now, version)
        if copy is not None:
            results.append(copy)
        else:
            fresh.append(tweet)
    by_id = {tweet.id: tweet for tweet in fresh}
    customers = [as_item(t) for t in fresh if t.relevance == CUSTOMER]
    others = [as_item(t) for t in fresh if t.relevance != CUSTOMER]
    run_id = _run_of(fresh)
    outcomes: list[Outcome] = []
    if customers:
        cascaded = await cascade.classify(customers, run_id)
        outcomes += cascaded.outcomes
        calls += cascaded.calls
    if others:
        free_outcomes, call = await cascade.classify_free(others, run_id)
        outcomes += free_outcomes
        calls.append(call)
    for outcome in outcomes:
        tweet = classified(by_id[outcome.item_id], outcome, now, version)
        recent.remember(tweet)
        results.append(tweet)
    return results, calls


def _run_of(tweets: list[CleanTweet]) -> str:
    runs = {t.run_id for t in tweets}
    return runs.pop() if len(runs) == 1 else "mixed"
