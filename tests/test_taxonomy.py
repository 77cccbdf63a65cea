"""A brand's taxonomy: parsed from the brand file, every mistake one clear error."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from stream_app.taxonomy import (DEFAULT_KEYWORD_WEIGHT, Taxonomy, TaxonomyError,
                                 builtin_taxonomy, parse_taxonomy)

BANK = yaml.safe_load((Path(__file__).parent / "brands" / "bank.yaml").read_text())["taxonomy"]


def _bank(**changes) -> dict:
    data = copy.deepcopy(BANK)
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if value is None:
            del node[int(last) if last.isdigit() else last]
        else:
            node[int(last) if last.isdigit() else last] = value
    return data


def test_a_valid_taxonomy_parses():
    taxonomy = parse_taxonomy(BANK, "bank.yaml")
    assert isinstance(taxonomy, Taxonomy)
    assert taxonomy.topic_names == ("cards", "loans", "app_login", "fraud", "other")
    assert taxonomy.team_of("fraud") == "fraud_team"
    assert taxonomy.team_of("unknown") == "social_media"  # the fallback's team
    assert taxonomy.urgent_topics == ("fraud",)
    cards = taxonomy.topic("cards")
    assert dict(cards.keyword_weights)["card declined"] == 3.0 and "pin" in cards.keywords
    assert [p.level for p in taxonomy.priorities] == [0, 1, 2]
    rerouted = taxonomy.with_teams({"cards": "branch_staff"})
    assert rerouted.team_of("cards") == "branch_staff" and rerouted.team_of("loans") == "lending"


def test_keywords_may_be_a_plain_list():
    taxonomy = parse_taxonomy(_bank(topics__1__keywords=["mortgage", "loan", 42]), "bank.yaml")
    assert taxonomy.topic("loans").keyword_weights == (
        ("mortgage", DEFAULT_KEYWORD_WEIGHT), ("loan", DEFAULT_KEYWORD_WEIGHT),
        ("42", DEFAULT_KEYWORD_WEIGHT))


@pytest.mark.parametrize("changes, message", [
    ({"colour": "blue"}, r"bank.yaml: taxonomy: unknown key\(s\) colour"),
    ({"topics__0__teams": "x"}, r"topics\[0\]: unknown key\(s\) teams"),
    ({"topics__1__team": None}, r"topics\[loans\]: team is missing"),
    ({"topics__1__team": "Lending Dept"}, r"topics\[loans\]: team is missing or not a plain name"),
    ({"topics__1__description": None}, r"topics\[loans\]: description is missing"),
    ({"topics__1__examples": ["only one", "two"]}, r"topics\[loans\]: 2 distinct example\(s\); give at least 8"),
    ({"topics__1__examples": ["same"] * 9}, r"1 distinct example"),
    ({"topics__1__examples": None}, r"topics\[loans\]: examples must be a list"),
    ({"topics__1__name": "Loans!"}, r"name must be lowercase"),
    ({"topics__1__name": "cards"}, r"topics\[cards\]: topic declared twice"),
    ({"topics__4": None}, r"add a topic named `other`"),
    ({"topics__0__keywords": {9: ["card"]}}, r"keyword weight 9 must be a number in \(0, 5\]"),
    ({"topics__0__keywords": "card"}, r"keywords must be a list"),
    ({"topics__3__urgent": "yes"}, r"topics\[fraud\]: urgent must be true or false"),
    ({"topics__0__negated_verbs": "work"}, r"negated_verbs must be a list"),
    ({"priorities__1": None}, r"priorities: level\(s\) 1 missing"),
    ({"priorities__3": {"description": "x", "examples": ["a"] * 6}}, r"unknown level 3"),
    ({"priorities__0__examples": ["a", "b"]}, r"priorities\[0\]: 2 distinct example"),
    ({"priorities__2__description": None}, r"priorities\[2\]: description is missing"),
    ({"topics": []}, r"`topics` must be a non-empty list"),
])
def test_every_mistake_is_one_clear_error(changes, message):
    with pytest.raises(TaxonomyError, match=message) as raised:
        parse_taxonomy(_bank(**changes), "bank.yaml")
    assert str(raised.value).startswith("bank.yaml: taxonomy") and "\n" not in str(raised.value)


def test_not_a_mapping_is_refused():
    with pytest.raises(TaxonomyError, match="must be a mapping"):
        parse_taxonomy(["topics"], "bank.yaml")


@pytest.mark.parametrize("brand", ["free", "airline"])
def test_shipped_taxonomies_follow_the_spec(brand):
    taxonomy = builtin_taxonomy(brand)
    assert taxonomy.topic_names[-1] == "other" and taxonomy.team_of("other") == "social_media"
    assert len(taxonomy.urgent_topics) == 1
    texts = [e for t in taxonomy.topics for e in t.examples]
    assert len(texts) == len(set(texts)), "an example under two topics teaches nothing"
    assert taxonomy.priorities[0].description.startswith("Act now")


# ------------------------------------------------------------------ labelled examples

def _with_labelled(tmp_path: Path, csv_text: str) -> Taxonomy:
    (tmp_path / "bank_examples.csv").write_text(csv_text, encoding="utf-8")
    return parse_taxonomy(dict(BANK, labelled_examples="bank_examples.csv"), "bank.yaml", tmp_path)


def test_labelled_examples_are_read_next_to_the_brand_file(tmp_path):
    taxonomy = _with_labelled(tmp_path, "text,sentiment,priority,topic\n"
                                        "\"my card was declined, again\",negative,1,cards\n"
                                        "love the new app,Positive,,\n"
                                        ",negative,0,fraud\n")
    assert [(r.text, r.sentiment, r.priority, r.topic) for r in taxonomy.labelled] == [
        ("my card was declined, again", "negative", 1, "cards"), ("love the new app", "positive", None, None)]
    # the rows do not change what the rules are compiled for (equality and hash)
    assert taxonomy == parse_taxonomy(BANK, "bank.yaml")


@pytest.mark.parametrize("csv_text, message", [
    ("text,sentiment\nhello,angry\n", r"bank_examples.csv, line 2: sentiment 'angry' is not one of"),
    ("text,topic\nhello,mortgages\n", r"line 2: topic 'mortgages' is not one of app_login, cards"),
    ("text,priority\nhello,3\n", r"line 2: priority '3' is not one of 0, 1, 2"),
    ("tweet,topic\nhello,cards\n", r"needs a `text` column and at least one of sentiment, priority, topic"),
    ("text,topic\n", r"has no labelled row"),
])
def test_a_bad_labelled_examples_file_is_one_clear_error(tmp_path, csv_text, message):
    with pytest.raises(TaxonomyError, match=message):
        _with_labelled(tmp_path, csv_text)


def test_a_missing_labelled_examples_file_is_one_clear_error(tmp_path):
    with pytest.raises(TaxonomyError, match=r"labelled_examples: cannot read nowhere.csv"):
        parse_taxonomy(dict(BANK, labelled_examples="nowhere.csv"), "bank.yaml", tmp_path)


@pytest.mark.parametrize("brand", ["free", "airline"])
def test_the_shipped_brands_carry_their_labelled_tweets(brand):
    taxonomy = builtin_taxonomy(brand)
    assert len(taxonomy.labelled) > 1000
    for label in ("sentiment", "priority", "topic"):
        assert all(getattr(r, label) is not None for r in taxonomy.labelled), label
    assert {r.topic for r in taxonomy.labelled} == set(taxonomy.topic_names)
