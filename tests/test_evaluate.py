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


# --------------------------------------------------------------------------- every label (issue 14)

from click.testing import CliRunner  # noqa: E402

from stream_app.cli import main  # noqa: E402
from stream_app.local_model.evaluate import (EvalTaxonomy, RulesLabels, evaluate_labels,  # noqa: E402
                                             load_eval_taxonomy, location_label,
                                             priority_label, read_labelled_set, score)
from stream_app.settings import load_settings  # noqa: E402

TOPICS3 = ("wifi", "invoice", "other")


def _examples(word: str, n: int) -> str:
    return "[" + ", ".join(f'"{word} example number {i}"' for i in range(n)) + "]"


def brand_file(tmp_path: Path, topics: tuple[str, ...] = TOPICS3) -> Path:
    """A brand of our own, with topic names that no shipped brand uses."""
    lines = ["name: testco", "accounts: [testco]", "keywords: [testco]", "taxonomy:", "  topics:"]
    for topic in topics:
        lines += [f"    - name: {topic}", f"      team: {topic}_team",
                  f"      description: \"tweets about {topic}\"",
                  f"      examples: {_examples(topic, 8)}"]
    lines.append("  priorities:")
    for level in range(3):
        lines.append(f"    {level}: {{description: \"level {level}\", examples: {_examples(f'p{level}', 6)}}}")
    path = tmp_path / "testco.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def taxonomy3(tmp_path: Path) -> EvalTaxonomy:
    return load_eval_taxonomy(str(brand_file(tmp_path)), load_settings(environ={}))


def test_score_appends_answers_outside_the_labels_only_when_asked() -> None:
    truth, predicted = ["wifi", "wifi", "other"], ["wifi", "fibre", "fibre"]
    with pytest.raises(ValueError, match="predicted labels \\['fibre'\\]"):
        score(truth, predicted, TOPICS3)
    result = score(truth, predicted, TOPICS3, extend=True)
    assert result["labels"] == ["wifi", "invoice", "other", "fibre"]
    assert result["outside_labels"] == {"fibre": 2}
    assert result["confusion"] == [[1, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]]
    # wifi: P 1 R 1/2 F1 2/3; other: never predicted -> 0; invoice absent from the truth
    assert result["macro_f1_labels"] == ["wifi", "other"]
    assert result["macro_f1"] == pytest.approx((2 / 3 + 0) / 2, abs=1e-6)
    assert "calibration" not in result


def test_brand_taxonomy_is_read_from_the_brand_file(tmp_path: Path) -> None:
    taxonomy = taxonomy3(tmp_path)
    assert (taxonomy.brand, taxonomy.topics) == ("testco", TOPICS3)
    assert taxonomy.teams["invoice"] == "invoice_team" and taxonomy.taxonomy is not None
    assert load_eval_taxonomy("airline", load_settings(environ={})).brand == "airline"
    with pytest.raises(ValueError, match="no such built-in brand"):
        load_eval_taxonomy("nosuchbrand", load_settings(environ={}))
    broken = tmp_path / "broken.yaml"
    broken.write_text(brand_file(tmp_path).read_text().replace("team: wifi_team", "colour: red"))
    with pytest.raises(ValueError, match=r"broken\.yaml: taxonomy\.topics\[0\]: unknown key\(s\) colour"):
        load_eval_taxonomy(str(broken), load_settings(environ={}))


def test_label_spellings() -> None:
    assert [priority_label(v) for v in ("0", " P1 ", "p2", "high", "Low", "3", "", "urgent")] == \
        ["0", "1", "2", "0", "2", None, None, None]
    assert location_label("") == location_label(" none ") == "none"
    assert location_label("fr-naq") == "FR-NAQ"
    assert location_label("bordeaux") == "Bordeaux"
    assert location_label("Atlantis") == "Atlantis"   # unknown: kept, can only be a miss


