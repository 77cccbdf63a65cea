import pytest

from connectors.csv_formats import ColumnMapping, DumpScan, FormatError, mangled_id, normalise_time

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


# ----------------------------------------------------------------------------- spreadsheet times

@pytest.mark.parametrize("value, day_first, expected", [
    ("12/03/2026 14:25", True, "2026-03-12T14:25:00.000Z"),       # French Excel, no seconds
    ("12/03/2026 14:25:07", True, "2026-03-12T14:25:07.000Z"),
    ("12/03/2026", True, "2026-03-12T00:00:00.000Z"),
    ("12.03.2026 14:25", True, "2026-03-12T14:25:00.000Z"),       # German
    ("03/12/2026 14:25", False, "2026-03-12T14:25:00.000Z"),      # US order
    ("3/12/2026 2:25 PM", False, "2026-03-12T14:25:00.000Z"),     # US Excel
    ("3/12/2026 12:05 AM", False, "2026-03-12T00:05:00.000Z"),
    ("12/03/2026 14:25 +01:00", True, "2026-03-12T13:25:00.000Z"),  # a stated zone is used
    ("2026-03-12 14:25", True, "2026-03-12T14:25:00.000Z"),       # ISO without seconds
    ("2026-03-12 14:25:00 UTC", True, "2026-03-12T14:25:00.000Z"),
    ("13/13/2026 10:00", True, "13/13/2026 10:00"),               # no month 13: left for the dead letter
    ("31/02/2026", True, "31/02/2026"),
    ("13/03/2026", False, "13/03/2026"),                          # month 13 under US order
    ("9999-12-31T23:59:59-05:00", True, "9999-12-31T23:59:59-05:00"),  # past datetime's range: no crash
])
def test_spreadsheet_dates_normalise_to_utc(value, day_first, expected):
    assert normalise_time(value, day_first) == expected


# ----------------------------------------------------------------------------- twarc2 (API v2)

TWARC2_HEADER = ["id", "conversation_id", "referenced_tweets.replied_to.id",
                 "referenced_tweets.retweeted.id", "referenced_tweets.quoted.id", "author_id",
                 "in_reply_to_user_id", "in_reply_to_username", "retweeted_user_id",
                 "retweeted_username", "quoted_user_id", "quoted_username", "created_at", "text",
                 "lang", "source", "public_metrics.impression_count", "public_metrics.reply_count",
                 "public_metrics.retweet_count", "public_metrics.quote_count",
                 "public_metrics.like_count", "author.id", "author.created_at", "author.username",
                 "author.name", "author.description", "author.location", "geo.full_name"]


def test_twarc2_csv_takes_the_author_handle_name_and_location():
    mapping = ColumnMapping.detect(TWARC2_HEADER)
    assert mapping.columns["author"] == "author.username"   # not the numeric author_id
    assert mapping.columns["author_name"] == "author.name"
    assert mapping.columns["author_location"] == "author.location"
    assert mapping.columns["in_reply_to"] == "in_reply_to_username"
    row = dict.fromkeys(TWARC2_HEADER, "") | {
        "id": "1600000000000000001", "author_id": "987654", "author.username": "jdupont",
        "author.name": "Jean Dupont", "author.location": "Lille", "created_at": "2022-12-06T10:00:00.000Z",
        "text": "Panne fibre", "referenced_tweets.retweeted.id": "1599999999999999999",
        "public_metrics.like_count": "3"}
    raw = mapping.to_raw(row)
    assert (raw["author"], raw["author_name"], raw["author_location"]) == ("jdupont", "Jean Dupont", "Lille")
    assert raw["is_retweet"] is True and raw["favorite_count"] == 3


def test_author_id_is_only_the_last_resort():
    assert ColumnMapping.detect(["id", "text", "author_id"]).columns["author"] == "author_id"
    assert ColumnMapping.detect(["id", "text", "author_id", "username"]).columns["author"] == "username"


@pytest.mark.parametrize("flag, expected", [("True", True), ("VRAI", True), ("FAUX", False),
                                            ("false", False), ("", False), ("0", False)])
def test_retweet_flags_as_exports_and_spreadsheets_write_them(flag, expected):
    mapping = ColumnMapping.detect(["id", "text", "retweeted"])
    assert mapping.to_raw({"id": "1", "text": "x", "retweeted": flag})["is_retweet"] is expected


# ----------------------------------------------------------------------------- spreadsheet ids

@pytest.mark.parametrize("value, damage", [
    ("1,89705E+18", "scientific notation"), ("1.89705E+18", "scientific notation"),
    ("1.89705e18", "scientific notation"), ("570306133677760513.0", "a decimal number"),
    ("1897050123456789012", None), ("42", None), ("AbC-12", None)])
