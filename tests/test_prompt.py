"""The LLM request format: prompt, rendering, response schema, token estimates."""

from __future__ import annotations

import csv
import gzip
import json

import pytest
from jsonschema import Draft202012Validator

from connectors.samples import SAMPLE_PATH
from stream_app.classify import prompt
from stream_app.classify.rules import DEFAULT_TEAMS, TOPICS
from stream_app.classify.tokens import TokenCounter
from stream_app.classify.types import Item
from stream_app.clean.cleaning import clean_text
from stream_app.clean.pii import scrub_pii
from stream_app.records import schema_errors
from stream_app.taxonomy import builtin_taxonomy, parse_taxonomy

PHONE = "06 12 34 56 78"


def _item(i: int, text: str) -> Item:
    return Item(id=str(2031882935059436368 + i), text=text, text_scrubbed=scrub_pii(text).text)


@pytest.fixture(scope="module")
def sample_items() -> list[Item]:
    with gzip.open(SAMPLE_PATH, "rt", encoding="utf-8", newline="") as handle:
        texts = [clean_text(row["full_text"]) for row in csv.DictReader(handle)]
    return [_item(i, t) for i, t in enumerate(texts) if t]


def test_schema_file_is_in_sync_with_the_code() -> None:
    assert prompt.SCHEMA_PATH.read_text(encoding="utf-8") == prompt.schema_file_text(), (
        "regenerate with: python -m stream_app.classify.prompt")


def test_schema_is_valid_and_validates_answers() -> None:
    Draft202012Validator.check_schema(prompt.schema_document())
    good = {"items": [{"id": "1", "sentiment": "negative", "priority": 0, "topic": "outage",
                       "team": "network_ops", "confidence": 0.9, "reason": "fibre down"}]}
    assert schema_errors("classification_response", good) == []
    bad = {"items": [{**good["items"][0], "priority": 3, "topic": "weather"}]}
    assert len(schema_errors("classification_response", bad)) == 2
    del bad["items"][0]["reason"]
    assert any("reason" in e for e in schema_errors("classification_response", bad))


def test_schema_follows_the_configured_vocabulary() -> None:
    topics = ("panne", "facture", "autre")
    teams = {"panne": "noc", "facture": "billing", "autre": "noc"}
    item = prompt.response_schema(topics, teams)["properties"]["items"]["items"]
    assert item["properties"]["topic"]["enum"] == list(topics)
    assert item["properties"]["team"]["enum"] == ["noc", "billing"]
    # OpenAI strict structured outputs: every property required, no others allowed.
    assert sorted(item["required"]) == sorted(item["properties"])
    assert item["additionalProperties"] is False
    assert "$schema" not in prompt.response_schema()
    loose = prompt.response_schema(numeric_bounds=False)["properties"]["items"]["items"]
    assert "minimum" not in loose["properties"]["priority"]
    assert "0 = high" in loose["properties"]["priority"]["description"]


def _taxonomy(topics: dict[str, str]):
    return parse_taxonomy({
        "topics": [{"name": name, "team": team, "description": f"about {name} things",
                    "examples": [f"{name} example {i}" for i in range(8)]}
                   for name, team in topics.items()],
        "priorities": {level: {"description": f"level {level} means this",
                               "examples": [f"p{level} example {i}" for i in range(6)]}
                       for level in (0, 1, 2)}}, "test")


def test_system_prompt_states_the_task() -> None:
    text = prompt.system_prompt()
    for word in (*TOPICS, *DEFAULT_TEAMS.values(), "negative", "neutral", "positive",
                 "French", "English", "JSON only", "at most 12 words", "0 = high"):
        assert word in text, word
    custom = prompt.system_prompt(_taxonomy({"panne": "noc", "autre": "sav", "other": "sav"}))
    assert "panne -> noc" in custom and "billing" not in custom
    assert prompt.PROMPT_VERSION == "v2"


@pytest.mark.parametrize("brand", ["free", "airline"])
def test_system_prompt_is_generated_from_the_brand_taxonomy(brand: str) -> None:
    """Topic names, teams, descriptions, the first example of each topic and the
    priority descriptions: what the LLM needs to label into the brand's vocabulary."""
    taxonomy = builtin_taxonomy(brand)
    text = prompt.system_prompt(taxonomy)
    for topic in taxonomy.topics:
        assert f"- {topic.name} -> {topic.team}: {topic.description}" in text
        assert json.dumps(topic.examples[0], ensure_ascii=False) in text
        assert topic.examples[-1] not in text  # the examples are the local tier's, not all sent
    for level in taxonomy.priorities:
        assert f"{level.level} = {level.description}" in text
    other = {"free": "delays_cancellations", "airline": "fibre"}[brand]
    assert other not in text


