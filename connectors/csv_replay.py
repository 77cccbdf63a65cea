"""``dallosh replay FILE``: stream a CSV dump of tweets into ``tweets.raw``.

Before anything is sent, the first rows are scanned (:class:`~connectors.csv_formats.DumpScan`):
a file whose ids a spreadsheet mangled (``1,89705E+18``, ids rounded to 15 digits, many
texts under one id) is refused with one error line that says how to re-export it, and
the way its dates are read (``dd/mm/yyyy`` or ``mm/dd/yyyy``, zone assumed UTC) is decided
and said on the replay's first line.

The file is archived (content-addressed) and read as a stream; each row becomes a raw
tweet keyed by its id, produced with an idempotent producer. A row that cannot become
a tweet is dead-lettered at the source with its file, line and reason (the reasons are
listed in docs/replay.md). An id seen again within the dedupe window
with the same text is a duplicate, skipped and counted; with a different text it is an
``id conflict``, dead-lettered: two tweets never silently become one. Every run reconciles:
rows read = produced + dead-lettered + duplicates skipped, so ``[OK]`` means no row was
dropped without a reason a user can read.

Event time is preserved: ``--speed N`` paces the replay at N x the original pace,
``--rebase-to-now`` shifts every event time by one constant so an old dump plays as if it
had just happened: the file is read once first to find its latest (valid) time, which
lands within five minutes before now, so a shifted time is never in the future (the
pipeline dead-letters tweets dated past now + ``max_future_skew_s``). Checkpoints
(every ``replay_checkpoint_every`` rows, after the broker acknowledged them) let
``--resume`` continue an interrupted replay; rows sent after the last checkpoint are
found again on Kafka by their run id and source line, so a resume after a crash sends
neither a gap nor a duplicate.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, Mapping

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from tqdm import tqdm

from connectors.archive import archive_file, file_sha256
from connectors.checkpoint import read_json, write_json_atomic
from connectors.csv_formats import SCAN_ROWS, ColumnMapping, DumpScan, FormatError, mangled_id, parse_time
from connectors.dump_reader import BadRow, DumpError, DumpFormat, Row, open_dump
from connectors.raw_producer import RawProducer
from connectors.recent_ids import RecentIds
from stream_app.records import (DEFAULT_MAX_FUTURE_SKEW_S, DeadLetter, future_bound, iso, parse_iso,
                                raw_tweet_problem, reason_kind, utc_now)
from stream_app.kafka_admin import topic_end_offsets
from stream_app.settings import Settings, load_settings

STAGE = "replay"
# Ids remembered for duplicate detection. Export duplicates (overlapping pages, re-runs
# of a scraper) sit close together; the window bounds memory (~10 MB) whatever the file
# size, and anything farther apart is still collapsed by id in ClickHouse.
DEFAULT_DEDUPE_WINDOW = 100_000


class ReplayError(RuntimeError):
    """The file cannot be replayed (message says why)."""


@dataclass(frozen=True)
class ReplayOptions:
    column_overrides: Mapping[str, str] = field(default_factory=dict)
    speed: float | None = None          # None: as fast as possible (--max)
    rebase_to_now: bool = False
    resume: bool = False
    dedupe_window: int = DEFAULT_DEDUPE_WINDOW
    show_progress: bool = True
    archive: bool = True
    say: Callable[[str], None] = print  # the replay's first line: how the file is read


@dataclass
class ReplayResult:
    run_id: str
    file: str
    rows_read: int = 0
    produced: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # assumptions about the file (date order, zone)
    last_line: int = 1
    interrupted: bool = False
    already_complete: bool = False
    elapsed_s: float = 0.0

    @property
    def reconciles(self) -> bool:
        return self.rows_read == self.produced + self.dead_lettered + self.duplicates

    def to_json_dict(self) -> dict:
        rate = self.rows_read / self.elapsed_s if self.elapsed_s else 0.0
        return asdict(self) | {"reconciles": self.reconciles, "rows_per_s": round(rate, 1)}

    def summary_line(self) -> str:
        verdict = "OK" if self.reconciles else "MISMATCH"
        rate = f", {self.rows_read / self.elapsed_s:,.0f} rows/s" if self.elapsed_s else ""
        return (f"rows read {self.rows_read} = produced {self.produced} + dead-lettered "
                f"{self.dead_lettered} + duplicates skipped {self.duplicates}  [{verdict}]{rate}")


def new_run_id(path: Path) -> str:
    stem = path.name.split(".")[0][:24]
    return f"replay-{utc_now():%Y%m%dT%H%M%S}-{stem}-{uuid.uuid4().hex[:6]}"


# --------------------------------------------------------------------------- dry run

def dry_run(path: Path, column_overrides: Mapping[str, str] | None = None, rows: int = 5,
            max_future_skew_s: float | None = None) -> str:
    """The detected format, mapping and assumptions, and the first rows as they would be
    sent. A file the replay would refuse raises the same :class:`ReplayError`."""
    if max_future_skew_s is None:
        max_future_skew_s = load_settings().max_future_skew_s
    prepared = prepare(path, column_overrides)
    dump_format, rows_iter, handle = _open(path)
    with handle:
        mapping = prepared.mapping
        lines = [f"{path}: {dump_format.describe()}"]
        lines += [", ".join(prepared.notes)] if prepared.notes else []
        lines.append("mapping (field <- column):")
        lines += [f"  {f:<16} <- {c}" for f, c in mapping.columns.items()]
        shown = 0
        for item in rows_iter:
            if shown >= rows:
                break
            shown += 1
            if isinstance(item, BadRow):
                lines.append(f"line {item.line}: DEAD LETTER ({item.reason})")
                continue
            record = mapping.to_raw(item.cells) | {"run_id": "(dry-run)", "source": f"{path.name}:{item.line}",
                                                 "ingested_at": iso(utc_now())}
            problem = raw_tweet_problem(record, max_future_skew_s) or _mangled_id_problem(str(record["id"]))
            verdict = f"DEAD LETTER ({problem})" if problem else "ok"
            lines.append(f"line {item.line}: {verdict}\n  {json.dumps(record, ensure_ascii=False)}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Prepared:
    """What is known about a dump before its first row is sent."""
    mapping: ColumnMapping
    notes: list[str]
    latest_event: datetime | None = None  # only when asked: the latest valid created_at


def prepare(path: Path, column_overrides: Mapping[str, str] | None = None, *,
            find_latest: bool = False,
            max_future_skew_s: float = DEFAULT_MAX_FUTURE_SKEW_S) -> Prepared:
    """Scan the dump's first rows; refuse it (:class:`ReplayError`) if a spreadsheet
    mangled its ids. ``find_latest`` reads it to the end for ``--rebase-to-now``."""
    dump_format, rows, handle = _open(path)
    with handle:
        mapping = _mapping(path, dump_format, column_overrides)
        scan = DumpScan(mapping, dump_format.header)
        for item in rows:
            if isinstance(item, Row):
                scan.add(item.line, item.cells)
            if scan.rows >= SCAN_ROWS:
                break
        refusal = scan.refusal()
        if refusal:
            raise ReplayError(f"{path}: {refusal}")
        mapping = replace(mapping, day_first=scan.day_first)
    latest = _latest_event(path, mapping, max_future_skew_s) if find_latest else None
    return Prepared(mapping, scan.notes(), latest)


def _latest_event(path: Path, mapping: ColumnMapping, max_future_skew_s: float) -> datetime | None:
    """The latest created_at the replay would accept (future ones are dead-lettered)."""
    column = mapping.columns.get("created_at")
    if column is None:
        return None
    bound, latest = future_bound(max_future_skew_s), None
    _, rows, handle = _open(path)
    with handle:
        for item in rows:
            if isinstance(item, Row):
                parsed = parse_time((item.cells.get(column) or "").strip(), mapping.day_first)
                if parsed and parsed[0] <= bound and (latest is None or parsed[0] > latest):
                    latest = parsed[0]
    return latest


def _mangled_id_problem(tweet_id: str) -> str | None:
    """A spreadsheet-mangled id past the scanned rows (the scan refuses the file before)."""
    if tweet_id.isdigit():
        return None
    damage = mangled_id(tweet_id)
    return f"mangled id {tweet_id!r}: {damage} from a spreadsheet, the real id is lost" if damage else None


def _open(path: Path, on_read=lambda n: None):
    if not path.is_file():
        raise ReplayError(f"no such file: {path}")
    try:
        return open_dump(path, on_read)
    except DumpError as exc:
        raise ReplayError(str(exc)) from None


def _mapping(path: Path, dump_format: DumpFormat, overrides: Mapping[str, str] | None) -> ColumnMapping:
    try:
        return ColumnMapping.detect(dump_format.header, overrides)
    except FormatError as exc:
        raise ReplayError(f"{path}: {exc}") from None


# --------------------------------------------------------------------------- replay

def checkpoint_path(settings: Settings, sha256: str) -> Path:
    return settings.data_dir / "replays" / f"{sha256}.json"


async def replay_file(path: Path, settings: Settings,
                      options: ReplayOptions = ReplayOptions()) -> ReplayResult:
    if not path.is_file():
        raise ReplayError(f"no such file: {path}")
    sha = file_sha256(path)
    ckpt_path = checkpoint_path(settings, sha)
    checkpoint = read_json(ckpt_path)
    if options.resume:
        if checkpoint is None:
            raise ReplayError(f"nothing to resume for {path}: no interrupted replay of this "
                              "file in this data dir (run it without --resume)")
        result = ReplayResult(**{k: v for k, v in checkpoint["result"].items()
                                 if k in ReplayResult.__dataclass_fields__})
        result.interrupted = False
        if checkpoint.get("complete"):
            result.already_complete = True
            return result
    else:
        result = ReplayResult(run_id=new_run_id(path), file=str(path))
    shift_known = options.resume and (checkpoint or {}).get("event_shift_s") is not None
    prepared = prepare(path, options.column_overrides, find_latest=options.rebase_to_now and not shift_known,
                       max_future_skew_s=settings.max_future_skew_s)
    result.notes = prepared.notes
    if prepared.notes:
        options.say(f"{path}: " + ", ".join(prepared.notes))
    replayer = _Replayer(path, settings, options, result, ckpt_path, sha,
                         checkpoint if options.resume else None, prepared)
    await replayer.run()
    return result


class _Replayer:
    def __init__(self, path: Path, settings: Settings, options: ReplayOptions,
                 result: ReplayResult, ckpt_path: Path, sha256: str, checkpoint: dict | None,
                 prepared: Prepared) -> None:
        self.path, self.settings, self.options, self.result = path, settings, options, result
        self.mapping = prepared.mapping
        self.max_future_skew_s = settings.max_future_skew_s
        self.ckpt_path, self.sha256 = ckpt_path, sha256
        self.recent = RecentIds(options.dedupe_window)
        self.stop_requested = False
        self.checkpoint_is_new = checkpoint is None
        self.resume_from_line = result.last_line if checkpoint else 1
        self.offsets_at_checkpoint: dict = (checkpoint or {}).get("offsets", {})
        shift = (checkpoint or {}).get("event_shift_s")
        self.event_shift = timedelta(seconds=shift) if shift is not None else None
        if options.rebase_to_now and self.event_shift is None and prepared.latest_event is not None:
            # Whole 5-minute steps: the dump's tweets keep their place in the signal windows
            # (1 min, 5 min), so a rebased replay raises the same alerts. The latest tweet
            # lands within 5 minutes before now: no shifted time is in the future.
            step = timedelta(minutes=5)
            self.event_shift = (utc_now() - prepared.latest_event) // step * step
        self.already_sent: dict[int, str] = {}  # line -> "produced" | "dead_lettered"
        self.pace_origin: tuple[float, datetime] | None = None
        self._ingested_ms, self._ingested_iso = 0, ""
        self.start_offsets: dict[str, dict[str, int]] = {}

    async def run(self) -> None:
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, self._request_stop)
        loop.add_signal_handler(signal.SIGTERM, self._request_stop)
        progress: tqdm | None = None
        try:
            async with RawProducer(self.settings) as producer:
                if self.options.archive and self.checkpoint_is_new:
                    archive_file(self.path, self.settings.data_dir, self.result.run_id)
                progress = tqdm(total=self.path.stat().st_size, unit="B", unit_scale=True,
                                desc=f"replay {self.path.name}", file=sys.stderr, mininterval=0.5,
                                disable=not self.options.show_progress)
                if self.offsets_at_checkpoint:
                    self.already_sent = await _lines_sent_after_checkpoint(
                        self.settings, self.result.run_id, self.offsets_at_checkpoint)
                self.start_offsets = await _end_offsets(self.settings)
                if self.checkpoint_is_new:
                    # A crash before the first periodic checkpoint must be resumable too:
                    # --resume then finds on Kafka what this run had already sent.
                    self._write_checkpoint(producer, complete=False)
                await self._replay_rows(producer, progress)
                await producer.flush()
                self._write_checkpoint(producer, complete=not self.stop_requested)
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)
            if progress is not None:
                progress.close()
            self.result.elapsed_s = time.perf_counter() - started
        self.result.interrupted = self.stop_requested

    def _request_stop(self) -> None:
        self.stop_requested = True

    async def _replay_rows(self, producer: RawProducer, progress: tqdm) -> None:
        dump_format, rows, handle = _open(self.path, progress.update)
        result = self.result
        mapping = self.mapping
        with handle:
            since_checkpoint = 0
            for item in rows:
                if self.stop_requested:
                    break
                if item.line <= self.resume_from_line:
                    self._remember_skipped(item, mapping)
                    continue
                result.rows_read += 1
                result.last_line = item.line
                if item.line in self.already_sent:  # sent before a crash, found on Kafka
                    self._count_already_sent(item, mapping)
                else:
                    await self._send(item, mapping, producer)
                since_checkpoint += 1
                if since_checkpoint >= self.settings.replay_checkpoint_every:
                    since_checkpoint = 0
                    await producer.flush()
                    self._write_checkpoint(producer, complete=False)
                if result.rows_read % 2000 == 0:
                    progress.set_postfix(rows=result.rows_read, refresh=False)

    def _raw_record(self, row: Row, mapping: ColumnMapping) -> dict:
        record = mapping.to_raw(row.cells)
        record["run_id"] = self.result.run_id
        record["source"] = f"{self.path.name}:{row.line}"
        record["ingested_at"] = self._ingested_at()
        return record

    def _ingested_at(self) -> str:
        # Formatting a timestamp per row costs ~4 us; millisecond resolution is plenty.
        now_ms = time.time_ns() // 1_000_000
        if now_ms != self._ingested_ms:
            self._ingested_ms, self._ingested_iso = now_ms, iso(utc_now())
        return self._ingested_iso

    async def _send(self, item: Row | BadRow, mapping: ColumnMapping, producer: RawProducer) -> None:
        result = self.result
        if isinstance(item, BadRow):
            await self._dead_letter(producer, item.line, item.reason, item.content, "")
            return
        record = self._raw_record(item, mapping)
        tweet_id = str(record["id"])
        problem = raw_tweet_problem(record, self.max_future_skew_s) or _mangled_id_problem(tweet_id)
        if problem is None:
            seen = self.recent.check(tweet_id, str(record["text"]), item.line)
            if seen is not None:
                if seen.same_text:
                    result.duplicates += 1
                    return
                problem = (f"id conflict: id {tweet_id} already seen with a different text "
                           f"(line {seen.line})")
        if problem is not None:
            await self._dead_letter(producer, item.line, problem,
                                    json.dumps(item.cells, ensure_ascii=False), tweet_id)
            return
        await self._shift_and_pace(record)
        await producer.send_raw(record, partition_key=self.result.run_id)  # one ordered timeline
        result.produced += 1

    async def _dead_letter(self, producer: RawProducer, line: int, reason: str, content: str,
                           tweet_id: str) -> None:
        dead = DeadLetter.build(stage=STAGE, reason=reason, payload=content, run_id=self.result.run_id,
                                tweet_id=tweet_id, source=f"{self.path.name}:{line}")
        await producer.send_dead_letter(dead)
        self.result.dead_lettered += 1
        kind = reason_kind(reason)
        self.result.dead_letter_reasons[kind] = self.result.dead_letter_reasons.get(kind, 0) + 1

    async def _shift_and_pace(self, record: dict) -> None:
        if not (self.options.rebase_to_now or self.options.speed):
            return
        event = parse_iso(record["created_at"])
        if self.options.rebase_to_now and self.event_shift is not None:
            event = event + self.event_shift
            record["created_at"] = iso(event)
        if self.options.speed:
            if self.pace_origin is None:
                self.pace_origin = (time.monotonic(), event)
            wall0, event0 = self.pace_origin
            ahead = (event - event0).total_seconds() / self.options.speed - (time.monotonic() - wall0)
            if ahead > 0.005:
                await asyncio.sleep(ahead)

    def _remember_skipped(self, item: Row | BadRow, mapping: ColumnMapping) -> None:
        # Rows before the checkpoint were counted then; only the dedupe window needs them.
        if isinstance(item, Row):
            raw = mapping.to_raw(item.cells)
            if raw["id"]:
                self.recent.check(str(raw["id"]), str(raw["text"]), item.line)

    def _count_already_sent(self, item: Row | BadRow, mapping: ColumnMapping) -> None:
        if self.already_sent[item.line] == "produced":
            self.result.produced += 1
            self._remember_skipped(item, mapping)
        else:
            self.result.dead_lettered += 1

    def _write_checkpoint(self, producer: RawProducer, complete: bool) -> None:
        # Where a resume starts looking for rows sent after this checkpoint: past our own
        # acknowledged records, and at least where the topics ended when the run began.
        offsets = {topic: {p: max(o, producer.acked_offsets.get(topic, {}).get(int(p), 0))
                           for p, o in parts.items()}
                   for topic, parts in self.start_offsets.items()}
        write_json_atomic(self.ckpt_path, {
            "file": str(self.path.resolve()), "sha256": self.sha256, "complete": complete,
            "updated_at": iso(utc_now()), "offsets": offsets,
            "event_shift_s": self.event_shift.total_seconds() if self.event_shift else None,
            "result": asdict(self.result),
        })


async def _end_offsets(settings: Settings) -> dict[str, dict[str, int]]:
    ends = await topic_end_offsets(settings.bootstrap_servers, [settings.topic_raw, settings.topic_dlq])
    offsets: dict[str, dict[str, int]] = {}
    for tp, end in ends.items():
        offsets.setdefault(tp.topic, {})[str(tp.partition)] = end
    return offsets


async def _lines_sent_after_checkpoint(settings: Settings, run_id: str,
                                       offsets: dict[str, dict[str, int]]) -> dict[int, str]:
    """Lines of this run that reached Kafka after the last checkpoint (before a crash)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        starts = {TopicPartition(t, int(p)): o for t, parts in offsets.items() for p, o in parts.items()}
        consumer.assign(list(starts))
        for tp, offset in starts.items():
            consumer.seek(tp, offset)
        ends = await consumer.end_offsets(list(starts))
        sent: dict[int, str] = {}
        remaining = {tp for tp in starts if starts[tp] < ends[tp]}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, messages in batches.items():
                for message in messages:
                    _note_sent(message.value, run_id, tp.topic == settings.topic_raw, sent)
                    if message.offset + 1 >= ends[tp]:
                        remaining.discard(tp)
        return sent
    finally:
        await consumer.stop()


def _note_sent(value: bytes, run_id: str, is_raw: bool, sent: dict[int, str]) -> None:
    try:
        record = json.loads(value)
    except ValueError:
        return
    if record.get("run_id") != run_id:
        return
    line = str(record.get("source", "")).rpartition(":")[2]
    if line.isdigit():
        sent[int(line)] = "produced" if is_raw else "dead_lettered"
