"""Fine-tuning the encoder's top layers for the labels (``dallosh train --tune-layers``).

A frozen encoder with a small head reaches ~0.77 macro-F1 on the airline tweets; the
fine-tuned BERT-class models of the literature reach ~0.80. Fine-tuning all of e5-small
on two CPU cores would take hours, but its lower layers carry general language and its
top layers the task: so the lower ``depth - T`` layers stay frozen and run once per
text (their output is kept in memory, bf16), and only the top ``T`` layers are trained,
with one linear layer per label on the mean-pooled output, for a few epochs.
The epoch with the best validation macro-F1 is kept. The trainer then encodes every
text again through the inference path and fits the usual calibrated heads on those
embeddings (:mod:`stream_app.local_model.train`), so the artifact needs nothing at
inference beyond the encoder with its tuned layers.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from stream_app.local_model.encoders import E5SmallEncoder, LocalModelError, mean_pool

POOL_SCALE = 10.0  # logits of a linear layer on a unit vector need a wider range


@dataclass(frozen=True)
class TuneConfig:
    layers: int = 4            # top layers trained; the ones below stay frozen
    epochs: int = 3
    learning_rate: float = 2e-4
    head_learning_rate: float = 1e-3
    batch_size: int = 32
    seed: int = 0


@dataclass
class _Task:
    name: str
    labels: tuple[str, ...]
    targets: torch.Tensor      # label index per row, -1 where the row has no label
    class_weights: torch.Tensor


def _tasks(labels: dict[str, list[str | None]], train: np.ndarray) -> list[_Task]:
    tasks = []
    for name, column in labels.items():
        names = tuple(sorted({y for y, t in zip(column, train) if y is not None and t}))
        if len(names) < 2:
            continue
        index = {label: i for i, label in enumerate(names)}
        targets = torch.tensor([index.get(y, -1) if y is not None else -1 for y in column])
        counts = torch.bincount(targets[torch.from_numpy(train) & (targets >= 0)],
                                minlength=len(names)).float()
        tasks.append(_Task(name, names, targets, counts.sum() / (len(names) * counts.clamp(min=1))))
    return tasks


def _pad(states: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(s) for s in states)
    hidden = torch.zeros(len(states), length, states[0].shape[1])
    attention = torch.zeros(len(states), length, dtype=torch.long)
    for row, state in enumerate(states):
        hidden[row, :len(state)] = state.float()
        attention[row, :len(state)] = 1
    return hidden, attention


def _by_length(rows: Sequence[int], lengths: Sequence[int], size: int) -> list[list[int]]:
    ordered = sorted(rows, key=lambda i: lengths[i])
    return [ordered[i:i + size] for i in range(0, len(ordered), size)]


def frozen_states(encoder: E5SmallEncoder, texts: Sequence[str], stop: int,
                  progress: Callable[[str], None], batch_size: int = 32) -> list[torch.Tensor]:
    """Each text's hidden states after the first ``stop`` layers (bf16, unpadded)."""
    ids = encoder.tokenize(texts)
    states: list[torch.Tensor] = [torch.empty(0)] * len(ids)
    batches = _by_length(range(len(ids)), [len(i) for i in ids], batch_size)
    started = time.perf_counter()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=encoder.bf16):
        for n, rows in enumerate(batches, start=1):
            hidden, attention = encoder.embed([ids[i] for i in rows])
            hidden = encoder.run_layers(hidden, attention, 0, stop).to(torch.bfloat16)
            for row, i in enumerate(rows):
                states[i] = hidden[row, :len(ids[i])].clone()
            if n % 100 == 0:
                progress(f"  frozen layers: {n * batch_size:,}/{len(ids):,} texts "
                         f"({n * batch_size / (time.perf_counter() - started):,.0f}/s)")
    return states


def _macro_f1(truth: torch.Tensor, predicted: torch.Tensor, n_labels: int) -> float:
    from stream_app.local_model.train import macro_f1
    return macro_f1(truth.numpy(), predicted.numpy(), n_labels)


