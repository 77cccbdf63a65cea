"""The signals stage through real Kafka and a real worker: the same dump replayed at
--max, at a paced --speed and with --rebase-to-now gives the same windows and alerts."""

import asyncio
import csv
import gzip
import random
from datetime import datetime, timedelta, timezone

import pytest

from connectors.csv_replay import ReplayOptions, replay_file
from stream_app.demo import WorkerProcess, wait_until_drained
from stream_app.kafka_admin import ensure_topics, pipeline_topics
from stream_app.records import parse_iso
from stream_app.storage.clickhouse import store_session
from tests.conftest import isolated_settings, read_topic

pytestmark = pytest.mark.integration
START = datetime(2024, 2, 6, 9, 0, tzinfo=timezone.utc)   # an old dump
CITIES = ("Paris", "Lille", "Nantes", "Rennes", "Nice", "Dijon")


def lyon_outage(rng: random.Random, start: datetime, outage_from: int = 120,
                calm: tuple[int, int] = (3, 5)):
    """(serial, time, text) of three hours of calm traffic over many cities from
    ``start``, a Lyon outage from minute ``outage_from`` on. Texts are short (under five
    words), so the clean stage never deduplicates them and every tweet is classified on
    its own: the run is the same however it is interleaved."""
    n = 0
    for minute in range(180):
        outage = minute >= outage_from
        for _ in range(rng.randint(*calm) + (6 if outage else 0)):
            n += 1
            t = start + timedelta(minutes=minute, seconds=rng.randint(0, 59))
            if outage and rng.random() < 0.7:
                text = rng.choice(["@free panne fibre Lyon", "@free plus internet Lyon !",
                                   "@free coupure Lyon depuis midi"])
            else:
                text = rng.choice(["@free merci {c}", "@free facture {c} ?", "@free 5G {c} top",
                                   "@free nul {c}", "@free box lente {c}"]).format(c=rng.choice(CITIES))
            yield n, t, text


def write_dump(path) -> None:
    """Three hours of 2024: calm traffic, then a Lyon outage in the last hour."""
    rows = [[str(10**18 + n), t.strftime("%Y-%m-%dT%H:%M:%SZ"), text, f"u{n % 97}",
             f"user{n % 97}", "", "", "", "0", "0", "fr", "false"]
            for n, t, text in lyon_outage(random.Random(8), START)]
    rows.sort(key=lambda r: r[1])
    with gzip.open(path, "wt", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "created_at", "full_text", "name", "screen_name", "user_location",
                         "in_reply_to_screen_name", "in_reply_to_status_id", "retweet_count",
                         "favorite_count", "lang", "retweeted"])
        writer.writerows(rows)


def run_once(tmp_path, bootstrap, name, dump, options):
    tag = f"sig{name}"
    settings = isolated_settings(tmp_path / name, bootstrap, topic_windows=f"{tag}.windows")
    asyncio.run(ensure_topics(settings.bootstrap_servers, pipeline_topics(settings) +
                              [settings.topic_windows], settings.partitions))
    worker = WorkerProcess(settings)
    try:
        replay = asyncio.run(replay_file(dump, settings, options))
        assert replay.reconciles
        asyncio.run(wait_until_drained(settings, worker, print, timeout_s=180))
    finally:
        worker.stop()
    windows = {}
    for _, window in read_topic(settings.bootstrap_servers, settings.topic_windows):
        assert window.pop("run_id") == replay.run_id   # each replay is its own timeline
        windows[(window["key"], window["window_start"])] = window   # the last revision wins
    with store_session(settings.clickhouse_dsn) as client:
        result = client.query(
            "SELECT detector, key, location, severity, status, window_start, first_seen, resolved_at, "
            "observed, expected, example_ids FROM dallosh.alerts FINAL WHERE status != 'withdrawn' "
            "ORDER BY first_seen, key")
        alerts = [dict(zip(result.column_names, row)) for row in result.result_rows]
    return windows, alerts


