"""The records that travel between stages, and their JSON encoding.

Shapes are defined once, as JSON Schema in ``schemas/``; these dataclasses mirror them
for typed code, and :func:`validate` checks a dict against the schema. Records travel
as UTF-8 JSON bytes keyed by the tweet id.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import OrderedDict
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from importlib import resources
from typing import Any, Callable, Generic, Mapping, TypeVar

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

R = TypeVar("R", bound="Record")
T = TypeVar("T")
MAX_DEAD_LETTER_PAYLOAD = 200_000
LIVE_TIMELINE = "live"
REPLAY_PREFIX = "replay-"         # connectors/csv_replay.new_run_id


def timeline_of(run_id: str) -> str:
    """The timeline a record belongs to: its replay run, or the live one.

    Each replay is its own history (its dedup state, windows, baselines and alerts), so a
    dump of another year never changes another run's results and the same dump replayed
    again gives the same ones. Every live connector feeds the one live timeline.
    """
    return run_id if run_id.startswith(REPLAY_PREFIX) else LIVE_TIMELINE


class PerTimeline(Generic[T]):
    """One ``T`` per timeline (a stage's dedup state, a signals engine), least recently
    used first. A replay's timeline is over when its dump has been read, but nothing
    tells the stage so: past ``max_replays`` replays the one used least recently is
    dropped, so state stays bounded however many dumps an installation replays. The
    live timeline is never dropped."""

    def __init__(self, make: Callable[[str], T], max_replays: int,
                 items: Mapping[str, T] | None = None) -> None:
        self._make, self._max_replays = make, max_replays
        self.items: OrderedDict[str, T] = OrderedDict(items or {})

    def get(self, timeline: str) -> tuple[T, list[T]]:
        """The timeline's value (made if new) and the values dropped to make room."""
        value = self.items.get(timeline)
        if value is None:
            value = self.items[timeline] = self._make(timeline)
        self.items.move_to_end(timeline)
        replays = [name for name in self.items if name != LIVE_TIMELINE]  # oldest first
        dropped = [self.items.pop(name) for name in replays[:max(0, len(replays) - self._max_replays)]]
        return value, dropped


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso(dt: datetime) -> str:
    """ISO-8601 UTC with milliseconds and a Z, the one time format of the records."""
    return dt.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    """Parse an ISO-8601 timestamp; naive times are taken as UTC. Raises ValueError."""
    dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


@dataclass(kw_only=True)
class Record:
    SCHEMA = ""

    def to_dict(self) -> dict[str, Any]:
        # Shallow: list fields are shared, not copied (records are serialised at once;
        # dataclasses.asdict's deep copy cost ~25 us a tweet on the hot path).
        return {name: getattr(self, name) for name in self._field_names()}

    @classmethod
    def _field_names(cls) -> tuple[str, ...]:
        names = cls.__dict__.get("_FIELD_NAMES")
        if names is None:
            names = tuple(f.name for f in fields(cls))
            setattr(cls, "_FIELD_NAMES", names)
        return names

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls: type[R], data: Mapping[str, Any]) -> R:
        return cls(**{name: data[name] for name in cls._field_names() if name in data})

    @classmethod
    def from_json(cls: type[R], payload: bytes) -> R:
        return cls.from_dict(json.loads(payload))


@dataclass(kw_only=True)
class RawTweet(Record):
    SCHEMA = "raw_tweet"
    id: str
    text: str
    created_at: str
    run_id: str
    source: str
    ingested_at: str
    author: str = ""
    author_name: str = ""
    author_location: str = ""
    lang: str = ""
    in_reply_to: str = ""
    retweet_count: int = 0
    favorite_count: int = 0
    is_retweet: bool = False


@dataclass(kw_only=True)
class CleanTweet(RawTweet):
    SCHEMA = "clean_tweet"
    text_clean: str
    location: str = ""
    region_code: str = ""
    mentions: list[str] = field(default_factory=list)
    hashtags: list[str] = field(default_factory=list)
    url_domains: list[str] = field(default_factory=list)
    emojis: list[str] = field(default_factory=list)
    text_scrubbed: str = ""
    pii_kinds: list[str] = field(default_factory=list)
    duplicate_of: str = ""
    dedup_kind: str = "original"
    relevance: str = "customer"
    brand: str = ""


@dataclass(kw_only=True)
class ClassifiedTweet(CleanTweet):
    SCHEMA = "classified_tweet"
    sentiment: str
    priority: int
    topic: str
    team: str
    confidence: float
    tier: str
    provider: str
    model: str
    reason: str
    classified_at: str
    version: int