def fine_tune(encoder: E5SmallEncoder, texts: Sequence[str], labels: dict[str, list[str | None]],
              is_val: np.ndarray, row_weights: np.ndarray, config: TuneConfig,
              progress: Callable[[str], None] = print) -> dict:
    """Train ``encoder``'s top ``config.layers`` layers in place (the best epoch's
    weights are kept); returns the metrics per epoch."""
    start = encoder.depth - config.layers
    if not isinstance(encoder, E5SmallEncoder) or not 0 <= start < encoder.depth:
        raise LocalModelError(f"cannot fine-tune {config.layers} layer(s) of {encoder.spec!r} "
                              "(e5-small only, at most as many layers as it uses)")
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    train = ~is_val
    tasks = _tasks(labels, train)
    if not tasks:
        raise LocalModelError("fine-tuning needs at least one label column with two classes")
    progress(f"fine-tuning layers {start + 1}-{encoder.depth} of {encoder.spec}: running the frozen "
             f"layers once over {len(texts):,} texts ...")
    states = frozen_states(encoder, texts, start, progress)
    lengths = [len(s) for s in states]
    layers = encoder.layers
    heads = torch.nn.ModuleDict({t.name: torch.nn.Sequential(torch.nn.Dropout(0.1),
                                                             torch.nn.Linear(encoder.dim, len(t.labels)))
                                 for t in tasks})
    tuned = [layers[i] for i in range(start, encoder.depth)]
    optimiser = torch.optim.AdamW(
        [{"params": [p for layer in tuned for p in layer.parameters()], "lr": config.learning_rate},
         {"params": heads.parameters(), "lr": config.head_learning_rate}], weight_decay=0.01)
    train_rows = [i for i in range(len(texts)) if train[i]]
    val_rows = [i for i in range(len(texts)) if not train[i]]
    steps_per_epoch = -(-len(train_rows) // config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=[config.learning_rate, config.head_learning_rate],
        total_steps=config.epochs * steps_per_epoch, pct_start=0.1)
    weights = torch.from_numpy(row_weights.astype(np.float32))

    def forward(rows: list[int]) -> dict[str, torch.Tensor]:
        hidden, attention = _pad([states[i] for i in rows])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=encoder.bf16):
            hidden = encoder.run_layers(hidden, attention, start, encoder.depth)
            pooled = mean_pool(hidden, attention) * POOL_SCALE
            return {t.name: heads[t.name](pooled).float() for t in tasks}

    best = (-1.0, 0, None)
    history = []
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        for module in (*tuned, heads):
            module.train()
        # Batches of similar lengths (little padding), in random order.
        chunk = config.batch_size * 50
        shuffled = rng.sample(train_rows, len(train_rows))
        batches = [b for c in range(0, len(shuffled), chunk)
                   for b in _by_length(shuffled[c:c + chunk], lengths, config.batch_size)]
        rng.shuffle(batches)
        for n, rows in enumerate(batches, start=1):
            if n % 100 == 0:
                elapsed = time.perf_counter() - started
                progress(f"  epoch {epoch}/{config.epochs}: {n}/{len(batches)} batches, "
                         f"~{elapsed / n * (len(batches) - n):,.0f}s left in this epoch")
            logits = forward(rows)
            index = torch.tensor(rows)
            loss = torch.zeros(())
            for task in tasks:
                targets = task.targets[index]
                labelled = targets >= 0
                if labelled.any():
                    per_row = torch.nn.functional.cross_entropy(logits[task.name][labelled],
                                                                targets[labelled], reduction="none")
                    scale = task.class_weights[targets[labelled]] * weights[index][labelled]
                    loss = loss + (per_row * scale).sum() / scale.sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
        for module in (*tuned, heads):
            module.eval()
        scores = {}
        with torch.inference_mode():
            predicted = {t.name: [] for t in tasks}
            order = [i for b in _by_length(val_rows, lengths, 64) for i in b]
            for b in range(0, len(order), 64):
                for name, out in forward(order[b:b + 64]).items():
                    predicted[name].append(out.argmax(1))
            index = torch.tensor(order)
            for task in tasks:
                targets = task.targets[index]
                labelled = targets >= 0
                scores[task.name] = round(_macro_f1(targets[labelled], torch.cat(predicted[task.name])[labelled],
                                                    len(task.labels)), 4)
        score = float(np.mean(list(scores.values())))
        history.append({"epoch": epoch, "val_macro_f1": scores, "seconds": round(time.perf_counter() - started, 1)})
        progress(f"  epoch {epoch}/{config.epochs}: val macro-F1 {scores} "
                 f"({time.perf_counter() - started:,.0f}s)")
        if score > best[0]:
            best = (score, epoch, [copy.deepcopy(layer.state_dict()) for layer in tuned])
    for layer, state in zip(tuned, best[2]):
        layer.load_state_dict(state)
    encoder.tuned_from = start
    return {"tuned_layers": [start, encoder.depth], "best_epoch": best[1], "epochs": history,
            "config": {k: getattr(config, k) for k in config.__dataclass_fields__}}
