"""The cascade's local tier: the trained local model (``dallosh train``), or a ready
fine-tuned sentiment checkpoint, on this CPU.

Sentiment (and priority/topic when the artifact has those heads) come from the model,
with its calibrated confidence; what the artifact has no head for comes from the rules,
given the model's sentiment so that priority stays consistent with it. Inference runs
in a worker thread so the event loop keeps serving Kafka while the CPU encodes.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

from stream_app import metrics
from stream_app.classify.rules import DEFAULT_TEAMS, classify_text
from stream_app.classify.types import Item, Label, Outcome
from stream_app.records import ProviderCall, iso, utc_now

if TYPE_CHECKING:  # torch is imported only by a worker that has a model to load
    from stream_app.local_model.model import LocalModel, Prediction

log = logging.getLogger(__name__)
LOCAL_PROVIDER = "local"


class LocalModelTier:
    def __init__(self, model: LocalModel, teams: Mapping[str, str] = DEFAULT_TEAMS) -> None:
        self.model, self.teams = model, dict(teams)
        self._lock = asyncio.Lock()  # one inference at a time: torch threads are the bound

    async def __call__(self, items: Sequence[Item], run_id: str = "") -> tuple[list[Outcome], ProviderCall]:
        started = time.perf_counter()
        async with self._lock:
            outcomes = await asyncio.to_thread(self.classify, items)
        latency = time.perf_counter() - started
        metrics.PROVIDER_REQUESTS.labels(LOCAL_PROVIDER, "ok").inc()
        call = ProviderCall(call_id=uuid.uuid4().hex, at=iso(utc_now()), run_id=run_id or "mixed",
                            tier="local", provider=LOCAL_PROVIDER, model=self.model.name,
                            tweets=len(items), latency_s=round(latency, 4), outcome="ok")
        return outcomes, call

    def classify(self, items: Sequence[Item]) -> list[Outcome]:
        predictions = self.model.predict([item.text for item in items])
        return [Outcome(item.id, self.label(item.text, p), "local", LOCAL_PROVIDER, self.model.name)
                for item, p in zip(items, predictions)]

    def label(self, text: str, prediction: dict[str, Prediction]) -> Label:
        sentiment = prediction["sentiment"]
        rule = classify_text(text, self.teams, sentiment=sentiment.label)
        topic = prediction["topic"].label if "topic" in prediction else rule.topic
        priority = int(prediction["priority"].label) if "priority" in prediction else rule.priority
        team = self.teams.get(topic) or DEFAULT_TEAMS.get(topic, rule.team)
        return Label(sentiment.label, priority, topic, team, round(sentiment.confidence, 4),
                     f"local model {sentiment.label} p={sentiment.confidence:.2f}; {rule.reason}"[:300])


def local_model_present(artifact: Path | None) -> bool:
    """A trained artifact (``model.json``) or a Hugging Face checkpoint (``config.json``)
    is there; checked without importing torch."""
    return artifact is not None and any((artifact / name).is_file()
                                        for name in ("model.json", "config.json"))


def load_local_tier(artifact: Path | None, threads: int) -> LocalModelTier | None:
    """The tier for ``artifact`` when one is configured and present; ``None`` otherwise
    (the cascade then falls from the providers straight to the degraded rules)."""
    if not local_model_present(artifact):
        return None
    from stream_app.local_model.model import load_local_model
    started = time.perf_counter()
    model = load_local_model(artifact, threads=threads)
    log.info("local model %s loaded from %s in %.1fs", model.name, artifact, time.perf_counter() - started)
    return LocalModelTier(model)
