"""What every live source shares: the events it yields, and a reconnecting HTTP stream
cut into lines.

:class:`LineStream` owns the connection loop: connect, hand lines over as they arrive,
notice a stall (no byte, not even a keep-alive, for ``stall_timeout`` seconds: the
socket read times out), then wait as :class:`ReconnectPolicy` says and connect again.
The end of each connection comes out as :class:`Disconnected` with the bytes of a line
cut by the disconnect, so the source can dead-letter it instead of losing it silently.

The server is not trusted (issue 15): whatever it sends, memory and CPU stay bounded and
nothing it sends can end the connector with an unexpected exception.

- Lines: :class:`LineReader` is where stream bytes enter. It never holds more than
  :data:`MAX_LINE_BYTES`; a longer line is dropped as it streams in and comes out as one
  :class:`OverlongLine` (dead-lettered with its first bytes), not buffered.
- Other bodies (error answers, REST pages) are read with a byte cap: :func:`read_capped`,
  :func:`fetch_capped`.
- JSON: :func:`decode_json` is the one decoder; every way hostile text breaks
  ``json.loads`` (nesting 100k deep, ``1e999``, ``NaN``, huge integers, bad UTF-8)
  comes out as :class:`UndecodableJson` with a readable reason.
- Tokens never travel over plain http to another machine: :func:`check_token_url`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from urllib.parse import urlsplit

import httpx

from connectors.live import metrics
from connectors.live.backoff import Failure, ReconnectPolicy
from stream_app.records import iso, parse_iso

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]

MAX_LINE_BYTES = 1 << 20          # one line of the stream (a post is a few KiB)
MAX_ERROR_BODY_BYTES = 64 << 10   # an error answer: only its message is used
MAX_RESPONSE_BYTES = 16 << 20     # a REST answer (rules, a backfill page of 40 statuses)
REST_TIMEOUT_S = 60.0             # a whole REST exchange: a server trickling bytes ends here
DEAD_LETTER_HEAD_BYTES = 4096     # what a dead letter keeps of a line that was too long


class LiveError(RuntimeError):
    """A live connector cannot go on (bad credentials, bad request, bad checkpoint...)."""


@dataclass(frozen=True)
class Post:
    """One post as the network delivered it: ``id`` is connector-wide (prefixed where
    needed, empty when missing), ``payload`` goes back to the source's converter and
    ``raw`` is the received text, kept for dead letters."""

    id: str
    payload: Any
    raw: str
    timeline: str = ""


@dataclass(frozen=True)
class Malformed:
    reason: str
    raw: str


Event = Post | Malformed


@dataclass
class StreamStats:
    connects: int = 0
    reconnects: Counter = field(default_factory=Counter)
    keepalives: int = 0
    control: int = 0       # protocol messages that are not posts (X errors, Mastodon deletes)
    backfilled: int = 0
    last_byte_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Connected:
    """A 200 response: lines follow."""


@dataclass(frozen=True)
class Disconnected:
    """The connection that ``Connected`` announced ended; ``fragment`` holds the bytes
    after its last newline (a line cut by the disconnect), usually empty. (A cut line
    that was already too long comes just before, as an :class:`OverlongLine`.)"""

    fragment: bytes


@dataclass(frozen=True)
class OverlongLine:
    """A line longer than the bound: ``size`` bytes were dropped (at least that many when
    ``cut``: the connection ended inside it), ``head`` are its first bytes."""

    size: int
    head: bytes
    limit: int = MAX_LINE_BYTES
    cut: bool = False

    def event(self) -> Malformed:
        how = "cut by the disconnect after" if self.cut else "of"
        return Malformed(f"line too long: over {self.limit} bytes ({how} {self.size} bytes, "
                         f"dropped)", self.head.decode("utf-8", errors="replace"))


class LineReader:
    """Stream bytes in, complete lines out (without ``\r\n``), holding at most
    ``max_line_bytes``: the part of a longer line received so far is dropped at once and
    the line comes out as one :class:`OverlongLine` when its newline arrives.

    Linear in the bytes fed, whatever the chunking (a byte at a time included): each
    chunk is scanned once and a line is copied once.
    """

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self.max_line_bytes = max_line_bytes
        self._buffer = bytearray()
        self._dropping = 0   # bytes of the current over-long line dropped so far (0: none)
        self._head = b""

    def feed(self, chunk: bytes) -> list[bytes | OverlongLine]:
        out: list[bytes | OverlongLine] = []
        start = 0
        while (newline := chunk.find(b"\n", start)) >= 0:
            out.append(self._line(chunk[start:newline]))
            start = newline + 1
        self._keep(chunk[start:])
        return out

    def finish(self) -> bytes | OverlongLine:
        """At a disconnect: the bytes after the last newline (a cut line), or the
        over-long line being dropped; the reader starts afresh."""
        if self._dropping:
            rest: bytes | OverlongLine = self._overlong(cut=True)
        else:
            rest = bytes(self._buffer)
        self._buffer.clear()
        return rest

    def _line(self, piece: bytes) -> bytes | OverlongLine:
        if self._dropping:
            self._dropping += len(piece)
            return self._overlong()
        if len(self._buffer) + len(piece) > self.max_line_bytes:
            self._start_dropping(piece)
            return self._overlong()
        line = bytes(self._buffer) + piece if self._buffer else piece
        self._buffer.clear()
        return line.removesuffix(b"\r")

    def _keep(self, rest: bytes) -> None:
        if self._dropping:
            self._dropping += len(rest)
        elif len(self._buffer) + len(rest) > self.max_line_bytes:
            self._start_dropping(rest)
        else:
            self._buffer += rest

    def _start_dropping(self, piece: bytes) -> None:
        self._head = bytes(self._buffer[:DEAD_LETTER_HEAD_BYTES])
        if len(self._head) < DEAD_LETTER_HEAD_BYTES:
            self._head += piece[:DEAD_LETTER_HEAD_BYTES - len(self._head)]
        self._dropping = len(self._buffer) + len(piece)
        self._buffer.clear()

    def _overlong(self, cut: bool = False) -> OverlongLine:
        line = OverlongLine(self._dropping, self._head, self.max_line_bytes, cut)
        self._dropping, self._head = 0, b""
        log.warning("line too long: over %d bytes (%d bytes dropped)", self.max_line_bytes,
                    line.size)
        return line


class UndecodableJson(ValueError):
    """Text that :func:`decode_json` refuses; ``reason`` says why, for a dead letter."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode_json(text: str | bytes) -> Any:
    """``json.loads`` for text from the network: every way it can fail (bad syntax, bad
    UTF-8, nesting too deep for the recursion limit, integers over Python's digit limit)
    and every number Python cannot use as one (``1e999`` is inf, ``NaN``) raises
    :class:`UndecodableJson`; nothing else escapes."""
    try:
        return json.loads(text, parse_float=_finite_float, parse_constant=_no_constant)
    except UndecodableJson:
        raise
    except RecursionError:
        raise UndecodableJson("malformed json: nested too deeply") from None
    except (ValueError, OverflowError) as exc:  # JSONDecodeError, UnicodeDecodeError, digits
        raise UndecodableJson(f"malformed json: {exc}") from None


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise UndecodableJson(f"malformed json: number out of range: {literal[:40]}")
    return value