def test_schema_enumerates_the_brand_topics_and_teams() -> None:
    airline = builtin_taxonomy("airline")
    item = prompt.response_schema(airline.topic_names, airline.teams)["properties"]["items"]["items"]
    assert item["properties"]["topic"]["enum"] == list(airline.topic_names)
    assert set(item["properties"]["team"]["enum"]) == set(airline.teams.values())
    assert "baggage_services" in item["properties"]["team"]["enum"]


def test_rendering_sends_scrubbed_text_when_asked() -> None:
    item = _item(1, f"Rappelez-moi au {PHONE}, la fibre est coupée depuis hier !")
    assert PHONE not in item.text_scrubbed
    scrubbed = prompt.render_items([item], use_scrubbed=True)
    assert PHONE not in scrubbed and "<PHONE>" in scrubbed
    assert PHONE in prompt.render_items([item], use_scrubbed=False)


def test_rendering_is_one_json_line_per_item_in_order() -> None:
    items = [_item(0, "Panne à Bordeaux 😡"), _item(1, 'two\nlines and "quotes"'),
             _item(2, "ok")]
    message = prompt.render_items(items, use_scrubbed=False)
    lines = message.splitlines()
    assert message.endswith("\n") and len(lines) == 3
    assert [json.loads(line) for line in lines] == [{"id": i.id, "text": i.text} for i in items]
    assert "Panne à Bordeaux 😡" in message  # not inflated into \\u escapes


def test_message_tokens_are_the_sum_of_item_tokens(counter: TokenCounter,
                                                   sample_items: list[Item]) -> None:
    """What makes the batcher's arithmetic exact: no token spans two lines."""
    for use_scrubbed in (False, True):
        for start in range(0, len(sample_items), 50):
            chunk = sample_items[start:start + 50]
            assert counter.count(prompt.render_items(chunk, use_scrubbed)) == sum(
                prompt.item_input_tokens(i, counter, use_scrubbed) for i in chunk)


def test_output_estimate_covers_realistic_answers(counter: TokenCounter) -> None:
    per_item = prompt.item_output_tokens("2031882935059436368", counter)
    assert prompt.expected_output_tokens(0, counter) == prompt.output_envelope_tokens(counter)
    assert prompt.expected_output_tokens(30, counter) == (
        prompt.output_envelope_tokens(counter) + 30 * per_item)
    reasons = ["fibre coupée depuis trois jours à Bordeaux, télétravail impossible",
               "asks how to change the billing date",
               "merci pour la réactivité du service client",
               "threatens to leave for another operator after repeated outages"]
    answer = {"items": [
        {"id": str(2031882935059436368 + 977 * k), "sentiment": ("negative", "neutral",
         "positive")[k % 3], "priority": k % 3, "topic": TOPICS[k % len(TOPICS)],
         "team": DEFAULT_TEAMS[TOPICS[k % len(TOPICS)]], "confidence": round(0.55 + k / 100, 2),
         "reason": reasons[k % len(reasons)]} for k in range(30)]}
    actual = counter.count(json.dumps(answer, ensure_ascii=False))
    estimate = prompt.expected_output_tokens(30, counter)
    assert actual <= estimate <= 1.3 * actual, (actual, estimate)
    # Longer ids (Mastodon) cost more; the per-item estimate follows the id.
    assert prompt.item_output_tokens("masto:piaille.fr:113456789012345678", counter) > per_item


def test_request_overhead(counter: TokenCounter) -> None:
    plain = prompt.request_overhead_tokens(counter)
    assert plain == counter.count(prompt.system_prompt()) + prompt.CHAT_FRAMING_TOKENS
    assert prompt.request_overhead_tokens(counter, structured=True) > plain + 200


@pytest.mark.parametrize("brand", ["free", "airline"])
def test_taxonomy_prompt_overhead_stays_bounded(counter: TokenCounter, brand: str) -> None:
    """The taxonomy (descriptions, one example per topic, priority descriptions) costs
    input tokens on every request. Measured (o200k_base): ~910 tokens for either shipped
    brand, ~1,240 with the schema as structured output; a 50-tweet request carries
    ~2,000 tokens of tweets, so the overhead stays under half of a full request."""
    taxonomy = builtin_taxonomy(brand)
    plain = prompt.request_overhead_tokens(counter, taxonomy)
    assert 600 < plain < 1100, plain
    assert prompt.request_overhead_tokens(counter, taxonomy, structured=True) < 1500
    # Each quoted example is paid for on every request: one per topic, not all of them.
    assert plain < counter.count(" ".join(e for t in taxonomy.topics for e in t.examples))
