"""The local Apache Kafka broker behind ``dallosh infra up|down|status``.

A real single-node KRaft broker (Apache Kafka from Maven Central, no Docker): jars are
fetched once per machine into the user cache, the broker's data and PID file live in the
installation's data dir, so two data dirs run two independent brokers (on two ports).
Nothing is started when ``DALLOSH_KAFKA_BOOTSTRAP`` names an existing cluster.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

from stream_app.settings import Settings

Progress = Callable[[str], None]
BROKER_MAIN_CLASS = "kafka.Kafka"
JARS_READY_MARKER = ".complete"


class InfraError(RuntimeError):
    """The local broker cannot be managed; the message says why and what to do."""


@dataclass(frozen=True)
class BrokerPaths:
    root: Path

    @classmethod
    def for_settings(cls, settings: Settings) -> "BrokerPaths":
        return cls(settings.data_dir / "kafka")

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def config(self) -> Path:
        return self.root / "server.properties"

    @property
    def log4j(self) -> Path:
        return self.root / "log4j.properties"

    @property
    def log(self) -> Path:
        return self.root / "broker.log"

    @property
    def pid(self) -> Path:
        return self.root / "broker.pid"

    @property
    def cluster_id(self) -> Path:
        return self.root / "cluster.id"


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    external: bool
    bootstrap: str
    pid: int | None = None
    data_dir: Path | None = None
    log_path: Path | None = None

    def describe(self) -> str:
        if self.external:
            return (f"external Kafka at {self.bootstrap} (DALLOSH_KAFKA_BOOTSTRAP); "
                    "no local broker is managed")
        if self.running:
            return (f"local broker running: pid {self.pid}, listening on {self.bootstrap}, "
                    f"data {self.data_dir}, log {self.log_path}")
        return f"local broker stopped (would listen on {self.bootstrap}, data {self.data_dir})"


# --------------------------------------------------------------------------- jars

def jars_dir(settings: Settings) -> Path:
    return settings.cache_dir / "kafka" / settings.kafka_version / "lib"


def ensure_jars(settings: Settings, progress: Progress = print) -> Path:
    """Fetch the broker jars through Maven once per machine; return the lib folder."""
    lib = jars_dir(settings)
    if (lib / JARS_READY_MARKER).exists():
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise InfraError("Maven (`mvn`) is needed once to fetch the Apache Kafka jars "
                         "from Maven Central. Install it (Debian: `apt-get install maven`) "
                         "or point DALLOSH_KAFKA_BOOTSTRAP at an existing Kafka cluster.")
    progress(f"Downloading Apache Kafka {settings.kafka_version} jars from Maven Central "
             f"into {lib} (once per machine, ~46 MB)...")
    staging = lib.with_name(lib.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    pom = resources.files("stream_app.infra").joinpath("kafka-pom.xml")
    with resources.as_file(pom) as pom_path:
        result = subprocess.run(
            [mvn, "-q", "-B", "-f", str(pom_path), f"-Dkafka.version={settings.kafka_version}",
             "dependency:copy-dependencies", f"-DoutputDirectory={staging}"],
            capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise InfraError(f"Maven could not fetch Apache Kafka {settings.kafka_version}:\n{tail}")
    (staging / JARS_READY_MARKER).write_text(settings.kafka_version)
    shutil.rmtree(lib, ignore_errors=True)
    staging.rename(lib)
    progress(f"Fetched {sum(1 for _ in lib.glob('*.jar'))} jars.")
    return lib


# --------------------------------------------------------------------------- config

def _server_properties(settings: Settings, paths: BrokerPaths) -> str:
    port, cport = settings.kafka_port, settings.kafka_controller_port
    return "\n".join([
        "# Written by `dallosh infra up` at every start; edit settings, not this file.",
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@127.0.0.1:{cport}",
        f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        f"log.dirs={paths.data}",
        f"num.partitions={settings.partitions}",
        "num.network.threads=2",
        "num.io.threads=4",
        # Single node: every internal topic has one replica.
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=10",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "transaction.state.log.num.partitions=4",
        "min.insync.replicas=1",
        # Consumers join at once instead of waiting 3 s for more members.
        "group.initial.rebalance.delay.ms=0",
        "auto.create.topics.enable=true",
        "log.retention.hours=168",
        "",
    ])


_LOG4J = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
"""


def _new_cluster_id() -> str:
    """Same shape as `kafka-storage random-uuid`: URL-safe base64 of 16 random bytes, and,
    like Kafka's own ``Uuid.randomUuid``, never starting with "-": the storage tool's
    argument parser reads ``-t -Abc...`` as a missing cluster id (one format in 64 failed,
    seen in CI)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


# --------------------------------------------------------------------------- process

def _read_pid(paths: BrokerPaths) -> int | None:
    try:
        pid = int(paths.pid.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _is_our_broker(pid, paths) else None


def _is_our_broker(pid: int, paths: BrokerPaths) -> bool:
    """True only for a live broker process started with *this* data dir's config."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    args = [a.decode(errors="replace") for a in cmdline]
    return BROKER_MAIN_CLASS in args and str(paths.config) in args


