"""``dallosh train``: fit the local model on labelled CSVs.

With e5-small (the default) the encoder is cut to its first ``layers`` layers and its
top ``tune_layers`` are first fine-tuned on the labels (:mod:`.finetune`; fine-tuning
all of it on two CPU cores would take hours); other encoders stay frozen. Then each
head is a one-hidden-layer MLP on the sentence embedding, trained with cross-entropy
weighted so that every class and every training file count equally (macro-F1 is the
goal, and 1,000 French reviews must not drown under 11,000 airline tweets),
early-stopped on the validation macro-F1 and then calibrated by temperature scaling on
the same validation rows. The validation rows are picked by a
hash of the text (stable across runs and row orders), never from the evaluation files:
``dallosh eval`` scores the ``*_test`` splits the trainer never sees.

With a brand (``dallosh train --brand FILE``, default the configured brand), the topic
and priority heads are then learned from that brand's taxonomy examples
(:mod:`.fewshot`); ``--heads-only`` (or an artifact trained on the same data with the
same encoder at ``--out``) reuses the artifact's encoder and sentiment head and
retrains only those heads, in seconds. Extra rows - the LLM tiers' answers from the
store (``--from-store``, :mod:`.extra_data`) and analysts' corrections
(``--corrections``) - join the sentiment data and the brand's examples.
"""

from __future__ import annotations

import csv
import hashlib
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from stream_app.local_model.encoders import (DEFAULT_ENCODER, E5_QUERY_PREFIX, Encoder, LocalModelError,
                                             load_encoder)
from stream_app.local_model.evaluate import expected_calibration_error, normalise_label
from stream_app.local_model.fewshot import (CORRECTION, DEFAULT_METHOD, BrandTaxonomy, LabelledSet,
                                            labelled_sentiment, train_brand_heads)
from stream_app.local_model.finetune import TuneConfig, fine_tune
from stream_app.local_model.model import Head, HeadSpec, LocalModel

Tick = Callable[[int, int], None]  # (texts encoded so far, texts to encode) - progress bars

HEADS = ("sentiment", "priority", "topic")
# e5-small's defaults, chosen on held-out airline and French data (docs/local-model.md):
# 8 of its 12 layers (1.5x faster), the top 4 of them fine-tuned.
E5_LAYERS, E5_TUNED_LAYERS = 8, 4


@dataclass(frozen=True)
class TrainConfig:
    encoder: str = DEFAULT_ENCODER
    layers: int | None = None          # encoder layers used; None: E5_LAYERS for e5-small, all otherwise
    tune_layers: int | None = None     # top layers fine-tuned; None: E5_TUNED_LAYERS for e5-small, else 0
    tune_epochs: int = 4
    hidden: int = 256
    dropout: float = 0.1
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 128
    max_epochs: int = 60
    patience: int = 8
    val_percent: int = 10
    seed: int = 0
    threads: int = 2

    def encoder_layers(self) -> int | None:
        return self.layers if self.layers is not None else (E5_LAYERS if self.encoder == "e5-small" else None)

    def encoder_prefix(self) -> str:
        """e5's "query: " helps a frozen encoder; tuned layers learn without it (and
        three tokens of a ~28-token tweet less are ~10 % faster)."""
        return "" if self.encoder == "e5-small" and self.tuned_layers() else E5_QUERY_PREFIX

    def tuned_layers(self) -> int:
        if self.tune_layers is not None:
            return self.tune_layers
        return E5_TUNED_LAYERS if self.encoder == "e5-small" else 0


@dataclass
class LabelledRows:
    texts: list[str]
    labels: dict[str, list[str | None]]  # head -> label per text (None: not labelled)
    sources: list[dict]
    source_of: list[int]                 # index into sources, per text

    def add_extra(self, extra: LabelledSet, source: str) -> int:
        """Sentiment rows from the store or from corrections, as one more source;
        returns how many were added (texts already present keep their label)."""
        seen = set(self.texts)
        added = 0
        for text, label, kind in zip(extra.texts, extra.labels, extra.kinds):
            sentiment = _label_for("sentiment", label)
            if sentiment is None or text in seen:
                continue
            seen.add(text)
            self.texts.append(text)
            self.source_of.append(len(self.sources))
            self.labels["sentiment"].append(sentiment)
            for head in HEADS[1:]:
                self.labels[head].append(None)
            added += 1
        if added:
            self.sources.append({"path": source, "sha256": extra_digest(extra), "rows_used": added,
                                 "kind": extra.kinds[0] if extra.kinds else ""})
        return added

    def weights(self) -> np.ndarray:
        """:func:`source_weights`, the brand's own labelled tweets above a generic source,
        and an analyst's correction above any other row."""
        from stream_app.local_model.fewshot import BRAND_SENTIMENT_SHARE, CORRECTION_WEIGHT, EXAMPLE
        weights = source_weights(self.source_of)
        brand = np.array([self.sources[i].get("kind") == EXAMPLE for i in self.source_of])
        weights[brand] *= BRAND_SENTIMENT_SHARE
        corrected = np.array([self.sources[i].get("kind") == CORRECTION for i in self.source_of])
        if corrected.any() and (~corrected).any():
            weights[corrected] = CORRECTION_WEIGHT * weights[~corrected].max()
        return weights