def shifted(windows, alerts, shift: timedelta):
    def move(text: str) -> str:
        return (parse_iso(text) - shift).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    moved_windows = {(k, move(s)): w | {"window_start": move(w["window_start"]),
                                         "window_end": move(w["window_end"])}
                     for (k, s), w in windows.items()}
    moved_alerts = [a | {c: a[c] - shift for c in ("window_start", "first_seen", "resolved_at")
                         if a[c] is not None} for a in alerts]
    return moved_windows, moved_alerts


@pytest.fixture(scope="module")
def dump_and_max_run(tmp_path_factory, kafka_bootstrap):
    folder = tmp_path_factory.mktemp("signals")
    dump = folder / "lyon.csv.gz"
    write_dump(dump)
    return folder, dump, run_once(folder, kafka_bootstrap, "max", dump, ReplayOptions(show_progress=False))


@pytest.mark.slow
def test_replays_at_max_and_paced_speed_give_the_same_windows_and_alerts(dump_and_max_run,
                                                                         kafka_bootstrap):
    folder, dump, fast = dump_and_max_run
    windows, alerts = fast
    assert len(windows) > 300
    assert [(a["location"], a["status"]) for a in alerts] == [("Lyon", "firing")]
    paced = run_once(folder, kafka_bootstrap, "paced", dump,
                     ReplayOptions(speed=3600.0, show_progress=False))
    assert paced == fast


@pytest.mark.slow
def test_a_rebased_replay_gives_the_same_windows_and_alerts_shifted(dump_and_max_run, kafka_bootstrap):
    folder, dump, fast = dump_and_max_run
    windows, alerts = run_once(folder, kafka_bootstrap, "rebased", dump,
                               ReplayOptions(rebase_to_now=True, show_progress=False))
    first = min(parse_iso(w["window_start"]) for w in windows.values() if w["key"] == "all")
    shift = first - START
    assert shift > timedelta(days=300)
    assert shift % timedelta(minutes=5) == timedelta(0), (
        "--rebase-to-now must shift event times by whole 5-minute steps, or the rebased "
        "tweets fall into other one-minute windows and five-minute steps than the original "
        f"ones (shift here: {shift})")
    assert shifted(windows, alerts, shift) == fast


@pytest.mark.slow
def test_the_bundled_demo_outage_is_exactly_one_alert_in_bordeaux_and_is_printed(tmp_path,
                                                                                   kafka_bootstrap):
    from stream_app.demo import run_demo
    settings = isolated_settings(tmp_path / "data", kafka_bootstrap,
                                 topic_windows=f"demo{tmp_path.name[-6:]}.windows")
    printed = []
    result = run_demo(settings, say=printed.append, timeout_s=240)
    assert [(a["location"], a["key"], a["status"]) for a in result.alerts] == \
        [("Bordeaux", "location:Bordeaux", "resolved")]
    alert_lines = [line for line in printed if line.startswith("Alerts:")]
    assert alert_lines and "Bordeaux" in alert_lines[0] and alert_lines[0].startswith("Alerts: 1")


def test_signals_state_is_read_back_from_its_changelog_latest_value_per_key(kafka_bootstrap, tmp_path):
    """What a restarted signals agent rebuilds its engine from (the stage keeps its own
    changelog instead of a Faust table: see stream_app/signals/agent.py)."""
    import json

    from aiokafka import AIOKafkaProducer

    from stream_app.signals.agent import read_state, state_topic_name
    settings = isolated_settings(tmp_path / "data", kafka_bootstrap)
    assert asyncio.run(read_state(settings)) == {}  # first start: created empty

    async def write() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for key, value in [("all|100", {"n": 1}), ("__partition__|0", {"time": 6000.0}),
                               ("all|100", {"n": 2})]:
                await producer.send_and_wait(state_topic_name(settings), json.dumps(value).encode(),
                                             key=key.encode())
        finally:
            await producer.stop()

    asyncio.run(write())
    assert asyncio.run(read_state(settings)) == {"all|100": {"n": 2}, "__partition__|0": {"time": 6000.0}}


