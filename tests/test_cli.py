"""The command line as a user meets it: help, and clear one-line errors for mistakes."""

import os
import subprocess
import sys

import pytest

from tests.conftest import free_port


def dallosh(*args: str, env: dict[str, str] | None = None, timeout: float = 60):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DALLOSH_")} | (env or {})
    return subprocess.run([sys.executable, "-m", "stream_app", *args], capture_output=True,
                          text=True, env=full_env, timeout=timeout)


def test_help_lists_every_command_and_each_has_help():
    result = dallosh("--help")
    assert result.returncode == 0
    for command in ("infra", "worker", "replay", "demo", "bench", "stream", "data", "eval"):
        assert command in result.stdout
        sub = dallosh(command, "--help")
        assert sub.returncode == 0 and "Usage:" in sub.stdout, command
    for group, action in [("infra", "up"), ("infra", "down"), ("infra", "status"),
                          ("bench", "replay"), ("stream", "x"), ("stream", "x-rules"),
                          ("stream", "mastodon"), ("bench", "clean"), ("bench", "batching"),
                          ("data", "fetch")]:
        assert dallosh(group, action, "--help").returncode == 0, (group, action)


def assert_clean_error(result, *fragments: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in output, output
    for fragment in fragments:
        assert fragment in output, output


def test_bad_setting_is_one_clear_line(tmp_path):
    result = dallosh("infra", "status", env={"DALLOSH_DATA_DIR": str(tmp_path),
                                              "DALLOSH_PARTITIONS": "many"})
    assert_clean_error(result, "DALLOSH_PARTITIONS='many': must be a positive integer")


def test_missing_file_is_a_clear_error(tmp_path):
    assert_clean_error(dallosh("replay", str(tmp_path / "nope.csv")), "does not exist")


def test_unreachable_kafka_is_a_clear_error(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("id,text,created_at\n1,hello,2026-03-12T10:00:00Z\n")
    result = dallosh("replay", str(csv), env={"DALLOSH_DATA_DIR": str(tmp_path),
                                              "DALLOSH_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"})
    assert_clean_error(result, "cannot reach Kafka", "dallosh infra up")


def test_unrecognised_csv_header_is_a_clear_error(tmp_path, kafka_bootstrap):
    csv = tmp_path / "t.csv"
    csv.write_text("foo,bar\n1,2\n")
    result = dallosh("replay", str(csv), env={"DALLOSH_DATA_DIR": str(tmp_path),
                                              "DALLOSH_KAFKA_BOOTSTRAP": kafka_bootstrap})
    assert_clean_error(result, "no column for id, text", "--map")


@pytest.mark.parametrize("bad", ["id", "=x", "id="])
def test_bad_map_option_is_a_usage_error(tmp_path, bad):
    csv = tmp_path / "t.csv"
    csv.write_text("id,text\n")
    assert_clean_error(dallosh("replay", str(csv), "--map", bad), "expected FIELD=COLUMN")


def test_infra_status_on_a_fresh_data_dir_is_truthful(tmp_path):
    result = dallosh("infra", "status", env={"DALLOSH_DATA_DIR": str(tmp_path)})
    assert result.returncode == 3
    assert "local broker stopped" in result.stdout
    assert f"embedded (chdb) at {tmp_path / 'clickhouse'} (not created yet)" in result.stdout
