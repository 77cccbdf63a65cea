"""``dallosh replay FILE``: stream a CSV dump of tweets into ``tweets.raw``.

The file is read as a stream (constant memory), each row becomes a raw tweet keyed by
its id and produced with an idempotent producer; a row that cannot become a tweet is
dead-lettered at the source with its file and line number. The run ends with a
reconciliation: rows read = produced + dead-lettered.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import json
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator, Mapping

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from tqdm import tqdm

from connectors.csv_formats import ColumnMapping, FormatError
from stream_app.kafka_admin import KafkaUnavailable
from stream_app.records import DeadLetter, iso, raw_tweet_problem, reason_kind, utc_now
from stream_app.settings import Settings

STAGE = "replay"
SEND_WINDOW = 2000  # sends in flight before we wait for acknowledgements

csv.field_size_limit(16 * 1024 * 1024)


class ReplayError(RuntimeError):
    """The file cannot be replayed (message says why)."""


@dataclass
class ReplayResult:
    run_id: str
    file: str
    rows_read: int = 0
    produced: int = 0
    dead_lettered: int = 0
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def reconciles(self) -> bool:
        return self.rows_read == self.produced + self.dead_lettered

    def summary_line(self) -> str:
        verdict = "OK" if self.reconciles else "MISMATCH"
        return (f"rows read {self.rows_read} = produced {self.produced} "
                f"+ dead-lettered {self.dead_lettered}  [{verdict}]")


class _CountingReader(io.RawIOBase):
    """Counts bytes read from the file on disk, for a progress bar that also works for gzip."""

    def __init__(self, raw: IO[bytes], progress: tqdm) -> None:
        self._raw, self._progress = raw, progress

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        n = self._raw.readinto(buffer)
        self._progress.update(n or 0)
        return n or 0


def _open_text(path: Path, progress: tqdm) -> IO[str]:
    raw = io.BufferedReader(_CountingReader(open(path, "rb"), progress))
    head = raw.peek(2)[:2]
    binary: IO[bytes] = gzip.GzipFile(fileobj=raw) if head == b"\x1f\x8b" else raw
    return io.TextIOWrapper(binary, encoding="utf-8-sig", errors="replace", newline="")


def iter_rows(text: IO[str]) -> Iterator[tuple[int, list[str], dict[str, str]]]:
    """(line number, header, row) for each data row; blank lines are skipped."""
    reader = csv.reader(text)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ReplayError("the file is empty (no header row)") from None
    for row in reader:
        if not row or all(not cell.strip() for cell in row):
            continue
        yield reader.line_num, header, dict(zip(header, row))


def new_run_id(path: Path) -> str:
    return f"replay-{utc_now():%Y%m%dT%H%M%S}-{path.stem.split('.')[0][:24]}-{uuid.uuid4().hex[:6]}"


async def replay_file(path: Path, settings: Settings, *, column_overrides: Mapping[str, str] | None = None,
                      run_id: str | None = None, show_progress: bool = True) -> ReplayResult:
    if not path.is_file():
        raise ReplayError(f"no such file: {path}")
    result = ReplayResult(run_id=run_id or new_run_id(path), file=str(path))
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers,
                                enable_idempotence=True, acks="all", linger_ms=20,
                                max_batch_size=256 * 1024)
    try:
        await producer.start()
    except KafkaConnectionError as exc:
        await producer.stop()
        raise KafkaUnavailable(f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}. "
                               "Is the broker up? (`dallosh infra up`)") from None
    progress = tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=f"replay {path.name}",
                    disable=not show_progress, file=sys.stderr)
    try:
        await _produce_rows(path, settings, producer, progress, result, column_overrides)
    finally:
        progress.close()
        await producer.stop()  # flushes what is still buffered
    return result


async def _produce_rows(path: Path, settings: Settings, producer: AIOKafkaProducer, progress: tqdm,
                        result: ReplayResult, column_overrides: Mapping[str, str] | None) -> None:
    in_flight: list[asyncio.Future] = []
    mapping: ColumnMapping | None = None
    with _open_text(path, progress) as text:
        for line_no, header, row in iter_rows(text):
            if mapping is None:
                try:
                    mapping = ColumnMapping.detect(header, column_overrides)
                except FormatError as exc:
                    raise ReplayError(f"{path}: {exc}") from None
            result.rows_read += 1
            source = f"{path.name}:{line_no}"
            record = mapping.to_raw(row) | {"run_id": result.run_id, "source": source,
                                            "ingested_at": iso(utc_now())}
            problem = raw_tweet_problem(record)
            if problem is None:
                in_flight.append(await producer.send(
                    settings.topic_raw, key=str(record["id"]).encode(),
                    value=json.dumps(record, ensure_ascii=False).encode()))
                result.produced += 1
            else:
                dead = DeadLetter.build(stage=STAGE, reason=problem, run_id=result.run_id,
                                        tweet_id=str(record.get("id") or ""), source=source,
                                        payload=json.dumps(row, ensure_ascii=False))
                in_flight.append(await producer.send(
                    settings.topic_dlq, key=(dead.tweet_id or dead.dead_letter_id).encode(),
                    value=dead.to_json()))
                result.dead_lettered += 1
                kind = reason_kind(problem)
                result.dead_letter_reasons[kind] = result.dead_letter_reasons.get(kind, 0) + 1
            if len(in_flight) >= SEND_WINDOW:
                await asyncio.gather(*in_flight)
                in_flight.clear()
    await asyncio.gather(*in_flight)
