"""Topic and priority heads learned from a brand's taxonomy examples (few-shot).

A brand file gives ~8-15 example tweets per topic and per priority level
(:mod:`stream_app.taxonomy`): far too few to tune an encoder, enough for a linear head
on the sentence embeddings the sentiment head already computes. The heads therefore
reuse the artifact's encoder as it is (no second encoder pass at inference, so the
tier keeps its speed), and changing a taxonomy retrains them in seconds instead of the
17-minute encoder tuning.

Methods compared here, each scored by stratified k-fold cross-validation on the
brand's own examples (out-of-fold macro-F1; ``dallosh train --brand`` prints the
table, docs/local-model.md has the measured figures):

``prototype``   mean embedding per class, cosine similarity (a nearest-centroid
                classifier; nothing to fit);
``logreg``      multinomial logistic regression (L2, class-balanced), fitted by L-BFGS;
``contrastive`` SetFit's idea at the head: a linear map of the frozen embedding trained
                on same/different-label pairs (cosine loss), then the logistic regression
                on the mapped vectors (the map composes into one linear layer).

Every method ends as one linear layer (``Head`` with ``hidden=0``), so the artifact
format and the inference path are the same whatever was chosen. The priority head
may also read the sentiment and topic heads' probabilities (``inputs``): a negative
outage report is more urgent than a neutral question. Confidences are calibrated by a
temperature fitted on the out-of-fold logits (the final head is fitted on every row).

Extra rows (distillation from the store, analysts' corrections) join the examples
with their own weights; the cross-validation folds run over all rows, and the scores
reported are those on the brand's examples.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from stream_app.local_model.encoders import LocalModelError
from stream_app.classify.types import SENTIMENTS
from stream_app.taxonomy import Taxonomy, TaxonomyError

if TYPE_CHECKING:  # torch is imported by the functions that train (the worker checks
    import torch   # an artifact's taxonomy before it imports torch)

    from stream_app.local_model.model import Head, HeadSpec, LocalModel
    from stream_app.settings import Settings

METHODS = ("prototype", "logreg", "contrastive")
DEFAULT_METHOD = "logreg"
FOLDS = 5
EXAMPLE, DESCRIPTION, STORE, CORRECTION = "example", "description", "store", "correction"
# Per-row weights: an analyst's correction counts more than a written example; the
# store's rows (the LLM's answers, possibly thousands) together weigh at most as much
# as the examples, so they refine the brand's definitions instead of replacing them.
CORRECTION_WEIGHT = 3.0
# The brand's labelled tweets, as one source of the sentiment head's training data,
# weigh this many times each generic source (the airline tweets, the French reviews):
# they are the brand's domain and its writers. Chosen by 5-fold cross-validation on the
# written rows of `free` (macro-F1 0.78 at 1x, 0.80 at 3x); never on the held-out sets.
BRAND_SENTIMENT_SHARE = 3.0
# The topic head also reads the rules tier's answer (one-hot sentiment, topic and
# priority, scaled: the embedding is unit-length), so a keyword the brand declared
# counts where the encoder is unsure. Chosen on the written rows (trained on one
# writer's, scored on the other's): topic macro-F1 +0.03 (free) and +0.05 (airline) at
# 0.3; the priority and sentiment heads did not gain from it, so only topic reads it.
RULES_INPUT = "rules"
RULES_FEATURE_SCALE = 0.3


def taxonomy_fingerprint(taxonomy: Taxonomy) -> str:
    """SHA-256 of everything the heads learn from (names, teams, descriptions,
    examples, levels): the artifact records it; a different one means retrain."""
    canonical = {
        "topics": [[t.name, t.team, t.description, list(t.examples)] for t in taxonomy.topics],
        "priorities": [[p.level, p.description, list(p.examples)] for p in taxonomy.priorities],
    }
    if taxonomy.labelled:  # absent from the canonical form otherwise: older hashes still match
        canonical["labelled"] = [[r.text, r.sentiment, r.priority, r.topic] for r in taxonomy.labelled]
    return hashlib.sha256(json.dumps(canonical, ensure_ascii=False, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class BrandTaxonomy:
    brand: str
    source: str
    taxonomy: Taxonomy | None   # None: the brand file declares no taxonomy

    @property
    def fingerprint(self) -> str | None:
        return taxonomy_fingerprint(self.taxonomy) if self.taxonomy is not None else None


def read_brand_taxonomy(text: str, source: str, folder: Any = None) -> BrandTaxonomy:
    """A brand file's name and taxonomy (``TaxonomyError``: one line saying what is wrong),
    parsed and checked by :func:`stream_app.clean.relevance.parse_brand`; ``folder``
    holds the files the brand file names."""
    from stream_app.clean.relevance import parse_brand
    try:
        config = parse_brand(text, source, folder)
    except ValueError as exc:
        raise TaxonomyError(str(exc)) from None
    return BrandTaxonomy(config.name, source, config.taxonomy)


def brand_taxonomy(settings: "Settings", spec: "str | Path | None" = None) -> BrandTaxonomy:
    """The taxonomy of the brand ``spec`` (a brand file or a built-in name), else of the
    configured brand; read by :func:`stream_app.clean.relevance.load_brand`."""
    from stream_app.clean.relevance import load_brand
    try:
        config = load_brand(settings, spec)
    except ValueError as exc:   # SettingsError, TaxonomyError: one line each
        raise TaxonomyError(str(exc)) from None
    return BrandTaxonomy(config.name, f"brand {config.name!r}", config.taxonomy)


def taxonomy_mismatch(meta: dict[str, Any], configured: BrandTaxonomy | None) -> str | None:
    """Why an artifact's topic/priority heads must not serve the configured brand, or
    ``None`` when they may. Heads record the taxonomy they learned (brand, SHA-256);
    heads trained from CSV columns (no record) serve only a brand without a taxonomy."""
    heads = set(meta.get("heads", {})) & {"topic", "priority"}
    if not heads or configured is None:
        return None
    trained = meta.get("taxonomy")
    wanted = configured.fingerprint
    if trained is None:
        if wanted is None:
            return None
        return (f"its {'/'.join(sorted(heads))} heads were trained from CSV labels, not from the "
                f"taxonomy of brand {configured.brand!r}")
    if trained.get("sha256") == wanted:
        return None
    if wanted is None:
        return (f"its heads were trained for the taxonomy of brand {trained.get('brand')!r} and the "
                f"configured brand {configured.brand!r} declares none")
    return (f"its heads were trained for the taxonomy of brand {trained.get('brand')!r} "
            f"({str(trained.get('sha256'))[:12]}), not for the configured one of brand "
            f"{configured.brand!r} ({wanted[:12]}); retrain them with `dallosh train --heads-only`")


@dataclass
class LabelledSet:
    """One head's training rows: text, label, kind (example/store/correction)."""
    texts: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)

    def add(self, text: str, label: str, kind: str) -> None:
        self.texts.append(text)
        self.labels.append(label)
        self.kinds.append(kind)

    def weights(self) -> np.ndarray:
        kinds = np.array(self.kinds)
        w = np.ones(len(kinds), dtype=np.float32)
        w[kinds == CORRECTION] = CORRECTION_WEIGHT
        n_store, n_examples = (kinds == STORE).sum(), (kinds == EXAMPLE).sum()
        if n_store:
            w[kinds == STORE] = min(1.0, n_examples / n_store)
        return w


