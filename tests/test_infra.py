"""The local broker manager against a real Apache Kafka process (its own data dir/ports)."""

import asyncio
import dataclasses
from pathlib import Path

import pytest

from stream_app.infra import kafka_broker as kb
from stream_app.kafka_admin import ensure_topics
from stream_app.settings import load_settings
from tests.conftest import free_port

pytestmark = pytest.mark.integration


def broker_settings(data_dir: Path, **extra: object):
    values = {"data_dir": str(data_dir), "kafka_port": free_port(),
              "kafka_controller_port": free_port(), **extra}
    return load_settings({k: str(v) for k, v in values.items()}, environ={})


def test_up_status_restart_keeps_data_down_leaves_no_process(tmp_path):
    settings = broker_settings(tmp_path)
    lines: list[str] = []
    status = kb.broker_up(settings, progress=lines.append)
    try:
        assert status.running and status.pid and not status.external
        assert kb.port_is_open("127.0.0.1", settings.kafka_port)
        assert any("Formatting KRaft storage" in line for line in lines)
        assert kb.broker_up(settings).pid == status.pid  # already running: no second broker
        assert asyncio.run(ensure_topics(settings.bootstrap_servers, ["kept.topic"], 2)) == ["kept.topic"]

        kb.broker_down(settings)
        assert not kb.broker_status(settings).running
        assert not Path(f"/proc/{status.pid}").exists()
        assert not kb.port_is_open("127.0.0.1", settings.kafka_port)

        lines.clear()
        restarted = kb.broker_up(settings, progress=lines.append)
        assert restarted.running and restarted.pid != status.pid
        assert not any("Formatting" in line for line in lines)  # data dir reused
        assert asyncio.run(ensure_topics(settings.bootstrap_servers, ["kept.topic"], 2)) == []
    finally:
        kb.broker_down(settings)
    assert "stopped" in kb.broker_status(settings).describe()


def test_taken_port_is_a_clear_error(tmp_path):
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = broker_settings(tmp_path, kafka_port=taken.getsockname()[1])
        with pytest.raises(kb.InfraError, match="already taken.*DALLOSH_KAFKA_PORT"):
            kb.broker_up(settings)


def test_missing_java_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no java, no mvn
    with pytest.raises(kb.InfraError, match="Java 17"):
        kb.broker_up(broker_settings(tmp_path))


def test_broker_dying_on_start_shows_its_log(tmp_path):
    # Settings refuse this heap (below the broker's -Xms128m); past them, the JVM does.
    settings = dataclasses.replace(broker_settings(tmp_path), kafka_heap="1k")
    with pytest.raises(kb.InfraError, match="exited on start") as raised:
        kb.broker_up(settings)
    assert "heap" in str(raised.value).lower()
    assert not kb.broker_status(settings).running


def test_external_cluster_starts_nothing(tmp_path):
    settings = load_settings({"data_dir": str(tmp_path), "kafka_bootstrap": "kafka.example:9092"},
                             environ={})
    status = kb.broker_up(settings)
    assert status.external and "external Kafka at kafka.example:9092" in status.describe()
    assert not (tmp_path / "kafka").exists()


def test_a_cluster_id_starting_with_a_dash_still_formats(tmp_path, monkeypatch):
    """One random id in 64 starts with "-", which the storage tool read as a missing
    argument (a CI run failed on it): new ids avoid it, and an id already written so
    still formats."""
    assert not any(kb._new_cluster_id().startswith("-") for _ in range(2000))
    settings = broker_settings(tmp_path)
    monkeypatch.setattr(kb, "_new_cluster_id", lambda: "-" + "A" * 21)
    status = kb.broker_up(settings, progress=lambda line: None)
    try:
        assert status.running
    finally:
        kb.broker_down(settings)
