"""The degraded tier: rule/lexicon classification of a batch, the cascade's last resort.

It cannot fail and costs nothing; every batch still gets a ledger record so the
provider_calls table shows how much traffic fell to this tier.
"""

from __future__ import annotations

import time
import uuid
from typing import Sequence

from stream_app.classify.rules import classify_text
from stream_app.records import ClassifiedTweet, CleanTweet, ProviderCall, iso, utc_now

TIER = "degraded"
PROVIDER = "rules"
MODEL = "lexicon-v1"


def classify_batch_with_rules(tweets: Sequence[CleanTweet]) -> tuple[list[ClassifiedTweet], ProviderCall]:
    started = time.perf_counter()
    now = utc_now()
    version = time.time_ns() // 1000  # later classifications replace earlier ones
    classified = []
    for tweet in tweets:
        result = classify_text(tweet.text_clean)
        classified.append(ClassifiedTweet(
            **tweet.to_dict(),
            sentiment=result.sentiment, priority=result.priority, topic=result.topic,
            team=result.team, confidence=round(result.confidence, 4), tier=TIER,
            provider=PROVIDER, model=MODEL, reason=result.reason, classified_at=iso(now),
            version=version))
    call = ProviderCall(call_id=uuid.uuid4().hex, at=iso(now), run_id=_run_of(tweets),
                        tier=TIER, provider=PROVIDER, model=MODEL, tweets=len(tweets),
                        latency_s=round(time.perf_counter() - started, 6))
    return classified, call


def _run_of(tweets: Sequence[CleanTweet]) -> str:
    runs = {t.run_id for t in tweets}
    return runs.pop() if len(runs) == 1 else "mixed"