def taxonomy_sets(taxonomy: Taxonomy) -> dict[str, LabelledSet]:
    """The brand's examples: topic -> its name, priority level -> "0"/"1"/"2", then the
    rows of its ``labelled_examples`` file. A topic's description is one more training
    row (measured: +0.02 to +0.06 cross-validated topic macro-F1 on two of three
    brands, neutral on the third); never scored."""
    topic, priority = LabelledSet(), LabelledSet()
    for t in taxonomy.topics:
        for text in t.examples:
            topic.add(text, t.name, EXAMPLE)
        topic.add(t.description, t.name, DESCRIPTION)
    for p in taxonomy.priorities:
        for text in p.examples:
            priority.add(text, str(p.level), EXAMPLE)
    for row in taxonomy.labelled:
        if row.topic is not None:
            topic.add(row.text, row.topic, EXAMPLE)
        if row.priority is not None:
            priority.add(row.text, str(row.priority), EXAMPLE)
    return {"topic": topic, "priority": priority}


def labelled_sentiment(taxonomy: Taxonomy) -> LabelledSet:
    """The sentiment-labelled rows of the brand's ``labelled_examples`` file."""
    rows = LabelledSet()
    for row in taxonomy.labelled:
        if row.sentiment is not None:
            rows.add(row.text, row.sentiment, EXAMPLE)
    return rows


def rule_features(taxonomy: Taxonomy, texts: Sequence[str]) -> np.ndarray:
    """The rules tier's labels of ``texts`` as scaled one-hot rows: sentiment (3), the
    taxonomy's topics in order, priority (3). Width: :func:`rule_features_width`."""
    from stream_app.classify.rules import compile_rules
    rules, topics = compile_rules(taxonomy), taxonomy.topic_names
    out = np.zeros((len(texts), rule_features_width(taxonomy)), dtype=np.float32)
    for row, text in enumerate(texts):
        answer = rules.classify(text)
        out[row, SENTIMENTS.index(answer.sentiment)] = RULES_FEATURE_SCALE
        out[row, 3 + topics.index(answer.topic)] = RULES_FEATURE_SCALE
        out[row, 3 + len(topics) + answer.priority] = RULES_FEATURE_SCALE
    return out


