"""The local model without torch (stream_app/local_model/onnx_export.py): a save
exports the encoder as used (2 of e5-small's layers, the top one fine-tuned, so the
export must carry tuned weights) and the brand's heads (priority reads sentiment and
topic), checks it against torch on the free brand's held-out set and writes it; a
fresh interpreter then classifies with it and never imports torch; an artifact
without an export, or whose export fails the check, loads through torch and says so;
`dallosh bench local-model` measures both runtimes in one run."""

from __future__ import annotations

import csv
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from stream_app.cli import main
from stream_app.local_model import onnx_export
from stream_app.local_model.datasets import fetch_datasets
from stream_app.local_model.encoders import E5SmallEncoder, OnnxE5Encoder
from stream_app.local_model.fewshot import brand_taxonomy
from stream_app.local_model.model import LocalModel, gelu, has_onnx_export, load_local_model
from stream_app.local_model.train import BrandTraining, TrainConfig, train_model
from stream_app.settings import load_settings

pytestmark = pytest.mark.network  # the labelled data comes from PyPI on first use

TEXTS = ["@free ma box est en panne depuis 3 jours, personne ne répond",
         "merci pour le remboursement rapide !",
         "my flight was cancelled and nobody at the desk could help " * 12,  # > 128 tokens
         "ok", "La fibre coupée à Lyon 3e, c'est national ou juste nous ?"]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    settings = load_settings(environ={})
    paths = fetch_datasets(settings.cache_dir, progress=lambda _: None)
    with paths.path("airline_en", "train").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    train = tmp_path_factory.mktemp("data") / "train.csv"
    with train.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "sentiment"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows[::max(1, len(rows) // 600)][:600])
    out = tmp_path_factory.mktemp("model") / "local"
    train_model([train], out, TrainConfig(encoder="e5-small", layers=2, tune_layers=1, tune_epochs=1,
                                          max_epochs=10, patience=3),
                progress=lambda _: None, brand=BrandTraining(brand_taxonomy(settings, "free")))
    return out


def test_save_writes_an_export_checked_against_torch_on_the_brands_held_out_set(artifact) -> None:
    meta = json.loads((artifact / "model.json").read_text(encoding="utf-8"))
    record = meta["onnx"]
    assert "error" not in record, record.get("error")
    assert has_onnx_export(artifact, meta)
    assert record["precision"] in ("int8", "fp32") and record["attention_fused"] == 2  # both layers
    check = record["check"]
    assert check["data"] == "held-out set free.csv" and check["texts"] == 240
    chosen = check["candidates"][record["precision"]]
    assert chosen["passed"] and set(chosen["heads"]) == {"sentiment", "topic", "priority"}
    for name, head in chosen["heads"].items():
        assert head["agreement"] >= onnx_export.MIN_AGREEMENT, name
        assert abs(head["macro_f1_onnx"] - head["macro_f1_torch"]) <= onnx_export.MAX_F1_DIFFERENCE, name
        assert head["rows"] > 200  # every held-out row has all three labels
    assert meta["heads"]["priority"]["inputs"] == ["sentiment", "topic"]


def test_onnx_runtime_gives_the_torch_models_vectors_and_heads(artifact) -> None:
    torch_model = LocalModel.load(artifact)
    onnx_model = LocalModel.load(artifact, runtime="onnx")
    assert isinstance(onnx_model.encoder, OnnxE5Encoder) and onnx_model.runtime == "onnx"
    # The heads alone, on the same embeddings: numpy reproduces torch (GELU included).
    x = torch_model.encoder.encode(TEXTS)
    ours, theirs = torch_model.head_probabilities(x, texts=TEXTS), onnx_model.head_probabilities(x, texts=TEXTS)
    for name in ours:
        np.testing.assert_allclose(theirs[name], ours[name], atol=2e-5)
    # The encoder, with the fine-tuned top layer, on texts of very different lengths
    # (dynamic batch and sequence axes); int8 moves vectors a little, not their direction.
    tuned = torch_model.encoder.encode(TEXTS)
    exported = onnx_model.encoder.encode(TEXTS)
    assert ((tuned * exported).sum(1) > 0.97).all()
    packaged = E5SmallEncoder(2, layers=2).encode(TEXTS)
    assert ((exported * packaged).sum(1) < (exported * tuned).sum(1)).all()  # tuned weights travelled
    np.testing.assert_array_equal(onnx_model.encoder.encode(TEXTS[::-1])[::-1], exported)  # batch-independent


def test_gelu_in_numpy_is_torchs_exact_gelu() -> None:
    # erf to 1.5e-7 (Abramowitz & Stegun) times x/2; the tanh approximation is ~1e-3 off.
    x = np.linspace(-8, 8, 4001, dtype=np.float32)
    np.testing.assert_allclose(gelu(x), torch.nn.functional.gelu(torch.from_numpy(x)).numpy(), atol=3e-6)


def test_a_fresh_worker_process_classifies_with_the_export_without_importing_torch(artifact) -> None:
    script = f"""
import sys
from pathlib import Path
from stream_app.classify.local_tier import load_local_tier
from stream_app.classify.types import Item
from stream_app.local_model.fewshot import brand_taxonomy
from stream_app.settings import load_settings
settings = load_settings(environ={{"DALLOSH_LOCAL_MODEL_RUNTIME": "onnx"}})  # as a worker configured so
brand = brand_taxonomy(settings, "free")
tier = load_local_tier(Path({str(artifact)!r}), threads=2, brand=brand, runtime=settings.local_model_runtime)
assert tier.model.runtime == "onnx", tier.model.runtime
texts = {TEXTS!r}
outcomes = tier.classify([Item(id=str(i), text=t, text_scrubbed=t) for i, t in enumerate(texts)])
assert [o.tier for o in outcomes] == ["local"] * len(texts)
print(sorted({{o.label.sentiment for o in outcomes}}), outcomes[0].label.topic)
assert "torch" not in sys.modules, "torch was imported"
assert "transformers" not in sys.modules, "transformers was imported"
print("no torch")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("no torch")


def test_an_artifact_without_export_loads_through_torch_and_says_so(artifact, tmp_path, caplog) -> None:
    copy = tmp_path / "old"
    shutil.copytree(artifact, copy)
    meta = json.loads((copy / "model.json").read_text(encoding="utf-8"))
    del meta["onnx"]  # as written before exports existed
    (copy / "model.json").write_text(json.dumps(meta), encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="stream_app.local_model.model"):
        model = load_local_model(copy, runtime="onnx")
    assert model.runtime == "torch"
    assert "no usable ONNX export (trained before ONNX exports existed); loading it through torch" \
        in caplog.text


def test_an_export_that_fails_the_check_is_not_written(artifact, tmp_path, caplog, monkeypatch) -> None:
    """Re-saving into a directory that holds an export: the new export disagrees (an
    impossible agreement threshold), so nothing is written, the stale files go, one
    warning says why, and the artifact loads through torch."""
    copy = tmp_path / "resaved"
    shutil.copytree(artifact, copy)
    model = LocalModel.load(copy)
    monkeypatch.setattr(onnx_export, "MIN_AGREEMENT", 1.01)
    with caplog.at_level(logging.WARNING, logger="stream_app.local_model.onnx_export"):
        model.save(copy)
    warnings = [r.getMessage() for r in caplog.records if r.name == "stream_app.local_model.onnx_export"]
    assert len(warnings) == 1 and "no ONNX export (the ONNX export disagrees with the torch model on " \
        "held-out set free.csv: head " in warnings[0] and "workers will load it through torch" in warnings[0]
    meta = json.loads((copy / "model.json").read_text(encoding="utf-8"))
    assert meta["onnx"]["error"].startswith("the ONNX export disagrees")
    assert not (copy / onnx_export.ENCODER_FILE).exists() and not (copy / onnx_export.HEADS_FILE).exists()
    assert load_local_model(copy).runtime == "torch"
    assert not list(copy.glob(".onnx-export-*"))  # the work folder is gone too


def test_bench_local_model_measures_both_runtimes_in_one_run(artifact, tmp_path) -> None:
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(main, ["bench", "local-model", "--model", str(artifact), "--tweets", "200",
                                       "--batch-size", "100", "--rounds", "1", "--json", str(out)],
                                 env={"DALLOSH_LOCAL_MODEL_RUNTIME": "onnx"})
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text(encoding="utf-8"))
    assert figures["runtime"] == "onnx" and figures["torch_imported"] is False
    assert figures["tweets_per_s"] > 0 and figures["torch_tweets_per_s"] > 0
    assert figures["onnx_tweets_per_s"] == figures["tweets_per_s"]
    assert figures["load_s"] > 0 and figures["torch_load_s"] > 0
    assert 0 < figures["peak_rss_mb"] < figures["torch_peak_rss_mb"]  # torch alone weighs more
    assert figures["speedup_vs_torch"] == pytest.approx(figures["tweets_per_s"] / figures["torch_tweets_per_s"],
                                                        rel=0.01)
    assert figures["heads"] == ["sentiment", "topic", "priority"]
    assert "tweets/s on onnx" in result.output and "x torch" in result.output


def test_bench_local_model_on_a_missing_artifact_is_one_error_line(tmp_path) -> None:
    result = CliRunner().invoke(main, ["bench", "local-model", "--model", str(tmp_path / "none")])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error:") and "Traceback" not in result.output


def test_the_runtime_setting_picks_what_workers_load(artifact, monkeypatch) -> None:
    """auto: torch on a CPU with native bf16 when torch is installed, else onnx."""
    from stream_app.local_model import model as model_module
    assert load_local_model(artifact, runtime="onnx").runtime == "onnx"
    assert load_local_model(artifact, runtime="torch").runtime == "torch"
    monkeypatch.setattr(model_module, "native_bf16_cpu", lambda: False)
    assert load_local_model(artifact).runtime == "onnx"
    monkeypatch.setattr(model_module, "native_bf16_cpu", lambda: True)
    assert load_local_model(artifact).runtime == "torch"


def test_the_base_install_without_torch_says_what_to_install(tmp_path, monkeypatch) -> None:
    """Without the `train` extra: `dallosh train` is one error line naming the extra, and
    the demo does not try to train the first-run model (the rules classify instead)."""
    from stream_app import demo
    from stream_app.local_model import encoders
    monkeypatch.setattr(encoders, "torch_installed", lambda: False)
    result = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and result.output.startswith("error: `dallosh train` needs torch")
    assert "dallosh-stream[train]" in result.output and "Traceback" not in result.output
    settings = load_settings(environ={"DALLOSH_LOCAL_MODEL": str(tmp_path / "none")})
    assert demo.needs_first_run_model(settings) is False
