"""The trained local model: a sentence encoder plus small classification heads.

An artifact is a directory written by ``dallosh train``::

    model.json   format version, encoder spec and depth (how many of its layers are
                 used, and from which one on they are fine-tuned), one entry per head
                 (labels, hidden size, calibration temperature), training config, data
                 hashes, metrics
    heads.pt     the heads' weights and the fine-tuned encoder layers' weights (plain
                 state dicts; loaded with weights_only=True)
    encoder.onnx the encoder as used (its layers, fine-tuned weights, pooling) exported
    heads.npz    to ONNX, and the heads' weights as arrays: what workers run, with
                 onnxruntime and without torch (:mod:`.onnx_export` writes them at save
                 time once they agree with the torch model; ``onnx`` in model.json)

Format 1 artifacts (frozen full-depth encoder, heads only) and format 2 ones (heads on
the embedding only) still load.

Heads exist for the label columns the training data had (``sentiment`` always;
``priority`` and ``topic`` when the CSV carries them, or when a brand's taxonomy trained
them: :mod:`stream_app.local_model.fewshot`, recorded under ``taxonomy`` in model.json).
A head may read other heads' probabilities next to the embedding (``inputs``: the
priority head reads sentiment and topic); heads are evaluated in dependency order. Probabilities are calibrated by
temperature scaling fitted on the held-out validation split, so ``confidence`` (the top
probability) can decide whether an item goes up a tier.

Two runtimes read an artifact: torch (:meth:`LocalModel.load`, what training uses:
heads are ``torch.nn.Module``s that can be trained and saved) and onnxruntime
(``runtime="onnx"``: :class:`ArrayHead`s in numpy). :func:`load_local_model`, which
workers, ``dallosh eval`` and the bench call, takes the ONNX export when there is one.
torch is imported only by the torch runtime, so a worker with an export never loads it.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from stream_app.local_model.encoders import (E5_QUERY_PREFIX, Encoder, LocalModelError, load_encoder,
                                             require_torch)
from stream_app.local_model.fewshot import RULES_INPUT

log = logging.getLogger(__name__)

ARTIFACT_FORMAT = 3
READABLE_FORMATS = (1, 2, 3)
MODEL_FILE, WEIGHTS_FILE = "model.json", "heads.pt"


@functools.cache
def _head_class() -> type:
    """:class:`Head` is a ``torch.nn.Module``: defined on first use, so that importing
    this module does not import torch (``from model import Head`` still works: see
    the module ``__getattr__`` below)."""
    import torch

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

        def logits(self, features: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return self(torch.from_numpy(np.ascontiguousarray(features))).numpy()

        def arrays(self) -> list[np.ndarray]:
            """The linear layers' weights and biases in order (what :class:`ArrayHead` runs)."""
            linears = [m for m in self.net if isinstance(m, torch.nn.Linear)]
            return [t.detach().float().numpy().copy() for m in linears for t in (m.weight, m.bias)]

    Head.__module__ = __name__
    return Head


def __getattr__(name: str) -> Any:
    if name == "Head":
        return _head_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ArrayHead:
    """A trained :class:`Head` in numpy: linear layers with exact (erf) GELU between
    them; what the ONNX runtime evaluates (the heads are a few small matrix products,
    no graph runtime needed)."""

    def __init__(self, arrays: Sequence[np.ndarray]) -> None:
        if len(arrays) not in (2, 4):
            raise LocalModelError(f"a head has 1 or 2 linear layers, not {len(arrays) / 2:g}")
        self.layers = [(np.ascontiguousarray(arrays[i].T, dtype=np.float32),
                        np.asarray(arrays[i + 1], dtype=np.float32)) for i in range(0, len(arrays), 2)]

    def logits(self, features: np.ndarray) -> np.ndarray:
        x = features.astype(np.float32, copy=False)
        for index, (weight, bias) in enumerate(self.layers):
            if index:
                x = gelu(x)
            x = x @ weight + bias
        return x


