"""What every live source shares: the events it yields, and a reconnecting HTTP stream
cut into lines.

:class:`LineStream` owns the connection loop: connect, hand lines over as they arrive,
notice a stall (no byte, not even a keep-alive, for ``stall_timeout`` seconds: the
socket read times out), then wait as :class:`ReconnectPolicy` says and connect again.
The end of each connection comes out as :class:`Disconnected` with the bytes of a line
cut by the disconnect, so the source can dead-letter it instead of losing it silently.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, AsyncGenerator, Awaitable, Callable, Mapping, Sequence

import httpx

from connectors.live import metrics
from connectors.live.backoff import Failure, ReconnectPolicy
from stream_app.records import iso, parse_iso

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


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
    after its last newline (a line cut by the disconnect), usually empty."""

    fragment: bytes


OnConnect = Callable[[], Awaitable[Sequence[Any]]]
StreamItem = Any  # Connected, a line (bytes), an item from on_connect, Disconnected

FATAL_STATUSES = frozenset({400, 401, 403, 404, 410})


class LineStream:
    def __init__(self, *, network: str, client: httpx.AsyncClient, policy: ReconnectPolicy,
                 stall_timeout: float, stats: StreamStats, sleep: Sleep = asyncio.sleep,
                 describe_refusal: Callable[[int, str], str] | None = None) -> None:
        self._network = network
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
        then each line (bytes, without its line ending), then ``Disconnected``.

        ``make_request(n)`` builds the n-th connection attempt (0 = the first).
        Statuses in :data:`FATAL_STATUSES` raise :class:`LiveError`; others are retried.
        """
        attempt = 0
        while True:
            failure: Failure = Failure.NETWORK
            headers: Mapping[str, str] = {}
            buffer, connected = b"", False
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
                        await response.aread()
                        failure, headers = self._refused(response.status_code, response.text,
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
                            buffer += chunk
                            *complete, buffer = buffer.split(b"\n")
                            for line in complete:
                                yield line.removesuffix(b"\r")
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
                    yield Disconnected(buffer)
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
        data = json.loads(body)
    except ValueError:
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
