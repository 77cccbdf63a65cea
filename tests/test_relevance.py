from pathlib import Path

import pytest
import yaml

from stream_app.clean.relevance import load_brand, parse_brand
from stream_app.settings import SettingsError, load_settings

BANK = Path(__file__).parent / "brands" / "bank.yaml"


def test_builtin_brands_load():
    free = load_brand(load_settings(environ={}))
    assert free.relevance("chez Free depuis 10 ans", "x") == "customer"
    assert free.relevance("ma Freebox Pop redémarre", "x") == "customer"
    assert free.relevance("@FREE_1337 aidez-moi", "x") == "customer"
    assert free.relevance("réponse de l'équipe", "Free_1337") == "brand_own"
    assert free.relevance("il pleut à Brest", "x") == "off_topic"
    assert free.relevance("freeboxeur", "x") == "off_topic"  # whole words only
    assert free.relevance("toujours rien depuis hier", "x", in_reply_to="Freebox") == "customer"


def test_builtin_brands_carry_their_taxonomy():
    free = load_brand(load_settings(environ={})).taxonomy
    airline = load_brand(load_settings(environ={"DALLOSH_BRAND": "airline"})).taxonomy
    assert free.topic_names == ("outage", "fibre", "mobile", "billing", "customer_service",
                                "commercial_offer", "other")
    assert airline.team_of("baggage") == "baggage_services"
    assert airline.urgent_topics == ("delays_cancellations",) and free.urgent_topics == ("outage",)
    for taxonomy in (free, airline):
        assert all(10 <= len(t.examples) <= 14 for t in taxonomy.topics)
        assert all(8 <= len(p.examples) <= 10 for p in taxonomy.priorities)
        assert all(t.keywords for t in taxonomy.topics if t.name != "other")


def test_brand_file_overrides_and_is_validated(tmp_path):
    data = yaml.safe_load(BANK.read_text())
    path = tmp_path / "acme.yaml"
    path.write_text(yaml.safe_dump({**data, "name": "acme", "accounts": ["AcmeCare"],
                                    "keywords": ["acme"], "own_posts": "drop"}))
    acme = load_brand(load_settings(environ={"DALLOSH_BRAND_FILE": str(path)}))
    assert acme.name == "acme" and acme.policy("brand_own") == "drop"
    assert acme.relevance("Acme is down", "x") == "customer"
    assert acme.taxonomy.topic_names == ("cards", "loans", "app_login", "fraud", "other")


TAXONOMY = "\n" + BANK.read_text().split("\ntaxonomy:", 1)[1].join(["taxonomy:", ""])


@pytest.mark.parametrize("text, message", [
    ("accounts: [a]\n" + TAXONOMY, "missing key 'name'"),
    ("name: x\nown_posts: maybe\naccounts: [a]\n" + TAXONOMY, "own_posts must be one of"),
    ("name: x\n" + TAXONOMY, "at least one account or keyword"),
    ("name: [unclosed\n", "not valid YAML"),
    ("name: x\naccounts: [a]\n", "missing `taxonomy`"),
    ("name: x\naccounts: [a]\ntopics: [a]\n" + TAXONOMY, r"unknown key\(s\) topics"),
    ("name: x\naccounts: [a]\n" + TAXONOMY.replace("team: lending", "teem: lending"),
     r"taxonomy.topics\[1\]: unknown key\(s\) teem"),
    ("name: x\naccounts: [a]\n" + TAXONOMY.replace("      team: lending\n", ""),
     r"topics\[loans\]: team is missing"),
])
def test_bad_brand_files_are_clear_errors(text, message):
    with pytest.raises(SettingsError, match=message) as raised:
        parse_brand(text, "DALLOSH_BRAND_FILE=x.yaml")
    assert str(raised.value).startswith("DALLOSH_BRAND_FILE=x.yaml")
    assert "\n" not in str(raised.value) or "YAML" in message  # PyYAML quotes the spot


def test_unknown_builtin_brand_is_a_clear_error():
    with pytest.raises(SettingsError, match="no such built-in brand"):
        load_brand(load_settings(environ={"DALLOSH_BRAND": "nope"}))
