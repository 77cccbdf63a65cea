"""Shared fixtures. Integration tests run against a real Apache Kafka broker, started
once per test session by the project's own ``stream_app.infra`` (in a temporary data
dir, on free ports) and stopped at the end; set ``DALLOSH_TEST_KAFKA_BOOTSTRAP`` to use
an existing cluster instead. ClickHouse is the real engine (chdb) in a temp folder.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from stream_app.infra.kafka_broker import broker_down, broker_up
from stream_app.settings import Settings, load_settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    existing = os.environ.get("DALLOSH_TEST_KAFKA_BOOTSTRAP")
    if existing:
        yield existing
        return
    settings = load_settings({
        "data_dir": str(tmp_path_factory.mktemp("broker")),
        "kafka_port": free_port(),
        "kafka_controller_port": free_port(),
    }, environ={})
    broker_up(settings, progress=lambda line: print(f"[kafka] {line}"))
    try:
        yield settings.bootstrap_servers
    finally:
        broker_down(settings)


def isolated_settings(data_dir: Path, bootstrap: str, **overrides: object) -> Settings:
    """Settings for one test: its own data dir, topics, consumer group and metrics port.
    The local model tier is off unless a test names one, so that results do not depend on
    whether this machine has trained a model into its cache (~/.cache/dallosh)."""
    tag = uuid.uuid4().hex[:8]
    values: dict[str, object] = {
        "data_dir": str(data_dir),
        "kafka_bootstrap": bootstrap,
        "app_id": f"dallosh-test-{tag}",
        "metrics_port": free_port(),
        "partitions": 4,
        "sink_max_wait": 0.3,
        "classify_max_wait": 0.3,
        "local_model": "off",
        **{f"topic_{name}": f"t{tag}.{name}" for name in
           ("raw", "clean", "classified", "dlq", "alerts", "provider_calls", "decisions",
            "windows")},
    }
    values.update(overrides)
    return load_settings({k: str(v) for k, v in values.items()}, environ={})


@pytest.fixture(scope="session")
def counter(tmp_path_factory: pytest.TempPathFactory):
    """A tiktoken counter whose BPE files are installed offline into a fresh cache (the
    way a new machine gets them), with TIKTOKEN_CACHE_DIR restored afterwards."""
    from stream_app.classify.tokens import TokenCounter
    saved = os.environ.pop("TIKTOKEN_CACHE_DIR", None)
    yield TokenCounter(cache_dir=tmp_path_factory.mktemp("dallosh-cache"))
    os.environ.pop("TIKTOKEN_CACHE_DIR", None)
    if saved is not None:
        os.environ["TIKTOKEN_CACHE_DIR"] = saved


@pytest.fixture
def pipeline_settings(tmp_path: Path, kafka_bootstrap: str) -> Settings:
    return isolated_settings(tmp_path / "data", kafka_bootstrap)


def read_topic(bootstrap: str, topic: str) -> list[tuple[bytes, dict]]:
    """Every message of ``topic`` from the beginning, as (key, decoded JSON value)."""
    import asyncio
    import json

    from stream_app.kafka_admin import read_to_end

    return [(r.key, json.loads(r.value)) for r in asyncio.run(read_to_end(bootstrap, topic))]
