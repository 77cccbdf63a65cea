from stream_app.records import (ClassifiedTweet, DeadLetter, ProviderCall, RawTweet, parse_iso,
                                raw_tweet_problem, reason_kind, schema_errors)

RAW = {"id": "123", "text": "panne à Bordeaux", "created_at": "2026-03-12T14:00:00Z",
       "run_id": "r1", "source": "f.csv:2", "ingested_at": "2026-03-12T14:00:01.000Z"}


def test_valid_raw_tweet_has_no_problem():
    assert raw_tweet_problem(RAW) is None


def test_raw_tweet_problems_are_specific():
    assert raw_tweet_problem(RAW | {"id": ""}) == "missing id"
    assert raw_tweet_problem(RAW | {"text": "  \n"}) == "empty text"
    assert raw_tweet_problem(RAW | {"created_at": "hier soir"}).startswith("unparsable created_at")
    assert raw_tweet_problem(RAW | {"retweet_count": -1}).startswith("schema: retweet_count")
    assert raw_tweet_problem(["not", "a", "dict"]) == "not a JSON object"


def test_records_round_trip_through_json():
    raw = RawTweet.from_dict(RAW)
    assert RawTweet.from_json(raw.to_json()) == raw


def test_classified_tweet_matches_its_schema():
    tweet = ClassifiedTweet(**RAW, text_clean="panne à Bordeaux", lang="fr", location="Bordeaux",
                            region_code="FR-NAQ", sentiment="negative", priority=0, topic="outage",
                            team="network_ops", confidence=0.8, tier="degraded", provider="rules",
                            model="lexicon-v1", reason="r", classified_at="2026-03-12T14:00:02Z",
                            version=1)
    assert schema_errors("classified_tweet", tweet.to_dict()) == []
    assert schema_errors("classified_tweet", tweet.to_dict() | {"priority": 7})


def test_dead_letter_id_is_deterministic_and_schema_valid():
    a = DeadLetter.build(stage="replay", reason="missing id", payload="x", run_id="r", source="f:3")
    b = DeadLetter.build(stage="replay", reason="missing id", payload="x", run_id="r", source="f:3")
    c = DeadLetter.build(stage="replay", reason="missing id", payload="x", run_id="r", source="f:4")
    assert a.dead_letter_id == b.dead_letter_id != c.dead_letter_id
    assert schema_errors("dead_letter", a.to_dict()) == []


def test_provider_call_matches_schema():
    call = ProviderCall(call_id="c", at="2026-03-12T14:00:00Z", run_id="r", tier="degraded",
                        provider="rules", model="lexicon-v1", tweets=3)
    assert schema_errors("provider_call", call.to_dict()) == []


def test_parse_iso_accepts_z_and_naive():
    assert parse_iso("2026-03-12T14:00:00Z") == parse_iso("2026-03-12T14:00:00")
    assert parse_iso("2026-03-12T16:00:00+02:00") == parse_iso("2026-03-12T14:00:00Z")


def test_reason_kind_strips_details():
    assert reason_kind("unparsable created_at 'hier soir'") == "unparsable created_at"
    assert reason_kind("schema: id: '' is too short") == "schema"
    assert reason_kind("missing id") == "missing id"


def _mutations():
    yield RAW
    for key in list(RAW):
        yield {k: v for k, v in RAW.items() if k != key}
    for key, values in {
        "id": ["", " ", "a b", "x" * 65, "x" * 64, 5],
        "text": ["   ", "x" * 100_001, "ok", 3],
        "retweet_count": [-1, 0, 3, "3", 2.5, True],
        "favorite_count": [-5, None],
        "is_retweet": [True, "true", 1],
        "lang": ["fr", 1],
        "run_id": ["", "r"],
        "author": [None, "a"],
    }.items():
        for value in values:
            yield RAW | {key: value}


def test_fast_checks_agree_with_the_json_schema_validator():
    # The replayer and clean stage use checks compiled from the schema; they must accept
    # and reject exactly what the full validator does (when the basic checks pass).
    for record in _mutations():
        problem = raw_tweet_problem(record)
        if problem in ("missing id", "empty text") or (problem or "").startswith("unparsable"):
            continue
        assert (problem is None) == (schema_errors("raw_tweet", record) == []), (record, problem)
