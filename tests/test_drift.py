"""The drift watch (issue 14): `dallosh eval --from-store` on a real embedded ClickHouse
(chdb) filled here with tweets as the sink stores them: provider-classified ones are
classified again by the local tier (the rules here) and compared, the others ignored."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from stream_app.cli import main
from stream_app.local_model.drift import DriftError, parse_since
from stream_app.local_model.evaluate import RulesLabels, load_eval_taxonomy
from stream_app.settings import load_settings
from stream_app.storage.clickhouse import store_session

PHONE = "06 12 34 56 78"
COLUMNS = ["id", "created_at", "text", "text_clean", "text_scrubbed", "brand", "tier", "provider",
           "model", "sentiment", "priority", "topic", "run_id", "classified_at", "version"]
MARCH = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)

# id, text (clean = original here), LLM labels, tier/provider, brand, run, day of March
LLM_ROWS = [
    ("1", "Panne de fibre depuis 3 jours, inadmissible !", ("negative", 0, "fibre"), "cloud", "openai"),
    ("2", "Merci pour le dépannage rapide, super service 👍", ("neutral", 2, "customer_service"),
     "cloud", "openai"),
    ("3", "Comment changer mon forfait mobile ?", ("neutral", 1, "mobile"), "cloud", "gemini"),
    ("4", "ma facture est fausse, prélevé deux fois", ("negative", 1, "billing"), "onprem", "ollama"),
    ("5", f"rappelez moi au {PHONE} svp", ("negative", 1, "customer_service"), "cloud", "openai"),
]
# Rules' sentiment: 1 negative, 2 positive (confident), 3 neutral, 4 negative, 5 neutral.
SENTIMENT_AGREEMENT = 3 / 5


def _row(tweet_id: str, text: str, labels: tuple, tier: str, provider: str, brand: str = "free",
         run: str = "r1", day: int = 10) -> list:
    at = MARCH.replace(day=day)
    return [tweet_id, at, text, text, text.replace(PHONE, "<PHONE>"), brand, tier, provider, "m",
            labels[0], labels[1], labels[2], run, at, 1]


@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data_dir = tmp_path / "data"
    monkeypatch.setenv("DALLOSH_DATA_DIR", str(data_dir))
    monkeypatch.setenv("DALLOSH_LOCAL_MODEL", "off")
    monkeypatch.setenv("DALLOSH_BRAND", "free")
    rows = [_row(*r) for r in LLM_ROWS] + [
        # not the LLM's answers: the free tiers themselves
        _row("6", "Panne totale", ("negative", 0, "outage"), "degraded", "rules"),
        _row("7", "Panne totale encore", ("positive", 2, "other"), "local", "local"),
        # another brand's tweet
        _row("8", "Lost my bag again", ("negative", 1, "baggage"), "cloud", "openai", brand="airline"),
        # an older replay
        _row("9", "Bravo Free, encore une panne", ("negative", 0, "outage"), "cloud", "openai",
             run="r0", day=1),
    ]
    with store_session(f"chdb://{data_dir / 'clickhouse'}") as client:
        client.insert("dallosh.tweets", rows, column_names=COLUMNS)
    return data_dir


def _drift(tmp_path: Path, *args: str) -> tuple[int, str, dict | None]:
    out = tmp_path / "drift.json"
    result = CliRunner().invoke(main, ["eval", "--from-store", "--json", str(out), *args])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output, json.loads(out.read_text()) if out.exists() else None


def test_drift_compares_the_local_tier_with_the_llm_on_stored_tweets(store, tmp_path) -> None:
    code, output, report = _drift(tmp_path, "--run", "r1", "--examples", "3")
    assert code == 0, output
    assert report["n"] == 5 and report["brand"] == "free" and report["local"] == "rules"
    assert report["by_provider"] == {"cloud/openai": 3, "cloud/gemini": 1, "onprem/ollama": 1}
    sentiment = report["per_label"]["sentiment"]
    assert sentiment["agreement"] == pytest.approx(SENTIMENT_AGREEMENT, abs=1e-6)
    # confusion rows = LLM, columns = local: LLM neutral -> rules positive for tweet 2
    neu, pos = sentiment["labels"].index("neutral"), sentiment["labels"].index("positive")
    assert sentiment["confusion"][neu][pos] == 1
    # the local tier's most confident disagreement first
    assert [(d["id"], d["llm"], d["local"]) for d in sentiment["disagreements"]] == [
        ("2", "neutral", "positive"), ("5", "negative", "neutral")]
    # topic and priority: agreement with what the rules answer for these texts
    rules = RulesLabels(load_eval_taxonomy("free", load_settings(environ={})))
    answers = rules([text for _, text, *_ in LLM_ROWS])
    for i, label in ((1, "priority"), (2, "topic")):
        m = report["per_label"][label]
        agree = sum(a[label][0] == str(r[2][i]) for a, r in zip(answers, LLM_ROWS))
        assert m["agreement"] == pytest.approx(agree / 5, abs=1e-6), label
        assert sum(map(sum, m["confusion"])) == 5
        assert len(m["disagreements"]) == min(3, 5 - agree)
    assert any(d["id"] == "1" and d["llm"] == "fibre" for d in report["per_label"]["topic"]["disagreements"])
    # scrubbed text only, in the JSON and on screen
    text = json.dumps(report, ensure_ascii=False)
    assert PHONE not in text and PHONE not in output
    assert "rappelez moi au <PHONE> svp" in text
    assert "sentiment  agreement=0.6000" in output


def test_drift_filters_by_run_time_and_brand(store, tmp_path) -> None:
    code, _, report = _drift(tmp_path)
    assert code == 0 and report["n"] == 6                      # both runs, one brand
    code, _, report = _drift(tmp_path, "--since", "2026-03-05T00:00:00Z")
    assert code == 0 and report["n"] == 5
    code, _, report = _drift(tmp_path, "--limit", "2")
    assert code == 0 and report["n"] == 2
    code, _, report = _drift(tmp_path, "--brand", "airline")
    assert code == 0 and report["n"] == 1 and report["per_label"]["topic"]["agreement"] in (0.0, 1.0)


def test_drift_with_nothing_to_compare_is_one_clear_error(store, tmp_path) -> None:
    code, output, _ = _drift(tmp_path, "--run", "nope")
    assert code == 2
    assert "no tweet of brand free classified by a cloud or on-prem provider" in output
    assert "free/cloud: 5" in output and "free/degraded: 1" in output
    code, output, _ = _drift(tmp_path, "--since", "yesterday")
    assert code == 2 and "--since 'yesterday'" in output


def test_parse_since() -> None:
    now = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)
    assert parse_since("24h", now) == datetime(2026, 3, 9, 12, 0, tzinfo=timezone.utc)
    assert parse_since("2w", now) == datetime(2026, 2, 24, 12, 0, tzinfo=timezone.utc)
    assert parse_since("30m", now) == datetime(2026, 3, 10, 11, 30, tzinfo=timezone.utc)
    assert parse_since("2026-03-01T08:00:00") == datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)
    assert parse_since("2026-03-01T08:00:00+01:00") == datetime(2026, 3, 1, 7, 0, tzinfo=timezone.utc)
    with pytest.raises(DriftError):
        parse_since("soon")
