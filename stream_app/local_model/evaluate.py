"""Evaluation harness for sentiment classifiers: metrics, calibration, a confusion PNG.

Model-independent: :func:`evaluate` takes any ``predict(texts) -> labels`` callable, so
the degraded rules tier is measured today and the trained local model later, on the
same held-out files (:mod:`stream_app.local_model.datasets`).

Metric conventions (also written into every result under ``"conventions"``)
    * ``macro_f1`` is the unweighted mean F1 over the labels that occur in the truth
      (``macro_f1_labels``); a label that occurs only among predictions still costs
      precision/recall of the others but is not averaged in. A class present in the
      truth that is never predicted has precision 0, recall 0, F1 0 (no NaN).
    * When the truth holds no ``neutral`` row (pos/neg data such as the French
      reviews) the mode is ``"binary"``: ``binary_accuracy`` counts a predicted
      neutral as wrong (it equals ``accuracy``), ``binary.accuracy_on_decided`` leaves
      those rows out and ``binary.neutral_predicted`` says how many there were.
"""

from __future__ import annotations

import csv
import math
import struct
import time
import zlib
from pathlib import Path
from typing import Callable, Iterable, Sequence

__all__ = [
    "SENTIMENTS", "LabelledDataError", "read_labelled_csv", "normalise_label", "evaluate",
    "expected_calibration_error", "write_confusion_png", "render_confusion_png",
    "rules_predict", "resolve_eval_data", "load_predictor", "format_result",
]

SENTIMENTS = ("negative", "neutral", "positive")

# Case-insensitive, surrounding spaces ignored. Numbers are polarity signs (-1/0/1):
# a file using only 0 and 1 is refused as ambiguous (0 = negative in binary files).
LABEL_ALIASES = {
    "negative": "negative", "neg": "negative", "-1": "negative",
    "neutral": "neutral", "neu": "neutral", "0": "neutral",
    "positive": "positive", "pos": "positive", "1": "positive", "+1": "positive",
}
_NUMERIC = {"-1", "0", "1", "+1"}


class LabelledDataError(ValueError):
    """A labelled CSV is unreadable or malformed; the message names the file (and line)."""


def normalise_label(value: str) -> str | None:
    """``"Positive"``/``"pos"``/``"1"`` -> ``"positive"`` etc.; None when unknown."""
    return LABEL_ALIASES.get((value or "").strip().lower())


def read_labelled_csv(path: str | Path) -> list[tuple[str, str]]:
    """``(text, sentiment)`` rows of a CSV with at least ``text`` and ``sentiment`` columns
    (header names case-insensitive; other columns ignored; UTF-8, BOM allowed).

    Labels: negative/neutral/positive, neg/neu/pos, or -1/0/1, in any case. Raises
    :class:`LabelledDataError` naming the file, and the line for a bad label.
    """
    path = Path(path)
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise LabelledDataError(f"{path}: empty file (expected a header with "
                                        "'text' and 'sentiment' columns)")
            names = [h.strip().lower() for h in header]
            missing = [c for c in ("text", "sentiment") if c not in names]
            if missing:
                raise LabelledDataError(
                    f"{path}: missing column {' and '.join(repr(c) for c in missing)} "
                    f"(found: {', '.join(repr(h) for h in header) or 'none'})")
            text_i, label_i = names.index("text"), names.index("sentiment")
            rows: list[tuple[str, str]] = []
            numeric_seen: set[str] = set()
            for record in reader:
                if not record or all(not cell.strip() for cell in record):
                    continue
                if len(record) <= max(text_i, label_i):
                    raise LabelledDataError(f"{path} line {reader.line_num}: {len(record)} "
                                            f"field(s), expected at least {len(names)}")
                raw = record[label_i]
                label = normalise_label(raw)
                if label is None:
                    raise LabelledDataError(
                        f"{path} line {reader.line_num}: bad sentiment label {raw!r} "
                        "(expected negative/neutral/positive, neg/neu/pos or -1/0/1)")
                if raw.strip() in _NUMERIC:
                    numeric_seen.add(raw.strip().lstrip("+"))
                rows.append((record[text_i], label))
    except UnicodeDecodeError as exc:
        raise LabelledDataError(f"{path}: not UTF-8 text ({exc.reason} at byte "
                                f"{exc.start})") from None
    except csv.Error as exc:
        raise LabelledDataError(f"{path}: malformed CSV ({exc})") from None
    except OSError as exc:
        raise LabelledDataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if numeric_seen and "-1" not in numeric_seen and "0" in numeric_seen:
        raise LabelledDataError(
            f"{path}: numeric labels 0/1 are ambiguous (read as -1/0/1 polarity, 0 would mean "
            "neutral; in 0/1 binary files it means negative): write negative/neutral/positive")
    if not rows:
        raise LabelledDataError(f"{path}: no labelled rows")
    return rows


