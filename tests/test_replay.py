"""The CSV replayer against the real broker: formats, messy input with exact
reconciliation, archive, event time, and interrupted-then-resumed replays."""

import asyncio
import csv
import gzip
import io
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from connectors.archive import file_sha256
from connectors.csv_replay import ReplayOptions, replay_file
from stream_app.kafka_admin import topic_end_offsets
from stream_app.records import parse_iso
from tests.conftest import read_topic

pytestmark = pytest.mark.integration


def replay(settings, path, **options):
    return asyncio.run(replay_file(path, settings, ReplayOptions(show_progress=False, **options)))


def raw_by_id(settings) -> dict[str, dict]:
    return {value["id"]: value for _, value in read_topic(settings.kafka_bootstrap, settings.topic_raw)}


def dead_letters(settings) -> list[dict]:
    return [value for _, value in read_topic(settings.kafka_bootstrap, settings.topic_dlq)]


def write_csv(path: Path, header: list[str], rows: list[list], encoding="utf-8", delimiter=","):
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter)
    writer.writerow(header)
    writer.writerows(rows)
    path.write_bytes(buffer.getvalue().encode(encoding))
    return path


# ----------------------------------------------------------------------------- formats

def test_twitter_v1_flattened_export(tmp_path, pipeline_settings):
    path = write_csv(tmp_path / "v1.csv",
                     ["id", "id_str", "created_at", "full_text", "user.screen_name", "user.name",
                      "user.location", "lang", "retweet_count", "favorite_count",
                      "in_reply_to_status_id"],
                     [["1.05E+18", "1050118621198921728", "Wed Oct 10 20:19:24 +0000 2018",
                       "@free la fibre est coupée à Lyon", "jdupont", "Jean", "Lyon, France", "fr",
                       "2", "5", "1050118600000000000"]])
    result = replay(pipeline_settings, path)
    assert (result.rows_read, result.produced, result.dead_lettered) == (1, 1, 0)
    tweet = raw_by_id(pipeline_settings)["1050118621198921728"]  # id_str, not the mangled id
    assert tweet["created_at"] == "2018-10-10T20:19:24.000Z"
    assert (tweet["author"], tweet["author_name"], tweet["author_location"]) == \
        ("jdupont", "Jean", "Lyon, France")
    assert (tweet["retweet_count"], tweet["favorite_count"]) == (2, 5)
    assert tweet["in_reply_to"] == "1050118600000000000"


def test_twitter_v2_export(tmp_path, pipeline_settings):
    path = write_csv(tmp_path / "v2.csv",
                     ["id", "text", "created_at", "author_id", "lang",
                      "public_metrics.retweet_count", "public_metrics.like_count"],
                     [["1600000000000000001", "Outage again in Lille", "2022-12-06T10:00:00.000Z",
                       "987654", "en", "1", "3"]])
    replay(pipeline_settings, path)
    tweet = raw_by_id(pipeline_settings)["1600000000000000001"]
    assert (tweet["author"], tweet["lang"], tweet["favorite_count"]) == ("987654", "en", 3)
    assert tweet["created_at"] == "2022-12-06T10:00:00.000Z"


def test_twarc2_csv_export(tmp_path, pipeline_settings):
    # The column names `twarc2 csv` writes (DocNow/twarc-csv), a subset in its order.
    path = write_csv(tmp_path / "twarc2.csv",
                     ["id", "conversation_id", "referenced_tweets.replied_to.id",
                      "referenced_tweets.retweeted.id", "author_id", "in_reply_to_user_id",
                      "in_reply_to_username", "created_at", "text", "lang",
                      "public_metrics.retweet_count", "public_metrics.like_count", "author.id",
                      "author.username", "author.name", "author.location"],
                     [["1600000000000000002", "1600000000000000002", "", "", "987654", "", "",
                       "2022-12-06T10:00:00.000Z", "Plus de fibre à Lille", "fr", "1", "3", "987654",
                       "lilloise59", "Camille", "Lille, France"]])
    result = replay(pipeline_settings, path)
    assert (result.produced, result.dead_lettered) == (1, 0)
    tweet = raw_by_id(pipeline_settings)["1600000000000000002"]
    assert (tweet["author"], tweet["author_name"], tweet["author_location"]) == \
        ("lilloise59", "Camille", "Lille, France")
    assert (tweet["retweet_count"], tweet["favorite_count"], tweet["is_retweet"]) == (1, 3, False)


def test_kaggle_airline_layout(tmp_path, pipeline_settings):
    path = write_csv(tmp_path / "Tweets.csv",
                     ["tweet_id", "airline_sentiment", "airline", "name", "retweet_count", "text",
                      "tweet_created", "tweet_location", "user_timezone"],
                     [["570306133677760513", "neutral", "Virgin America", "cairdin", "0",
                       "@VirginAmerica What @dhepburn said.", "2015-02-24 11:35:52 -0800",
                       "", "Eastern Time (US & Canada)"]])
    replay(pipeline_settings, path)
    tweet = raw_by_id(pipeline_settings)["570306133677760513"]
    assert tweet["created_at"] == "2015-02-24T19:35:52.000Z"
    assert tweet["author"] == "cairdin"


