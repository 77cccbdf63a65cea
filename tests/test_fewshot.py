"""The brand's topic and priority heads, learned from its taxonomy's examples
(stream_app.local_model.fewshot), on a brand of our own whose topics are not the
shipped ones (an electricity supplier): trained on the real e5-small encoder, retrained
alone when the taxonomy changes, refused by the tier when trained for another taxonomy,
fed by the store's LLM answers and analysts' corrections, and - slow - the first-run
model trained by `dallosh demo` and used by its worker, into ClickHouse."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from stream_app.classify.local_tier import load_local_tier
from stream_app.classify.types import Item
from stream_app.cli import main
from stream_app.local_model import extra_data, first_run
from stream_app.local_model.fewshot import (BrandTaxonomy, read_brand_taxonomy, stratified_folds,
                                            taxonomy_fingerprint)
from stream_app.local_model.model import LocalModel
from stream_app.local_model.train import BrandTraining, retrain_heads
from stream_app.settings import load_settings
from stream_app.taxonomy import TaxonomyError

pytestmark = pytest.mark.network  # the first-run data comes from PyPI on first use

TINY_ROWS = {"airline_en": 240, "french_reviews": 120}

BRAND = """\
name: voltaire
accounts: [VoltaireEnergie]
keywords: [voltaire, free, freebox, bouygues, sfr, orange]
taxonomy:
  topics:
    - name: power_cut
      team: grid_ops
      description: "No electricity, outage in a street or town, power keeps cutting."
      examples:
        - "plus de courant dans tout le quartier depuis 2h @VoltaireEnergie"
        - "power cut again in Lyon 3e, when will it be back??"
        - "coupure d'électricité rue Victor Hugo, le frigo décongèle"
        - "third blackout this week, my whole building is dark"
        - "Voltaire panne de courant à Rennes depuis ce matin, une estimation ?"
        - "lights flickering then nothing, is there an outage in Nantes?"
        - "toujours pas de jus à la maison après l'orage, vous faites quoi ?"
        - "electricity down on the whole street since last night"
    - name: billing
      team: billing_desk
      description: "Invoices, amounts charged, direct debits, refunds."
      examples:
        - "facture de 480€ ce mois-ci alors que je consomme rien ??"
        - "you charged me twice for March, I want my money back"
        - "prélèvement effectué deux fois, remboursez moi svp"
        - "why did my monthly payment jump from 60 to 140 euros"
        - "j'attends toujours le remboursement du trop-perçu depuis 3 mois"
        - "invoice doesn't match my meter reading at all"
        - "erreur sur ma facture, on me facture un logement que j'ai quitté"
        - "still waiting for the refund you promised in January"
    - name: contract
      team: sales
      description: "New contracts, moving house, offers and prices, cancellation."
      examples:
        - "je déménage le 15, comment transférer mon contrat ?"
        - "what is the price of your green electricity offer?"
        - "I want to cancel my contract, who do I call"
        - "souscription en ligne impossible, le site plante à l'étape 3"
        - "is the fixed price offer still available for new customers?"
        - "résilier mon contrat chez vous c'est un parcours du combattant"
        - "moving to Bordeaux next month, can I keep my plan?"
        - "vous proposez une offre heures creuses ?"
    - name: other
      team: community
      description: "Anything else: praise, jokes, general remarks."
      examples:
        - "merci au conseiller de ce matin, super sympa"
        - "love the new app design, well done"
        - "who else watched the match last night"
        - "bonne année à toute l'équipe Voltaire"
        - "your ad on TV is hilarious"
        - "great customer service today, thanks Julie"
        - "on est vendredi enfin"
        - "follow back please"
  priorities:
    0:
      description: "Act now: outage, safety, money taken wrongly."
      examples:
        - "plus de courant dans tout le quartier, personnes âgées sans chauffage"
        - "sparks coming out of the meter, is it dangerous??"
        - "power out for 10 hours, my insulin is in the fridge"
        - "vous avez prélevé 2000€ sur mon compte, je suis à découvert"
        - "whole town without electricity since this morning"
        - "odeur de brûlé au niveau du compteur, j'appelle qui ?"
    1:
      description: "A real problem for one customer, to handle today."
      examples:
        - "facture de 480€ ce mois-ci alors que je consomme rien"
        - "technician never came for the meter, I took the day off"
        - "I was charged twice for March"
        - "impossible de résilier, personne ne répond"
        - "refund promised in January still not here"
        - "le site plante quand je veux envoyer mon relevé"
    2:
      description: "Low: questions, praise, remarks."
      examples:
        - "what is the price of your green offer?"
        - "merci au conseiller de ce matin"
        - "love the new app design"
        - "vous proposez une offre heures creuses ?"
        - "how do I send my meter reading online?"
        - "bonne année à toute l'équipe"