# --------------------------------------------------------------------------- metrics

def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def evaluate(predict: Callable[[list[str]], Sequence[str] | Sequence[tuple[str, float]]],
             rows: Sequence[tuple[str, str]],
             labels: Sequence[str] = SENTIMENTS, batch_size: int = 512) -> dict:
    """Run ``predict`` over ``rows`` (``(text, true_label)``) in batches and score it.

    ``predict`` returns a label per text, or ``(label, confidence)`` pairs: then the
    result also holds ``calibration`` (expected calibration error).

    Returns ``n, labels, mode, accuracy, macro_f1, macro_f1_labels, per_class`` (label ->
    precision, recall, f1, support, predicted), ``confusion`` (rows = truth, columns =
    predicted, both in ``labels`` order), ``predict_s``, ``texts_per_s``, ``conventions``;
    plus ``binary_accuracy`` and ``binary`` when the truth has no neutral row.
    """
    labels = list(labels)
    if not rows:
        raise ValueError("nothing to evaluate: no rows")
    index = {label: i for i, label in enumerate(labels)}
    texts = [text for text, _ in rows]
    truth = [label for _, label in rows]
    unknown = sorted(set(truth) - set(index))
    if unknown:
        raise ValueError(f"true labels {unknown} are not among {labels}")

    predicted: list[str] = []
    confidences: list[float] = []
    started = time.perf_counter()
    for start in range(0, len(texts), batch_size):
        batch = texts[start:start + batch_size]
        out = list(predict(batch))
        if len(out) != len(batch):
            raise ValueError(f"predict returned {len(out)} labels for {len(batch)} texts")
        for answer in out:
            if isinstance(answer, tuple):  # (label, confidence)
                predicted.append(answer[0])
                confidences.append(float(answer[1]))
            else:
                predicted.append(answer)
    elapsed = time.perf_counter() - started
    bad = sorted(set(predicted) - set(index))
    if bad:
        raise ValueError(f"predicted labels {bad} are not among {labels}")

    k = len(labels)
    confusion = [[0] * k for _ in range(k)]
    for t, p in zip(truth, predicted):
        confusion[index[t]][index[p]] += 1
    n = len(truth)
    correct = sum(confusion[i][i] for i in range(k))

    per_class = {}
    for i, label in enumerate(labels):
        tp = confusion[i][i]
        support = sum(confusion[i])
        n_predicted = sum(confusion[r][i] for r in range(k))
        precision, recall = _ratio(tp, n_predicted), _ratio(tp, support)
        f1 = _ratio(2 * precision * recall, precision + recall)
        per_class[label] = {"precision": round(precision, 6), "recall": round(recall, 6),
                            "f1": round(f1, 6), "support": support, "predicted": n_predicted}
    present = [label for label in labels if per_class[label]["support"] > 0]
    macro_f1 = sum(per_class[label]["f1"] for label in present) / len(present)

    result = {
        "n": n, "labels": labels, "mode": "multiclass",
        "accuracy": round(correct / n, 6), "macro_f1": round(macro_f1, 6),
        "macro_f1_labels": present, "per_class": per_class, "confusion": confusion,
        "predict_s": round(elapsed, 4), "texts_per_s": round(n / elapsed, 1) if elapsed else None,
        "conventions": ("confusion rows = truth, columns = predicted; macro_f1 averages F1 "
                        "over the labels present in the truth; a never-predicted class has "
                        "precision 0"),
    }
    if confidences and len(confidences) == n:
        hits = [t == p for t, p in zip(truth, predicted)]
        result["calibration"] = {
            "ece": round(expected_calibration_error(confidences, hits), 6),
            "mean_confidence": round(sum(confidences) / n, 6), "bins": 10,
            "note": "expected calibration error of the top-class probability (10 equal bins)"}
    if "neutral" in index and per_class["neutral"]["support"] == 0 and len(present) >= 1:
        neutral_predicted = per_class["neutral"]["predicted"]
        decided = n - neutral_predicted
        result["mode"] = "binary"
        result["binary_accuracy"] = result["accuracy"]
        result["binary"] = {
            "binary_accuracy": result["accuracy"],
            "neutral_predicted": neutral_predicted,
            "neutral_predicted_rate": round(neutral_predicted / n, 6),
            "accuracy_on_decided": round(_ratio(correct, decided), 6) if decided else None,
            "note": ("the data has no neutral rows: binary_accuracy counts a predicted "
                     "neutral as wrong; accuracy_on_decided leaves those rows out"),
        }
    return result


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool | int],
                               bins: int = 10) -> float:
    """ECE with ``bins`` equal-width confidence bins: sum over bins of
    ``|bin| / n * |accuracy(bin) - mean confidence(bin)|``. Bin ``i`` holds confidences
    in ``(i/bins, (i+1)/bins]`` (0 goes to the first bin)."""
    if len(confidences) != len(correct):
        raise ValueError(f"{len(confidences)} confidences but {len(correct)} outcomes")
    if not confidences:
        raise ValueError("expected_calibration_error needs at least one prediction")
    if bins < 1:
        raise ValueError("bins must be >= 1")
    counts = [0] * bins
    conf_sum = [0.0] * bins
    hit_sum = [0.0] * bins
    for conf, ok in zip(confidences, correct):
        conf = float(conf)
        if not 0.0 <= conf <= 1.0 or math.isnan(conf):
            raise ValueError(f"confidence {conf} is outside [0, 1]")
        b = min(bins - 1, max(0, math.ceil(conf * bins) - 1))
        counts[b] += 1
        conf_sum[b] += conf
        hit_sum[b] += 1.0 if ok else 0.0
    n = len(confidences)
    return sum(abs(hit_sum[b] / counts[b] - conf_sum[b] / counts[b]) * counts[b] / n
               for b in range(bins) if counts[b])


