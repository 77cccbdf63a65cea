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


# ------------------------------------------------------------------ input from any producer

def test_a_record_missing_fields_is_refused_naming_them_all(cleaner):
    """Before: `unparsable created_at 'None'`, as if the date were the problem."""
    result = cleaner.clean(json.dumps({"id": "77", "text": "panne fibre"}).encode())
    assert result.tweet is None
    assert result.dead_letter.reason == \
        "missing required field(s): created_at, run_id, source, ingested_at"
    assert result.dead_letter.tweet_id == "77"


def test_the_message_key_names_the_tweet_of_an_undecodable_record(cleaner):
    from stream_app.clean.agent import clean_message

    letter = clean_message(cleaner, b"1234567890", b"{not json").dead_letter
    assert letter.reason.startswith("invalid JSON") and letter.tweet_id == "1234567890"
    no_id = clean_message(cleaner, b"55", json.dumps(RAW | {"id": ""}).encode()).dead_letter
    assert no_id.reason == "missing id" and no_id.tweet_id == "55" and no_id.run_id == "r"
    # The record's own id wins over the key; a key that cannot be an id is ignored.
    own = clean_message(cleaner, b"99", json.dumps(RAW | {"text": " "}).encode()).dead_letter
    assert own.tweet_id == "42"
    for key in (None, b"", b"\xff\xfe", b"   ", b"x" * 65, b"a\nb"):
        assert clean_message(cleaner, key, b"[1").dead_letter.tweet_id == "", key
    assert clean_message(cleaner, b"1", json.dumps(RAW).encode()).tweet.id == "42"


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_records_from_an_independent_kafka_client_are_dead_lettered_with_their_key(pipeline_settings):
    """kcat (Debian's `kcat`, librdkafka: not this project's client) produces to the
    real broker; the running worker's clean stage dead-letters what it cannot use, with
    the tweet id from the message key and the missing fields named."""
    import asyncio
    import shutil
    import subprocess

    from stream_app.demo import WorkerProcess, wait_until_drained
    from stream_app.kafka_admin import ensure_topics, pipeline_topics
    from tests.conftest import read_topic

    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    if kcat is None:
        pytest.skip("kcat not installed (apt-get install kcat)")
    settings = pipeline_settings
    asyncio.run(ensure_topics(settings.bootstrap_servers, pipeline_topics(settings), settings.partitions))
    lines = ["2031882935059436368\t{this is not json",
             "2031882935059436369\t" + json.dumps({"id": "2031882935059436369", "text": "panne fibre"})]
    produced = subprocess.run([kcat, "-P", "-b", settings.bootstrap_servers, "-t", settings.topic_raw,
                               "-K", "\t"], input="\n".join(lines) + "\n", text=True,
                              capture_output=True, timeout=60)
    assert produced.returncode == 0, produced.stderr
    worker = WorkerProcess(settings)
    try:
        asyncio.run(wait_until_drained(settings, worker, print, timeout_s=180))
    finally:
        worker.stop()
    letters = {v["tweet_id"]: v for _, v in read_topic(settings.bootstrap_servers, settings.topic_dlq)
               if v["stage"] == "clean"}
    assert set(letters) == {"2031882935059436368", "2031882935059436369"}, letters
    assert letters["2031882935059436368"]["reason"].startswith("invalid JSON")
    assert letters["2031882935059436369"]["reason"] == \
        "missing required field(s): created_at, run_id, source, ingested_at"