@dataclass(kw_only=True)
class DeadLetter(Record):
    SCHEMA = "dead_letter"
    dead_letter_id: str
    at: str
    run_id: str
    stage: str
    reason: str
    tweet_id: str
    source: str
    payload: str

    @classmethod
    def build(cls, *, stage: str, reason: str, payload: str | bytes, run_id: str = "",
              tweet_id: str = "", source: str = "") -> "DeadLetter":
        if isinstance(payload, bytes):
            payload = payload.decode("utf-8", errors="replace")
        if len(payload) > MAX_DEAD_LETTER_PAYLOAD:  # keep dead letters under Kafka's 1 MB cap
            payload = payload[:MAX_DEAD_LETTER_PAYLOAD] + f"... [truncated from {len(payload)} chars]"
        # Deterministic id: the same bad record dead-lettered twice (a redelivery after
        # a crash) is stored once, so dead-letter counts reconcile.
        digest = hashlib.sha256(
            "\x1f".join([run_id, stage, source, tweet_id, payload]).encode()).hexdigest()[:32]
        return cls(dead_letter_id=digest, at=iso(utc_now()), run_id=run_id, stage=stage,
                   reason=reason, tweet_id=tweet_id, source=source, payload=payload)


@dataclass(kw_only=True)
class CleanDecision(Record):
    SCHEMA = "clean_decision"
    decision_id: str
    at: str
    run_id: str
    tweet_id: str
    created_at: str
    decision: str
    action: str
    duplicate_of: str = ""
    detail: str = ""

    @classmethod
    def build(cls, tweet: RawTweet, decision: str, action: str, duplicate_of: str = "",
              detail: str = "") -> "CleanDecision":
        digest = hashlib.sha256("\x1f".join([tweet.run_id, tweet.id, decision]).encode()).hexdigest()[:32]
        return cls(decision_id=digest, at=iso(utc_now()), run_id=tweet.run_id, tweet_id=tweet.id,
                   created_at=tweet.created_at, decision=decision, action=action,
                   duplicate_of=duplicate_of, detail=detail)


@dataclass(kw_only=True)
class ProviderCall(Record):
    SCHEMA = "provider_call"
    call_id: str
    at: str
    run_id: str
    tier: str
    provider: str
    model: str
    tweets: int
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    outcome: str = "ok"
    error: str = ""


@dataclass(kw_only=True)
class Alert(Record):
    """A weak-signal alert (stream_app/signals): one incident, updated until it resolves.
    Times are event times; ``version`` orders the updates of one alert."""
    alert_id: str
    detector: str
    key: str
    location: str
    severity: str
    status: str                 # firing, resolved, withdrawn (a replay's late data disproved it)
    window_start: str
    window_end: str
    observed: float
    expected: float
    score: float
    example_ids: list[str]
    message: str
    first_seen: str
    updated_at: str
    resolved_at: str | None = None
    version: int = 0
    run_id: str = ""            # the alert's timeline: a replay's run id, or ``live``
    detectors: list[str] = field(default_factory=list)  # every detector of the incident
    severity_level: int = 0     # 1-10 (signals.alerts.severity_level); 0: stored before it existed
    authors: int = 0            # distinct people complaining in the incident
    terms: list[str] = field(default_factory=list)  # what distinguishes it from its baseline
    summary: str = ""           # one sentence: where, complaints, people, ratio, terms, start
    representative_ids: list[str] = field(default_factory=list)    # its main cluster's quotes
    representative_texts: list[str] = field(default_factory=list)  # their text_scrubbed (no PII)
    topic_mix: dict[str, int] = field(default_factory=dict)        # topic -> tweets
    sentiment_mix: dict[str, int] = field(default_factory=dict)    # sentiment -> tweets


def reason_kind(reason: str) -> str:
    """The kind of a dead-letter reason, without its details, for counts and metric labels.

    "unparsable created_at 'hier soir'" -> "unparsable created_at"; "schema: id: ..." -> "schema".
    """
    return reason.split(":")[0].split(" '")[0].strip()[:40] or "unknown"


# --------------------------------------------------------------------------- validation

@lru_cache(maxsize=1)
def _registry() -> Registry:
    folder = resources.files("stream_app.schemas")
    resources_ = []
    for entry in folder.iterdir():
        if entry.name.endswith(".schema.json"):
            schema = json.loads(entry.read_text("utf-8"))
            resources_.append((schema["$id"], Resource.from_contents(schema)))
    return Registry().with_resources(resources_)


@lru_cache(maxsize=None)
def _validator(schema_name: str) -> Draft202012Validator:
    uri = f"https://dallosh.invalid/schemas/{schema_name}.schema.json"
    schema = _registry().contents(uri)
    return Draft202012Validator(schema, registry=_registry())


def schema_errors(schema_name: str, data: Any) -> list[str]:
    """Human-readable violations of ``schemas/<schema_name>.schema.json`` (empty: valid)."""
    errors = sorted(_validator(schema_name).iter_errors(data), key=lambda e: list(e.path))
    return [f"{'.'.join(map(str, e.path)) or '(record)'}: {e.message}" for e in errors]


