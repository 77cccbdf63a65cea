"""Faust wiring of the classify stage: ``tweets.clean`` -> ``tweets.classified``, plus
one ledger record per classifier request on ``provider.calls``.

Tweets are taken in windows (``classify_batch_size`` tweets or ``classify_max_wait``
seconds, whichever comes first); in each window:
- copies and retweets whose original is known reuse its classification (no request);
- customer tweets go through the provider cascade (token-budgeted requests, cheapest
  tier that is up, degraded rules at worst);
- the brand's own posts and off-topic tweets are classified by the free tiers (the local
  model when there is one, else the rules), so they never cost a paid request.

Privacy fails closed: a provider without zero data retention only ever receives
``text_scrubbed``. A tweet that has none (a record from an older clean stage or another
producer, or a text that scrubbing emptied) is not sent to such a provider with its
unscrubbed text instead: it goes through a cascade of the zero-retention providers only
(on-prem servers, or cloud providers declared ``zero_retention: true`` in the providers
file), then the local tier or the rules.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import MISSING, fields
from copy import copy as shallow_copy

import faust

from stream_app import metrics
from stream_app.classify.local_tier import load_local_tier
from stream_app.local_model.fewshot import brand_taxonomy
from stream_app.classify.cascade import Cascade
from stream_app.classify.finops import BudgetGovernor
from stream_app.classify.provider_client import OpenAICompatibleClient
from stream_app.classify.provider_config import load_providers
from stream_app.classify.reuse import RecentClassifications
from stream_app.classify.tokens import TokenCounter
from stream_app.classify.types import Item, Outcome
from stream_app.clean.relevance import CUSTOMER, load_brand
from stream_app.records import (ClassifiedTweet, CleanTweet, DeadLetter, compile_flat_schema, iso,
                                utc_now)
from stream_app.settings import Settings
from stream_app.topics import PipelineTopics, decode, encode

log = logging.getLogger(__name__)
STAGE = metrics.STAGE_CLASSIFY
_IN, _OUT = metrics.MESSAGES_IN.labels(STAGE), metrics.MESSAGES_OUT.labels(STAGE)
_BATCH = metrics.BATCH_SIZE.labels(STAGE)


_clean_schema_check = compile_flat_schema(CleanTweet.SCHEMA)
# Fields the record type has no default for; the others may be absent (older producers).
_CLEAN_REQUIRED = {f.name for f in fields(CleanTweet)
                   if f.default is MISSING and f.default_factory is MISSING}


def _clean_schema_errors(data: dict) -> list[str]:
    """Wrong types and missing fields without a default (the schema's flat checks)."""
    return [e for e in _clean_schema_check(data)
            if not e.endswith(": is required") or e.split(":", 1)[0] in _CLEAN_REQUIRED]


def decode_clean(payloads: list[bytes]) -> tuple[list[CleanTweet], list[DeadLetter]]:
    """Records of ``tweets.clean`` (any producer may write there), or dead letters: a
    record whose fields have the wrong type (``"text_scrubbed": 5``, found by fuzzing)
    would otherwise fail later, in the middle of a window, and take the window down."""
    tweets, dead = [], []
    for payload in payloads:
        try:
            data = decode(payload)
            errors = _clean_schema_errors(data) if isinstance(data, dict) else ["not a JSON object"]
            if errors:
                dead.append(DeadLetter.build(stage=STAGE, payload=payload,
                                             reason="undecodable clean record: " + "; ".join(errors[:3]),
                                             tweet_id=_string_id(data)))
                continue
            tweets.append(CleanTweet.from_dict(data))
        except (ValueError, TypeError) as exc:
            dead.append(DeadLetter.build(stage=STAGE, payload=payload,
                                         reason=f"undecodable clean record: {exc}"))
        except RecursionError:  # thousands of nested brackets (found by fuzzing)
            dead.append(DeadLetter.build(stage=STAGE, payload=payload,
                                         reason="undecodable clean record: JSON nested too deeply"))
    return tweets, dead


def _string_id(data: object) -> str:
    value = data.get("id") if isinstance(data, dict) else None
    return value[:64] if isinstance(value, str) else ""


def build_cascade(settings: Settings) -> Cascade:
    return Cascade(load_providers(settings.providers), OpenAICompatibleClient(),
                   TokenCounter(cache_dir=settings.cache_dir),
                   taxonomy=load_brand(settings).taxonomy,  # every tier: the brand's labels
                   governor=BudgetGovernor(settings.max_cost_per_hour, settings.max_cost_per_day),
                   local_tier=load_local_tier(settings.local_model, settings.local_model_threads,
                                              brand_taxonomy(settings), settings.local_model_runtime),
                   escalate_below=settings.local_escalate_below,
                   deadline_s=settings.classify_deadline_s, max_items=settings.classify_max_items)


def as_item(tweet: CleanTweet) -> Item:
    """The tweet for the classifiers. ``text_scrubbed`` stays as it is, empty included:
    an empty one is never replaced by the unscrubbed text (see :func:`has_scrubbed_text`)."""
    return Item(tweet.id, tweet.text_clean, tweet.text_scrubbed, tweet.lang, tweet.location)


def has_scrubbed_text(tweet: CleanTweet) -> bool:
    """True when the tweet may go to a provider that keeps data (it has a scrubbed form)."""
    return bool(tweet.text_scrubbed.strip())


def zero_retention_only(cascade: Cascade) -> Cascade:
    """The same cascade (clients, breakers, rate limits, budget, cache and local tier are
    shared, not copied) restricted to the providers that keep nothing
    (``ProviderConfig.zero_retention``): the only ones that may see unscrubbed text."""
    restricted = shallow_copy(cascade)
    restricted.providers = [p for p in cascade.providers if p.zero_retention]
    return restricted


def classified(tweet: CleanTweet, outcome: Outcome, classified_at: str, version: int) -> ClassifiedTweet:
    label = outcome.label
    return ClassifiedTweet(**tweet.to_dict(), sentiment=label.sentiment, priority=label.priority,
                           topic=label.topic, team=label.team, confidence=label.confidence,
                           tier=outcome.tier, provider=outcome.provider, model=outcome.model,
                           reason=label.reason, classified_at=classified_at, version=version)


def register_classify_agent(app: faust.App, topics: PipelineTopics, settings: Settings) -> None:
    recent = RecentClassifications()
    cascade_holder: list[Cascade] = []  # built on first use: its HTTP client needs the loop

    timer = metrics.StepTimer(STAGE, ("decode", "classify", "produce"))

    @app.agent(topics.clean, name="classify")
    async def classify(stream: faust.StreamT[bytes]) -> None:
        async for payloads in stream.take(settings.classify_batch_size,
                                          within=settings.classify_max_wait):
            if not cascade_holder:
                cascade_holder.append(build_cascade(settings))
            _IN.inc(len(payloads))
            _BATCH.observe(len(payloads))
            timer.start()
            tweets, dead = decode_clean(payloads)
            timer.lap("decode")
            for letter in dead:
                await topics.send_dead_letter(letter)
            results, calls = await classify_window(tweets, cascade_holder[0], recent)
            timer.lap("classify")
            for call in calls:
                await topics.send(topics.provider_calls, call.call_id.encode(), encode(call))
            by_tier: Counter[tuple[str, str]] = Counter()
            for tweet in results:
                await topics.send(topics.classified, tweet.id.encode(), encode(tweet))
                by_tier[tweet.tier, tweet.provider] += 1
            for (tier, provider), n in by_tier.items():  # one labelled update per window
                metrics.CLASSIFIED.labels(tier, provider).inc(n)
            _OUT.inc(len(results))
            timer.lap("produce")
            timer.flush()


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
    # A copy whose original is in this same window waits for the original's answer and
    # reuses it, as it would have one window later: whether a copy is classified or reused
    # must not depend on where the window boundaries fell (same dump, same result).
    fresh_ids = {tweet.id for tweet in fresh}
    waiting = [t for t in fresh if t.duplicate_of and t.duplicate_of in fresh_ids]
    if waiting:
        fresh = [t for t in fresh if not (t.duplicate_of and t.duplicate_of in fresh_ids)]
    by_id = {tweet.id: tweet for tweet in fresh}
    customers = [as_item(t) for t in fresh if t.relevance == CUSTOMER and has_scrubbed_text(t)]
    unscrubbed = [as_item(t) for t in fresh if t.relevance == CUSTOMER and not has_scrubbed_text(t)]
    others = [as_item(t) for t in fresh if t.relevance != CUSTOMER]
    run_id = _run_of(fresh)
    outcomes: list[Outcome] = []
    for group, through in ((customers, cascade), (unscrubbed, zero_retention_only(cascade))):
        if group:
            cascaded = await through.classify(group, run_id)
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
    if waiting:
        reused = [recent.reuse_for(tweet, now, version) for tweet in waiting]
        results += [copy for copy in reused if copy is not None]
        unanswered = [tweet for tweet, copy in zip(waiting, reused) if copy is None]
        if unanswered:  # the original was not remembered (e.g. evicted at once): classify
            more, more_calls = await classify_window(unanswered, cascade, recent)
            results += more
            calls += more_calls
    return results, calls


def _run_of(tweets: list[CleanTweet]) -> str:
    runs = {t.run_id for t in tweets}
    return runs.pop() if len(runs) == 1 else "mixed"
