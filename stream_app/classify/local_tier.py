"""The cascade's local tier: the trained local model (``dallosh train``), or a ready
fine-tuned sentiment checkpoint, on this CPU.

Sentiment (and priority/topic when the artifact has those heads) come from the model,
with its calibrated confidence; what the artifact has no head for comes from the rules,
given the model's sentiment so that priority stays consistent with it. Topics and teams
are the brand's taxonomy's (the rules compiled for it; team follows topic). Inference runs
in a worker thread so the event loop keeps serving Kafka while the CPU encodes.

The model runs on onnxruntime when the artifact has an ONNX export (every save writes
one once it agrees with the torch model: :mod:`stream_app.local_model.onnx_export`);
torch is then never imported by the worker. An artifact without an export loads
through torch, and the worker's log says so.

Topic and priority heads are only used for the taxonomy they were trained for: the
artifact records the brand and a hash of its taxonomy (``dallosh train --brand``), and
heads trained for another taxonomy than the configured brand's are dropped at load
(logged, with the command that retrains them); the rules then answer topic and
priority. The team follows the topic (the taxonomy's ``team_of``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

from stream_app import metrics
from stream_app.classify.rules import DEFAULT_TAXONOMY, compile_rules
from stream_app.classify.types import Item, Label, Outcome
from stream_app.records import ProviderCall, iso, utc_now

if TYPE_CHECKING:  # torch is imported only by a worker whose artifact has no ONNX export
    from stream_app.local_model.fewshot import BrandTaxonomy
    from stream_app.local_model.model import LocalModel, Prediction
    from stream_app.taxonomy import Taxonomy

log = logging.getLogger(__name__)
LOCAL_PROVIDER = "local"


class LocalModelTier:
    def __init__(self, model: LocalModel, teams: Mapping[str, str] | None = None,
                 taxonomy: Taxonomy | None = None) -> None:
        # The brand's labels (the built-in ``free`` taxonomy by default), routed by
        # ``teams`` where given: the rules compiled for them answer what has no head.
        self.taxonomy = (taxonomy or DEFAULT_TAXONOMY).with_teams(teams or {})
        self.model, self.teams = model, dict(self.taxonomy.teams)
        self.rules = compile_rules(self.taxonomy)
        self._lock = asyncio.Lock()  # one inference at a time: its threads are the bound

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
        rule = self.rules.classify(text, sentiment=sentiment.label)
        topic = prediction["topic"].label if "topic" in prediction else rule.topic
        priority = int(prediction["priority"].label) if "priority" in prediction else rule.priority
        team = self.taxonomy.team_of(topic)  # team follows topic
        return Label(sentiment.label, priority, topic, team, round(sentiment.confidence, 4),
                     f"local model {sentiment.label} p={sentiment.confidence:.2f}; {rule.reason}"[:300])


def local_model_present(artifact: Path | None) -> bool:
    """A trained artifact (``model.json``) or a Hugging Face checkpoint (``config.json``)
    is there; checked without importing torch."""
    return artifact is not None and any((artifact / name).is_file()
                                        for name in ("model.json", "config.json"))


def load_local_tier(artifact: Path | None, threads: int,
                    brand: BrandTaxonomy | None = None, runtime: str = "auto") -> LocalModelTier | None:
    """The tier for ``artifact`` when one is configured and present; ``None`` otherwise
    (the cascade then falls from the providers straight to the degraded rules).
    ``brand``: the configured brand's taxonomy; topic/priority heads trained for
    another one are dropped (the rules answer those labels)."""
    if not local_model_present(artifact):
        return None
    from stream_app.local_model.fewshot import taxonomy_mismatch
    from stream_app.local_model.model import load_local_model
    started = time.perf_counter()
    model = load_local_model(artifact, threads=threads, runtime=runtime)
    log.info("local model %s loaded from %s in %.1fs (%s)", model.name, artifact,
             time.perf_counter() - started, getattr(model, "runtime", "torch"))
    why = taxonomy_mismatch(model.meta, brand)
    if why is not None:
        log.warning("local model %s: topic and priority heads not used: %s; the rules answer topic "
                    "and priority", model.name, why)
        model.drop_heads(["topic", "priority"])
    # The rules answer what has no (valid) head, in the brand's labels either way.
    taxonomy = brand.taxonomy if brand is not None else None
    return LocalModelTier(model, taxonomy=taxonomy)