"""


def brand_file(folder: Path, text: str = BRAND) -> Path:
    path = folder / "voltaire.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def brand(tmp_path_factory) -> BrandTaxonomy:
    path = brand_file(tmp_path_factory.mktemp("brand"))
    return read_brand_taxonomy(path.read_text(encoding="utf-8"), str(path))


@pytest.fixture(scope="module")
def cache_dir() -> Path:
    return load_settings(environ={}).cache_dir


@pytest.fixture(scope="module")
def artifact(brand, cache_dir, tmp_path_factory) -> Path:
    """The first-run recipe (frozen e5-small, 8 layers) on a tiny slice, with the brand's heads."""
    out = tmp_path_factory.mktemp("model") / "local"
    first_run.train_first_run_model(out, cache_dir, brand, rows=TINY_ROWS)
    return out


def test_brand_heads_learn_the_brands_own_names_and_classify_unseen_tweets(artifact, brand) -> None:
    meta = json.loads((artifact / "model.json").read_text(encoding="utf-8"))
    assert meta["recipe"] == "first-run" and meta["first_run_s"] > 0
    assert meta["taxonomy"]["brand"] == "voltaire"
    assert meta["taxonomy"]["sha256"] == taxonomy_fingerprint(brand.taxonomy)
    assert meta["heads"]["topic"]["labels"] == ["billing", "contract", "other", "power_cut"]
    assert meta["heads"]["priority"]["inputs"] == ["sentiment", "topic"]
    # cross-validated on the examples, well above chance (0.25 for 4 topics)
    assert meta["metrics"]["topic"]["cv_macro_f1"] > 0.6
    assert 0.05 < meta["metrics"]["topic"]["temperature"] < 20

    model = LocalModel.load(artifact)
    unseen = {"no electricity at all in my street since noon": "power_cut",
              "coupure de courant générale à Lille, rien ne marche": "power_cut",
              "pourquoi ma facture a doublé ce mois ci ??": "billing",
              "I was billed 300 euros for an empty flat": "billing",
              "how do I transfer my contract to my new address?": "contract",
              "thank you so much for the lovely chat with your agent": "other"}
    predicted = [p["topic"].label for p in model.predict(list(unseen))]
    assert sum(p == t for p, t in zip(predicted, unseen.values())) >= 5, predicted
    urgent, low = model.predict(["power out for the whole town since last night, elderly people without heating",
                                 "what time does your shop open?"])
    assert int(urgent["priority"].label) < int(low["priority"].label)


def test_taxonomy_change_retrains_only_the_brand_heads(artifact, brand, tmp_path) -> None:
    renamed = BRAND.replace("name: power_cut", "name: outage").replace("team: sales", "team: sales_fr")
    changed = read_brand_taxonomy(renamed, "changed.yaml")
    before = LocalModel.load(artifact)
    meta = retrain_heads(artifact, tmp_path / "retrained", BrandTraining(changed))
    after = LocalModel.load(tmp_path / "retrained")
    assert meta["taxonomy"]["sha256"] != taxonomy_fingerprint(brand.taxonomy)
    assert "outage" in after.heads["topic"][0].labels and "power_cut" not in after.heads["topic"][0].labels
    assert meta["seconds"] < 120  # seconds of heads, not the 17-minute encoder tuning
    for b, a in zip(before.heads["sentiment"][1].state_dict().values(),
                    after.heads["sentiment"][1].state_dict().values()):
        assert torch.equal(a, b)
    texts = ["panne de courant", "merci"]
    np.testing.assert_array_equal(before.encoder.encode(texts), after.encoder.encode(texts))


def test_the_tier_refuses_heads_trained_for_another_taxonomy(artifact, brand, caplog) -> None:
    items = [Item("1", "plus de courant dans tout Lyon depuis ce matin", "x")]
    tier = load_local_tier(artifact, 2, brand)
    label = tier.classify(items)[0].label
    assert label.topic == "power_cut" and label.team == "grid_ops"

    other = read_brand_taxonomy(BRAND.replace("name: contract", "name: offers"), "other.yaml")
    with caplog.at_level(logging.WARNING):
        refused = load_local_tier(artifact, 2, other)
    assert "topic" not in refused.model.heads and "priority" not in refused.model.heads
    assert "trained for the taxonomy of brand 'voltaire'" in caplog.text and "--heads-only" in caplog.text
    label = refused.classify(items)[0].label  # the rules answer topic, in the configured names
    assert label.topic in other.taxonomy.topic_names and label.team == other.taxonomy.team_of(label.topic)
    assert label.sentiment in ("negative", "neutral", "positive")