# --------------------------------------------------------------------------- PNG

# 3x5 bitmap font: five rows of three pixels, "#" = ink.
_FONT = {
    "0": "### #.# #.# #.# ###", "1": ".#. ##. .#. .#. ###", "2": "### ..# ### #.. ###",
    "3": "### ..# .## ..# ###", "4": "#.# #.# ### ..# ..#", "5": "### #.. ### ..# ###",
    "6": "### #.. ### #.# ###", "7": "### ..# ..# .#. .#.", "8": "### #.# ### #.# ###",
    "9": "### #.# ### ..# ###",
    "A": ".#. #.# ### #.# #.#", "B": "##. #.# ##. #.# ##.", "C": ".## #.. #.. #.. .##",
    "D": "##. #.# #.# #.# ##.", "E": "### #.. ##. #.. ###", "F": "### #.. ##. #.. #..",
    "G": ".## #.. #.# #.# .##", "H": "#.# #.# ### #.# #.#", "I": "### .#. .#. .#. ###",
    "J": "..# ..# ..# #.# .#.", "K": "#.# #.# ##. #.# #.#", "L": "#.. #.. #.. #.. ###",
    "M": "#.# ### #.# #.# #.#", "N": "##. #.# #.# #.# #.#", "O": ".#. #.# #.# #.# .#.",
    "P": "##. #.# ##. #.. #..", "Q": ".#. #.# #.# ##. .##", "R": "##. #.# ##. #.# #.#",
    "S": ".## #.. .#. ..# ##.", "T": "### .#. .#. .#. .#.", "U": "#.# #.# #.# #.# ###",
    "V": "#.# #.# #.# #.# .#.", "W": "#.# #.# ### ### #.#", "X": "#.# #.# .#. #.# #.#",
    "Y": "#.# #.# .#. .#. .#.", "Z": "### ..# .#. #.. ###",
    " ": "... ... ... ... ...", ".": "... ... ... ... .#.", "=": "... ### ... ### ...",
    "-": "... ... ### ... ...", "_": "... ... ... ... ###", ":": "... .#. ... .#. ...",
    "/": "..# ..# .#. #.. #..", "%": "#.. ..# .#. #.. ..#", "?": "### ..# .#. ... .#.",
}
_SCALE = 2
_ADVANCE = 4 * _SCALE        # 3 pixels + 1 of spacing
_GLYPH_H = 5 * _SCALE
_WHITE, _BLACK, _GRID = (255, 255, 255), (0, 0, 0), (160, 160, 160)
_LOW, _HIGH = (247, 251, 255), (8, 48, 107)   # shading from 0 to 1 (row-normalised)