def _no_constant(name: str) -> Any:
    raise UndecodableJson(f"malformed json: {name} is not a JSON number")


def check_token_url(url: str, what: str) -> None:
    """Refuse to send a token over plain http, except to this machine (local test servers)."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return
    if parts.scheme != "http":
        raise LiveError(f"{what}: {url!r} is not an http(s) URL")
    if not _loopback(parts.hostname or ""):
        raise LiveError(f"{what}: refusing to send the access token over plain http to "
                        f"{parts.hostname}: use an https:// URL")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def read_capped(response: httpx.Response, limit: int,
                      total_s: float | None = None) -> tuple[bytes, bool]:
    """The body of a streamed response, at most ``limit`` bytes (decoded) and at most
    ``total_s`` seconds of reading, and whether it was complete; the rest is not read."""
    body = bytearray()
    try:
        async with asyncio.timeout(total_s):
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > limit:
                    return bytes(body[:limit]), False
    except TimeoutError:
        return bytes(body), False
    return bytes(body), True


async def fetch_capped(client: httpx.AsyncClient, method: str, url: str, *,
                       limit: int = MAX_RESPONSE_BYTES, total_s: float = REST_TIMEOUT_S,
                       **kwargs: Any) -> httpx.Response:
    """A REST request whose answer is read with a byte cap and a time limit for the whole
    exchange. A success over ``limit`` bytes raises :class:`LiveError`; an error answer
    is kept to its first :data:`MAX_ERROR_BODY_BYTES`. The result is an ordinary,
    already read ``httpx.Response`` (``.json()``, ``.raise_for_status()`` work)."""
    request = client.build_request(method, url, **kwargs)
    try:
        async with asyncio.timeout(total_s):
            response = await client.send(request, stream=True)
            try:
                cap = limit if response.status_code < 300 else MAX_ERROR_BODY_BYTES
                body, complete = await read_capped(response, cap)
            finally:
                await response.aclose()
    except TimeoutError:
        raise httpx.ReadTimeout(f"no complete answer within {total_s:.0f} s",
                                request=request) from None
    if not complete and response.status_code < 300:
        raise LiveError(f"{request.url.copy_with(query=None)} answered more than {limit} bytes: "
                        "refusing to read it")
    headers = [(k, v) for k, v in response.headers.multi_items()
               if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")]
    return httpx.Response(response.status_code, headers=headers, content=body, request=request)


OnConnect = Callable[[], Awaitable[Sequence[Any]]]
StreamItem = Any  # Connected, a line (bytes), an OverlongLine, an item from on_connect, Disconnected

FATAL_STATUSES = frozenset({400, 401, 403, 404, 410})


class LineStream:
    def __init__(self, *, network: str, client: httpx.AsyncClient, policy: ReconnectPolicy,
                 stall_timeout: float, stats: StreamStats, sleep: Sleep = asyncio.sleep,
                 describe_refusal: Callable[[int, str], str] | None = None,
                 max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._network = network
        self._max_line_bytes = max_line_bytes
        self._client = client
        self._policy = policy
        self._stall_timeout = stall_timeout
        self._stats = stats
        self._sleep = sleep
        self._describe_refusal = describe_refusal or (lambda status, detail: f"HTTP {status}: {detail}")
        metrics.SECONDS_SINCE_LAST_BYTE.labels(network).set_function(
            lambda: time.monotonic() - stats.last_byte_at)

    async def lines(self, make_request: Callable[[int], httpx.Request],
                    on_connect: OnConnect | None = None) -> AsyncGenerator[StreamItem, None]:
        """Forever: ``Connected``, then what ``on_connect`` returned (e.g. a backfill),
        then each line (bytes, without its line ending; an :class:`OverlongLine` for one
        over the bound), then ``Disconnected``.

        ``make_request(n)`` builds the n-th connection attempt (0 = the first).
        Statuses in :data:`FATAL_STATUSES` raise :class:`LiveError`; others are retried.
        """
        attempt = 0
        while True:
            failure: Failure = Failure.NETWORK
            headers: Mapping[str, str] = {}
            reader, connected, fragment = LineReader(self._max_line_bytes), False, b""
            request = make_request(attempt)
            # The read timeout is the stall detector: every byte, keep-alives included, resets it.
            request.extensions["timeout"] = httpx.Timeout(10.0, read=self._stall_timeout).as_dict()
            try:
                response = await self._client.send(request, stream=True)
            except httpx.TransportError as exc:
                log.warning("%s: cannot connect: %s", self._network, _describe(exc))
            else:
                try:
                    if response.status_code != 200:
                        body, _ = await read_capped(response, MAX_ERROR_BODY_BYTES,
                                                    total_s=self._stall_timeout)
                        failure, headers = self._refused(
                            response.status_code, body.decode("utf-8", errors="replace"),
                            response.headers)
                    else:
                        connected = True
                        self._stats.connects += 1
                        metrics.CONNECTS.labels(self._network).inc()
                        metrics.CONNECTED.labels(self._network).inc()
                        self._stats.last_byte_at = time.monotonic()
                        yield Connected()
                        if on_connect is not None:
                            for item in await on_connect():
                                yield item
                        async for chunk in response.aiter_raw():
                            self._stats.last_byte_at = time.monotonic()
                            self._policy.healthy()
                            for line in reader.feed(chunk):
                                yield line
                        failure = Failure.DROPPED
                        log.warning("%s: the server ended the stream", self._network)
                except httpx.HTTPStatusError as exc:  # from on_connect (a backfill request)
                    failure, headers = self._refused(exc.response.status_code, exc.response.text,
                                                     exc.response.headers)
                except httpx.ReadTimeout:
                    failure = Failure.STALL
                    log.warning("%s: no byte for %.1f s (not even a keep-alive): reconnecting",
                                self._network, self._stall_timeout)
                except httpx.TransportError as exc:
                    failure = Failure.DROPPED
                    log.warning("%s: connection lost: %s", self._network, _describe(exc))
                finally:
                    if connected:
                        metrics.CONNECTED.labels(self._network).dec()
                    await response.aclose()
                if connected:
                    rest = reader.finish()
                    if isinstance(rest, OverlongLine):
                        yield rest
                    else:
                        fragment = rest
                    yield Disconnected(fragment)
            attempt += 1
            self._stats.reconnects[failure.value] += 1
            metrics.RECONNECTS.labels(self._network, failure.value).inc()
            delay = self._policy.delay(failure, headers)
            log.info("%s: reconnecting in %.2f s (%s)", self._network, delay, failure.value)
            await self._sleep(delay)

    def _refused(self, status: int, body: str, headers: Mapping[str, str]
                 ) -> tuple[Failure, Mapping[str, str]]:
        detail = error_detail(body)
        if status in FATAL_STATUSES:
            raise LiveError(self._describe_refusal(status, detail))
        log.warning("%s: HTTP %s: %s", self._network, status, detail)
        return (Failure.RATE_LIMITED if status in (420, 429) else Failure.HTTP), dict(headers)


def iso_or_raw(value: Any) -> str:
    """ISO-8601 UTC, or the value unchanged so that the dead letter shows what came."""
    text = str(value or "")
    try:
        return iso(parse_iso(text))
    except ValueError:
        return text


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def error_detail(body: str) -> str:
    """A short, secret-free description of an error body (X and Mastodon shapes)."""
    try:
        data = decode_json(body)
    except UndecodableJson:
        return body.strip()[:200] or "(no body)"
    if isinstance(data, dict):
        if isinstance(data.get("errors"), list) and data["errors"]:
            first = data["errors"][0]
            if isinstance(first, dict):
                return str(first.get("detail") or first.get("message") or first.get("title"))[:200]
        for key in ("detail", "error", "title"):
            if data.get(key):
                return str(data[key])[:200]
    return body.strip()[:200]
