"""Evaluation harness (issue 6): metrics against hand-computed values, CSV reading,
calibration error, and the dependency-free confusion-matrix PNG."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest

from stream_app.local_model.evaluate import (LabelledDataError, evaluate,
                                             expected_calibration_error, format_result,
                                             load_predictor, read_labelled_csv,
                                             render_confusion_png, rules_predict,
                                             write_confusion_png)


def oracle(answers: dict[str, str]):
    calls: list[int] = []

    def predict(texts: list[str]) -> list[str]:
        calls.append(len(texts))
        return [answers[t] for t in texts]
    predict.calls = calls
    return predict


# truth  : neg neg neg neu neu pos pos pos
# predict: neg neg pos neg neg pos pos neg      (neutral is never predicted)
ROWS = [("a", "negative"), ("b", "negative"), ("c", "negative"), ("d", "neutral"),
        ("e", "neutral"), ("f", "positive"), ("g", "positive"), ("h", "positive")]
PRED = {"a": "negative", "b": "negative", "c": "positive", "d": "negative", "e": "negative",
        "f": "positive", "g": "positive", "h": "negative"}


def test_metrics_match_hand_computed_values() -> None:
    predict = oracle(PRED)
    result = evaluate(predict, ROWS, batch_size=3)
    assert predict.calls == [3, 3, 2]
    assert result["n"] == 8
    assert result["labels"] == ["negative", "neutral", "positive"]
    assert result["confusion"] == [[2, 0, 1], [2, 0, 0], [1, 0, 2]]
    assert result["accuracy"] == 0.5
    neg, neu, pos = (result["per_class"][k] for k in ("negative", "neutral", "positive"))
    # negative: tp 2, predicted 5, support 3 -> P 0.4, R 2/3, F1 0.5
    assert neg == {"precision": 0.4, "recall": pytest.approx(2 / 3, abs=1e-6), "f1": 0.5,
                   "support": 3, "predicted": 5}
    # neutral is never predicted: precision 0 (not NaN), recall 0, F1 0
    assert neu == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2, "predicted": 0}
    assert pos["precision"] == pytest.approx(2 / 3, abs=1e-6)
    assert pos["recall"] == pytest.approx(2 / 3, abs=1e-6)
    assert pos["f1"] == pytest.approx(2 / 3, abs=1e-6)
    assert result["macro_f1"] == pytest.approx((0.5 + 0.0 + 2 / 3) / 3, abs=1e-6)
    assert result["macro_f1_labels"] == ["negative", "neutral", "positive"]
    assert result["mode"] == "multiclass" and "binary_accuracy" not in result
    json.dumps(result)   # JSON-ready


def test_binary_data_counts_a_predicted_neutral_as_wrong() -> None:
    rows = [("a", "negative"), ("b", "negative"), ("c", "positive"), ("d", "positive"),
            ("e", "positive")]
    predict = oracle({"a": "negative", "b": "neutral", "c": "positive", "d": "neutral",
                      "e": "negative"})
    result = evaluate(predict, rows)
    assert result["mode"] == "binary"
    assert result["accuracy"] == result["binary_accuracy"] == 0.4
    assert result["binary"]["neutral_predicted"] == 2
    assert result["binary"]["accuracy_on_decided"] == pytest.approx(2 / 3, abs=1e-6)
    assert "counts a predicted neutral as wrong" in result["binary"]["note"]
    # macro-F1 over the two classes present: neg P 1/2 R 1/2; pos P 1 R 1/3
    f1_neg, f1_pos = 0.5, 2 * 1 * (1 / 3) / (1 + 1 / 3)
    assert result["macro_f1_labels"] == ["negative", "positive"]
    assert result["macro_f1"] == pytest.approx((f1_neg + f1_pos) / 2, abs=1e-6)
    assert any("binary accuracy" in line for line in format_result(result))


def test_evaluate_refuses_bad_predictions() -> None:
    with pytest.raises(ValueError, match="returned 1 labels for 2 texts"):
        evaluate(lambda texts: ["negative"], [("a", "negative"), ("b", "neutral")])
    with pytest.raises(ValueError, match="predicted labels \\['angry'\\]"):
        evaluate(lambda texts: ["angry"] * len(texts), [("a", "negative")])
    with pytest.raises(ValueError, match="true labels"):
        evaluate(lambda texts: ["negative"] * len(texts), [("a", "furious")])
    with pytest.raises(ValueError, match="no rows"):
        evaluate(lambda texts: [], [])


def test_rules_tier_can_be_evaluated() -> None:
    rows = [("Panne de fibre depuis 3 jours, inadmissible !", "negative"),
            ("Merci pour le dépannage rapide, super service 👍", "positive")]
    result = evaluate(load_predictor("rules"), rows)
    assert result["n"] == 2 and result["accuracy"] == 1.0
    assert rules_predict(["bonjour"]) == ["neutral"]
    with pytest.raises(LabelledDataError, match="neither 'rules' nor a model directory"):
        load_predictor("bert")


# --------------------------------------------------------------------------- CSV reading

def _write(tmp_path: Path, content: str | bytes, name: str = "data.csv") -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8", newline="")
    else:
        path.write_bytes(content)
    return path


def test_read_labelled_csv_accepts_variants(tmp_path: Path) -> None:
    path = _write(tmp_path, "\ufeffid,Text,Sentiment,lang\n"
                            "1,\"Super, merci\",POSITIVE,fr\n"
                            "2,bof,Neu,fr\n"
                            "3,nul,neg,fr\n"
                            "\n"
                            "4,\"multi\nline\",-1,en\n"
                            "5,great,1,en\n"
                            "6,meh,0,en\n"
                            "7,fine, pos ,en\n")
    assert read_labelled_csv(path) == [
        ("Super, merci", "positive"), ("bof", "neutral"), ("nul", "negative"),
        ("multi\nline", "negative"), ("great", "positive"), ("meh", "neutral"),
        ("fine", "positive")]


def test_read_labelled_csv_errors_name_file_column_and_line(tmp_path: Path) -> None:
    missing = _write(tmp_path, "text,label\nhello,positive\n", "missing.csv")
    with pytest.raises(LabelledDataError, match=r"missing\.csv: missing column 'sentiment'"):
        read_labelled_csv(missing)
    bad = _write(tmp_path, "text,sentiment\nok,positive\n\"two\nlines\",negative\nx,angry\n",
                 "bad.csv")
    with pytest.raises(LabelledDataError, match=r"bad\.csv line 5: bad sentiment label 'angry'"):
        read_labelled_csv(bad)
    ambiguous = _write(tmp_path, "text,sentiment\na,0\nb,1\n", "ambiguous.csv")
    with pytest.raises(LabelledDataError, match="ambiguous"):
        read_labelled_csv(ambiguous)
    latin1 = _write(tmp_path, "text,sentiment\ndéçu,negative\n".encode("latin-1"), "latin1.csv")
    with pytest.raises(LabelledDataError, match=r"latin1\.csv: not UTF-8"):
        read_labelled_csv(latin1)
    with pytest.raises(LabelledDataError, match="empty file"):
        read_labelled_csv(_write(tmp_path, "", "empty.csv"))
    with pytest.raises(LabelledDataError, match="no labelled rows"):
        read_labelled_csv(_write(tmp_path, "text,sentiment\n", "header_only.csv"))
    with pytest.raises(LabelledDataError, match="cannot read"):
        read_labelled_csv(tmp_path / "absent.csv")
    assert issubclass(LabelledDataError, ValueError)


# --------------------------------------------------------------------------- ECE

def test_expected_calibration_error_known_values() -> None:
    # one bin: accuracy 0.75, confidence 0.9
    assert expected_calibration_error([0.9] * 4, [1, 1, 1, 0]) == pytest.approx(0.15)
    # two bins, half the mass each: |0.5-0.2|/2 + |1.0-0.8|/2
    assert expected_calibration_error([0.2, 0.2, 0.8, 0.8], [0, 1, 1, 1]) == pytest.approx(0.25)
    # perfectly calibrated
    assert expected_calibration_error([0.5, 0.5], [True, False]) == pytest.approx(0.0)
    # bin edges: 1.0 in the last bin, 0.0 in the first, 0.1 in the first (right-closed)
    assert expected_calibration_error([1.0, 0.0], [1, 0]) == pytest.approx(0.0)
    assert expected_calibration_error([0.1, 0.05], [0, 0], bins=10) == pytest.approx(0.075)
    assert expected_calibration_error([0.6, 0.9], [1, 1], bins=1) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        expected_calibration_error([0.5], [1, 0])
    with pytest.raises(ValueError):
        expected_calibration_error([1.5], [1])
    with pytest.raises(ValueError):
        expected_calibration_error([], [])


# --------------------------------------------------------------------------- PNG

def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        chunks.append((kind, body))
        pos += 12 + length
    return chunks


def test_confusion_png_is_a_valid_image(tmp_path: Path) -> None:
    result = evaluate(oracle(PRED), ROWS)
    result["confusion"][0][0] = 12345   # a wide count must still fit its cell
    path = write_confusion_png(result, tmp_path / "sub" / "cm.png")
    data = path.read_bytes()
    chunks = _chunks(data)
    assert [k for k, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, colour, interlace) == (8, 2, 0)
    assert 100 < width < 1000 and 100 < height < 1000
    raw = zlib.decompress(chunks[1][1])
    stride = 1 + 3 * width
    assert len(raw) == height * stride                      # one scanline per row
    assert all(raw[y * stride] == 0 for y in range(height))  # filter type 0
    pixels = {bytes(raw[y * stride + 1 + 3 * x: y * stride + 4 + 3 * x])
              for y in range(0, height, 3) for x in range(0, width, 3)}
    assert b"\x00\x00\x00" in pixels and b"\xff\xff\xff" in pixels   # text and background
    assert len(pixels) >= 5                                           # several shades
    assert render_confusion_png(result) == data                        # deterministic


def test_confusion_png_for_long_labels(tmp_path: Path) -> None:
    result = {"labels": ["billing", "bills", "outage"], "confusion": [[1, 0, 0], [0, 2, 0],
                                                                      [0, 0, 0]],
              "n": 3, "accuracy": 1.0, "macro_f1": 1.0}
    data = render_confusion_png(result)
    width, height = struct.unpack(">II", _chunks(data)[0][1][:8])
    assert width > 0 and height > 0