def port_is_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"


def broker_status(settings: Settings) -> BrokerStatus:
    if not settings.uses_local_broker:
        return BrokerStatus(running=True, external=True, bootstrap=settings.bootstrap_servers)
    paths = BrokerPaths.for_settings(settings)
    pid = _read_pid(paths)
    return BrokerStatus(running=pid is not None, external=False,
                        bootstrap=settings.bootstrap_servers, pid=pid,
                        data_dir=paths.data, log_path=paths.log)


def broker_up(settings: Settings, progress: Progress = print,
              timeout_s: float = 90.0) -> BrokerStatus:
    """Start the local broker unless it (or an external cluster) is already there."""
    status = broker_status(settings)
    if status.external or status.running:
        return status
    java = shutil.which("java")
    if java is None:
        raise InfraError("Java 17+ is needed to run the local Kafka broker "
                         "(Debian: `apt-get install openjdk-17-jre-headless`), or point "
                         "DALLOSH_KAFKA_BOOTSTRAP at an existing Kafka cluster.")
    for name, port in (("DALLOSH_KAFKA_PORT", settings.kafka_port),
                       ("DALLOSH_KAFKA_CONTROLLER_PORT", settings.kafka_controller_port)):
        if port_is_open("127.0.0.1", port):
            raise InfraError(f"port {port} on 127.0.0.1 is already taken by another process; "
                             f"choose a free one with {name}=... (or stop that process).")
    lib = ensure_jars(settings, progress)
    paths = BrokerPaths.for_settings(settings)
    paths.data.mkdir(parents=True, exist_ok=True)
    paths.config.write_text(_server_properties(settings, paths))
    paths.log4j.write_text(_LOG4J)
    classpath = f"{lib}/*"
    if not (paths.data / "meta.properties").exists():
        _format_storage(java, classpath, paths, progress)

    progress(f"Starting Kafka broker on {settings.bootstrap_servers} "
             f"(heap {settings.kafka_heap}, data {paths.data})...")
    log_start = paths.log.stat().st_size if paths.log.exists() else 0
    with open(paths.log, "ab") as log:
        proc = subprocess.Popen(
            [java, f"-Xmx{settings.kafka_heap}", "-Xms128m", "-XX:+UseG1GC",
             "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
             f"-Dlog4j.configuration=file:{paths.log4j}",
             "-cp", classpath, BROKER_MAIN_CLASS, str(paths.config)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)  # survives the CLI; stopped by `infra down`
    paths.pid.write_text(str(proc.pid))
    _wait_until_ready(proc, settings, paths, log_start, timeout_s)
    return broker_status(settings)


def _format_storage(java: str, classpath: str, paths: BrokerPaths, progress: Progress) -> None:
    if not paths.cluster_id.exists():
        paths.cluster_id.write_text(_new_cluster_id())
    progress("Formatting KRaft storage (first start of this data dir)...")
    result = subprocess.run(
        [java, "-Xmx256m", f"-Dlog4j.configuration=file:{paths.log4j}", "-cp", classpath,
         "kafka.tools.StorageTool", "format",
         # one argument: an id written before ids avoided a leading "-" still parses
         f"--cluster-id={paths.cluster_id.read_text().strip()}",
         "-c", str(paths.config), "--ignore-formatted"],
        capture_output=True, text=True)
    if result.returncode != 0:
        raise InfraError("Kafka storage format failed:\n" + (result.stdout + result.stderr)[-2000:])


def _wait_until_ready(proc: subprocess.Popen, settings: Settings, paths: BrokerPaths,
                      log_start: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            paths.pid.unlink(missing_ok=True)
            raise InfraError(f"the Kafka broker exited on start (code {proc.returncode}). "
                             f"Last lines of {paths.log}:\n{log_tail(paths.log)}")
        if port_is_open("127.0.0.1", settings.kafka_port) and _started_since(paths.log, log_start):
            return
        time.sleep(0.3)
    _terminate(proc.pid, grace_s=5)
    paths.pid.unlink(missing_ok=True)
    raise InfraError(f"the Kafka broker did not become ready within {timeout_s:.0f} s. "
                     f"Last lines of {paths.log}:\n{log_tail(paths.log)}")


def _started_since(log: Path, offset: int) -> bool:
    # KafkaRaftServer logs this once the broker has caught up with the metadata log.
    with open(log, "rb") as handle:
        handle.seek(offset)
        return b"Kafka Server started" in handle.read()


def broker_down(settings: Settings, timeout_s: float = 30.0) -> BrokerStatus:
    """Stop the local broker cleanly (SIGTERM, then SIGKILL after ``timeout_s``)."""
    status = broker_status(settings)
    if status.external or not status.running:
        return status
    assert status.pid is not None
    _terminate(status.pid, grace_s=timeout_s)
    BrokerPaths.for_settings(settings).pid.unlink(missing_ok=True)
    return broker_status(settings)


def _terminate(pid: int, grace_s: float) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while _alive(pid):
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        # Reap it if it is our child (the test session starts the broker itself).
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    if state == "Z":  # exited since the waitpid above: reap it if it is our child
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        return False
    return True