def test_mangled_ids_are_recognised_row_by_row(value, damage):
    assert mangled_id(value) == damage


def scan(header, rows):
    found = DumpScan(ColumnMapping.detect(header), header)
    for line, row in enumerate(rows, start=2):
        found.add(line, dict(zip(header, row)))
    return found


def test_scan_refuses_scientific_notation_ids_and_says_how_to_re_export():
    assert "(1,89705E+18 at line 2)" in scan(["id", "text"], [["1,89705E+18", "a"]]).refusal()
    # An id column chosen over id_str (--map): the message points at id_str.
    found = DumpScan(ColumnMapping.detect(["id", "id_str", "text"], {"id": "id"}), ["id", "id_str", "text"])
    found.add(2, {"id": "1,89705E+18", "id_str": "1897050123456789012", "text": "a"})
    assert found.refusal() == (
        "column id holds spreadsheet-mangled ids (1,89705E+18 at line 2): Excel/LibreOffice turned "
        "them into numbers and rounded them; re-export with the id column formatted as text, or "
        "use the id_str column (--map id=id_str)")


def test_scan_refuses_ids_rounded_to_15_digits_but_not_genuine_ids_ending_in_zeros():
    rounded = scan(["id", "text"], [[str(1897050123456780000 + i * 10_000), f"t{i}"] for i in range(3)])
    assert "spreadsheet-rounded ids (3 of 3" in rounded.refusal()
    # Genuine ids: one in 10,000 ends in 0000 by chance, and one such id proves nothing.
    genuine = scan(["id", "text"], [["1897050123456780000", "a"]] +
                   [[str(1897050123456789012 + i), f"t{i}"] for i in range(999)])
    assert genuine.refusal() is None
    assert scan(["id", "text"], [["1897050123456780000", "alone"]]).refusal() is None


def test_scan_refuses_a_column_that_gives_many_texts_one_id():
    collapsed = scan(["id", "text"], [["42", f"texte {i}"] for i in range(20)])
    assert collapsed.refusal().startswith(
        "column id gives different texts the same id (19 of the first 20 rows; e.g. 42 at lines 2 and 3)")
    # One conflict among many rows is a row problem (dead-lettered), not a broken column.
    one = scan(["id", "text"], [[str(i), f"t{i}"] for i in range(100)] + [["5", "autre"]])
    assert one.refusal() is None


def test_scan_decides_the_date_order_from_evidence_and_says_it():
    european = scan(["id", "text", "created_at"], [["1", "a", "03/04/2026 10:00"], ["2", "b", "13/04/2026 10:00"]])
    assert european.day_first and european.refusal() is None
    assert european.notes() == ["dates read as dd/mm/yyyy (13/04/2026 10:00 at line 3)",
                                "zone assumed UTC (none stated, e.g. 03/04/2026 10:00 at line 2)"]
    us = scan(["id", "text", "created_at"], [["1", "a", "04/03/2026 10:00"], ["2", "b", "04/13/2026 10:00"]])
    assert not us.day_first
    assert us.notes()[0] == "dates read as mm/dd/yyyy (04/13/2026 10:00 at line 3)"
    unknown = scan(["id", "text", "created_at"], [["1", "a", "03/04/2026 10:00 +02:00"]])
    assert unknown.day_first
    assert unknown.notes() == ["dates read as dd/mm/yyyy (assumed: no day above 12 in the first 1 "
                               "rows, European order)"]
    mixed = scan(["id", "text", "created_at"], [["1", "a", "13/04/2026"], ["2", "b", "04/13/2026"]])
    assert mixed.refusal().startswith("column created_at mixes day-first and month-first dates")
    iso_utc = scan(["id", "text", "created_at"], [["1", "a", "2026-03-12T10:00:00Z"],
                                                  ["2", "b", "2015-02-24 11:35:52 -0800"]])
    assert iso_utc.notes() == []
    naive = scan(["id", "text", "created_at"], [["1", "a", "2026-03-12 10:00"]])
    assert naive.notes() == ["zone assumed UTC (none stated, e.g. 2026-03-12 10:00 at line 2)"]


def test_unreadable_counts_are_zero_not_a_crash():
    """Found by the fuzz suite: "²" is a digit to str.isdigit but not to int()."""
    from connectors.csv_formats import _count
    assert [_count(v) for v in ("12", "²", "3.0", "1e999", "nan", "-4", "", "٣")] == [12, 0, 3, 0, 0, 0, 0, 3]