def test_read_labelled_set_reads_every_label_column(tmp_path: Path) -> None:
    path = _write(tmp_path, "Text,Sentiment,Priority,Topic,Location,lang\n"
                            "a,neg,P0,WiFi,Bordeaux,fr\n"
                            "b,,high,invoice,,fr\n"
                            "c,positive,,,fr-naq,en\n")
    data = read_labelled_set(path, taxonomy3(tmp_path))
    assert data.columns == ("sentiment", "priority", "topic", "location")
    assert data.texts == ["a", "b", "c"]
    assert data.truth == {"sentiment": ["negative", None, "positive"],
                          "priority": ["0", "0", None],
                          "topic": ["wifi", "invoice", None],
                          "location": ["Bordeaux", "none", "FR-NAQ"]}


def test_labels_the_brand_does_not_have_are_errors_naming_the_line(tmp_path: Path) -> None:
    taxonomy = taxonomy3(tmp_path)
    path = _write(tmp_path, "text,topic\nok,wifi\n\"two\nlines\",other\nx,fibre\n", "t.csv")
    with pytest.raises(LabelledDataError, match=r"t\.csv line 5: unknown topic label 'fibre' "
                                                r"\(expected one of brand testco's topics: wifi, invoice, other\)"):
        read_labelled_set(path, taxonomy)
    path = _write(tmp_path, "text,priority\nok,3\n", "p.csv")
    with pytest.raises(LabelledDataError, match=r"p\.csv line 2: unknown priority label '3'"):
        read_labelled_set(path, taxonomy)
    path = _write(tmp_path, "text,label\nok,wifi\n", "none.csv")
    with pytest.raises(LabelledDataError, match="missing a label column"):
        read_labelled_set(path, taxonomy)


class Oracle:
    """A predictor of every label from a table: what :func:`evaluate_labels` is given."""
    name = "oracle"
    sources = {"sentiment": "table", "priority": "table", "topic": "table"}

    def __init__(self, answers: dict[str, dict]) -> None:
        self.answers, self.calls = answers, []

    def __call__(self, texts: list[str]) -> list[dict]:
        self.calls.append(len(texts))
        return [self.answers[t] for t in texts]