def extra_digest(extra: LabelledSet) -> str:
    """What a training artifact records of a set of extra sentiment rows (``data``)."""
    return hashlib.sha256("\x1f".join(extra.texts + extra.labels).encode()).hexdigest()


def _label_for(head: str, value: str) -> str | None:
    value = (value or "").strip()
    if not value:
        return None
    if head == "sentiment":
        return normalise_label(value)
    if head == "priority":
        return value if value in ("0", "1", "2") else None
    return value.lower()


def read_training_csvs(paths: Sequence[Path]) -> LabelledRows:
    """Rows with a ``text`` column and at least a ``sentiment`` column; ``priority``
    (0-2) and ``topic`` columns train their heads when present."""
    rows = LabelledRows([], {head: [] for head in HEADS}, [], [])
    for path in paths:
        digest = hashlib.sha256()
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise LocalModelError(f"cannot read training data {path}: {exc}") from exc
        digest.update(raw)
        reader = csv.DictReader(raw.decode("utf-8-sig").splitlines())
        columns = set(reader.fieldnames or ())
        if "text" not in columns or "sentiment" not in columns:
            raise LocalModelError(f"{path}: a training CSV needs 'text' and 'sentiment' columns "
                                  f"(found {sorted(columns)})")
        before = len(rows.texts)
        for line, record in enumerate(reader, start=2):
            text = (record.get("text") or "").strip()
            sentiment = _label_for("sentiment", record.get("sentiment", ""))
            if not text or sentiment is None:
                continue  # unlabelled rows are skipped; the count below says how many were used
            rows.texts.append(text)
            rows.source_of.append(len(rows.sources))
            for head in HEADS:
                rows.labels[head].append(_label_for(head, record.get(head, "")) if head in columns else None)
        used = len(rows.texts) - before
        if not used:
            raise LocalModelError(f"{path}: no row with a text and a valid sentiment label")
        rows.sources.append({"path": str(path), "sha256": digest.hexdigest(), "rows_used": used})
    return rows


def resolve_training_data(specs: Sequence[str], cache_dir: Path,
                          progress: Callable[[str], None] = print) -> list[Path]:
    """CSV paths, or ``airline``/``english``/``french``: that dataset's training split
    (fetched first if needed; the test split stays unseen for ``dallosh eval``)."""
    from stream_app.local_model.datasets import fetch_datasets
    from stream_app.local_model.evaluate import SHORTCUTS
    paths = []
    for spec in specs:
        if spec in SHORTCUTS:
            paths.append(fetch_datasets(cache_dir, progress=progress).path(SHORTCUTS[spec], "train"))
        elif Path(spec).is_file():
            paths.append(Path(spec))
        else:
            raise LocalModelError(f"training data {spec!r}: no such file (or use one of "
                                  f"{', '.join(SHORTCUTS)})")
    return paths


def is_validation(text: str, percent: int) -> bool:
    return int(hashlib.sha256(("val:" + text).encode("utf-8")).hexdigest()[:8], 16) % 100 < percent


