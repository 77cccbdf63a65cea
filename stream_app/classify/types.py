"""The classify stage's vocabulary, shared by batching, providers and the cascade."""

from __future__ import annotations

from dataclasses import dataclass

SENTIMENTS = ("negative", "neutral", "positive")
PRIORITIES = (0, 1, 2)  # 0 = high
TIERS = ("cloud", "onprem", "local", "degraded")


@dataclass(frozen=True)
class Item:
    """One tweet to classify, in both forms: ``text`` (cleaned, may hold PII) goes only
    to providers that guarantee zero data retention or run on our side; every other
    provider gets ``text_scrubbed``."""
    id: str
    text: str
    text_scrubbed: str
    lang: str = ""
    location: str = ""


@dataclass(frozen=True)
class Label:
    sentiment: str
    priority: int
    topic: str
    team: str
    confidence: float
    reason: str = ""


@dataclass(frozen=True)
class Outcome:
    """How one item ended: its label and who gave it."""
    item_id: str
    label: Label
    tier: str
    provider: str
    model: str
    latency_s: float = 0.0
    cached: bool = False
