"""Mastodon, the second live network: hashtag (or public) timelines of one instance,
streamed as Server-Sent Events.

Why Mastodon rather than Bluesky Jetstream: it needs nothing beyond httpx and the
standard library (SSE is plain HTTP streaming; Jetstream is WebSocket, a new
dependency), hashtag streams are exactly brand monitoring (#free, #freebox), and large
French-speaking instances exist (mastodon.social, piaille.fr, mamot.fr). Jetstream's
exact ``cursor`` would make resume trivial; Mastodon's REST API makes it good enough:

Resume. Mastodon's SSE has no ``Last-Event-ID``. After every (re)connect, once the
stream answered 200 and before reading its events, we page the REST timeline forward
from the highest status id already taken (``min_id``, not ``since_id``: ``since_id``
returns the *newest* page and would skip a gap longer than one page). Statuses posted
during the backfill wait in the stream; whatever arrives twice is skipped by the
runner's recent-ids set. The highest id per timeline is checkpointed, so a restart
resumes the same way. Limit: ids follow creation time, so a federated status that
reaches the instance late may sort below the checkpoint and be missed by a backfill
(it is still received live while connected).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any, AsyncGenerator, Callable, Sequence
from urllib.parse import quote, urlsplit

import httpx

from connectors.live import metrics
from connectors.live.backoff import ReconnectPolicy
from connectors.live.stream import (DEAD_LETTER_HEAD_BYTES, MAX_LINE_BYTES, Connected,
                                    Disconnected, Event, LineStream, LiveError, Malformed,
                                    OverlongLine, Post, Sleep, StreamStats, UndecodableJson,
                                    check_token_url, decode_json, fetch_capped, iso_or_raw)

log = logging.getLogger(__name__)

NETWORK = "mastodon"
DEFAULT_INSTANCE = "https://mastodon.social"
PAGE_SIZE = 40  # the most Mastodon returns per timeline page


@dataclass(frozen=True)
class Timeline:
    tag: str = ""  # empty: the public timeline
    local: bool = False

    @property
    def key(self) -> str:
        return (f"hashtag:{self.tag}" if self.tag else "public") + (":local" if self.local else "")

    def stream_path(self) -> tuple[str, dict[str, str]]:
        suffix = "/local" if self.local else ""
        if self.tag:
            return f"/api/v1/streaming/hashtag{suffix}", {"tag": self.tag}
        return f"/api/v1/streaming/public{suffix}", {}

    def rest_path(self) -> tuple[str, dict[str, str]]:
        params = {"local": "true"} if self.local else {}
        if self.tag:
            return f"/api/v1/timelines/tag/{quote(self.tag, safe='')}", params
        return "/api/v1/timelines/public", params


class MastodonStream:
    """Statuses of one instance's timelines as :class:`Post` / :class:`Malformed` events."""

    network = NETWORK

    def __init__(self, instance_url: str = DEFAULT_INSTANCE, *, tags: Sequence[str] = (),
                 local: bool = False, access_token: str = "", streaming_url: str = "",
                 stall_timeout: float = 30.0, backfill_pages: int = 25,
                 policy_factory: Callable[[], ReconnectPolicy] = ReconnectPolicy,
                 sleep: Sleep = asyncio.sleep,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        parts = urlsplit(instance_url if "://" in instance_url else f"https://{instance_url}")
        if not parts.netloc:
            raise LiveError(f"not an instance URL: {instance_url!r}")
        self.host = parts.netloc
        self.source = f"mastodon:{self.host}"
        self.stats = StreamStats()
        self._base = f"{parts.scheme}://{parts.netloc}"
        self._streaming_base = (streaming_url or self._base).rstrip("/")
        if access_token:
            check_token_url(self._base, "Mastodon instance URL")
            check_token_url(self._streaming_base, "Mastodon streaming URL")
        self._backfill_pages = backfill_pages
        clean_tags = [t.strip().lstrip("#") for t in tags if t.strip().lstrip("#")]
        self.timelines = [Timeline(t, local) for t in dict.fromkeys(clean_tags)] or [Timeline(local=local)]
        self._since: dict[str, str] = {}
        headers = {"User-Agent": "dallosh-stream/0.1"}
        if access_token:
            headers["Authorization"] = f"Bearer {access_token}"
        self._client = httpx.AsyncClient(transport=transport, timeout=30.0, headers=headers)
        self._streams = {
            tl.key: LineStream(network=NETWORK, client=self._client, policy=policy_factory(),
                               stall_timeout=stall_timeout, stats=self.stats, sleep=sleep,
                               describe_refusal=self._describe_refusal)
            for tl in self.timelines}

    async def __aenter__(self) -> "MastodonStream":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._client.aclose()

    # ------------------------------------------------------------------ position

    def restore(self, position: dict[str, Any]) -> None:
        since = position.get("since_ids") or {}
        self._since.update({str(k): str(v) for k, v in since.items() if v})

    def position(self) -> dict[str, Any]:
        return {"since_ids": dict(self._since)}

    def _advance(self, timeline: str, status_id: str) -> None:
        current = self._since.get(timeline)
        if current is None or id_order(status_id) > id_order(current):
            self._since[timeline] = status_id

    # ------------------------------------------------------------------ events

    async def events(self) -> AsyncGenerator[Event, None]:
        # The position moves when the runner takes an event, never earlier, so a
        # checkpoint cannot get ahead of what was actually handed over.
        async with contextlib.aclosing(self._merged()) as events:
            async for event in events:
                if isinstance(event, Post) and event.id:
                    self._advance(event.timeline, str(event.payload["id"]))
                yield event

    async def _merged(self) -> AsyncGenerator[Event, None]:
        queue: asyncio.Queue[Event | BaseException] = asyncio.Queue(maxsize=1000)

        async def pump(timeline: Timeline) -> None:
            try:
                async for event in self._timeline_events(timeline):
                    await queue.put(event)
            except Exception as exc:  # handed to the consumer, which raises it
                await queue.put(exc)

        tasks = [asyncio.create_task(pump(tl)) for tl in self.timelines]
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _timeline_events(self, timeline: Timeline) -> AsyncGenerator[Event, None]:
        path, params = timeline.stream_path()

        def request(attempt: int) -> httpx.Request:
            return self._client.build_request(
                "GET", self._streaming_base + path, params=params,
                headers={"Accept": "text/event-stream", "Accept-Encoding": "identity"})

        parser = SseParser()
        lines = self._streams[timeline.key].lines(request, on_connect=lambda: self._backfill(timeline))
        async with contextlib.aclosing(lines) as items:
            async for item in items:
                if isinstance(item, Connected):
                    parser = SseParser()
                elif isinstance(item, OverlongLine):
                    parser = SseParser()  # the event it belonged to is lost: drop the rest of it
                    yield item.event()
                elif isinstance(item, Disconnected):
                    cut = parser.pending() + item.fragment.decode("utf-8", errors="replace")
                    if cut.strip():
                        yield Malformed("truncated event at disconnect", cut)
                elif isinstance(item, bytes):
                    message = parser.feed(item.decode("utf-8", errors="replace"))
                    if message is SseParser.COMMENT:
                        self.stats.keepalives += 1
                        metrics.KEEPALIVES.labels(NETWORK).inc()
                    elif message is SseParser.TOO_LONG:
                        yield Malformed(f"event too long: over {parser.max_event_chars} "
                                        "characters (dropped)", parser.dropped_head)
                    elif message is not None:
                        event = self._dispatch(timeline, *message)
                        if event is not None:
                            yield event
                else:
                    yield item  # a backfilled post

    def _dispatch(self, timeline: Timeline, name: str, data: str) -> Event | None:
        if name != "update":  # delete, status.update, announcements...: not new posts
            self.stats.control += 1
            return None
        try:
            status = decode_json(data)
        except UndecodableJson as exc:
            return Malformed(exc.reason, data)
        return self._post(timeline, status, data)

    def _post(self, timeline: Timeline, status: Any, raw: str) -> Event:
        if not isinstance(status, dict):
            return Malformed("not a status object", raw)
        native = str(status.get("id") or "").strip()
        return Post(id=f"masto:{self.host}:{native}" if native else "", payload=status, raw=raw,
                    timeline=timeline.key)

    # ------------------------------------------------------------------ backfill

    async def _backfill(self, timeline: Timeline) -> list[Event]:
        """Statuses newer than the timeline's position, oldest first (see module doc)."""
        path, params = timeline.rest_path()
        since = self._since.get(timeline.key)
        if since is None:
            # Nothing taken yet: anchor on the newest status, so that a later reconnect
            # can fill its gap from there.
            page = await self._page(path, {**params, "limit": "1"})
            if page and isinstance(page[0], dict) and page[0].get("id"):
                self._since[timeline.key] = str(page[0]["id"])
            return []
        events: list[Event] = []
        for _ in range(self._backfill_pages):
            page = await self._page(path, {**params, "min_id": since, "limit": str(PAGE_SIZE)})
            statuses = sorted((s for s in page if isinstance(s, dict) and s.get("id")),
                              key=lambda s: id_order(str(s["id"])))
            events += [self._post(timeline, s, _dumps(s)) for s in statuses]
            events += [Malformed("not a status object", _dumps(s))
                       for s in page if not (isinstance(s, dict) and s.get("id"))]
            if len(page) < PAGE_SIZE or not statuses:
                break
            since = str(statuses[-1]["id"])
        else:
            log.warning("mastodon: %s: backfill stopped after %d pages; older statuses of the "
                        "gap are not fetched", timeline.key, self._backfill_pages)
        self.stats.backfilled += len(events)
        metrics.BACKFILLED.labels(NETWORK).inc(len(events))
        return events

    async def _page(self, path: str, params: dict[str, str]) -> list[Any]:
        response = await fetch_capped(self._client, "GET", self._base + path, params=params)
        response.raise_for_status()
        try:
            page = decode_json(response.content)
        except UndecodableJson:
            page = None
        if not isinstance(page, list):
            raise LiveError(f"{self._base}{path} did not answer a list of statuses: "
                            f"is {self._base} a Mastodon instance?")
        return page

    def _describe_refusal(self, status: int, detail: str) -> str:
        hint = {401: "this instance wants an access token for this timeline: set "
                     "MASTODON_ACCESS_TOKEN",
                404: f"is {self._base} a Mastodon instance, and the tag spelled right?"}.get(status)
        return (f"Mastodon {self.host} refused the stream: HTTP {status}: {detail}"
                + (f" ({hint})" if hint else ""))

    # ------------------------------------------------------------------ conversion

    def to_raw(self, post: Post) -> dict[str, Any]:
        status = post.payload
        shown = status.get("reblog") if isinstance(status.get("reblog"), dict) else status
        account = shown.get("account") if isinstance(shown.get("account"), dict) else {}
        text = html_to_text(str(shown.get("content") or ""))
        warning = str(shown.get("spoiler_text") or "").strip()
        acct = str(account.get("acct") or "")
        reply_to = str(shown.get("in_reply_to_id") or "")
        return {
            "id": post.id,
            "text": f"{warning}\n\n{text}" if warning and text else text,
            "created_at": iso_or_raw(status.get("created_at")),
            "author": acct if "@" in acct or not acct else f"{acct}@{self.host}",
            "author_name": str(account.get("display_name") or account.get("username") or ""),
            "author_location": "",
            "lang": str(shown.get("language") or ""),
            "in_reply_to": f"masto:{self.host}:{reply_to}" if reply_to else "",
            "retweet_count": max(0, int(shown.get("reblogs_count") or 0)),
            "favorite_count": max(0, int(shown.get("favourites_count") or 0)),
            "is_retweet": shown is not status,
        }


def _dumps(value: Any) -> str:
    """A backfilled status as text, for its dead letter (``raw``)."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (RecursionError, ValueError):  # decodable but nested too deep to encode here
        return "(a status nested too deeply to be shown)"


def id_order(status_id: str) -> tuple[int, str]:
    """Sort key of status ids: numeric strings (Mastodon) and fixed-width flake ids
    (Pleroma/Akkoma) both sort by length, then text."""
    return len(status_id), status_id


class SseParser:
    """Server-Sent Events, line by line (https://html.spec.whatwg.org/#event-stream-interpretation).

    An event is bounded like a line (``max_event_chars``): a server sending ``data:``
    lines with no blank line between them must not grow it without end. An event over the
    bound is dropped as it comes in and reported once, as :attr:`TOO_LONG`.
    """

    COMMENT = ("comment", "")
    TOO_LONG = ("too long", "")

    def __init__(self, max_event_chars: int = MAX_LINE_BYTES) -> None:
        self.max_event_chars = max_event_chars
        self.dropped_head = ""       # the start of the last event that was too long
        self._event = ""
        self._data: list[str] = []
        self._lines: list[str] = []  # the current event as received, for dead letters
        self._size = 0
        self._dropping = False

    def feed(self, line: str) -> tuple[str, str] | None:
        """The (event, data) dispatched by this line, :attr:`COMMENT`, :attr:`TOO_LONG`,
        or None."""
        if line.startswith(":"):
            return self.COMMENT
        if not line:
            message = (self._event or "message", "\n".join(self._data)) if self._data else None
            self._reset()
            self._dropping = False
            return message
        if self._dropping:
            return None
        self._size += len(line) + 1
        if self._size > self.max_event_chars:
            self.dropped_head = (self.pending() + line)[:DEAD_LETTER_HEAD_BYTES]
            self._reset()
            self._dropping = True
            return self.TOO_LONG
        self._lines.append(line)
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None

    def pending(self) -> str:
        """The lines of an event not dispatched yet, as received."""
        return "".join(line + "\n" for line in self._lines)

    def _reset(self) -> None:
        self._event, self._data, self._lines, self._size = "", [], [], 0


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.parts.append("\n")
        elif tag == "p" and self.parts:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def html_to_text(html: str) -> str:
    """Plain text of a status' HTML: paragraphs and line breaks kept, entities decoded,
    links as their full URL (Mastodon hides parts of long URLs with CSS only)."""
    extractor = _TextExtractor()
    extractor.feed(html)
    extractor.close()
    lines = "".join(extractor.parts).split("\n")
    return "\n".join(line.strip() for line in lines).strip()
