"""The records that travel between stages, and their JSON encoding.

Shapes are defined once, as JSON Schema in ``schemas/``; these dataclasses mirror them
for typed code, and :func:`validate` checks a dict against the schema. Records travel
as UTF-8 JSON bytes keyed by the tweet id.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from functools import lru_cache
from importlib import resources
from typing import Any, Callable, Mapping, TypeVar

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

R = TypeVar("R", bound="Record")


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
        return asdict(self)

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls: type[R], data: Mapping[str, Any]) -> R:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

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
        # Deterministic id: the same bad record dead-lettered twice (a redelivery after
        # a crash) is stored once, so dead-letter counts reconcile.
        digest = hashlib.sha256(
            "\x1f".join([run_id, stage, source, tweet_id, payload]).encode()).hexdigest()[:32]
        return cls(dead_letter_id=digest, at=iso(utc_now()), run_id=run_id, stage=stage,
                   reason=reason, tweet_id=tweet_id, source=source, payload=payload)


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


def _property_checks(schema_name: str) -> list[Callable[[dict], str | None]]:
    """Fast checks compiled from a schema's flat properties (type, length, pattern,
    minimum, required). The hot paths (replay at 30k+ rows/s, the clean stage) cannot
    afford a full JSON Schema validation per record (~100 us); a test proves these
    checks agree with the validator on the schema's own file."""
    schema = _registry().contents(f"https://dallosh.invalid/schemas/{schema_name}.schema.json")
    checks: list[Callable[[dict], str | None]] = []
    for name in schema.get("required", []):
        checks.append(lambda d, n=name: None if n in d else f"{n}: is required")
    types = {"string": (str,), "integer": (int,), "boolean": (bool,), "number": (int, float)}
    for name, rule in schema.get("properties", {}).items():
        expected = types.get(rule.get("type", ""))
        pattern = re.compile(rule["pattern"]) if "pattern" in rule else None

        def check(d: dict, n: str = name, r: dict = rule, t: tuple | None = expected,
                  p: re.Pattern | None = pattern) -> str | None:
            if n not in d:
                return None
            v = d[n]
            if t is not None and (not isinstance(v, t) or (bool not in t and isinstance(v, bool))):
                return f"{n}: {v!r} is not of type {r['type']!r}"
            if isinstance(v, str):
                if len(v) < r.get("minLength", 0):
                    return f"{n}: is too short"
                if len(v) > r.get("maxLength", len(v)):
                    return f"{n}: is too long ({len(v)} > {r['maxLength']} characters)"
                if p is not None and not p.search(v):
                    return f"{n}: does not match {r['pattern']!r}"
            if "minimum" in r and isinstance(v, (int, float)) and v < r["minimum"]:
                return f"{n}: {v} is less than the minimum of {r['minimum']}"
            return None
        checks.append(check)
    return checks


_RAW_CHECKS: list[Callable[[dict], str | None]] = []


def raw_tweet_problem(data: Any) -> str | None:
    """Why a raw record cannot enter the pipeline, or None when it can.

    Shared by the connectors (which dead-letter bad rows at the source, with their line
    number) and the clean stage (which guards against any other producer).
    """
    if not isinstance(data, dict):
        return "not a JSON object"
    if not str(data.get("id") or "").strip():
        return "missing id"
    if not str(data.get("text") or "").strip():
        return "empty text"
    try:
        parse_iso(str(data.get("created_at") or ""))
    except ValueError:
        return f"unparsable created_at {str(data.get('created_at'))[:40]!r}"
    if not _RAW_CHECKS:
        _RAW_CHECKS.extend(_property_checks(RawTweet.SCHEMA))
    errors = [e for e in (check(data) for check in _RAW_CHECKS) if e]
    return "schema: " + "; ".join(errors[:3]) if errors else None
