"""The trained local model: a sentence encoder plus small classification heads.

An artifact is a directory written by ``dallosh train``::

    model.json   format version, encoder spec and depth (how many of its layers are
                 used, and from which one on they are fine-tuned), one entry per head
                 (labels, hidden size, calibration temperature), training config, data
                 hashes, metrics
    heads.pt     the heads' weights and the fine-tuned encoder layers' weights (plain
                 state dicts; loaded with weights_only=True)

Format 1 artifacts (frozen full-depth encoder, heads only) and format 2 ones (heads on
the embedding only) still load.

Heads exist for the label columns the training data had (``sentiment`` always;
``priority`` and ``topic`` when the CSV carries them, or when a brand's taxonomy trained
them: :mod:`stream_app.local_model.fewshot`, recorded under ``taxonomy`` in model.json).
A head may read other heads' probabilities next to the embedding (``inputs``: the
priority head reads sentiment and topic); heads are evaluated in dependency order. Probabilities are calibrated by
temperature scaling fitted on the held-out validation split, so ``confidence`` (the top
probability) can decide whether an item goes up a tier.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from stream_app.local_model.encoders import E5_QUERY_PREFIX, Encoder, LocalModelError, load_encoder

ARTIFACT_FORMAT = 3
READABLE_FORMATS = (1, 2, 3)
MODEL_FILE, WEIGHTS_FILE = "model.json", "heads.pt"


class Head(torch.nn.Module):
    """One hidden layer: enough on top of a sentence embedding, cheap on a CPU.
    ``hidden=0``: a single linear layer (the few-shot heads)."""

    def __init__(self, dim: int, hidden: int, n_labels: int, dropout: float = 0.0) -> None:
        super().__init__()
        if hidden == 0:
            self.net = torch.nn.Sequential(torch.nn.Linear(dim, n_labels))
            return
        self.net = torch.nn.Sequential(torch.nn.Dropout(dropout), torch.nn.Linear(dim, hidden),
                                       torch.nn.GELU(), torch.nn.Dropout(dropout),
                                       torch.nn.Linear(hidden, n_labels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@dataclass(frozen=True)
class HeadSpec:
    name: str
    labels: tuple[str, ...]
    hidden: int
    temperature: float = 1.0
    inputs: tuple[str, ...] = ()   # heads whose probabilities follow the embedding

    def to_dict(self) -> dict:
        entry = {"labels": list(self.labels), "hidden": self.hidden, "temperature": self.temperature}
        return entry | ({"inputs": list(self.inputs)} if self.inputs else {})


@dataclass(frozen=True)
class Prediction:
    """One head's answer for one text."""
    label: str
    confidence: float