# ----------------------------------------------------------------------------- messy input

def test_messy_dump_reconciles_exactly_and_dead_letters_carry_line_and_reason(tmp_path, pipeline_settings):
    header = ["id", "created_at", "full_text", "screen_name"]
    t = "2026-03-12T10:00:00Z"
    rows = [
        ["1", t, "Débit ridicule à Rennes ; encore", "a"],        # good (line 2)
        ["", t, "pas d'id", "b"],                                 # missing id (3)
        ["3", "", "pas de date", "c"],                            # missing timestamp (4)
        ["4", "hier soir", "date illisible", "d"],                # unparsable timestamp (5)
        ["5", t, "   ", "e"],                                     # empty text (6)
        ["1", t, "Débit ridicule à Rennes ; encore", "a"],        # duplicate of line 2 (7)
        ["8", t, "ligne\navec retour", "h"],                      # good, spans lines 8-9
        ["9", t, "x" * 100_001, "i"],                             # text over the schema limit (10)
        ["10", t, "ok", "j"],                                     # good (11)
    ]
    path = write_csv(tmp_path / "messy.csv", header, rows, encoding="cp1252", delimiter=";")
    path.write_bytes(path.read_bytes() + b"11;2026-03-12T10:00:00Z;trop;de;champs\r\n"  # ragged (12)
                     + b"\r\n"                                                          # blank: skipped
                     + b"12;2026-03-12T10:00:00Z;nul\x00byte;k\r\n")                    # good (14)
    result = replay(pipeline_settings, path)

    assert (result.rows_read, result.produced, result.dead_lettered, result.duplicates) == (11, 4, 6, 1)
    assert result.reconciles
    assert result.dead_letter_reasons == {"missing id": 1, "unparsable created_at": 2,
                                          "empty text": 1, "schema": 1, "ragged row": 1}
    produced = raw_by_id(pipeline_settings)
    assert sorted(produced) == ["1", "10", "12", "8"]
    assert produced["1"]["text"] == "Débit ridicule à Rennes ; encore"  # cp1252 decoded
    assert produced["8"]["text"] == "ligne\navec retour" and produced["8"]["source"] == "messy.csv:8"
    assert produced["12"]["text"] == "nulbyte"
    letters = {d["source"]: d for d in dead_letters(pipeline_settings)}
    assert sorted(letters) == [f"messy.csv:{n}" for n in (10, 12, 3, 4, 5, 6)]
    assert letters["messy.csv:5"]["reason"] == "unparsable created_at 'hier soir'"
    assert letters["messy.csv:10"]["reason"].startswith("schema: text: is too long")
    assert letters["messy.csv:12"]["reason"] == "ragged row: 5 fields, header has 4"
    assert all(d["stage"] == "replay" and d["run_id"] == result.run_id for d in letters.values())


def test_gzip_utf16_with_bom(tmp_path, pipeline_settings):
    content = "id\ttext\tcreated_at\n42\tCoupure à Nîmes 😡\t2026-03-12T10:00:00Z\n"
    path = tmp_path / "export.tsv.gz"
    path.write_bytes(gzip.compress(content.encode("utf-16")))
    result = replay(pipeline_settings, path)
    assert (result.produced, result.dead_lettered) == (1, 0)
    assert raw_by_id(pipeline_settings)["42"]["text"] == "Coupure à Nîmes 😡"


# ----------------------------------------------------------------------------- archive, time

def test_every_replayed_file_is_archived_by_content(tmp_path, pipeline_settings):
    path = write_csv(tmp_path / "a.csv", ["id", "text", "created_at"], [["1", "x", "2026-03-12T10:00:00Z"]])
    first = replay(pipeline_settings, path)
    second = replay(pipeline_settings, path)
    sha = file_sha256(path)
    archived = pipeline_settings.data_dir / "archive" / sha[:2] / f"{sha}.csv"
    assert archived.read_bytes() == path.read_bytes()
    meta = json.loads((archived.parent / f"{sha}.json").read_text())
    assert [r["run_id"] for r in meta["replays"]] == [first.run_id, second.run_id]


def timeline_csv(path: Path, rows: int, gap_s: float) -> Path:
    start = datetime(2024, 1, 15, 8, 0, tzinfo=timezone.utc)
    return write_csv(path, ["id", "text", "created_at"],
                     [[str(1000 + i), f"tweet {i}", (start + timedelta(seconds=i * gap_s)).strftime("%Y-%m-%dT%H:%M:%SZ")]
                      for i in range(rows)])