def compile_flat_schema(schema_name: str) -> Callable[[dict], list[str]]:
    """A fast validator generated from a schema's flat properties (type, minLength,
    maxLength, pattern, minimum, required): one straight-line Python function.

    The hot paths (replay at 30k+ rows/s, the clean stage) cannot afford a full JSON
    Schema validation per record (~100 us); a test proves this function accepts and
    rejects exactly what the full validator does on the schema's own file.
    """
    schema = _registry().contents(f"https://dallosh.invalid/schemas/{schema_name}.schema.json")
    # Exact type tests: JSON values are exactly str/int/bool/float, and `type(v) is int`
    # already rejects True, which JSON Schema does not count as an integer.
    types = {"string": "type(v) is str", "integer": "type(v) is int",
             "boolean": "type(v) is bool", "number": "type(v) in (int, float)"}
    lines = ["def check(d):", "    errors = []"]
    for name in schema.get("required", []):
        lines.append(f"    if {name!r} not in d: errors.append('{name}: is required')")
    patterns: dict[str, re.Pattern] = {}
    for name, rule in schema.get("properties", {}).items():
        kind = rule.get("type")
        if kind not in types:
            continue
        value_checks = []
        if "minLength" in rule:
            value_checks.append((f"len(v) < {rule['minLength']}", f"'{name}: is too short'"))
        if "maxLength" in rule:
            value_checks.append((f"len(v) > {rule['maxLength']}",
                                 f"f'{name}: is too long ({{len(v)}} > {rule['maxLength']} characters)'"))
        if "pattern" in rule:
            pattern_name = f"P_{len(patterns)}"
            patterns[pattern_name] = re.compile(rule["pattern"])
            value_checks.append((f"not {pattern_name}.search(v)",
                                 f"'{name}: does not match the schema pattern'"))
        if "minimum" in rule:
            value_checks.append((f"v < {rule['minimum']}", f"f'{name}: {{v}} is below {rule['minimum']}'"))
        lines += [f"    v = d.get({name!r}, MISSING)",
                  "    if v is not MISSING:",
                  f"        if not ({types[kind]}): errors.append(f'{name}: {{v!r}} is not of type {kind}')"]
        if value_checks:
            lines.append("        else:")
            lines += [f"            if {test}: errors.append({message})" for test, message in value_checks]
    lines.append("    return errors")
    namespace: dict[str, Any] = {"MISSING": object(), **patterns}
    exec(compile("\n".join(lines), f"<schema {schema_name}>", "exec"), namespace)
    return namespace["check"]


_raw_schema_check: Callable[[dict], list[str]] | None = None
_RAW_REQUIRED = tuple(f.name for f in fields(RawTweet)
                      if f.default is MISSING and f.default_factory is MISSING)


DEFAULT_MAX_FUTURE_SKEW_S = 3600.0  # the default of the `max_future_skew_s` setting
_future_bound: tuple[float, float, datetime] = (-1.0, 0.0, datetime.min)  # (skew, until, bound)


def future_bound(max_future_skew_s: float, _monotonic: Callable[[], float] = time.monotonic) -> datetime:
    """The latest acceptable event time: now + skew, recomputed at most once a second
    (the replayer checks 30k+ rows/s; ``datetime.now`` per row would cost a tenth of
    that). The bound is 1 s generous so a cached value is never stricter than asked."""
    global _future_bound
    skew, until, bound = _future_bound
    tick = _monotonic()
    if tick < until and skew == max_future_skew_s:
        return bound
    bound = utc_now() + timedelta(seconds=max_future_skew_s + 1.0)
    _future_bound = (max_future_skew_s, tick + 1.0, bound)
    return bound


def raw_tweet_problem(data: Any, max_future_skew_s: float = DEFAULT_MAX_FUTURE_SKEW_S) -> str | None:
    """Why a raw record cannot enter the pipeline, or None when it can.

    Shared by the connectors (which dead-letter bad rows at the source, with their line
    number) and the clean stage (which guards against any other producer). A tweet dated
    more than ``max_future_skew_s`` ahead of now (a typo, a wrong date order, a broken
    clock) would sit in the windows and the store as future data: it is refused.
    """
    if not isinstance(data, dict):
        return "not a JSON object"
    # Absent fields first, all named: a record from another producer that lacks four
    # fields must say so, not "unparsable created_at 'None'".
    missing = [name for name in _RAW_REQUIRED if data.get(name) is None]
    if missing:
        return "missing required field(s): " + ", ".join(missing)
    if not str(data.get("id") or "").strip():
        return "missing id"
    if not str(data.get("text") or "").strip():
        return "empty text"
    try:
        created_at = parse_iso(str(data.get("created_at") or ""))
    except ValueError:
        return f"unparsable created_at {str(data.get('created_at'))[:40]!r}"
    if created_at > future_bound(max_future_skew_s):
        return (f"created_at in the future: {str(data.get('created_at'))[:40]!r} is more "
                f"than {max_future_skew_s:g} s ahead of now")
    global _raw_schema_check
    if _raw_schema_check is None:
        _raw_schema_check = compile_flat_schema(RawTweet.SCHEMA)
    errors = _raw_schema_check(data)
    return "schema: " + "; ".join(errors[:3]) if errors else None