class LocalModel:
    def __init__(self, encoder: Encoder, heads: dict[str, tuple[HeadSpec, Head]], meta: dict) -> None:
        self.encoder, self.heads, self.meta = encoder, heads, meta
        for _, module in heads.values():
            module.eval()

    @property
    def name(self) -> str:
        return self.meta.get("name", "local")

    def probabilities(self, texts: Sequence[str], restrict: dict[str, Sequence[str]] | None = None
                      ) -> dict[str, np.ndarray]:
        """Calibrated class probabilities per head, shape (len(texts), len(labels)).
        ``restrict`` limits a head to some of its labels (e.g. negative/positive for
        binary data); the others get probability 0."""
        return self.head_probabilities(self.encoder.encode(texts), restrict)

    def head_probabilities(self, embeddings: np.ndarray, restrict: dict[str, Sequence[str]] | None = None
                           ) -> dict[str, np.ndarray]:
        """:meth:`probabilities` from embeddings already computed."""
        x = torch.from_numpy(embeddings)
        out: dict[str, np.ndarray] = {}
        with torch.inference_mode():
            for name in head_order(self.heads):
                spec, module = self.heads[name]
                features = torch.cat([x, *(torch.from_numpy(out[i]) for i in spec.inputs)], dim=1) \
                    if spec.inputs else x
                logits = module(features) / spec.temperature
                allowed = (restrict or {}).get(name)
                if allowed:
                    mask = torch.tensor([label not in allowed for label in spec.labels])
                    logits = logits.masked_fill(mask, float("-inf"))
                out[name] = torch.softmax(logits, dim=1).numpy()
        return {name: out[name] for name in self.heads}

    def drop_heads(self, names: Sequence[str]) -> None:
        """Forget these heads (and any head that reads them)."""
        gone = set(names)
        while True:
            more = {n for n, (spec, _) in self.heads.items() if n not in gone and gone & set(spec.inputs)}
            if not more:
                break
            gone |= more
        self.heads = {n: h for n, h in self.heads.items() if n not in gone}

    def predict(self, texts: Sequence[str], restrict: dict[str, Sequence[str]] | None = None
                ) -> list[dict[str, Prediction]]:
        return top_predictions(self.probabilities(texts, restrict),
                               {name: spec.labels for name, (spec, _) in self.heads.items()}, len(texts))

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        depth = getattr(self.encoder, "depth", None)
        meta = dict(self.meta, format=ARTIFACT_FORMAT, encoder=self.encoder.spec, dim=self.encoder.dim,
                    encoder_layers=depth, tuned_from=getattr(self.encoder, "tuned_from", depth),
                    encoder_prefix=getattr(self.encoder, "prefix", None),
                    heads={name: spec.to_dict() for name, (spec, _) in self.heads.items()})
        tuned = self.encoder.tuned_state() if hasattr(self.encoder, "tuned_state") else {}
        torch.save({"heads": {name: module.state_dict() for name, (_, module) in self.heads.items()},
                    "encoder_layers": tuned}, directory / WEIGHTS_FILE)
        (directory / MODEL_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n",
                                            encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path, threads: int = 2, encoder: Encoder | None = None) -> "LocalModel":
        directory = Path(directory)
        meta = read_model_meta(directory)
        try:
            weights = torch.load(directory / WEIGHTS_FILE, weights_only=True)
        except (OSError, RuntimeError) as exc:
            raise LocalModelError(f"cannot read the weights of {directory}: {exc}") from exc
        states = weights if meta["format"] == 1 else weights["heads"]
        prefix = meta.get("encoder_prefix")  # "" is a prefix too: no prefix
        encoder = encoder or load_encoder(meta["encoder"], threads, layers=meta.get("encoder_layers"),
                                          prefix=E5_QUERY_PREFIX if prefix is None else prefix)
        tuned = {} if meta["format"] == 1 else weights["encoder_layers"]
        if tuned:
            encoder.load_tuned(tuned, int(meta["tuned_from"]))
        if encoder.dim != meta["dim"]:
            raise LocalModelError(f"{directory} was trained on {meta['dim']}-dim embeddings but the "
                                  f"encoder {meta['encoder']!r} gives {encoder.dim}")
        heads = {}
        specs = {name: HeadSpec(name, tuple(entry["labels"]), int(entry["hidden"]),
                                float(entry["temperature"]), tuple(entry.get("inputs", ())))
                 for name, entry in meta["heads"].items()}
        for name, spec in specs.items():
            missing = [i for i in spec.inputs if i not in specs]
            if missing:
                raise LocalModelError(f"{directory}: head {name!r} reads head(s) {missing} it lacks")
            dim = encoder.dim + sum(len(specs[i].labels) for i in spec.inputs)
            module = Head(dim, spec.hidden, len(spec.labels))
            module.load_state_dict(states[name])
            heads[name] = (spec, module)
        return cls(encoder, heads, meta)


def head_order(heads: dict[str, tuple[HeadSpec, Head]]) -> list[str]:
    """Head names with every head after the heads it reads."""
    order: list[str] = []
    pending = dict(heads)
    while pending:
        ready = [n for n, (spec, _) in pending.items() if all(i in order for i in spec.inputs)]
        if not ready:
            raise LocalModelError(f"heads {sorted(pending)} read each other in a cycle")
        order.extend(ready)
        for n in ready:
            del pending[n]
    return order


def top_predictions(probabilities: dict[str, np.ndarray], labels: dict[str, tuple[str, ...]],
                    n_texts: int) -> list[dict[str, Prediction]]:
    """Per text, each head's most probable label and its probability."""
    rows: list[dict[str, Prediction]] = [{} for _ in range(n_texts)]
    for name, p in probabilities.items():
        for row, index, prob in zip(rows, p.argmax(axis=1), p):
            row[name] = Prediction(labels[name][index], float(prob[index]))
    return rows


def read_model_meta(directory: Path) -> dict:
    path = directory / MODEL_FILE
    if not path.is_file():
        raise LocalModelError(f"{directory} is not a local-model artifact (no {MODEL_FILE}); "
                              "train one with `dallosh train`")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LocalModelError(f"cannot read {path}: {exc}") from exc
    if meta.get("format") not in READABLE_FORMATS:
        raise LocalModelError(f"{path} has artifact format {meta.get('format')!r}; this version "
                              f"reads formats {READABLE_FORMATS}: retrain with `dallosh train`")
    return meta


def load_local_model(directory: str | Path, threads: int = 2):
    """A ``dallosh train`` artifact, or a ready fine-tuned sequence-classification
    checkpoint (:mod:`stream_app.local_model.checkpoint`)."""
    directory = Path(directory)
    if (directory / MODEL_FILE).is_file():
        return LocalModel.load(directory, threads=threads)
    from stream_app.local_model.checkpoint import SequenceClassifierModel, is_sequence_classifier
    if is_sequence_classifier(directory):
        return SequenceClassifierModel(directory, threads=threads)
    raise LocalModelError(f"{directory} is neither a local-model artifact (no {MODEL_FILE}; "
                          "`dallosh train` makes one) nor a Hugging Face sequence-classification "
                          "checkpoint (config.json with a *ForSequenceClassification architecture)")