def rule_features_width(taxonomy: Taxonomy) -> int:
    return 3 + len(taxonomy.topics) + 3


def stratified_folds(labels: Sequence[str], texts: Sequence[str], k: int = FOLDS) -> np.ndarray:
    """Fold index per row: within each class, rows ordered by a hash of their text are
    dealt round-robin (stable across runs and row orders; every fold sees every class
    that has >= k rows)."""
    folds = np.zeros(len(labels), dtype=np.int64)
    for label in sorted(set(labels)):
        rows = [i for i, y in enumerate(labels) if y == label]
        rows.sort(key=lambda i: hashlib.sha256(texts[i].encode("utf-8")).hexdigest())
        for n, i in enumerate(rows):
            folds[i] = n % k
    return folds


# --------------------------------------------------------------------------- methods

def _balanced(y: np.ndarray, n: int, rows: np.ndarray) -> "torch.Tensor":
    """Row weights times class-balancing weights (macro-F1 is the goal)."""
    import torch
    counts = np.bincount(y, weights=rows, minlength=n)
    per_class = counts.sum() / (n * np.clip(counts, 1e-9, None))
    return torch.from_numpy((rows * per_class[y]).astype(np.float32))


def fit_prototype(x: np.ndarray, y: np.ndarray, n: int, rows: np.ndarray) -> "torch.nn.Linear":
    """Weighted mean of each class's (unit) embeddings, normalised; logit = 10 * cosine
    (the temperature rescales it)."""
    import torch
    layer = torch.nn.Linear(x.shape[1], n)
    protos = np.zeros((n, x.shape[1]), dtype=np.float32)
    for k in range(n):
        member = y == k
        if member.any():
            protos[k] = (x[member] * rows[member, None]).sum(0)
    protos /= np.clip(np.linalg.norm(protos, axis=1, keepdims=True), 1e-9, None)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(protos * 10.0))
        layer.bias.zero_()
    return layer