class _Canvas:
    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(_WHITE * (width * height))

    def rect(self, x: int, y: int, w: int, h: int, colour: tuple[int, int, int]) -> None:
        row = bytes(colour) * w
        for yy in range(max(0, y), min(self.height, y + h)):
            start = (yy * self.width + max(0, x)) * 3
            self.pixels[start:start + len(row)] = row[: (min(self.width, x + w) - max(0, x)) * 3]

    def text(self, x: int, y: int, text: str, colour: tuple[int, int, int]) -> None:
        for i, ch in enumerate(text.upper()):
            rows = _FONT.get(ch, _FONT["?"]).split()
            for gy, line in enumerate(rows):
                for gx, bit in enumerate(line):
                    if bit == "#":
                        self.rect(x + i * _ADVANCE + gx * _SCALE, y + gy * _SCALE,
                                  _SCALE, _SCALE, colour)

    def png(self) -> bytes:
        stride = self.width * 3
        raw = b"".join(b"\x00" + bytes(self.pixels[y * stride:(y + 1) * stride])
                       for y in range(self.height))

        def chunk(kind: bytes, data: bytes) -> bytes:
            return (struct.pack(">I", len(data)) + kind + data
                    + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def _text_width(text: str) -> int:
    return len(text) * _ADVANCE - _SCALE if text else 0


def _abbreviations(labels: Sequence[str]) -> list[str]:
    for size in range(3, max(len(label) for label in labels) + 1):
        short = [label[:size].upper() for label in labels]
        if len(set(short)) == len(short):
            return short
    return [label.upper() for label in labels]


def _shade(fraction: float) -> tuple[int, int, int]:
    return tuple(round(lo + (hi - lo) * fraction) for lo, hi in zip(_LOW, _HIGH))


def render_confusion_png(result: dict) -> bytes:
    """PNG bytes of ``result['confusion']``: rows = truth, columns = predicted, each cell
    shaded by its share of the row (recall for the diagonal) and labelled with its count."""
    labels = list(result["labels"])
    matrix = result["confusion"]
    short = _abbreviations(labels)
    pad = 8
    cell = max(44, max(_text_width(str(v)) for row in matrix for v in row) + 2 * pad)
    head_w = max(_text_width(s) for s in short) + 2 * pad
    titles = ["ROWS=TRUE COLS=PREDICTED",
              f"N={result.get('n', '?')} ACC={result.get('accuracy', 0):.3f} "
              f"F1={result.get('macro_f1', 0):.3f}"]
    line_h = _GLYPH_H + 6
    top = pad + len(titles) * line_h + pad
    grid_w = head_w + cell * len(labels)
    width = max(grid_w, max(_text_width(t) for t in titles)) + 2 * pad
    height = top + line_h + cell * len(labels) + pad
    canvas = _Canvas(width, height)
    for i, title in enumerate(titles):
        canvas.text(pad, pad + i * line_h, title, _BLACK)
    x0, y0 = pad + head_w, top + line_h
    for j, name in enumerate(short):   # column headers (predicted)
        canvas.text(x0 + j * cell + (cell - _text_width(name)) // 2, top, name, _BLACK)
    for i, row in enumerate(matrix):
        y = y0 + i * cell
        canvas.text(pad, y + (cell - _GLYPH_H) // 2, short[i], _BLACK)
        total = sum(row)
        for j, count in enumerate(row):
            fraction = count / total if total else 0.0
            x = x0 + j * cell
            canvas.rect(x, y, cell, cell, _shade(fraction))
            label = str(count)
            canvas.text(x + (cell - _text_width(label)) // 2, y + (cell - _GLYPH_H) // 2,
                        label, _WHITE if fraction > 0.5 else _BLACK)
    for k in range(len(labels) + 1):   # grid lines
        canvas.rect(x0 + k * cell, y0, 1, cell * len(labels) + 1, _GRID)
        canvas.rect(x0, y0 + k * cell, cell * len(labels) + 1, 1, _GRID)
    return canvas.png()


def write_confusion_png(result: dict, path: str | Path) -> Path:
    """Write :func:`render_confusion_png` to ``path`` (no matplotlib/Pillow needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(render_confusion_png(result))
    return path


# --------------------------------------------------------------------------- CLI helpers

def rules_predict(texts: Iterable[str]) -> list[str]:
    """The degraded rules tier's sentiment for each text."""
    from stream_app.classify.rules import classify_text
    return [classify_text(text).sentiment for text in texts]


def load_predictor(model: str, labels_in_truth: Iterable[str] = SENTIMENTS,
                   threads: int = 2) -> Callable[[list[str]], list]:
    """``"rules"`` (the degraded lexicon tier), a local-model artifact directory
    (``dallosh train --out``) or a fine-tuned sequence-classification checkpoint. A model is asked to choose among the labels the data
    has: on pos/neg data it picks the likelier of negative and positive."""
    if model == "rules":
        return rules_predict
    path = Path(model)
    if not path.is_dir():
        raise LabelledDataError(f"--model {model!r}: neither 'rules' nor a model directory "
                                "(train one with `dallosh train --out DIR`)")
    from stream_app.local_model.model import load_local_model
    local = load_local_model(path, threads=threads)
    restrict = {"sentiment": sorted(set(labels_in_truth))}

    def predict(texts: list[str]) -> list[tuple[str, float]]:
        return [(p["sentiment"].label, p["sentiment"].confidence)
                for p in local.predict(texts, restrict)]
    return predict


SHORTCUTS = {"airline": "airline_en", "english": "english_tweets", "french": "french_reviews"}


def resolve_eval_data(data: str, cache_dir: Path,
                      progress: Callable[[str], None] = print) -> Path:
    """A CSV path, or ``airline``/``english``/``french``: that dataset's held-out test
    split, fetched first if needed."""
    if data in SHORTCUTS:
        from stream_app.local_model.datasets import fetch_datasets
        return fetch_datasets(cache_dir, progress=progress).path(SHORTCUTS[data], "test")
    return Path(data)


def format_result(result: dict) -> list[str]:
    """Human-readable lines for a result of :func:`evaluate`."""
    lines = [f"n={result['n']}  accuracy={result['accuracy']:.4f}  "
             f"macro-F1={result['macro_f1']:.4f}  ({result['mode']}; "
             f"{result.get('texts_per_s') or 0:,.0f} texts/s)"]
    for label, m in result["per_class"].items():
        lines.append(f"  {label:<9} precision={m['precision']:.3f} recall={m['recall']:.3f} "
                     f"f1={m['f1']:.3f} support={m['support']} predicted={m['predicted']}")
    if "calibration" in result:
        c = result["calibration"]
        lines.append(f"  calibration: ECE={c['ece']:.4f} (mean confidence {c['mean_confidence']:.3f})")
    if "binary" in result:
        b = result["binary"]
        decided = b["accuracy_on_decided"]
        lines.append(f"  binary accuracy={b['binary_accuracy']:.4f} (predicted neutral counts "
                     f"as wrong: {b['neutral_predicted']} rows); on decided rows="
                     + (f"{decided:.4f}" if decided is not None else "n/a"))
    return lines
