"""``dallosh bench clean``: the clean stage on a generated flood (copy-paste campaigns,
retweets and replays inside normal traffic): near-duplicate precision and recall, and
the stage's throughput on one core (the whole ``Cleaner``: decode, validate, dedup,
relevance, normalisation, language, location, PII), measured in-process without Kafka.
"""

from __future__ import annotations

import json
import os
import platform
import time
from datetime import datetime, timezone

from bench.clean_flood import FloodTweet, generate_flood, score
from stream_app.clean.agent import build_cleaner
from stream_app.clean.dedup import DedupDecision
from stream_app.records import iso, utc_now
from stream_app.settings import Settings


def _payloads(flood: list[FloodTweet], declare_lang: bool) -> list[bytes]:
    payloads = []
    for tweet in flood:
        created = iso(datetime.fromtimestamp(tweet.event_time, tz=timezone.utc))
        payloads.append(json.dumps({
            "id": tweet.id, "text": tweet.text, "created_at": created, "run_id": "bench",
            "source": "flood", "ingested_at": created, "author": "someone",
            "is_retweet": tweet.is_retweet,
            # X declares a language on every post; dumps often do not.
            "lang": ("en" if tweet.text.isascii() else "fr") if declare_lang else "",
        }, ensure_ascii=False).encode())
    return payloads


def _run(settings: Settings, payloads: list[bytes]) -> tuple[list[DedupDecision], float]:
    cleaner = build_cleaner(settings)
    cleaner.clean(payloads[0])  # load lazy resources (language models) outside the timing
    cleaner = build_cleaner(settings)
    decisions = []
    started = time.perf_counter()
    for payload in payloads:
        result = cleaner.clean(payload)
        decisions.append(_as_dedup_decision(result))
    return decisions, time.perf_counter() - started


def _as_dedup_decision(result) -> DedupDecision:
    for decision in result.decisions:
        if decision.decision == "exact_duplicate":
            return DedupDecision("exact", decision.duplicate_of, 1.0)
    tweet = result.tweet
    if tweet is None:
        return DedupDecision("original", "", 0.0)
    return DedupDecision(tweet.dedup_kind, tweet.duplicate_of, 0.0)


def bench_clean(settings: Settings, seed: int = 11) -> dict:
    flood = generate_flood(seed=seed)
    declared, declared_s = _run(settings, _payloads(flood, declare_lang=True))
    undeclared, undeclared_s = _run(settings, _payloads(flood, declare_lang=False))
    quality = score(flood, declared)
    return {
        "benchmark": "clean", "at": iso(utc_now()), "tweets": len(flood),
        "dedup_precision": quality["dedup_precision"], "dedup_recall": quality["dedup_recall"],
        "quality": quality,
        "tweets_per_s": round(len(flood) / declared_s, 1),
        "tweets_per_s_without_declared_lang": round(len(flood) / undeclared_s, 1),
        # Language does not take part in deduplication: both runs must decide alike.
        "dedup_recall_without_declared_lang": score(flood, undeclared)["dedup_recall"],
        "target_tweets_per_s": 5000, "cores": 1,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