def macro_f1(truth: np.ndarray, predicted: np.ndarray, n_labels: int) -> float:
    scores = []
    for k in range(n_labels):
        support = (truth == k).sum()
        if not support:
            continue
        tp = ((truth == k) & (predicted == k)).sum()
        precision = tp / max((predicted == k).sum(), 1)
        recall = tp / support
        scores.append(2 * precision * recall / (precision + recall) if tp else 0.0)
    return float(np.mean(scores)) if scores else 0.0


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The temperature that minimises validation NLL (Guo et al. 2017)."""
    log_t = torch.zeros(1, requires_grad=True)
    optimiser = torch.optim.LBFGS([log_t], lr=0.1, max_iter=100)

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), targets)
        loss.backward()
        return loss

    optimiser.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def source_weights(source_of: Sequence[int]) -> np.ndarray:
    """Per-row weights that give every training file the same total weight, so 1,000
    French reviews are not drowned by 11,000 airline tweets."""
    ids = np.asarray(source_of)
    counts = np.bincount(ids)
    return (len(ids) / (len(counts) * counts[ids])).astype(np.float32)


def train_head(name: str, x_train: np.ndarray, y_train: Sequence[str], x_val: np.ndarray,
               y_val: Sequence[str], config: TrainConfig,
               progress: Callable[[str], None] = print,
               row_weights: np.ndarray | None = None) -> tuple[HeadSpec, Head, dict]:
    labels = tuple(sorted(set(y_train)))
    if len(labels) < 2:
        raise LocalModelError(f"head {name!r}: the training data has only the label(s) {list(labels)}")
    index = {label: i for i, label in enumerate(labels)}
    xt, xv = torch.from_numpy(x_train), torch.from_numpy(x_val)
    yt = torch.tensor([index[y] for y in y_train])
    yv = torch.tensor([index.get(y, -1) for y in y_val])
    keep = yv >= 0  # validation rows whose label the training rows never had cannot be scored
    xv, yv = xv[keep], yv[keep]
    counts = torch.bincount(yt, minlength=len(labels)).float()
    weights = counts.sum() / (len(labels) * counts.clamp(min=1))  # balanced: macro-F1 is the goal
    rows_w = torch.from_numpy(row_weights) if row_weights is not None else torch.ones(len(yt))

    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    head = Head(xt.shape[1], config.hidden, len(labels), config.dropout)
    optimiser = torch.optim.AdamW(head.parameters(), lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    best = (-1.0, 0, None)
    for epoch in range(1, config.max_epochs + 1):
        head.train()
        for batch in torch.randperm(len(yt), generator=generator).split(config.batch_size):
            optimiser.zero_grad()
            losses = torch.nn.functional.cross_entropy(head(xt[batch]), yt[batch], reduction="none")
            scale = weights[yt[batch]] * rows_w[batch]
            loss = (losses * scale).sum() / scale.sum()
            loss.backward()
            optimiser.step()
        head.eval()
        with torch.inference_mode():
            score = macro_f1(yv.numpy(), head(xv).argmax(1).numpy(), len(labels))
        if score > best[0]:
            best = (score, epoch, {k: v.clone() for k, v in head.state_dict().items()})
        elif epoch - best[1] >= config.patience:
            break
    score, best_epoch, state = best
    head.load_state_dict(state)
    head.eval()
    with torch.no_grad():
        val_logits = head(xv)
    temperature = fit_temperature(val_logits, yv)
    metrics = {"val_rows": int(len(yv)), "train_rows": int(len(yt)), "val_macro_f1": round(score, 4),
               "best_epoch": best_epoch, "epochs_run": epoch, "temperature": round(temperature, 4),
               **_calibration(val_logits, yv, temperature),
               "train_counts": {label: int(c) for label, c in zip(labels, counts.tolist())}}
    progress(f"  {name}: val macro-F1 {score:.3f} (epoch {best_epoch} of {epoch}), temperature "
             f"{temperature:.2f}, ECE {metrics['val_ece_raw']:.3f} -> {metrics['val_ece']:.3f}")
    return HeadSpec(name, labels, config.hidden, temperature), head, metrics


def _calibration(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> dict:
    out = {}
    for key, t in (("val_ece_raw", 1.0), ("val_ece", temperature)):
        probs = torch.softmax(logits / t, dim=1)
        confidence, predicted = probs.max(1)
        out[key] = round(expected_calibration_error(confidence.tolist(),
                                                    (predicted == targets).tolist()), 4)
    return out


@dataclass
class BrandTraining:
    """What ``--brand`` adds to a training: the taxonomy to learn, extra rows per head
    (store, corrections), the few-shot method and the methods to compare it with."""
    brand: BrandTaxonomy
    extras: dict[str, LabelledSet] | None = None
    method: str = DEFAULT_METHOD
    compare: tuple[str, ...] = ()

    def sentiment_extras(self) -> list[tuple[LabelledSet, str]]:
        """Sentiment rows beyond the CSVs: the brand's labelled examples, then the
        extras (store, corrections), one source per kind."""
        out = []
        if self.brand.taxonomy is not None:
            labelled = labelled_sentiment(self.brand.taxonomy)
            if labelled.texts:
                out.append((labelled, f"<brand {self.brand.brand} labelled_examples>"))
        extra = (self.extras or {}).get("sentiment")
        if extra is None or not extra.texts:
            return out
        for kind in dict.fromkeys(extra.kinds):
            part = LabelledSet()
            for text, label, k in zip(extra.texts, extra.labels, extra.kinds):
                if k == kind:
                    part.add(text, label, k)
            out.append((part, f"<{kind}>"))
        return out


def data_fingerprint(paths: Sequence[Path]) -> str:
    """The ``data_sha256`` an artifact trained on these CSVs records."""
    return hashlib.sha256("".join(hashlib.sha256(p.read_bytes()).hexdigest() for p in paths).encode()).hexdigest()


def train_model(paths: Sequence[Path], out_dir: Path, config: TrainConfig = TrainConfig(),
                progress: Callable[[str], None] = print, encoder: Encoder | None = None,
                embedding_cache: Path | None = None, brand: BrandTraining | None = None,
                tick: Tick | None = None) -> dict:
    """Train every head the data supports and save the artifact; returns its metadata.
    With ``embedding_cache`` (a folder), the encoded training texts are kept there, so
    retraining on the same data and encoder skips the (slow) encoding. With ``brand``,
    the topic and priority heads are the brand's (:mod:`.fewshot`)."""
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.set_num_threads(config.threads)
    rows = read_training_csvs(paths)
    data_hash = hashlib.sha256("".join(s["sha256"] for s in rows.sources).encode()).hexdigest()
    for extra, source in brand.sentiment_extras() if brand else ():
        progress(f"sentiment: {rows.add_extra(extra, source):,} extra row(s) from {source}")
    started = time.perf_counter()
    encoder = encoder or load_encoder(config.encoder, config.threads, layers=config.encoder_layers(),
                                      prefix=config.encoder_prefix())
    is_val = np.array([is_validation(t, config.val_percent) for t in rows.texts])
    balance = rows.weights()
    tuning = None
    if config.tuned_layers():
        tuning = fine_tune(encoder, rows.texts, rows.labels, is_val, balance,
                           TuneConfig(layers=config.tuned_layers(), epochs=config.tune_epochs,
                                      seed=config.seed), progress)
    tune_s = time.perf_counter() - started
    # Embeddings of the tuned encoder are its own: not cached.
    embeddings = cached_embeddings(encoder, rows, None if tuning else embedding_cache, progress, tick)
    encode_s = time.perf_counter() - started - tune_s

    heads, metrics = fit_heads(rows, embeddings, is_val, balance, config, progress,
                               only=("sentiment",) if brand else HEADS)
    meta = {
        "name": f"dallosh-local-{config.encoder.replace('/', '_')}-{data_hash[:8]}",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "train_config": asdict(config), "data": rows.sources, "data_sha256": data_hash,
        "metrics": metrics, "fine_tune": tuning, "tune_s": round(tune_s, 1),
        "encode_s": round(encode_s, 1), "train_s": round(time.perf_counter() - started - tune_s - encode_s, 1),
    }
    model = LocalModel(encoder, heads, meta)
    if brand is not None:
        train_brand_heads(model, brand.brand, brand.extras, brand.method, brand.compare, progress, tick)
        meta["brand_heads_s"] = model.meta["taxonomy"]["seconds"]
    model.save(out_dir)
    return {**model.meta, "heads": list(model.heads)}


