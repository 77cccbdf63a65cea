import pytest

from connectors.csv_formats import ColumnMapping, FormatError, normalise_time

SEED_HEADER = ["id", "created_at", "full_text", "name", "screen_name", "user_location",
               "in_reply_to_screen_name", "in_reply_to_status_id", "retweet_count",
               "favorite_count", "lang", "retweeted"]


def test_seed_export_is_mapped_without_configuration():
    mapping = ColumnMapping.detect(SEED_HEADER)
    assert mapping.columns["text"] == "full_text"
    assert mapping.columns["author"] == "screen_name"
    assert mapping.columns["author_name"] == "name"
    row = dict(zip(SEED_HEADER, ["7", "2026-03-12T14:03:27Z", "RT @free: panne", "Jean", "@jeanb",
                                 "Bordeaux", "free", "", "3", "x", "fr", "false"]))
    raw = mapping.to_raw(row)
    assert raw["id"] == "7" and raw["author"] == "jeanb" and raw["author_location"] == "Bordeaux"
    assert raw["retweet_count"] == 3 and raw["favorite_count"] == 0
    assert raw["is_retweet"] is True  # "RT @" prefix even though the flag says false
    assert raw["created_at"] == "2026-03-12T14:03:27.000Z"


def test_kaggle_airline_layout_is_mapped():
    header = ["tweet_id", "airline_sentiment", "airline", "name", "text", "tweet_created",
              "tweet_location"]
    mapping = ColumnMapping.detect(header)
    assert (mapping.columns["id"], mapping.columns["text"], mapping.columns["created_at"]) == \
        ("tweet_id", "text", "tweet_created")
    assert mapping.columns["author_location"] == "tweet_location"


def test_map_overrides_and_validates():
    mapping = ColumnMapping.detect(["msg_id", "body"], {"id": "msg_id", "text": "body"})
    assert mapping.columns == {"id": "msg_id", "text": "body"}
    with pytest.raises(FormatError, match="unknown field"):
        ColumnMapping.detect(["a"], {"identifier": "a"})
    with pytest.raises(FormatError, match="not in the header"):
        ColumnMapping.detect(["a"], {"id": "b"})


def test_header_without_text_column_is_a_clear_error():
    with pytest.raises(FormatError, match="no column for text"):
        ColumnMapping.detect(["id", "created_at"])


@pytest.mark.parametrize("value, expected", [
    ("2026-03-12T14:03:27Z", "2026-03-12T14:03:27.000Z"),
    ("Wed Oct 10 20:19:24 +0000 2018", "2018-10-10T20:19:24.000Z"),
    ("2015-02-24 11:35:52 -0800", "2015-02-24T19:35:52.000Z"),
    ("2026-03-12 14:03:27", "2026-03-12T14:03:27.000Z"),
    ("hier soir", "hier soir"),
    ("", ""),
])
def test_time_formats_normalise_to_utc(value, expected):
    assert normalise_time(value) == expected