def test_a_burst_minute_of_state_fits_kafka_messages_and_reads_back_whole(kafka_bootstrap, tmp_path):
    """6,000 spam tweets in one minute with random words (1.9 MiB as one record, past
    Kafka's 1 MB limit): written as chunks through the real broker, each under the limit,
    and the cell read back equal to what was written."""
    import json
    import random
    import string

    from aiokafka import AIOKafkaProducer

    from stream_app.signals.agent import read_state, restore_engines, state_key, state_records, state_topic_name
    from stream_app.signals.windows import TweetEvent, WindowStore

    rng = random.Random(15)
    store = WindowStore()
    for i in range(6000):
        words = tuple(sorted({"".join(rng.choices(string.ascii_lowercase, k=8)) for _ in range(12)}))
        store.add(TweetEvent(id=str(1_900_000_000_000_000_000 + i), time=1_767_571_200.0 + i / 100,
                             topic="outage", location="Lyon", negative=True, high=False,
                             author=f"spam_account_{i}", terms=words, timeline="replay-burst"))
    cell = store.minutes["all"][int(1_767_571_200 // 60)]
    value = cell.to_dict()
    assert len(json.dumps(value)) > 1_000_000            # one record would be refused
    name = state_key("replay-burst", f"all|{int(1_767_571_200 // 60)}")
    records = state_records(name, value)
    assert len(records) > 2
    settings = isolated_settings(tmp_path / "data", kafka_bootstrap)
    asyncio.run(read_state(settings))                    # creates the compacted topic

    async def write() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)  # default 1 MB request cap
        await producer.start()
        try:
            for key, record in records:
                payload = json.dumps(record).encode()
                assert len(payload) < 1_000_000
                await producer.send_and_wait(state_topic_name(settings), payload, key=key.encode())
        finally:
            await producer.stop()

    asyncio.run(write())
    engines = restore_engines(settings, asyncio.run(read_state(settings)))
    restored = engines["replay-burst"].store.minutes["all"][int(1_767_571_200 // 60)]
    assert restored.to_dict() == value


def test_a_live_alert_resolves_once_the_live_stream_goes_quiet(kafka_bootstrap, tmp_path):
    """Live tweets (run ids `stream-...`) end with a Lyon outage, then nothing more arrives:
    the heartbeat closes the live timeline's windows by the wall clock, and the alert
    published on `alerts` ends `resolved` instead of firing forever."""
    import time as wall
    from datetime import datetime as dt

    from connectors.raw_producer import RawProducer
    from stream_app.records import iso

    settings = isolated_settings(tmp_path / "data", kafka_bootstrap, signals_heartbeat_s=1)
    asyncio.run(ensure_topics(settings.bootstrap_servers, pipeline_topics(settings),
                              settings.partitions))
    start = dt.fromtimestamp(wall.time(), timezone.utc) - timedelta(minutes=50, hours=3)
    records = [{"id": str(10**18 + n), "text": text, "created_at": iso(when),
                "run_id": "stream-x-test", "source": "x", "ingested_at": iso(when),
                "author": f"u{n % 97}"}
               for n, when, text in lyon_outage(random.Random(17), start, outage_from=150)]

    async def produce() -> None:
        async with RawProducer(settings) as producer:
            for record in records:
                await producer.send_raw(record)

    worker = WorkerProcess(settings)
    try:
        asyncio.run(produce())
        asyncio.run(wait_until_drained(settings, worker, print, timeout_s=180))
        deadline, statuses = wall.monotonic() + 60, {}
        while wall.monotonic() < deadline and "resolved" not in statuses.values():
            for _, alert in read_topic(settings.bootstrap_servers, settings.topic_alerts):
                statuses[(alert["run_id"], alert["location"])] = alert["status"]
            wall.sleep(1)
    finally:
        worker.stop()
    assert statuses == {("live", "Lyon"): "resolved"}, statuses