def erf(x: np.ndarray) -> np.ndarray:
    """Vectorised erf (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7): numpy has none
    and scipy is not a dependency."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-a * a))


def gelu(x: np.ndarray) -> np.ndarray:
    """torch's default (exact) GELU."""
    return (0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))).astype(np.float32, copy=False)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32, copy=False)


@dataclass(frozen=True)
class HeadSpec:
    name: str
    labels: tuple[str, ...]
    hidden: int
    temperature: float = 1.0
    inputs: tuple[str, ...] = ()   # heads whose probabilities follow the embedding, or
                                   # "rules": the rules tier's answer (fewshot.rule_features)

    def to_dict(self) -> dict:
        entry = {"labels": list(self.labels), "hidden": self.hidden, "temperature": self.temperature}
        return entry | ({"inputs": list(self.inputs)} if self.inputs else {})


@dataclass(frozen=True)
class Prediction:
    """One head's answer for one text."""
    label: str
    confidence: float


class LocalModel:
    """An encoder and its heads: torch ``Head``s (``runtime == "torch"``) or
    :class:`ArrayHead`s (``"onnx"``); the heads are evaluated the same way either way."""

    def __init__(self, encoder: Encoder, heads: dict[str, tuple[HeadSpec, Any]], meta: dict,
                 runtime: str = "torch") -> None:
        self.encoder, self.heads, self.meta, self.runtime = encoder, heads, meta, runtime
        self._rules_taxonomy: Any = None
        for _, module in heads.values():
            if callable(getattr(module, "eval", None)):  # a torch module: no dropout
                module.eval()

    @property
    def name(self) -> str:
        return self.meta.get("name", "local")

    def probabilities(self, texts: Sequence[str], restrict: dict[str, Sequence[str]] | None = None
                      ) -> dict[str, np.ndarray]:
        """Calibrated class probabilities per head, shape (len(texts), len(labels)).
        ``restrict`` limits a head to some of its labels (e.g. negative/positive for
        binary data); the others get probability 0."""
        return self.head_probabilities(self.encoder.encode(texts), restrict, texts)

    def head_probabilities(self, embeddings: np.ndarray, restrict: dict[str, Sequence[str]] | None = None,
                           texts: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """:meth:`probabilities` from embeddings already computed (and their ``texts``,
        which a head reading the rules' answer needs)."""
        x = embeddings.astype(np.float32, copy=False)
        out: dict[str, np.ndarray] = {}
        for name in head_order(self.heads):
            spec, module = self.heads[name]
            if RULES_INPUT in spec.inputs and RULES_INPUT not in out:
                out[RULES_INPUT] = self.rule_features(texts)
            features = np.hstack([x, *(out[i] for i in spec.inputs)]) if spec.inputs else x
            logits = module.logits(features) / np.float32(spec.temperature)
            allowed = (restrict or {}).get(name)
            if allowed:
                logits[:, [label not in allowed for label in spec.labels]] = -np.inf
            out[name] = softmax(logits)
        return {name: out[name] for name in self.heads}

    def rule_features(self, texts: Sequence[str] | None) -> np.ndarray:
        """The rules tier's answer for ``texts``, as the heads that read it learned it:
        with the rules of the taxonomy the artifact recorded (``rules_taxonomy``)."""
        from stream_app.local_model.fewshot import rule_features
        if texts is None:
            raise LocalModelError(f"{self.name}: a head reads the rules' answer; give the texts")
        recorded = self.meta["rules_taxonomy"]
        if self._rules_taxonomy is None or self._rules_taxonomy[0] is not recorded:  # retrained
            from stream_app.taxonomy import taxonomy_from_json
            self._rules_taxonomy = (recorded, taxonomy_from_json(recorded, f"{self.name}: rules_taxonomy"))
        return rule_features(self._rules_taxonomy[1], texts)

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

    def save(self, directory: Path, export: bool = True) -> Path:
        """Write the artifact (a torch model). ``export``: also write the ONNX export
        when it agrees with this model (:func:`.onnx_export.export_onnx`; its outcome
        is recorded under ``onnx`` in model.json either way)."""
        import torch

        if self.runtime != "torch":
            raise LocalModelError("only a model loaded through torch can be saved")
        directory.mkdir(parents=True, exist_ok=True)
        depth = getattr(self.encoder, "depth", None)
        meta = dict(self.meta, format=ARTIFACT_FORMAT, encoder=self.encoder.spec, dim=self.encoder.dim,
                    encoder_layers=depth, tuned_from=getattr(self.encoder, "tuned_from", depth),
                    encoder_prefix=getattr(self.encoder, "prefix", None),
                    heads={name: spec.to_dict() for name, (spec, _) in self.heads.items()})
        meta.pop("onnx", None)  # a stale record must not survive a save that skips the export
        tuned = self.encoder.tuned_state() if hasattr(self.encoder, "tuned_state") else {}
        torch.save({"heads": {name: module.state_dict() for name, (_, module) in self.heads.items()},
                    "encoder_layers": tuned}, directory / WEIGHTS_FILE)
        if export:
            from stream_app.local_model.onnx_export import export_onnx
            meta["onnx"] = self.meta["onnx"] = export_onnx(self, directory)
        else:
            from stream_app.local_model.onnx_export import remove_export
            remove_export(directory)
            self.meta.pop("onnx", None)
        (directory / MODEL_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n",
                                            encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path, threads: int = 2, encoder: Encoder | None = None,
             runtime: str = "torch") -> "LocalModel":
        """``runtime="onnx"``: the artifact's ONNX export (:func:`has_onnx_export`)."""
        directory = Path(directory)
        meta = read_model_meta(directory)
        if runtime == "onnx":
            return cls._load_onnx(directory, meta, threads)
        import torch

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
            missing = [i for i in spec.inputs if i not in specs and i != RULES_INPUT]
            if missing or (RULES_INPUT in spec.inputs and "rules_taxonomy" not in meta):
                raise LocalModelError(f"{directory}: head {name!r} reads head(s) "
                                      f"{missing or [RULES_INPUT]} it lacks")
            dim = encoder.dim + sum(rules_width(meta) if i == RULES_INPUT else len(specs[i].labels)
                                    for i in spec.inputs)
            module = _head_class()(dim, spec.hidden, len(spec.labels))
            module.load_state_dict(states[name])
            heads[name] = (spec, module)
        return cls(encoder, heads, meta)

    @classmethod
    def _load_onnx(cls, directory: Path, meta: dict, threads: int) -> "LocalModel":
        from stream_app.local_model.encoders import OnnxE5Encoder

        export = meta.get("onnx") or {}
        if not has_onnx_export(directory, meta):
            raise LocalModelError(f"{directory} has no ONNX export: "
                                  f"{export.get('error') or 'trained before exports existed'}")
        prefix = meta.get("encoder_prefix")
        encoder = OnnxE5Encoder(directory / export["encoder"], threads, layers=int(meta["encoder_layers"]),
                                prefix=E5_QUERY_PREFIX if prefix is None else prefix,
                                tuned_from=int(meta["tuned_from"]))
        try:
            with np.load(directory / export["heads"]) as arrays:
                stored = {key: arrays[key] for key in arrays.files}
        except (OSError, ValueError) as exc:
            raise LocalModelError(f"cannot read the heads of {directory}: {exc}") from exc
        heads = {}
        for name, entry in meta["heads"].items():
            spec = HeadSpec(name, tuple(entry["labels"]), int(entry["hidden"]), float(entry["temperature"]),
                            tuple(entry.get("inputs", ())))
            count = 2 if spec.hidden == 0 else 4
            if any(f"{name}/{i}" not in stored for i in range(count)):
                raise LocalModelError(f"{directory}: {export['heads']} lacks the weights of head {name!r}")
            heads[name] = (spec, ArrayHead([stored[f"{name}/{i}"] for i in range(count)]))
        return cls(encoder, heads, meta, runtime="onnx")


def head_order(heads: dict[str, tuple[HeadSpec, Any]]) -> list[str]:
    """Head names with every head after the heads it reads."""
    order: list[str] = []
    pending = dict(heads)
    while pending:
        ready = [n for n, (spec, _) in pending.items()
                 if all(i in order or i == RULES_INPUT for i in spec.inputs)]
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


def rules_width(meta: dict) -> int:
    """Width of the rules' answer a head reads: 3 sentiments, the topics, 3 priorities."""
    return 3 + len(meta["rules_taxonomy"]["topics"]) + 3


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


def has_onnx_export(directory: Path, meta: dict) -> bool:
    """The artifact's save wrote an ONNX export that passed its check, and its files are there."""
    export = meta.get("onnx") or {}
    return bool(export.get("encoder") and export.get("heads")) and \
        (directory / export["encoder"]).is_file() and (directory / export["heads"]).is_file()


def onnxruntime_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def native_bf16_cpu() -> bool:
    """The CPU computes bf16 matmuls natively (AVX512-BF16 or AMX), read from
    /proc/cpuinfo so that deciding does not import torch."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def choose_runtime(runtime: str = "auto") -> str:
    """``DALLOSH_LOCAL_MODEL_RUNTIME``: ``auto`` is torch where torch is installed and the
    CPU has native bf16 (measured on such a CPU: torch bf16 ~1.7x the fp32 ONNX export,
    whose int8 form failed the accuracy check; docs/local-model.md), else onnx (same speed
    as torch fp32, a third of its memory, a seventh of its load time, no torch needed)."""
    if runtime != "auto":
        return runtime
    from stream_app.local_model.encoders import torch_installed
    return "torch" if torch_installed() and native_bf16_cpu() else "onnx"


def load_local_model(directory: str | Path, threads: int = 2, runtime: str = "auto"):
    """A ``dallosh train`` artifact — through onnxruntime when the runtime is ``onnx``
    (:func:`choose_runtime`) and it has an ONNX export (torch is then not imported),
    else through torch, with a log line saying why — or a ready fine-tuned
    sequence-classification checkpoint (:mod:`stream_app.local_model.checkpoint`)."""
    directory = Path(directory)
    if (directory / MODEL_FILE).is_file():
        meta = read_model_meta(directory)
        runtime = choose_runtime(runtime)
        if runtime == "torch":
            require_torch(f"DALLOSH_LOCAL_MODEL_RUNTIME=torch ({directory})")
            log.info("local model %s: running through torch (DALLOSH_LOCAL_MODEL_RUNTIME)", directory)
            return LocalModel.load(directory, threads=threads)
        if has_onnx_export(directory, meta) and onnxruntime_available():
            return LocalModel.load(directory, threads=threads, runtime="onnx")
        why = ((meta.get("onnx") or {}).get("error") or "trained before ONNX exports existed"
               if not has_onnx_export(directory, meta) else "onnxruntime is not installed")
        require_torch(f"local model {directory}, which has no usable ONNX export ({why}),")
        log.info("local model %s: no usable ONNX export (%s); loading it through torch "
                 "(retrain or re-save it with `dallosh train` to get one)", directory, why)
        return LocalModel.load(directory, threads=threads)
    from stream_app.local_model.checkpoint import SequenceClassifierModel, is_sequence_classifier
    if is_sequence_classifier(directory):
        require_torch(f"the Hugging Face checkpoint {directory}")
        return SequenceClassifierModel(directory, threads=threads)
    raise LocalModelError(f"{directory} is neither a local-model artifact (no {MODEL_FILE}; "
                          "`dallosh train` makes one) nor a Hugging Face sequence-classification "
                          "checkpoint (config.json with a *ForSequenceClassification architecture)")