def retrain_heads(artifact: Path, out_dir: Path, brand: BrandTraining, config: TrainConfig = TrainConfig(),
                  progress: Callable[[str], None] = print) -> dict:
    """``--heads-only``: load ``artifact``, keep its encoder (the slow part) and sentiment
    head, learn the brand's topic and priority heads, save to ``out_dir``. Sentiment
    rows among the extras retrain the sentiment head too, on the artifact's recorded
    training CSVs plus those rows (re-encoded: about a minute), unless the artifact
    already learned exactly those rows."""
    torch.set_num_threads(config.threads)
    started = time.perf_counter()
    model = LocalModel.load(artifact, threads=config.threads)
    if not isinstance(model, LocalModel) or "sentiment" not in model.heads:
        raise LocalModelError(f"{artifact}: --heads-only needs an artifact of `dallosh train` "
                              "with a sentiment head")
    progress(f"reusing the encoder and sentiment head of {artifact} ({model.name}); loaded in "
             f"{time.perf_counter() - started:.1f}s")
    extras = brand.sentiment_extras()
    learned = {source.get("sha256") for source in model.meta.get("data", [])}
    if extras and all(extra_digest(extra) in learned for extra, _ in extras):
        # The brand's labelled tweets (and any other extras) are already in this
        # sentiment head's data (the first run trained on them): no re-encoding.
        progress("sentiment: the extra rows are already learned by this artifact's sentiment head")
    elif extras:
        _retrain_sentiment(model, extras, config, progress)
    train_brand_heads(model, brand.brand, brand.extras, brand.method, brand.compare, progress)
    model.meta["heads_retrained_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    model.save(out_dir)
    return {**model.meta, "heads": list(model.heads), "seconds": round(time.perf_counter() - started, 1)}


def _retrain_sentiment(model: LocalModel, extras: list[tuple[LabelledSet, str]], config: TrainConfig,
                       progress: Callable[[str], None]) -> None:
    paths = [Path(s["path"]) for s in model.meta.get("data", []) if Path(s["path"]).is_file()]
    if not paths:
        raise LocalModelError("the artifact's training CSVs are gone, so its sentiment head cannot be "
                              "retrained with the extra sentiment rows; train in full (without "
                              "--heads-only) or give extras without a sentiment column")
    rows = read_training_csvs(paths)
    for extra, source in extras:
        progress(f"sentiment: {rows.add_extra(extra, source):,} extra row(s) from {source}")
    is_val = np.array([is_validation(t, config.val_percent) for t in rows.texts])
    progress(f"encoding {len(rows.texts):,} texts for the sentiment head ...")
    embeddings = encode_with_progress(model.encoder, rows.texts, progress)
    heads, metrics = fit_heads(rows, embeddings, is_val, rows.weights(), config, progress,
                               only=("sentiment",))
    model.heads["sentiment"] = heads["sentiment"]
    model.meta.setdefault("metrics", {})["sentiment"] = metrics["sentiment"]
    model.meta["data"] = rows.sources


def fit_heads(rows: LabelledRows, embeddings: np.ndarray, is_val: np.ndarray, balance: np.ndarray,
              config: TrainConfig, progress: Callable[[str], None], only: Sequence[str] = HEADS
              ) -> tuple[dict, dict]:
    """The calibrated MLP heads of the label columns (``only`` those named)."""
    heads, metrics = {}, {}
    for name in only:
        labelled = np.array([y is not None for y in rows.labels[name]])
        if labelled.sum() < 20:
            continue
        y = np.array([y or "" for y in rows.labels[name]], dtype=object)
        train_mask, val_mask = labelled & ~is_val, labelled & is_val
        if val_mask.sum() == 0:
            raise LocalModelError(f"head {name!r}: no validation rows; give more labelled data")
        spec, head, metrics[name] = train_head(name, embeddings[train_mask], list(y[train_mask]),
                                               embeddings[val_mask], list(y[val_mask]), config, progress,
                                               row_weights=balance[train_mask])
        heads[name] = (spec, head)
    return heads, metrics


def cached_embeddings(encoder: Encoder, rows: LabelledRows, cache: Path | None,
                      progress: Callable[[str], None], tick: Tick | None = None) -> np.ndarray:
    identity = f"{encoder.spec}:{getattr(encoder, 'depth', 'all')}:{getattr(encoder, 'prefix', '')}"
    key = hashlib.sha256("\x1f".join([identity, *rows.texts]).encode("utf-8")).hexdigest()[:24]
    path = cache / f"{encoder.spec.replace('/', '_')}-{key}.npy" if cache else None
    if path is not None and path.is_file():
        progress(f"embeddings of {len(rows.texts):,} texts from the cache ({path})")
        if tick:
            tick(len(rows.texts), len(rows.texts))
        return np.load(path)
    progress(f"encoding {len(rows.texts):,} texts with {encoder.spec} ...")
    embeddings = encode_with_progress(encoder, rows.texts, progress, tick=tick)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, embeddings)
    return embeddings


def encode_with_progress(encoder: Encoder, texts: Sequence[str], progress: Callable[[str], None],
                         chunk: int = 2048, tick: Tick | None = None) -> np.ndarray:
    """``tick`` (a progress bar) is called after every chunk, smaller then."""
    parts, started = [np.zeros((0, encoder.dim), dtype=np.float32)], time.perf_counter()
    chunk = min(chunk, 256) if tick else chunk
    for start in range(0, len(texts), chunk):
        parts.append(encoder.encode(texts[start:start + chunk]))
        done = min(start + chunk, len(texts))
        if tick:
            tick(done, len(texts))
        elif done < len(texts):
            rate = done / (time.perf_counter() - started)
            progress(f"  {done:,}/{len(texts):,} encoded ({rate:,.0f}/s, "
                     f"~{(len(texts) - done) / rate:,.0f}s left)")
    return np.vstack(parts).astype(np.float32)