def test_every_label_is_scored_from_one_prediction_pass(tmp_path: Path) -> None:
    taxonomy = taxonomy3(tmp_path)
    path = _write(tmp_path, "text,sentiment,priority,topic\n"
                            "a,negative,0,wifi\nb,negative,1,wifi\nc,positive,2,invoice\n"
                            "d,neutral,,other\n")
    oracle = Oracle({
        "a": {"sentiment": ("negative", 0.9), "priority": ("0", None), "topic": ("wifi", 0.8)},
        "b": {"sentiment": ("negative", 0.9), "priority": ("0", None), "topic": ("fibre", 0.6)},
        "c": {"sentiment": ("neutral", 0.5), "priority": ("2", None), "topic": ("invoice", 0.7)},
        "d": {"sentiment": ("neutral", 0.5), "priority": ("1", None), "topic": ("other", 0.9)}})
    result = evaluate_labels(read_labelled_set(path, taxonomy), oracle, taxonomy, batch_size=3)
    assert oracle.calls == [3, 1]
    per = result["per_label"]
    assert set(per) == {"sentiment", "priority", "topic"}
    assert per["sentiment"]["accuracy"] == 0.75 and per["sentiment"]["source"] == "table"
    # sentiment: neg F1 1, neu P 1/2 R 1 F1 2/3, pos F1 0; ECE: |1-0.9|*2/4 + |0.5-0.5|*2/4
    assert per["sentiment"]["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3, abs=1e-6)
    assert per["sentiment"]["calibration"]["ece"] == pytest.approx(0.05)
    # priority: d has no priority cell and is not scored; no confidences -> no ECE
    assert per["priority"]["n"] == 3 and per["priority"]["confusion"] == [[1, 0, 0], [1, 0, 0],
                                                                          [0, 0, 1]]
    assert per["priority"]["macro_f1"] == pytest.approx((2 / 3 + 0 + 1) / 3, abs=1e-6)
    assert "calibration" not in per["priority"]
    # topic: "fibre" is outside testco's topics: a miss, and reported
    assert per["topic"]["outside_labels"] == {"fibre": 1}
    assert per["topic"]["accuracy"] == 0.75
    assert per["topic"]["per_class"]["wifi"] == {"precision": 1.0, "recall": 0.5,
                                                 "f1": pytest.approx(2 / 3, abs=1e-6),
                                                 "support": 2, "predicted": 1}
    assert per["topic"]["calibration"]["ece"] == pytest.approx(
        expected_calibration_error([0.8, 0.6, 0.7, 0.9], [1, 0, 1, 1]))
    json.dumps(result)


def test_location_is_the_clean_stage_location(tmp_path: Path) -> None:
    taxonomy = taxonomy3(tmp_path)
    path = _write(tmp_path, "text,location\n"
                            "\"Plus de réseau à Bordeaux depuis ce matin\",Bordeaux\n"
                            "\"Coupure générale, rien ne marche\",\n"
                            "\"Panne à Lyon\",Marseille\n")
    oracle = Oracle({})
    per = evaluate_labels(read_labelled_set(path, taxonomy), oracle, taxonomy)["per_label"]
    assert oracle.calls == []   # location alone needs no classifier
    loc = per["location"]
    assert loc["labels"] == ["none", "Bordeaux", "Lyon", "Marseille"]
    assert loc["accuracy"] == pytest.approx(2 / 3, abs=1e-6)
    assert loc["per_class"]["Marseille"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0,
                                             "support": 1, "predicted": 0}
    assert loc["source"].startswith("clean stage")


def _eval(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["eval", *args])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def test_cli_scores_every_label_of_the_csv_with_the_rules(tmp_path: Path) -> None:
    brand = brand_file(tmp_path)
    data = _write(tmp_path, "text,sentiment,priority,topic,location\n"
                            "\"Panne de wifi depuis 3 jours à Bordeaux, inadmissible !\",negative,0,wifi,Bordeaux\n"
                            "\"Merci pour le remboursement rapide, super service 👍\",positive,2,invoice,\n"
                            "\"Comment je change mon adresse ?\",neutral,1,other,\n")
    out = tmp_path / "r.json"
    code, output = _eval("--data", str(data), "--brand", str(brand), "--json", str(out))
    assert code == 0, output
    result = json.loads(out.read_text())
    assert result["brand"] == "testco" and result["model"] == "rules" and "baseline" not in result
    assert list(result["per_label"]) == ["sentiment", "priority", "topic", "location"]
    rules = RulesLabels(load_eval_taxonomy(str(brand), load_settings(environ={})))
    texts = ["Panne de wifi depuis 3 jours à Bordeaux, inadmissible !",
             "Merci pour le remboursement rapide, super service 👍", "Comment je change mon adresse ?"]
    answers = rules(texts)
    for label, truth in (("sentiment", ["negative", "positive", "neutral"]),
                         ("priority", ["0", "2", "1"]), ("topic", ["wifi", "invoice", "other"])):
        m = result["per_label"][label]
        hits = sum(a[label][0] == t for a, t in zip(answers, truth))
        assert m["accuracy"] == pytest.approx(hits / 3, abs=1e-6), label
        assert {"macro_f1", "per_class", "confusion"} <= set(m)
        assert sum(map(sum, m["confusion"])) == 3
        # every answer is either one of testco's topics or reported as outside them
        assert set(m["labels"]) >= {a[label][0] for a in answers}
    assert result["per_label"]["location"]["accuracy"] == 1.0
    # the format before issue 14: sentiment metrics at the top level
    assert result["accuracy"] == result["per_label"]["sentiment"]["accuracy"]
    assert result["macro_f1"] == result["per_label"]["sentiment"]["macro_f1"]
    for label in ("sentiment", "priority", "topic", "location"):
        assert f"\n{label} (n=3" in output
    assert output.count("macro-F1") == 4


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    brand = brand_file(tmp_path)
    data = _write(tmp_path, "text,topic\nhello,outage\n")
    code, output = _eval("--data", str(data), "--brand", str(brand), "--json", str(tmp_path / "r.json"))
    assert code == 2 and "line 2: unknown topic label 'outage'" in output
    code, output = _eval("--data", str(data), "--brand", str(tmp_path / "nope.yaml"),
                         "--json", str(tmp_path / "r.json"))
    assert code == 2 and "nope.yaml: cannot read" in output
    code, output = _eval("--data", str(data), "--from-store", "--json", str(tmp_path / "r.json"))
    assert code == 2 and "either --data" in output


# A real artifact (the packaged MiniLM encoder, untrained heads in testco's labels): checks
# what the evaluation reads from a model and that the rules are scored beside it, not quality.

def _artifact(tmp_path: Path, topics: tuple[str, ...] = TOPICS3) -> Path:
    import torch

    from stream_app.local_model.encoders import load_encoder
    from stream_app.local_model.model import Head, HeadSpec, LocalModel
    torch.manual_seed(0)
    encoder = load_encoder("minilm", threads=2)
    heads = {}
    for name, labels in (("sentiment", ("negative", "neutral", "positive")),
                         ("priority", ("0", "1", "2")), ("topic", topics)):
        heads[name] = (HeadSpec(name, labels, 16), Head(encoder.dim, 16, len(labels)))
    return LocalModel(encoder, heads, {"name": "tiny-test"}).save(tmp_path / "model")


def test_cli_scores_a_model_with_the_rules_beside_it(tmp_path: Path) -> None:
    from stream_app.local_model.model import load_local_model
    brand, model_dir = brand_file(tmp_path), _artifact(tmp_path)
    texts = ["la wifi ne marche plus depuis hier", "facture fausse, prélevé deux fois",
             "merci pour votre aide", "vous êtes nuls", "quand arrive le technicien ?"]
    truth = [("negative", "0", "wifi"), ("negative", "1", "invoice"), ("positive", "2", "other"),
             ("negative", "1", "other"), ("neutral", "1", "wifi")]
    data = _write(tmp_path, "text,sentiment,priority,topic\n" + "".join(
        f"\"{t}\",{s},{p},{c}\n" for t, (s, p, c) in zip(texts, truth)))
    out, rules_out = tmp_path / "m.json", tmp_path / "r.json"
    code, output = _eval("--data", str(data), "--brand", str(brand), "--model", str(model_dir),
                         "--json", str(out))
    assert code == 0, output
    result = json.loads(out.read_text())
    assert set(result["per_label"]) == {"sentiment", "priority", "topic"}
    assert set(result["baseline"]["per_label"]) == {"sentiment", "priority", "topic"}
    assert result["baseline"]["model"] == "rules"
    model = load_local_model(model_dir)
    predictions = model.predict(texts)
    for i, label in enumerate(("sentiment", "priority", "topic")):
        m = result["per_label"][label]
        assert m["source"] == "model head"
        assert "calibration" in m   # every head gives a confidence
        hits = sum(p[label].label == t[i] for p, t in zip(predictions, truth))
        assert m["accuracy"] == pytest.approx(hits / len(texts), abs=1e-6), label
    # the baseline is the rules run on its own
    code, _ = _eval("--data", str(data), "--brand", str(brand), "--json", str(rules_out))
    alone = json.loads(rules_out.read_text())["per_label"]
    for label in ("sentiment", "priority", "topic"):
        assert result["baseline"]["per_label"][label]["macro_f1"] == alone[label]["macro_f1"]
        assert result["baseline"]["per_label"][label]["confusion"] == alone[label]["confusion"]
    header = next(line for line in output.splitlines() if line.startswith("sentiment (n=5"))
    assert header.split()[-2:] == ["tiny-test", "rules"]   # the rules' column beside the model's
    code, _ = _eval("--data", str(data), "--brand", str(brand), "--model", str(model_dir),
                    "--baseline", "none", "--json", str(out))
    assert code == 0 and "baseline" not in json.loads(out.read_text())


def test_a_model_of_another_brand_is_a_clear_error(tmp_path: Path) -> None:
    brand = brand_file(tmp_path)
    model_dir = _artifact(tmp_path, topics=("outage", "fibre", "other"))
    data = _write(tmp_path, "text,topic\nhello,wifi\n")
    code, output = _eval("--data", str(data), "--brand", str(brand), "--model", str(model_dir),
                         "--json", str(tmp_path / "r.json"))
    assert code == 2 and "trained on topics ['fibre', 'outage'] that brand testco does not have" in output
