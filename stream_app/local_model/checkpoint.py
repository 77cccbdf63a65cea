"""A ready fine-tuned sentiment checkpoint as the local model (e.g. an XLM-T tweet
sentiment model a user has on disk): a Hugging Face directory whose ``config.json``
names a ``*ForSequenceClassification`` architecture and whose labels are sentiments.

It answers the ``sentiment`` head only, with its own softmax as confidence (not
recalibrated here: ``dallosh eval`` reports its ECE); the rules fill priority and topic.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from stream_app.local_model.encoders import MAX_TOKENS, LocalModelError
from stream_app.local_model.evaluate import normalise_label
from stream_app.local_model.model import HeadSpec, Prediction, top_predictions


def is_sequence_classifier(directory: Path) -> bool:
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or ())


class SequenceClassifierModel:
    """Same interface as :class:`~stream_app.local_model.model.LocalModel`."""

    def __init__(self, directory: Path, threads: int = 2, batch_size: int = 64) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        torch.set_num_threads(threads)
        self._torch, self._batch_size = torch, batch_size
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(directory)
            self._model = AutoModelForSequenceClassification.from_pretrained(directory).eval()
        except (OSError, ValueError) as exc:
            raise LocalModelError(f"cannot load the checkpoint {directory}: {exc}") from exc
        id2label = self._model.config.id2label
        labels = tuple(normalise_label(str(id2label[i])) for i in range(len(id2label)))
        if None in labels or len(set(labels)) != len(labels):
            raise LocalModelError(f"{directory}: its labels {list(id2label.values())} are not "
                                  "distinct sentiments (negative/neutral/positive)")
        self.spec = HeadSpec("sentiment", labels, hidden=0)
        self.heads = {"sentiment": (self.spec, None)}
        self.meta = {"name": f"checkpoint-{directory.name}", "encoder": str(directory),
                     "kind": "sequence-classification checkpoint"}

    @property
    def name(self) -> str:
        return self.meta["name"]

    def probabilities(self, texts: Sequence[str], restrict: dict[str, Sequence[str]] | None = None
                      ) -> dict[str, np.ndarray]:
        torch = self._torch
        parts = [np.zeros((0, len(self.spec.labels)), dtype=np.float32)]
        allowed = (restrict or {}).get("sentiment")
        mask = torch.tensor([allowed is not None and label not in allowed for label in self.spec.labels])
        with torch.inference_mode():
            for start in range(0, len(texts), self._batch_size):
                batch = self._tokenizer(list(texts[start:start + self._batch_size]), padding=True,
                                        truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
                logits = self._model(**batch).logits.masked_fill(mask, float("-inf"))
                parts.append(torch.softmax(logits, dim=1).float().numpy())
        return {"sentiment": np.vstack(parts)}

    def predict(self, texts: Sequence[str], restrict: dict[str, Sequence[str]] | None = None
                ) -> list[dict[str, Prediction]]:
        return top_predictions(self.probabilities(texts, restrict), {"sentiment": self.spec.labels},
                               len(texts))
