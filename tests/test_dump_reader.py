"""Reading messy dumps: encodings, delimiters, quoting, ragged rows, NULs, huge fields."""

import gzip

import pytest

from connectors.dump_reader import MAX_FIELD_CHARS, BadRow, DumpError, Row, detect_encoding, open_dump

HEADER = "id,created_at,full_text\n"


def read(path):
    dump_format, rows, handle = open_dump(path)
    with handle:
        return dump_format, list(rows)


def write(tmp_path, content: bytes, name="dump.csv"):
    path = tmp_path / name
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("encoding, bom, expected", [
    ("utf-8", b"", "utf-8"),
    ("utf-8", b"\xef\xbb\xbf", "utf-8 (BOM)"),
    ("utf-16", b"", "utf-16"),             # Python writes the BOM itself
    ("utf-16-le", b"", "utf-16-le"),       # no BOM: detected from the NUL pattern
    ("cp1252", b"", "cp1252"),
])
def test_encodings_are_detected_and_text_survives(tmp_path, encoding, bom, expected):
    text = HEADER + '1,2026-03-12T10:00:00Z,"Débit coupé à Orléans – encore ! €"\n'
    dump_format, rows = read(write(tmp_path, bom + text.encode(encoding)))
    assert dump_format.encoding == expected
    assert dump_format.header == ["id", "created_at", "full_text"]
    assert rows == [Row(2, {"id": "1", "created_at": "2026-03-12T10:00:00Z",
                            "full_text": "Débit coupé à Orléans – encore ! €"})]


def test_latin1_bytes_that_are_not_cp1252_still_decode():
    assert detect_encoding("é".encode("latin-1") + b"\x81") == "latin-1"


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_delimiters_are_detected_from_the_header(tmp_path, delimiter):
    content = delimiter.join(["id", "created_at", "full_text"]) + "\n" + \
        delimiter.join(["7", "2026-03-12T10:00:00Z", "panne, encore; toujours"]).replace(
            "panne, encore; toujours", '"panne, encore; toujours"') + "\n"
    dump_format, rows = read(write(tmp_path, content.encode()))
    assert dump_format.delimiter == delimiter
    assert rows[0].cells["full_text"] == "panne, encore; toujours"


def test_quoted_newlines_and_quotes_keep_line_numbers(tmp_path):
    content = (HEADER + '1,2026-03-12T10:00:00Z,"ligne un\nligne ""deux"""\n'
               "\n"  # an empty line is skipped, not a row
               "2,2026-03-12T10:00:01Z,simple\n")
    _, rows = read(write(tmp_path, content.encode()))
    assert rows == [Row(2, {"id": "1", "created_at": "2026-03-12T10:00:00Z",
                            "full_text": 'ligne un\nligne "deux"'}),
                    Row(5, {"id": "2", "created_at": "2026-03-12T10:00:01Z", "full_text": "simple"})]


def test_ragged_rows_become_bad_rows_with_their_line(tmp_path):
    content = HEADER + "1,2026-03-12T10:00:00Z\n2,2026-03-12T10:00:00Z,a,b\n3,2026-03-12T10:00:00Z,ok\n"
    _, rows = read(write(tmp_path, content.encode()))
    assert [type(r) for r in rows] == [BadRow, BadRow, Row]
    assert rows[0].line == 2 and rows[0].reason == "ragged row: 2 fields, header has 3"
    assert rows[1].line == 3 and rows[1].content == "2,2026-03-12T10:00:00Z,a,b"


def test_nul_bytes_are_dropped(tmp_path):
    content = HEADER.encode() + b"1,2026-03-12T10:00:00Z,pan\x00ne\n"
    _, rows = read(write(tmp_path, content))
    assert rows[0].cells["full_text"] == "panne"


def test_huge_field_is_a_bad_row_and_reading_goes_on(tmp_path):
    huge = "x" * (MAX_FIELD_CHARS + 10)
    content = HEADER + f'1,2026-03-12T10:00:00Z,"{huge}"\n2,2026-03-12T10:00:00Z,after\n'
    _, rows = read(write(tmp_path, content.encode()))
    assert isinstance(rows[0], BadRow) and "field larger than field limit" in rows[0].reason
    assert rows[-1] == Row(3, {"id": "2", "created_at": "2026-03-12T10:00:00Z", "full_text": "after"})


def test_gzip_is_detected_by_content_not_name(tmp_path):
    path = write(tmp_path, gzip.compress((HEADER + "1,2026-03-12T10:00:00Z,ok\n").encode()),
                 name="dump.csv")
    dump_format, rows = read(path)
    assert dump_format.compressed and rows[0].cells["id"] == "1"


def test_empty_file_is_a_clear_error(tmp_path):
    with pytest.raises(DumpError, match="empty"):
        read(write(tmp_path, b"\n\n"))
