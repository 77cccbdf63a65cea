"""The clean stage's decisions on real-world style tweets (French and English)."""

import json

import pytest

from stream_app.clean.agent import build_cleaner
from stream_app.clean.cleaning import clean_text, emoji_names
from stream_app.clean.language import detect_language
from stream_app.settings import load_settings

RAW = {"id": "42", "text": "Panne   fibre &amp; box HS à Bordeaux https://t.co/AbC123 !! @free #panne 😡",
       "created_at": "2026-03-12T14:00:00Z", "run_id": "r", "source": "f.csv:2",
       "ingested_at": "2026-03-12T14:00:00Z", "author": "jeanb", "author_location": "Paris"}


@pytest.fixture
def cleaner():
    return build_cleaner(load_settings(environ={}))


def clean(cleaner, **changes):
    return cleaner.clean(json.dumps(RAW | changes).encode())


def test_clean_text_keeps_meaning():
    assert clean_text(RAW["text"]) == \
        "Panne fibre & box HS à Bordeaux <url:t.co> !! @free #panne 😡"
    assert clean_text("e\u0301te\u0301\x00 c'est nuuuuuul") == "été c'est nuuul"  # NFC, NUL, elongation


def test_emojis_become_text_features():
    assert emoji_names("bravo 👍 mais 😡") == ["thumbs_up_sign", "pouting_face"]


def test_language_prefers_declared_then_detects_offline():
    assert detect_language("whatever", "en") == "en"
    assert detect_language("toujours pas de connexion depuis ce matin") == "fr"
    assert detect_language("my internet is still down since this morning") == "en"
    assert detect_language("no funciona internet desde ayer en casa") == "other"
    assert detect_language("<url:t.co> @free 😡😡") == "other"


def test_a_customer_tweet_is_cleaned_with_features_location_and_scrubbed_text(cleaner):
    result = clean(cleaner)
    assert result.dead_letter is None and result.decisions == []
    tweet = result.tweet
    assert tweet.text == RAW["text"]  # the original is kept beside the cleaned text
    assert tweet.text_clean.startswith("Panne fibre & box HS")
    assert (tweet.location, tweet.region_code) == ("Bordeaux", "FR-NAQ")  # text beats profile
    assert (tweet.mentions, tweet.hashtags, tweet.url_domains) == (["free"], ["panne"], ["t.co"])
    assert tweet.emojis == ["pouting_face"]
    assert (tweet.lang, tweet.relevance, tweet.brand, tweet.dedup_kind) == ("fr", "customer", "free", "original")


def test_pii_is_scrubbed_only_in_the_provider_form(cleaner):
    result = clean(cleaner, text="@free rappelez-moi au 06 12 34 56 78, client n° 12345678, à Lille")
    tweet = result.tweet
    assert "06 12 34 56 78" in tweet.text_clean
    assert "06 12 34 56 78" not in tweet.text_scrubbed and "12345678" not in tweet.text_scrubbed
    assert "@free" in tweet.text_scrubbed and "Lille" in tweet.text_scrubbed
    assert set(tweet.pii_kinds) == {"PHONE", "CUSTOMER_ID"}


def test_same_id_twice_is_passed_on_and_logged_never_dropped(cleaner):
    # A redelivery must not be dropped: if the first pass's output was lost, it would be
    # lost for good. Downstream is idempotent by id.
    first = clean(cleaner).tweet
    again = clean(cleaner)
    assert again.tweet is not None and again.tweet.id == first.id == "42"
    assert (again.tweet.dedup_kind, again.tweet.duplicate_of) == ("exact", "42")
    [decision] = again.decisions
    assert (decision.decision, decision.action, decision.duplicate_of) == ("exact_duplicate", "tagged", "42")


def test_copies_and_retweets_point_at_their_original(cleaner):
    clean(cleaner)
    copy = clean(cleaner, id="43", text=RAW["text"].replace("@free", "@Freebox") + " 😤")
    assert (copy.tweet.dedup_kind, copy.tweet.duplicate_of) == ("near_duplicate", "42")
    assert [(d.decision, d.action) for d in copy.decisions] == [("near_duplicate", "tagged")]
    retweet = clean(cleaner, id="44", text="RT @jeanb: " + RAW["text"], is_retweet=True)
    assert (retweet.tweet.dedup_kind, retweet.tweet.duplicate_of) == ("retweet", "42")


def test_independent_complaints_about_the_same_outage_are_not_duplicates(cleaner):
    clean(cleaner, id="1", text="@free plus d'internet à Lyon depuis ce matin, c'est nul")
    other = clean(cleaner, id="2", text="panne internet sur Lyon ce matin ? @free vous en êtes où")
    assert other.tweet.dedup_kind == "original" and other.decisions == []


def test_brand_own_posts_and_off_topic_are_tagged_with_the_default_brand(cleaner):
    own = clean(cleaner, id="50", author="Free_1337", text="Bonjour, la panne à Bordeaux est résolue")
    assert own.tweet.relevance == "brand_own"
    assert [(d.decision, d.action) for d in own.decisions] == [("brand_own", "tagged")]
    off = clean(cleaner, id="51", text="Quel beau soleil sur Marseille aujourd'hui")
    assert off.tweet.relevance == "off_topic" and off.decisions[0].decision == "off_topic"


def test_a_second_brand_configuration_changes_the_decisions():
    airline = build_cleaner(load_settings(environ={"DALLOSH_BRAND": "airline"}))
    own = airline.clean(json.dumps(RAW | {"id": "60", "author": "united",
                                          "text": "We're sorry about the delay, DM us"}).encode())
    assert own.tweet is None  # the airline configuration drops its own posts
    assert [(d.decision, d.action) for d in own.decisions] == [("brand_own", "dropped")]
    customer = airline.clean(json.dumps(RAW | {"id": "61", "text": "@united lost my baggage again"}).encode())
    assert customer.tweet.relevance == "customer" and customer.tweet.brand == "airline"
    free_tweet = airline.clean(json.dumps(RAW | {"id": "62"}).encode())
    assert free_tweet.tweet.relevance == "off_topic"


def test_invalid_json_and_invalid_records_are_dead_lettered_not_raised(cleaner):
    for payload, reason in [(b"{not json", "invalid JSON"), (b"\xff\xfe\x00garbage", "invalid JSON"),
                            (json.dumps(RAW | {"text": ""}).encode(), "empty text")]:
        result = cleaner.clean(payload)
        assert result.tweet is None and result.dead_letter.stage == "clean"
        assert result.dead_letter.reason.startswith(reason)
    assert cleaner.clean(json.dumps(RAW | {"text": ""}).encode()).dead_letter.tweet_id == "42"
