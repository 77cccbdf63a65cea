"""X API v2 filtered stream: rules management, and the stream itself as events.

The filtered stream has no cursor. After a reconnect (and after a restart from a
checkpoint) we ask for ``backfill_minutes`` (0-5; needs Pro/Enterprise access) and the
runner's recent-ids set drops what we had already produced, so a backfilled post is
never produced twice. Without backfill, posts published while disconnected are lost:
the protocol gives no way to get them from the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncGenerator, Iterable

import httpx
import yaml

from connectors.live import metrics
from connectors.live.backoff import ReconnectPolicy
from connectors.live.stream import (Disconnected, Event, LineStream, LiveError, Malformed,
                                    OverlongLine, Post, Sleep, StreamStats, UndecodableJson,
                                    check_token_url, decode_json, error_detail, fetch_capped,
                                    iso_or_raw)

log = logging.getLogger(__name__)

NETWORK = "x"
SOURCE = "x-stream"
DEFAULT_BASE_URL = "https://api.x.com"
STREAM_PATH = "/2/tweets/search/stream"
RULES_PATH = "/2/tweets/search/stream/rules"
STREAM_PARAMS = {
    "tweet.fields": "created_at,lang,author_id,public_metrics,referenced_tweets,"
                    "in_reply_to_user_id,geo",
    "expansions": "author_id",
    "user.fields": "username,name,location",
}
REFUSALS = {
    401: "the bearer token was refused (check X_BEARER_TOKEN)",
    403: "this token's project may not use the filtered stream (X access level)",
}


@dataclass(frozen=True)
class Rule:
    value: str
    tag: str = ""

    def as_json(self) -> dict[str, str]:
        return {"value": self.value, **({"tag": self.tag} if self.tag else {})}


@dataclass
class RulesPlan:
    """What syncing the rules does (or, in a dry run, would do)."""

    add: list[Rule] = field(default_factory=list)
    delete: list[tuple[str, Rule]] = field(default_factory=list)  # (rule id, rule)
    keep: list[Rule] = field(default_factory=list)
    dry_run: bool = False

    def describe(self) -> list[str]:
        verb = "would " if self.dry_run else ""
        lines = [f"{verb}delete {r.value!r} (id {rid})" for rid, r in self.delete]
        lines += [f"{verb}add    {r.value!r}" + (f" (tag {r.tag})" if r.tag else "") for r in self.add]
        lines += [f"keep   {r.value!r}" for r in self.keep]
        return lines or ["no rules configured and none active"]


def load_rules(values: Iterable[str] = (), entries: Iterable[Any] = ()) -> list[Rule]:
    """Rules from ``--rule`` values and from a rules file's entries (strings or
    ``{value, tag}`` mappings). Duplicates are dropped, order kept."""
    rules: list[Rule] = [Rule(v.strip()) for v in values if v.strip()]
    for entry in entries:
        if isinstance(entry, str) and entry.strip():
            rules.append(Rule(entry.strip()))
        elif isinstance(entry, dict) and str(entry.get("value") or "").strip():
            rules.append(Rule(str(entry["value"]).strip(), str(entry.get("tag") or "").strip()))
        else:
            raise LiveError(f"bad rule entry {entry!r}: expected a string or {{value, tag}}")
    return list(dict.fromkeys(rules))


def read_rules_file(path: Path) -> list[Any]:
    """The entries of a YAML rules file: a list of strings or ``{value, tag}`` mappings."""
    try:
        entries = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LiveError(f"rules file not found: {path}") from None
    except (OSError, yaml.YAMLError) as exc:
        raise LiveError(f"rules file {path} is not readable YAML: {exc}") from None
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise LiveError(f"rules file {path} must be a YAML list of rules")
    return entries


class XStream:
    """The filtered stream as :class:`Post` / :class:`Malformed` events."""

    network = NETWORK
    source = SOURCE

    def __init__(self, bearer_token: str, *, base_url: str = DEFAULT_BASE_URL,
                 stall_timeout: float = 30.0, backfill_minutes: int = 0,
                 policy: ReconnectPolicy | None = None, sleep: Sleep = asyncio.sleep,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        if not bearer_token:
            raise LiveError("no X bearer token: set X_BEARER_TOKEN")
        if not 0 <= backfill_minutes <= 5:
            raise LiveError(f"backfill_minutes must be 0-5 (X's limit), not {backfill_minutes}")
        check_token_url(base_url, "X API base URL")
        self.stats = StreamStats()
        self._backfill_minutes = backfill_minutes
        self._resuming = False
        self._last: dict[str, str] = {}
        self._client = httpx.AsyncClient(
            base_url=base_url, transport=transport, timeout=30.0,
            headers={"Authorization": f"Bearer {bearer_token}",
                     "User-Agent": "dallosh-stream/0.1"})
        self._lines = LineStream(network=NETWORK, client=self._client,
                                 policy=policy or ReconnectPolicy(), stall_timeout=stall_timeout,
                                 stats=self.stats, sleep=sleep,
                                 describe_refusal=_describe_refusal)

    async def __aenter__(self) -> "XStream":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._client.aclose()

    # ------------------------------------------------------------------ rules

    async def active_rules(self) -> list[tuple[str, Rule]]:
        response = await fetch_capped(self._client, "GET", RULES_PATH)
        body = self._checked(response, "reading the stream rules")
        return [(str(r["id"]), Rule(str(r["value"]), str(r.get("tag") or "")))
                for r in body.get("data") or []]

    async def sync_rules(self, wanted: list[Rule], *, dry_run: bool = False) -> RulesPlan:
        """Make the active rules equal ``wanted`` (matched on value and tag).

        In a dry run the changes go to X with ``dry_run=true``: X validates them (a bad
        rule is reported) and changes nothing.
        """
        active = await self.active_rules()
        plan = RulesPlan(dry_run=dry_run)
        active_set = {rule for _, rule in active}
        plan.delete = [(rid, rule) for rid, rule in active if rule not in wanted]
        plan.keep = [rule for rule in wanted if rule in active_set]
        plan.add = [rule for rule in wanted if rule not in active_set]
        params = {"dry_run": "true"} if dry_run else {}
        body: dict[str, Any]
        if plan.delete:
            body = {"delete": {"ids": [rid for rid, _ in plan.delete]}}
            self._checked(await fetch_capped(self._client, "POST", RULES_PATH, params=params,
                                             json=body), "deleting stream rules")
        # In a dry run the deletes are not applied, so X would call a re-tagged rule a
        # duplicate of its active self: only validate the new values.
        active_values = {rule.value for rule in active_set}
        to_add = [r for r in plan.add if not (dry_run and r.value in active_values)]
        if to_add:
            body = {"add": [rule.as_json() for rule in to_add]}
            self._checked(await fetch_capped(self._client, "POST", RULES_PATH, params=params,
                                             json=body), "adding stream rules")
        return plan

    @staticmethod
    def _checked(response: httpx.Response, doing: str) -> dict[str, Any]:
        try:
            body = decode_json(response.content)
        except UndecodableJson:
            body = {}
        if response.status_code >= 400:
            raise LiveError(f"X API, {doing}: HTTP {response.status_code}: "
                            f"{error_detail(response.text)}")
        errors = body.get("errors") if isinstance(body, dict) else None
        if errors:  # X answers 200/201 with per-rule errors (invalid or duplicate rule)
            details = "; ".join(f"{e.get('title')}: {e.get('value') or e.get('details') or ''}"
                                for e in errors if isinstance(e, dict))
            raise LiveError(f"X API, {doing}: {details}")
        return body if isinstance(body, dict) else {}

    # ------------------------------------------------------------------ stream

    def restore(self, position: dict[str, Any]) -> None:
        # A restart is a reconnect as far as X is concerned: ask for the backfill at once.
        self._resuming = True
        self._last = {k: str(v) for k, v in position.items() if k in ("last_id", "last_created_at")}

    def position(self) -> dict[str, Any]:
        return dict(self._last)

    def _request(self, attempt: int) -> httpx.Request:
        params = dict(STREAM_PARAMS)
        if self._backfill_minutes and (attempt or self._resuming):
            params["backfill_minutes"] = str(self._backfill_minutes)
        return self._client.build_request("GET", STREAM_PATH, params=params,
                                          headers={"Accept-Encoding": "identity"})

    async def events(self) -> AsyncGenerator[Event, None]:
        async with contextlib.aclosing(self._lines.lines(self._request)) as items:
            async for item in items:
                event = self._event_of(item)
                if isinstance(event, Post) and event.id:
                    self._last = {"last_id": event.id, "last_created_at":
                                  str(event.payload["data"].get("created_at") or "")}
                if event is not None:
                    yield event

    def _event_of(self, item: Any) -> Event | None:
        if isinstance(item, Disconnected):
            fragment = item.fragment
            return Malformed("truncated line at disconnect", _text(fragment)) if fragment.strip() else None
        if isinstance(item, OverlongLine):
            return item.event()
        return self._parse(item) if isinstance(item, bytes) else None

    def _parse(self, line: bytes) -> Event | None:
        if not line.strip():
            self.stats.keepalives += 1
            metrics.KEEPALIVES.labels(NETWORK).inc()
            return None
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            return Malformed("invalid utf-8", _text(line))
        try:
            message = decode_json(text)
        except UndecodableJson as exc:
            return Malformed(exc.reason, text)
        if not isinstance(message, dict):
            return Malformed("not a JSON object", text)
        if "data" not in message and message.get("errors"):
            # Operational messages (e.g. "operational-disconnect" just before X closes).
            self.stats.control += 1
            log.warning("x: stream message: %s", error_detail(text))
            return None
        if not isinstance(message.get("data"), dict):
            return Malformed("no post in message", text)
        return Post(id=str(message["data"].get("id") or "").strip(), payload=message, raw=text)

    # ------------------------------------------------------------------ conversion

    def to_raw(self, post: Post) -> dict[str, Any]:
        data = post.payload["data"]
        users = {str(u.get("id")): u for u in (post.payload.get("includes") or {}).get("users") or []
                 if isinstance(u, dict)}
        user = users.get(str(data.get("author_id")), {})
        refs = [r for r in data.get("referenced_tweets") or [] if isinstance(r, dict)]
        replied_to = next((str(r.get("id")) for r in refs if r.get("type") == "replied_to"), "")
        counts = data.get("public_metrics") or {}
        lang = str(data.get("lang") or "")
        return {
            "id": post.id,
            "text": str(data.get("text") or ""),
            "created_at": iso_or_raw(data.get("created_at")),
            "author": str(user.get("username") or data.get("author_id") or ""),
            "author_name": str(user.get("name") or ""),
            "author_location": str(user.get("location") or ""),
            "lang": "" if lang == "und" else lang,
            "in_reply_to": replied_to or str(data.get("in_reply_to_user_id") or ""),
            "retweet_count": max(0, int(counts.get("retweet_count") or 0)),
            "favorite_count": max(0, int(counts.get("like_count") or 0)),
            "is_retweet": any(r.get("type") == "retweeted" for r in refs),
        }


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _describe_refusal(status: int, detail: str) -> str:
    hint = REFUSALS.get(status)
    return f"X API refused the stream: HTTP {status}: {detail}" + (f" ({hint})" if hint else "")