def test_rebase_to_now_shifts_all_event_times_by_one_offset_never_into_the_future(tmp_path, pipeline_settings):
    path = timeline_csv(tmp_path / "old.csv", rows=5, gap_s=3600)   # four hours of January 2024
    path.write_text(path.read_text() + "9999,saisie en 2099,2099-01-15T08:00:00Z\n")
    before = datetime.now(timezone.utc)
    result = replay(pipeline_settings, path, rebase_to_now=True)
    after = datetime.now(timezone.utc)
    assert result.dead_letter_reasons == {"created_at in the future": 1}  # judged on its own date
    times = [parse_iso(t["created_at"]) for t in sorted(raw_by_id(pipeline_settings).values(),
                                                         key=lambda t: t["id"])]
    # The latest tweet lands at most 5 minutes before "now" and none after it (the pipeline
    # dead-letters future tweets); the 2099 row does not drag the anchor. The shift is a
    # whole number of 5-minute steps, so the signal windows stay aligned.
    assert before - timedelta(minutes=5) < times[-1] <= after
    assert (times[0] - datetime(2024, 1, 15, 8, 0, tzinfo=timezone.utc)) % timedelta(minutes=5) == timedelta(0)
    assert [(b - a).total_seconds() for a, b in zip(times, times[1:])] == [3600.0] * 4


def test_speed_preserves_inter_arrival_gaps(tmp_path, pipeline_settings):
    path = timeline_csv(tmp_path / "paced.csv", rows=21, gap_s=1)  # 20 s of event time
    result = replay(pipeline_settings, path, speed=20)              # -> at least 1 s of wall time
    assert result.elapsed_s >= 0.95
    fast = replay(pipeline_settings, path)
    assert fast.duplicates == 0 and fast.elapsed_s < result.elapsed_s


# ----------------------------------------------------------------------------- resume

def run_cli(settings, *args: str) -> subprocess.Popen:
    env = os.environ | settings.as_env() | {"DALLOSH_REPLAY_CHECKPOINT_EVERY": "500"}
    return subprocess.Popen([sys.executable, "-m", "stream_app", "replay", "--no-progress", *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_messages(settings, at_least: int, proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """Until ``at_least`` raw messages are on Kafka (the replay is under way)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        ends = asyncio.run(topic_end_offsets(settings.kafka_bootstrap, [settings.topic_raw]))
        if sum(ends.values()) >= at_least:
            return
        time.sleep(0.05)
    raise AssertionError(f"the replay did not produce {at_least} messages in time (exit {proc.poll()})")


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "crash"])
def test_interrupted_then_resumed_replay_has_no_gap_and_no_duplicate(tmp_path, pipeline_settings, stop_signal):
    rows = 6000
    path = timeline_csv(tmp_path / "long.csv", rows=rows, gap_s=1)
    proc = run_cli(pipeline_settings, "--speed", "2000", str(path))  # ~3 s when left alone
    wait_for_messages(pipeline_settings, at_least=300, proc=proc)  # not a fixed sleep: CPU may be busy
    proc.send_signal(stop_signal)
    output, _ = proc.communicate(timeout=60)
    if stop_signal == signal.SIGINT:
        assert proc.returncode == 130, output
        assert "interrupted after line" in output and "--resume" in output
    else:
        assert proc.returncode == -signal.SIGKILL
    sent_before = len(read_topic(pipeline_settings.kafka_bootstrap, pipeline_settings.topic_raw))
    assert 0 < sent_before < rows, "the interruption must land mid-replay for this test to mean anything"

    resumed = run_cli(pipeline_settings, "--resume", str(path))
    output, _ = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, output
    assert f"rows read {rows} = produced {rows} + dead-lettered 0 + duplicates skipped 0  [OK]" in output

    messages = read_topic(pipeline_settings.kafka_bootstrap, pipeline_settings.topic_raw)
    ids = [value["id"] for _, value in messages]
    assert len(ids) == rows and len(set(ids)) == rows  # no gap, no duplicate on Kafka
    assert len({value["run_id"] for _, value in messages}) == 1

    again = run_cli(pipeline_settings, "--resume", str(path))
    assert "already replayed completely" in again.communicate(timeout=60)[0]


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, pipeline_settings):
    path = timeline_csv(tmp_path / "never.csv", rows=2, gap_s=1)
    output, _ = run_cli(pipeline_settings, "--resume", str(path)).communicate(timeout=60)
    assert "nothing to resume" in output and "Traceback" not in output


def test_dry_run_sends_nothing(tmp_path, pipeline_settings):
    path = timeline_csv(tmp_path / "dry.csv", rows=3, gap_s=1)
    proc = run_cli(pipeline_settings, "--dry-run", str(path))
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert "id               <- id" in output and "line 2: ok" in output
    assert read_topic(pipeline_settings.kafka_bootstrap, pipeline_settings.topic_raw) == []
