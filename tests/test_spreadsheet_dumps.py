"""Dumps as analysts really hand them over, after a spreadsheet saved them: the replay
refuses ids Excel/LibreOffice mangled before sending anything, reads their dates, and
never loses a tweet without a reason a user can read (issue 13)."""

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from connectors.csv_formats import SCAN_ROWS
from connectors.recent_ids import RecentIds, Seen
from stream_app.clean.agent import build_cleaner
from stream_app.records import raw_tweet_problem, reason_kind
from stream_app.settings import load_settings
from tests.conftest import read_topic

FRENCH_HEADER = "id;created_at;text;screen_name;user_location"


def french_spreadsheet_dump(path: Path, ids: list[str]) -> Path:
    """What Excel (fr-FR) writes back: CP1252, `;`, CRLF, ids as numbers, dd/mm/yyyy hh:mm."""
    start = datetime(2026, 3, 12, 14, 0)
    lines = [FRENCH_HEADER] + [
        f"{tweet_id};{start + timedelta(minutes=n):%d/%m/%Y %H:%M};@free coupure fibre à Nîmes "
        f"depuis {n} min, 20 € perdus;client{n};Nîmes" for n, tweet_id in enumerate(ids)]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("cp1252"))
    return path


def run_cli(settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream_app", "replay", "--no-progress", *args],
                          env=os.environ | settings.as_env(), capture_output=True, text=True, timeout=120)


def dead_letters(settings) -> dict[str, dict]:
    return {d["source"]: d for _, d in read_topic(settings.kafka_bootstrap, settings.topic_dlq)}


def raw_tweets(settings) -> dict[str, dict]:
    return {t["id"]: t for _, t in read_topic(settings.kafka_bootstrap, settings.topic_raw)}