def test_a_brand_file_without_examples_is_one_clear_error(tmp_path) -> None:
    broken = BRAND.replace('        - "follow back please"\n', "").replace(
        '        - "on est vendredi enfin"\n', "")
    with pytest.raises(TaxonomyError, match=r"topics\[other\].*give at least 8"):
        read_brand_taxonomy(broken, "broken.yaml")
    result = CliRunner().invoke(main, ["train", "--brand", str(brand_file(tmp_path, broken)),
                                       "--heads-only", "--out", str(tmp_path / "none")])
    assert result.exit_code == 2 and result.output.startswith("error: ") and "Traceback" not in result.output


def test_folds_are_stratified_and_stable() -> None:
    labels = ["a"] * 10 + ["b"] * 5
    texts = [f"t{i}" for i in range(15)]
    folds = stratified_folds(labels, texts)
    assert sorted(np.bincount(folds[:10])) == [2] * 5 and sorted(np.bincount(folds[10:])) == [1] * 5
    reordered = stratified_folds(labels[::-1], texts[::-1])
    assert list(reordered[::-1]) == list(folds)


def _fill_store(dsn: str) -> None:
    from stream_app.storage.clickhouse import store_session
    rows = [  # (id, text, sentiment, priority, topic, tier)
        ("1", "mon compteur Linky clignote rouge et plus rien", "negative", 0, "power_cut", "cloud"),
        ("2", "the meter technician was rude and left", "negative", 1, "contract", "onprem"),
        ("3", "facture incompréhensible, 3 lignes de frais", "negative", 1, "billing", "cloud"),
        ("4", "bravo pour la nouvelle appli", "positive", 2, "other", "cloud"),
        ("5", "rules said this one", "neutral", 2, "billing", "degraded"),
        ("6", "local model said this one", "neutral", 2, "billing", "local"),
        ("7", "an LLM topic this brand does not have", "neutral", 2, "roaming", "cloud"),
    ]
    values = ", ".join(f"('{i}', '{t}', '{t}', '{s}', {p}, '{c}', 'x', '{tier}', 'p', 1)"
                       for i, t, s, p, c, tier in rows)
    with store_session(dsn) as client:
        client.command("INSERT INTO dallosh.tweets (id, text, text_clean, sentiment, priority, topic, "
                       f"team, tier, provider, version) VALUES {values}")


def test_store_rows_are_the_llm_tiers_answers_only(tmp_path) -> None:
    dsn = f"chdb://{tmp_path / 'store'}"
    _fill_store(dsn)
    sets = extra_data.read_store_rows(dsn)
    assert sorted(sets["topic"].texts) == sorted([
        "mon compteur Linky clignote rouge et plus rien", "the meter technician was rude and left",
        "facture incompréhensible, 3 lignes de frais", "bravo pour la nouvelle appli",
        "an LLM topic this brand does not have"])
    assert set(sets["sentiment"].kinds) == {"store"}


def test_train_from_store_and_corrections_through_the_cli(artifact, tmp_path, monkeypatch) -> None:
    dsn = f"chdb://{tmp_path / 'store'}"
    _fill_store(dsn)
    corrected = "mon voisin a du courant mais pas moi, et la facture arrive quand même"
    corrections = tmp_path / "corrections.csv"
    corrections.write_text(f"text,topic,priority\n\"{corrected}\",billing,1\n"
                           "\"le nouveau tarif bleu est sorti ?\",contract,\n", encoding="utf-8")
    out = tmp_path / "model"
    import shutil
    shutil.copytree(artifact, out)
    monkeypatch.setenv("DALLOSH_CLICKHOUSE_DSN", dsn)
    monkeypatch.setenv("DALLOSH_LOCAL_MODEL", str(out))
    result = CliRunner().invoke(main, ["train", "--brand", str(brand_file(tmp_path)), "--heads-only",
                                       "--from-store", "--corrections", str(corrections)])
    assert result.exit_code == 0, result.output
    assert "extra training rows: sentiment 5, priority 6, topic 7" in result.output
    assert "1 extra row(s) skipped (label not in the taxonomy)" in result.output  # 'roaming'
    meta = json.loads((out / "model.json").read_text(encoding="utf-8"))
    assert meta["metrics"]["topic"]["rows"] == {"correction": 2, "description": 4, "example": 32, "store": 4}
    assert meta["metrics"]["priority"]["rows"] == {"correction": 1, "example": 18, "store": 5}
    # the store's sentiment rows retrained the sentiment head, on the recorded CSVs + them
    assert any(s["path"] == "<store>" and s["rows_used"] == 5 for s in meta["data"])
    assert LocalModel.load(out).predict([corrected])[0]["topic"].label == "billing"

    bad = tmp_path / "bad.csv"
    bad.write_text("text,priority\nhello,urgent\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["train", "--brand", str(brand_file(tmp_path)), "--heads-only",
                                       "--corrections", str(bad)])
    assert result.exit_code == 2 and "line 2: priority 'urgent' is not a label" in result.output