def fit_logreg(x: np.ndarray, y: np.ndarray, n: int, rows: np.ndarray,
               l2: float = 1e-4) -> "torch.nn.Linear":
    """Multinomial logistic regression, class-balanced, L2-penalised, full-batch L-BFGS
    (a few hundred rows: well under a second)."""
    import torch
    torch.manual_seed(0)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    w = _balanced(y, n, rows)
    layer = torch.nn.Linear(x.shape[1], n)
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    optimiser = torch.optim.LBFGS(layer.parameters(), lr=1.0, max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        losses = torch.nn.functional.cross_entropy(layer(xt), yt, reduction="none")
        loss = (losses * w).sum() / w.sum() + l2 * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return layer


def fit_contrastive(x: np.ndarray, y: np.ndarray, n: int, rows: np.ndarray,
                    epochs: int = 40, pairs_per_row: int = 8) -> "torch.nn.Linear":
    """SetFit at the head: a square linear map (from the identity) trained so that
    same-label pairs have cosine 1 and different-label pairs cosine 0, then the
    logistic regression on the mapped vectors; returned composed into one layer."""
    import torch
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    dim = x.shape[1]
    mapping = torch.nn.Linear(dim, dim, bias=False)
    with torch.no_grad():
        mapping.weight.copy_(torch.eye(dim))
    by_class = {k: np.flatnonzero(y == k) for k in range(n)}
    left, right = [], []
    for i in range(len(y)):
        same = by_class[int(y[i])]
        other = np.flatnonzero(y != y[i])
        for j in rng.choice(same, pairs_per_row // 2):
            left.append(i), right.append(j)
        if len(other):
            for j in rng.choice(other, pairs_per_row // 2):
                left.append(i), right.append(j)
    a, b = torch.from_numpy(x[left]), torch.from_numpy(x[right])
    target = torch.from_numpy((y[left] == y[right]).astype(np.float32))
    optimiser = torch.optim.AdamW(mapping.parameters(), lr=2e-3, weight_decay=0.0)
    for _ in range(epochs):
        for batch in torch.randperm(len(target)).split(256):
            optimiser.zero_grad()
            cos = torch.nn.functional.cosine_similarity(mapping(a[batch]), mapping(b[batch]))
            loss = torch.nn.functional.mse_loss(cos, target[batch])
            loss.backward()
            optimiser.step()
    with torch.no_grad():
        mapped = mapping(torch.from_numpy(x)).numpy()
    head = fit_logreg(mapped, y, n, rows)
    composed = torch.nn.Linear(dim, n)
    with torch.no_grad():
        composed.weight.copy_(head.weight @ mapping.weight)
        composed.bias.copy_(head.bias)
    return composed


FITTERS: dict[str, Callable[..., "torch.nn.Linear"]] = {
    "prototype": fit_prototype, "logreg": fit_logreg, "contrastive": fit_contrastive}


# --------------------------------------------------------------------------- evaluation

def cross_validate(method: str, x: np.ndarray, y: np.ndarray, n: int, rows: np.ndarray,
                   folds: np.ndarray) -> np.ndarray:
    """Out-of-fold logits (every row scored by a head that never saw it); rows of
    fold -1 are always trained on (descriptions)."""
    import torch
    fit = FITTERS[method]
    logits = np.zeros((len(y), n), dtype=np.float32)
    for f in np.unique(folds[folds >= 0]):
        held = folds == f
        layer = fit(x[~held], y[~held], n, rows[~held])
        with torch.no_grad():
            logits[held] = layer(torch.from_numpy(x[held])).numpy()
    return logits


@dataclass
class FewShotHead:
    spec: "HeadSpec"
    module: "Head"
    metrics: dict
    oof: np.ndarray        # calibrated out-of-fold probabilities, one row per training row


def train_fewshot_head(name: str, features: np.ndarray, data: LabelledSet, method: str = DEFAULT_METHOD,
                       inputs: tuple[str, ...] = (), compare: Sequence[str] = (),
                       progress: Callable[[str], None] = print) -> FewShotHead:
    """Cross-validate ``method`` (and the ``compare`` methods) on ``data``, then fit
    ``method`` on every row, calibrated by the out-of-fold temperature."""
    import torch

    from stream_app.local_model.model import Head, HeadSpec
    from stream_app.local_model.train import _calibration, fit_temperature, macro_f1
    labels = tuple(sorted(set(data.labels)))
    if len(labels) < 2:
        raise LocalModelError(f"head {name!r}: the examples have only the label(s) {list(labels)}")
    index = {label: i for i, label in enumerate(labels)}
    y = np.array([index[label] for label in data.labels])
    rows = data.weights()
    folds = stratified_folds(data.labels, data.texts)
    folds[np.array(data.kinds) == DESCRIPTION] = -1
    is_example = np.array(data.kinds) == EXAMPLE
    scores = {}
    for candidate in dict.fromkeys([method, *compare]):
        started = time.perf_counter()
        oof = cross_validate(candidate, features, y, len(labels), rows, folds)
        predicted = oof.argmax(1)
        scores[candidate] = {
            "cv_macro_f1": round(macro_f1(y[is_example], predicted[is_example], len(labels)), 4),
            "cv_accuracy": round(float((y[is_example] == predicted[is_example]).mean()), 4),
            "seconds": round(time.perf_counter() - started, 2)}
        if candidate == method:
            chosen_oof = oof
    scored = torch.from_numpy(folds >= 0)
    oof_t, y_t = torch.from_numpy(chosen_oof), torch.from_numpy(y)
    temperature = fit_temperature(oof_t[scored], y_t[scored])
    final = FITTERS[method](features, y, len(labels), rows)
    module = Head(features.shape[1], 0, len(labels))
    module.net[0].load_state_dict(final.state_dict())
    module.eval()
    kinds = {str(k): int(c) for k, c in zip(*np.unique(data.kinds, return_counts=True))}
    metrics = {"method": method, "folds": FOLDS, "rows": kinds, **scores[method],
               "temperature": round(temperature, 4), **_calibration(oof_t[scored], y_t[scored], temperature)}
    if len(scores) > 1:
        metrics["compared"] = scores
    table = ", ".join(f"{m} {s['cv_macro_f1']:.3f}" for m, s in scores.items())
    progress(f"  {name} ({len(labels)} labels, {kinds}): {FOLDS}-fold macro-F1 on the brand's "
             f"examples: {table}; kept {method}, temperature {temperature:.2f}, "
             f"ECE {metrics['val_ece_raw']:.3f} -> {metrics['val_ece']:.3f}")
    oof = torch.softmax(oof_t / temperature, dim=1).numpy()
    return FewShotHead(HeadSpec(name, labels, 0, temperature, inputs), module, metrics, oof)


# --------------------------------------------------------------------------- the brand's heads

def merge_extras(sets: dict[str, LabelledSet], extras: dict[str, LabelledSet] | None,
                 taxonomy: Taxonomy, progress: Callable[[str], None]) -> None:
    """Add store/correction rows to the example sets; rows whose topic is not one of
    the taxonomy's names are skipped (and counted), a text already among the examples
    keeps the example's label."""
    known = {"topic": set(taxonomy.topic_names), "priority": {"0", "1", "2"}}
    for head, extra in (extras or {}).items():
        if head not in sets:
            continue
        seen = set(sets[head].texts)
        skipped = 0
        for text, label, kind in zip(extra.texts, extra.labels, extra.kinds):
            if label not in known[head]:
                skipped += 1
            elif text not in seen:
                seen.add(text)
                sets[head].add(text, label, kind)
        if skipped:
            progress(f"  {head}: {skipped} extra row(s) skipped (label not in the taxonomy)")


def train_brand_heads(model: "LocalModel", brand: BrandTaxonomy, extras: dict[str, LabelledSet] | None = None,
                      method: str = DEFAULT_METHOD, compare: Sequence[str] = (),
                      progress: Callable[[str], None] = print,
                      tick: Callable[[int, int], None] | None = None) -> dict:
    """Replace ``model``'s topic and priority heads by heads learned from the brand's
    taxonomy (plus ``extras``); the encoder and the sentiment head are reused as they
    are. Records the taxonomy in ``model.meta``; returns the heads' metrics."""
    taxonomy = brand.taxonomy
    if taxonomy is None:
        raise LocalModelError(f"{brand.source}: the brand file has no `taxonomy` section to learn "
                              "topics and priorities from (see stream_app/taxonomy.py)")
    started = time.perf_counter()
    sets = taxonomy_sets(taxonomy)
    merge_extras(sets, extras, taxonomy, progress)
    model.drop_heads(["topic", "priority"])
    texts = list(dict.fromkeys(sets["topic"].texts + sets["priority"].texts))
    progress(f"brand {brand.brand}: learning {len(taxonomy.topics)} topics and 3 priority levels "
             f"from {len(texts):,} texts (encoder and sentiment head reused) ...")
    from stream_app.local_model.train import encode_with_progress
    embedding = dict(zip(texts, encode_with_progress(model.encoder, texts, progress, tick=tick)))

    # The topic head reads the rules' answer too (RULES_INPUT); the artifact keeps the
    # taxonomy those rules were compiled from, so it answers the same way wherever it runs.
    from stream_app.taxonomy import taxonomy_to_dict
    model.meta["rules_taxonomy"] = taxonomy_to_dict(taxonomy)
    topic_x = np.hstack([np.stack([embedding[t] for t in sets["topic"].texts]),
                         rule_features(taxonomy, sets["topic"].texts)])
    topic = train_fewshot_head("topic", topic_x, sets["topic"], method, inputs=(RULES_INPUT,),
                               compare=compare, progress=progress)
    model.heads["topic"] = (topic.spec, topic.module)

    # Priority reads the sentiment and topic probabilities next to the embedding. For
    # a text the topic head was trained on, its out-of-fold probabilities stand in (the
    # in-sample ones would be over-confident and the priority head would over-trust them).
    priority_x = np.stack([embedding[t] for t in sets["priority"].texts])
    inputs = tuple(name for name in ("sentiment", "topic") if name in model.heads)
    probs = model.head_probabilities(priority_x, texts=sets["priority"].texts)
    oof = dict(zip(sets["topic"].texts, topic.oof))
    probs["topic"] = np.stack([oof.get(t, p) for t, p in zip(sets["priority"].texts, probs["topic"])])
    with_inputs = np.hstack([priority_x, *(probs[name] for name in inputs)]).astype(np.float32)
    priority = train_fewshot_head("priority", with_inputs, sets["priority"], method, inputs=inputs,
                                  compare=compare, progress=progress)
    metrics = {"topic": topic.metrics, "priority": priority.metrics}
    if compare:
        alone = train_fewshot_head("priority (embedding only)", priority_x, sets["priority"], method,
                                   progress=progress)
        metrics["priority"]["embedding_only_cv_macro_f1"] = alone.metrics["cv_macro_f1"]
    model.heads["priority"] = (priority.spec, priority.module)
    model.meta["taxonomy"] = {"brand": brand.brand, "source": brand.source,
                              "sha256": taxonomy_fingerprint(taxonomy),
                              "topics": list(taxonomy.topic_names), "teams": taxonomy.teams,
                              "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "seconds": round(time.perf_counter() - started, 1)}
    model.meta.setdefault("metrics", {}).update(metrics)
    return metrics