def iso_z(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# ----------------------------------------------------------------------------- refused before sending

@pytest.mark.integration
def test_french_spreadsheet_dump_is_refused_with_one_error_line_and_nothing_sent(tmp_path, pipeline_settings):
    path = french_spreadsheet_dump(tmp_path / "export_sav.csv", ["1,89705E+18"] * 50)
    done = run_cli(pipeline_settings, str(path))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(
        f"error: {path}: column id holds spreadsheet-mangled ids (1,89705E+18 at line 2): "
        "Excel/LibreOffice")
    assert "re-export with the id column formatted as text" in done.stderr
    assert read_topic(pipeline_settings.kafka_bootstrap, pipeline_settings.topic_raw) == []
    assert read_topic(pipeline_settings.kafka_bootstrap, pipeline_settings.topic_dlq) == []
    assert not (pipeline_settings.data_dir / "archive").exists()   # not even archived

    dry = run_cli(pipeline_settings, "--dry-run", str(path))       # the dry run says the same
    assert dry.returncode == 2 and "spreadsheet-mangled ids" in dry.stderr


@pytest.mark.integration
def test_ids_rounded_to_15_digits_are_refused(tmp_path, pipeline_settings):
    # Excel keeps 15 significant digits: 1897050123456789012 -> 1897050123456780000.
    ids = [str(1897050123456789012 + n * 7919)[:15] + "0000" for n in range(10)]
    done = run_cli(pipeline_settings, str(french_spreadsheet_dump(tmp_path / "rounded.csv", ids)))
    assert done.returncode == 2
    assert "spreadsheet-rounded ids (10 of 10 long ids" in done.stderr
    assert read_topic(pipeline_settings.kafka_bootstrap, pipeline_settings.topic_raw) == []


@pytest.mark.integration
def test_the_same_dump_with_ids_as_text_replays_and_says_how_it_read_the_dates(tmp_path, pipeline_settings):
    ids = [str(1897050123456789012 + n * 7919) for n in range(50)]
    path = french_spreadsheet_dump(tmp_path / "texte.csv", ids)
    dry = run_cli(pipeline_settings, "--dry-run", str(path))
    assert dry.returncode == 0 and "cp1252, semicolon-delimited" in dry.stdout
    assert "\ndates read as dd/mm/yyyy (assumed: no day above 12" in dry.stdout
    assert '"created_at": "2026-03-12T14:00:00.000Z"' in dry.stdout
    done = run_cli(pipeline_settings, str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    first, summary = done.stdout.splitlines()[:2]
    assert first == (f"{tmp_path / 'texte.csv'}: dates read as dd/mm/yyyy (assumed: no day above 12 "
                     "in the first 50 rows, European order), zone assumed UTC (none stated, e.g. "
                     "12/03/2026 14:00 at line 2)")
    assert "rows read 50 = produced 50 + dead-lettered 0 + duplicates skipped 0  [OK]" in summary
    tweets = raw_tweets(pipeline_settings)
    assert sorted(tweets) == sorted(ids)
    assert tweets[ids[7]]["created_at"] == "2026-03-12T14:07:00.000Z"   # 12 March, not 3 December
    assert tweets[ids[7]]["text"].startswith("@free coupure fibre à Nîmes")  # CP1252 decoded
    assert (tweets[ids[7]]["author"], tweets[ids[7]]["author_location"]) == ("client7", "Nîmes")


# ----------------------------------------------------------------------------- nothing lost silently

@pytest.mark.integration
def test_an_id_with_a_different_text_is_a_conflict_not_a_duplicate(tmp_path, pipeline_settings):
    t = "2026-03-12T10:00:00Z"
    path = tmp_path / "conflict.csv"
    path.write_text("id,created_at,text\n"
                    f"7,{t},Panne fibre à Lyon\n"          # line 2
                    f"8,{t},Merci pour la réparation\n"    # line 3
                    f"7,{t},Panne fibre à Lyon\n"          # line 4: the same tweet again
                    f"7,{t},Facture doublée ce mois\n",    # line 5: another tweet under id 7
                    encoding="utf-8")
    done = run_cli(pipeline_settings, str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rows read 4 = produced 2 + dead-lettered 1 + duplicates skipped 1  [OK]" in done.stdout
    assert "dead letters by reason: id conflict=1" in done.stdout
    letter = dead_letters(pipeline_settings)["conflict.csv:5"]
    assert letter["reason"] == "id conflict: id 7 already seen with a different text (line 2)"
    assert json.loads(letter["payload"])["text"] == "Facture doublée ce mois"  # the lost text is kept
    assert raw_tweets(pipeline_settings)["7"]["text"] == "Panne fibre à Lyon"


@pytest.mark.integration
def test_tweets_dated_in_the_future_are_dead_lettered_never_stored(tmp_path, kafka_bootstrap):
    from connectors.csv_replay import ReplayOptions, replay_file
    from tests.conftest import isolated_settings
    import asyncio

    settings = isolated_settings(tmp_path / "data", kafka_bootstrap, max_future_skew_s=600)
    now = datetime.now(timezone.utc)
    path = tmp_path / "future.csv"
    path.write_text("id,created_at,text\n"
                    f"1,{iso_z(now - timedelta(hours=1))},hier\n"
                    f"2,{iso_z(now + timedelta(minutes=5))},horloge un peu en avance\n"  # within the skew
                    "3,01/01/2099 10:00,saisie 2099\n"
                    f"4,{iso_z(now + timedelta(hours=2))},deux heures trop tôt\n", encoding="utf-8")
    result = asyncio.run(replay_file(path, settings, ReplayOptions(show_progress=False)))
    assert (result.rows_read, result.produced, result.dead_lettered) == (4, 2, 2) and result.reconciles
    assert result.dead_letter_reasons == {"created_at in the future": 2}
    assert sorted(raw_tweets(settings)) == ["1", "2"]
    letters = dead_letters(settings)
    assert letters["future.csv:4"]["reason"] == \
        "created_at in the future: '2099-01-01T10:00:00.000Z' is more than 600 s ahead of now"
    assert letters["future.csv:5"]["reason"].startswith("created_at in the future")


@pytest.mark.integration
def test_a_mangled_id_past_the_scanned_rows_is_dead_lettered(tmp_path, pipeline_settings):
    ids = [str(1897050123456789012 + n) for n in range(SCAN_ROWS)] + ["1,89705E+18"]
    done = run_cli(pipeline_settings, str(french_spreadsheet_dump(tmp_path / "late.csv", ids)))
    assert done.returncode == 0, done.stdout + done.stderr
    assert (f"rows read {SCAN_ROWS + 1} = produced {SCAN_ROWS} + dead-lettered 1 + duplicates "
            "skipped 0  [OK]") in done.stdout
    letter = dead_letters(pipeline_settings)[f"late.csv:{SCAN_ROWS + 2}"]
    assert letter["reason"] == ("mangled id '1,89705E+18': scientific notation from a spreadsheet, "
                                "the real id is lost")
    assert reason_kind(letter["reason"]) == "mangled id"


# ----------------------------------------------------------------------------- the clean stage too

def test_the_clean_stage_dead_letters_future_tweets_from_any_producer():
    raw = {"id": "9", "text": "Panne @free", "run_id": "live", "source": "x", "ingested_at": "x"}
    soon = iso_z(datetime.now(timezone.utc) + timedelta(minutes=30))
    cleaner = build_cleaner(load_settings(environ={}))                 # default skew: one hour
    assert cleaner.clean(json.dumps(raw | {"created_at": soon}).encode()).tweet is not None
    result = cleaner.clean(json.dumps(raw | {"created_at": "2099-03-12T10:00:00Z"}).encode())
    assert result.tweet is None
    assert reason_kind(result.dead_letter.reason) == "created_at in the future"
    strict = build_cleaner(load_settings({"max_future_skew_s": "60"}, environ={}))
    assert "more than 60 s ahead" in strict.clean(json.dumps(raw | {"created_at": soon}).encode()).dead_letter.reason
    assert raw_tweet_problem(raw | {"created_at": iso_z(datetime.now(timezone.utc))}, 0) is None


def test_recent_ids_tell_a_duplicate_from_a_conflict_within_a_bounded_window():
    recent = RecentIds(2)
    assert recent.check("1", "panne", 2) is None
    assert recent.check("1", "panne", 3) == Seen(True, 2)
    assert recent.check("1", "facture", 4) == Seen(False, 2)
    recent.check("2", "a", 5)
    recent.check("3", "b", 6)                    # "1" falls out of the window
    assert len(recent) == 2 and recent.check("1", "facture", 7) is None


# ----------------------------------------------------------------------------- docs

def documented_reasons() -> set[str]:
    """The reason kinds the dead-letter table of docs/replay.md documents."""
    from tests.project_docs import section
    text = section("docs/replay.md", "Messy input and dead letters")
    rows = [line.strip() for line in text.splitlines() if line.strip().startswith("| `")]
    return {reason_kind(row.split("`")[1]) for row in rows}


@pytest.mark.integration
def test_the_docs_list_exactly_the_reasons_the_replayer_writes(tmp_path, pipeline_settings):
    import asyncio

    from connectors.csv_replay import ReplayOptions, replay_file

    t = "2026-03-12T10:00:00Z"
    good = [f"{n},{t},tweet {n}" for n in range(SCAN_ROWS)]       # the scanned rows are clean
    bad = ["," + t + ",sans id",                                     # missing id
           f"a1,{t},   ",                                            # empty text
           "a2,hier soir,date illisible",                            # unparsable created_at
           "a3,2099-01-01T00:00:00Z,en 2099",                        # created_at in the future
           f"a4,{t}," + "x" * 100_001,                               # schema (text too long)
           f"a5,{t},trop,de,champs",                                 # ragged row
           f'a6,{t},"{"y" * 1_000_001}"',                            # unreadable CSV (huge cell)
           f"1.89705E+18,{t},notation scientifique",                 # mangled id
           f"7,{t},autre texte"]                                     # id conflict (7 came before)
    path = tmp_path / "every_reason.csv"
    path.write_text("id,created_at,text\n" + "\n".join(good + bad) + "\n", encoding="utf-8")
    result = asyncio.run(replay_file(path, pipeline_settings, ReplayOptions(show_progress=False)))
    assert result.reconciles and result.dead_lettered == len(bad)
    assert set(result.dead_letter_reasons) == documented_reasons()
