"""The local model tier on real data: train a head on a small slice of the airline
tweets (fetched from PyPI into the user cache, like the broker's jars), check it beats
the majority-class baseline on held-out tweets, that the artifact round-trips and that
inference is deterministic; then the tier inside the cascade, inside a worker that
classifies the demo, and the CLI's errors."""

from __future__ import annotations

import asyncio
import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from stream_app.classify.cascade import Cascade
from stream_app.classify.local_tier import LocalModelTier, load_local_tier
from stream_app.classify.provider_client import OpenAICompatibleClient
from stream_app.classify.rules import DEFAULT_TEAMS, TOPICS
from stream_app.classify.tokens import TokenCounter
from stream_app.classify.types import Item
from stream_app.cli import main
from stream_app.local_model.datasets import fetch_datasets
from stream_app.local_model.encoders import LocalModelError, load_encoder
from stream_app.local_model.evaluate import evaluate, load_predictor
from stream_app.local_model.model import LocalModel, load_local_model
from stream_app.local_model.train import TrainConfig, read_training_csvs, train_model
from stream_app.settings import load_settings

pytestmark = pytest.mark.network  # the labelled data comes from PyPI on first use

TRAIN_ROWS, TEST_ROWS = 1200, 500


def _rows(path: Path, limit: int) -> list[dict]:
    """``limit`` rows spread evenly over the file (the files are grouped by label)."""
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return rows[::max(1, len(rows) // limit)][:limit]


@pytest.fixture(scope="module")
def airline(tmp_path_factory) -> dict:
    """A small real slice: the first rows of the train and test splits (disjoint by
    construction: the split is by text hash)."""
    paths = fetch_datasets(load_settings(environ={}).cache_dir, progress=lambda _: None)
    root = tmp_path_factory.mktemp("airline")
    train = root / "train.csv"
    rows = _rows(paths.path("airline_en", "train"), TRAIN_ROWS)
    with train.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "sentiment"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    test = [(r["text"], r["sentiment"]) for r in _rows(paths.path("airline_en", "test"), TEST_ROWS)]
    return {"train": train, "test": test}


@pytest.fixture(scope="module")
def encoder():
    # The English MiniLM: ~5x faster than e5-small on this CPU, which keeps this module
    # to about a minute; e5-small has its own test below.
    return load_encoder("minilm", threads=2)


@pytest.fixture(scope="module")
def artifact(airline, encoder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model") / "local"
    train_model([airline["train"]], out, TrainConfig(encoder="minilm", max_epochs=40, patience=6),
                progress=lambda _: None, encoder=encoder)
    return out


def test_small_head_beats_the_majority_baseline_clearly(airline, artifact, encoder) -> None:
    model = LocalModel.load(artifact, encoder=encoder)
    result = evaluate(lambda texts: [p["sentiment"].label for p in model.predict(texts)], airline["test"])
    truth = [label for _, label in airline["test"]]
    majority_label, majority_count = Counter(truth).most_common(1)[0]
    majority = evaluate(lambda texts: [majority_label] * len(texts), airline["test"])
    print(f"\nlocal head on {TRAIN_ROWS} tweets: macro-F1 {result['macro_f1']:.3f} accuracy "
          f"{result['accuracy']:.3f}; majority baseline macro-F1 {majority['macro_f1']:.3f} "
          f"accuracy {majority_count / len(truth):.3f}")
    # Class-balanced training buys macro-F1 (the target metric) with some accuracy on
    # the majority class; a majority-class guess has no skill at all on the other two.
    assert result["macro_f1"] >= majority["macro_f1"] + 0.25
    assert result["accuracy"] >= majority_count / len(truth)
    for label in ("negative", "neutral", "positive"):
        assert result["per_class"][label]["recall"] > 0.3, label


def test_artifact_round_trips_with_its_metadata(airline, artifact, encoder) -> None:
    meta = json.loads((artifact / "model.json").read_text(encoding="utf-8"))
    assert meta["format"] == 3 and meta["encoder"] == "minilm" and meta["dim"] == encoder.dim
    assert meta["fine_tune"] is None and meta["encoder_layers"] is None  # minilm stays frozen
    assert meta["heads"]["sentiment"]["labels"] == ["negative", "neutral", "positive"]
    assert meta["data"][0]["rows_used"] == TRAIN_ROWS and len(meta["data_sha256"]) == 64
    sentiment = meta["metrics"]["sentiment"]
    assert 0 < sentiment["val_rows"] < TRAIN_ROWS and sentiment["best_epoch"] >= 1
    assert 0 <= sentiment["val_ece"] <= 1 and sentiment["temperature"] > 0
    assert set(meta["heads"]) == {"sentiment"}  # the slice has no priority/topic columns

    texts = [text for text, _ in airline["test"][:50]]
    first = LocalModel.load(artifact, encoder=encoder).probabilities(texts)["sentiment"]
    copy = artifact.parent / "copy"
    LocalModel.load(artifact, encoder=encoder).save(copy)
    again = LocalModel.load(copy, encoder=encoder).probabilities(texts)["sentiment"]
    np.testing.assert_array_equal(first, again)
    assert np.allclose(first.sum(axis=1), 1.0, atol=1e-5)
    # Only e5-small is exported to ONNX: a MiniLM artifact says so and loads through torch.
    assert meta["onnx"] == {"error": "only the e5-small encoder is exported, not 'minilm'"}
    assert not (artifact / "encoder.onnx").exists()
    assert load_local_model(artifact).runtime == "torch"


def test_inference_is_deterministic_and_batch_independent(airline, artifact, encoder) -> None:
    model = LocalModel.load(artifact, encoder=encoder)
    texts = [text for text, _ in airline["test"][:64]]
    whole = model.predict(texts)
    assert model.predict(texts) == whole
    one_by_one = [model.predict([text])[0] for text in texts[:8]]
    assert [p["sentiment"].label for p in one_by_one] == [p["sentiment"].label for p in whole[:8]]
    # Alone or in a batch, a text is padded differently; under bf16 (what CPUs with
    # native bf16 run, several times faster than fp32) each layer's output is rounded to
    # 8 mantissa bits, so confidences agree to ~1e-3, not to fp32's 1e-6.
    tolerance = 5e-3 if getattr(model.encoder, "bf16", False) else 1e-4
    for a, b in zip(one_by_one, whole[:8]):
        assert a["sentiment"].confidence == pytest.approx(b["sentiment"].confidence, abs=tolerance)


def test_binary_data_is_scored_among_its_own_labels(artifact) -> None:
    predict = load_predictor(str(artifact), {"negative", "positive"})
    answers = predict(["this is awful, never again", "wonderful crew, thank you!"])
    assert [label for label, _ in answers] == ["negative", "positive"]
    assert all(0.5 <= confidence <= 1 for _, confidence in answers)


def test_local_tier_classifies_with_confidence_and_rules_fill_the_rest(artifact, encoder) -> None:
    tier = LocalModelTier(LocalModel.load(artifact, encoder=encoder))
    items = [Item("1", "@united my flight is cancelled AGAIN, worst airline ever", "x"),
             Item("2", "@united thanks for the upgrade, lovely crew", "x")]
    outcomes, call = asyncio.run(tier(items, "run-1"))
    assert [o.label.sentiment for o in outcomes] == ["negative", "positive"]
    assert all(o.tier == "local" and o.provider == "local" for o in outcomes)
    assert outcomes[0].label.priority in (0, 1) and outcomes[1].label.priority == 2
    assert call.tier == "local" and call.tweets == 2 and call.run_id == "run-1"


def test_cascade_without_providers_uses_the_local_tier(artifact, encoder, tmp_path) -> None:
    tier = LocalModelTier(LocalModel.load(artifact, encoder=encoder))
    cascade = Cascade([], OpenAICompatibleClient(), TokenCounter(cache_dir=tmp_path), TOPICS,
                      DEFAULT_TEAMS, local_tier=tier, escalate_below=0.99)
    items = [Item(str(i), text, text) for i, text in enumerate(["late again!!", "ok thanks", "meh"])]
    result = asyncio.run(cascade.classify(items, "r"))
    # local-first with nobody to escalate to: every local answer stands, none degraded
    assert [o.tier for o in result.outcomes] == ["local"] * 3
    free, _ = asyncio.run(cascade.classify_free(items, "r"))
    assert [o.tier for o in free] == ["local"] * 3


@pytest.mark.integration
@pytest.mark.slow
def test_a_worker_classifies_the_demo_with_the_trained_local_model(artifact, kafka_bootstrap,
                                                                    tmp_path) -> None:
    """The embedded default: no provider, a trained model in the worker process."""
    from stream_app.demo import run_demo
    from stream_app.storage.clickhouse import store_session
    from tests.conftest import isolated_settings
    settings = isolated_settings(tmp_path / "data", kafka_bootstrap, local_model=str(artifact))
    result = run_demo(settings, say=print, timeout_s=300)
    assert result.reconciles
    tiers = result.summary.by_tier
    assert tiers.get("local/local", 0) > 1000 and set(tiers) <= {"local/local", "local/dedup"}
    model_name = json.loads((artifact / "model.json").read_text())["name"]
    with store_session(settings.clickhouse_dsn) as client:
        models = client.query("SELECT DISTINCT model FROM dallosh.tweets FINAL "
                              "WHERE provider = 'local'").result_rows
        confidences = client.query("SELECT min(confidence), max(confidence) FROM dallosh.tweets "
                                   "FINAL WHERE provider = 'local'").result_rows[0]
        ledger = client.query("SELECT sum(tweets) FROM dallosh.provider_calls "
                              "WHERE tier = 'local'").result_rows[0][0]
    assert models == [(model_name,)]
    assert 0 < confidences[0] <= confidences[1] <= 1
    assert ledger == tiers["local/local"]


def test_e5_small_encoder_is_multilingual_normalised_and_deterministic() -> None:
    e5 = load_encoder("e5-small", threads=2)
    texts = ["panne internet à Bordeaux depuis ce matin", "internet outage in Bordeaux since this morning",
             "j'adore ma nouvelle box, merci"]
    vectors = e5.encode(texts)
    assert vectors.shape == (3, e5.dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    np.testing.assert_array_equal(vectors, e5.encode(texts))
    # a French sentence sits closer to its English translation than to another French one
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    both = load_encoder("e5-small+minilm", threads=2)
    assert both.dim == e5.dim + 384 and both.encode(texts[:1]).shape == (1, both.dim)


def test_e5_small_fine_tuned_layers_are_trained_saved_and_reloaded(airline, tmp_path) -> None:
    """The mechanics of fine-tuning on a small scale (2 of e5-small's layers, the top one
    tuned for one epoch): the tuned weights change the vectors, travel in the artifact
    and come back identical. Quality is measured by `dallosh eval` on the full model."""
    out = tmp_path / "tuned"
    meta = train_model([airline["train"]], out,
                       TrainConfig(encoder="e5-small", layers=2, tune_layers=1, tune_epochs=1,
                                   max_epochs=10, patience=3), progress=lambda _: None)
    assert meta["fine_tune"]["tuned_layers"] == [1, 2] and meta["fine_tune"]["best_epoch"] == 1
    saved = json.loads((out / "model.json").read_text(encoding="utf-8"))
    assert (saved["format"], saved["encoder_layers"], saved["tuned_from"]) == (3, 2, 1)

    texts = [text for text, _ in airline["test"][:40]]
    model = LocalModel.load(out)
    packaged = load_encoder("e5-small", layers=2).encode(texts)
    tuned = model.encoder.encode(texts)
    assert np.abs(packaged - tuned).max() > 0.05          # the top layer is not the packaged one
    np.testing.assert_array_equal(LocalModel.load(out).encoder.encode(texts), tuned)
    np.testing.assert_array_equal(LocalModel.load(out).probabilities(texts)["sentiment"],
                                  model.probabilities(texts)["sentiment"])


def test_only_e5_small_can_be_cut_or_fine_tuned(tmp_path) -> None:
    with pytest.raises(LocalModelError, match="only the e5-small encoder can be cut"):
        load_encoder("minilm", layers=4)
    with pytest.raises(LocalModelError, match="e5-small has 12 layers"):
        load_encoder("e5-small", layers=13)


def test_load_local_tier_is_none_without_an_artifact(tmp_path) -> None:
    assert load_local_tier(None, 2) is None
    assert load_local_tier(tmp_path / "missing", 2) is None


def test_training_csv_without_sentiment_is_a_clear_error(tmp_path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nhello,positive\n", encoding="utf-8")
    with pytest.raises(LocalModelError, match="'text' and 'sentiment'"):
        read_training_csvs([bad])
    result = CliRunner().invoke(main, ["train", "--data", str(bad), "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and "'text' and 'sentiment'" in result.output
    assert "Traceback" not in result.output


def test_eval_of_a_missing_model_is_a_clear_error(tmp_path) -> None:
    data = tmp_path / "d.csv"
    data.write_text("text,sentiment\nhello,positive\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["eval", "--data", str(data), "--model", str(tmp_path / "nope"),
                                       "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 2 and "neither 'rules' nor a model directory" in result.output


def test_a_fine_tuned_sequence_classification_checkpoint_is_a_local_model(tmp_path) -> None:
    """Stands in for a user's fine-tuned checkpoint (e.g. XLM-T): a tiny BERT built here
    with random weights and sentiment labels, saved the Hugging Face way. It checks the
    loading path, label mapping, restriction and determinism — not quality."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification
    from stream_app.local_model.encoders import minilm_directory
    from stream_app.local_model.model import load_local_model

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, num_labels=3,
                        id2label={0: "Negative", 1: "Neutral", 2: "Positive"},
                        label2id={"Negative": 0, "Neutral": 1, "Positive": 2})
    checkpoint = tmp_path / "xlm-t-like"
    BertForSequenceClassification(config).save_pretrained(checkpoint)
    AutoTokenizer.from_pretrained(minilm_directory()).save_pretrained(checkpoint)

    model = load_local_model(checkpoint)
    texts = ["worst airline ever", "thanks a lot", "ok"]
    answers = model.predict(texts)
    assert model.predict(texts) == answers
    assert all(a["sentiment"].label in ("negative", "neutral", "positive") for a in answers)
    binary = model.predict(texts, {"sentiment": ["negative", "positive"]})
    assert all(a["sentiment"].label != "neutral" for a in binary)
    tier = load_local_tier(checkpoint, 2)
    outcomes, call = asyncio.run(tier([Item("1", "late again", "x")], "r"))
    assert outcomes[0].tier == "local" and call.model == "checkpoint-xlm-t-like"

    (checkpoint / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    with pytest.raises(LocalModelError, match="neither a local-model artifact"):
        load_local_model(checkpoint)