@pytest.mark.integration
@pytest.mark.slow
def test_demo_trains_the_first_run_model_and_its_worker_uses_it(kafka_bootstrap, tmp_path,
                                                                monkeypatch) -> None:
    """A machine with no model: `dallosh demo` trains the first-run model (a tiny slice
    here, seconds), caches it, and the worker classifies with it into the brand's own
    topic names in ClickHouse."""
    from stream_app.demo import run_demo
    from stream_app.storage.clickhouse import store_session
    from tests.conftest import isolated_settings
    monkeypatch.setattr(first_run, "FIRST_RUN_ROWS", TINY_ROWS)
    model_dir = tmp_path / "cache" / "models" / "local"
    settings = isolated_settings(tmp_path / "data", kafka_bootstrap, local_model=str(model_dir),
                                 brand_file=str(brand_file(tmp_path)))
    lines: list[str] = []
    result = run_demo(settings, say=lines.append, timeout_s=300, train_model=True)
    assert result.reconciles
    classifier = next(line for line in lines if line.startswith("Classifier:"))
    assert "training the first-run model now" in classifier
    assert any("local model trained in" in line and "brand voltaire" in line for line in lines)
    assert (model_dir / "model.json").is_file()
    tiers = result.summary.by_tier
    assert tiers.get("local/local", 0) > 1000 and set(tiers) <= {"local/local", "local/dedup"}
    with store_session(settings.clickhouse_dsn) as client:
        topics = {t for (t,) in client.query("SELECT DISTINCT topic FROM dallosh.tweets FINAL "
                                             "WHERE provider = 'local'").result_rows}
        teams = dict(client.query("SELECT DISTINCT topic, team FROM dallosh.tweets FINAL "
                                  "WHERE provider = 'local'").result_rows)
    assert topics <= {"power_cut", "billing", "contract", "other"} and len(topics) >= 2
    assert all(teams[t] == {"power_cut": "grid_ops", "billing": "billing_desk", "contract": "sales",
                            "other": "community"}[t] for t in topics)
    # the second demo finds it cached
    lines.clear()
    run_demo(settings, say=lines.append, timeout_s=300, train_model=True)
    assert not any("training the first-run model" in line for line in lines)


def test_the_first_run_subsample_keeps_every_label_of_a_file_grouped_by_label(tmp_path):
    """The labelled files are grouped by label; the subsample must reach the last group."""
    import collections
    import csv as csv_module
    source = tmp_path / "grouped.csv"
    with source.open("w", encoding="utf-8", newline="") as handle:
        writer = csv_module.writer(handle)
        writer.writerow(["text", "sentiment"])
        for label, n in (("negative", 7246), ("neutral", 2433), ("positive", 1777)):
            writer.writerows([f"{label} {i}", label] for i in range(n))
    target = first_run.subsample(source, tmp_path / "sub.csv", 2400)
    counts = collections.Counter(row["sentiment"] for row in csv_module.DictReader(target.open()))
    assert sum(counts.values()) == 2400
    assert abs(counts["positive"] - 2400 * 1777 / 11456) <= 2


def test_the_brand_labelled_tweets_train_every_head() -> None:
    """The shipped brands' labelled tweets join the topic and priority examples and are
    one source of the sentiment data, weighted above each generic source."""
    from stream_app.local_model.fewshot import BRAND_SENTIMENT_SHARE, taxonomy_sets
    from stream_app.local_model.train import LabelledRows
    from stream_app.taxonomy import builtin_taxonomy
    taxonomy = builtin_taxonomy("free")
    sets = taxonomy_sets(taxonomy)
    examples = sum(len(t.examples) for t in taxonomy.topics)
    assert len(sets["topic"].texts) == examples + len(taxonomy.topics) + len(taxonomy.labelled)
    extras = BrandTraining(BrandTaxonomy("free", "free", taxonomy)).sentiment_extras()
    assert len(extras) == 1 and len(extras[0][0].texts) == len(taxonomy.labelled)
    rows = LabelledRows(["a", "b", "c"], {"sentiment": ["negative"] * 3, "priority": [None] * 3,
                                          "topic": [None] * 3},
                        [{"path": "generic.csv"}], [0, 0, 0])
    rows.add_extra(extras[0][0], extras[0][1])
    weights = rows.weights()
    generic, brand = weights[:3].sum(), weights[3:].sum()
    assert brand == pytest.approx(BRAND_SENTIMENT_SHARE * generic, rel=1e-4)
