import json

from stream_app.clean.cleaning import clean_record, clean_text, detect_language

RAW = {"id": "42", "text": "Panne   fibre &amp; box HS à Bordeaux https://t.co/AbC123 !!",
       "created_at": "2026-03-12T14:00:00Z", "run_id": "r", "source": "f.csv:2",
       "ingested_at": "2026-03-12T14:00:00Z", "author_location": "Paris"}


def test_clean_text_keeps_meaning():
    assert clean_text(RAW["text"]) == "Panne fibre & box HS à Bordeaux <url:t.co> !!"
    assert clean_text("e\u0301te\u0301\x00") == "été"  # NFC, NUL removed


def test_language_prefers_declared_then_guesses():
    assert detect_language("whatever", "en") == "en"
    assert detect_language("toujours pas de connexion depuis ce matin") == "fr"
    assert detect_language("my internet is still down since this morning") == "en"
    assert detect_language("😡😡") == "other"


def test_clean_record_produces_a_clean_tweet_with_location_from_text():
    result = clean_record(json.dumps(RAW).encode())
    assert result.dead_letter is None
    tweet = result.tweet
    assert tweet.text == RAW["text"]  # original kept beside the cleaned text
    assert tweet.text_clean.startswith("Panne fibre & box")
    assert tweet.location == "Bordeaux" and tweet.region_code == "FR-NAQ"
    assert tweet.lang == "fr"


def test_invalid_json_is_dead_lettered_not_raised():
    result = clean_record(b"{not json")
    assert result.tweet is None
    assert result.dead_letter.stage == "clean"
    assert result.dead_letter.reason.startswith("invalid JSON")
    assert result.dead_letter.payload == "{not json"


def test_invalid_utf8_is_dead_lettered():
    result = clean_record(b"\xff\xfe\x00garbage")
    assert result.tweet is None and result.dead_letter.reason.startswith("invalid JSON")


def test_missing_fields_are_dead_lettered_with_the_tweet_id():
    result = clean_record(json.dumps(RAW | {"text": ""}).encode())
    assert result.tweet is None
    assert result.dead_letter.reason == "empty text"
    assert result.dead_letter.tweet_id == "42" and result.dead_letter.run_id == "r"
