"""Reconnect delays, as X documents them for its streaming endpoints.

- An established stream that drops: reconnect at once (at most once per
  ``stable_after`` seconds, so a server that drops every connection gets the backoff).
- Network (TCP/IP) errors: linear, +250 ms per attempt, capped at 16 s.
- HTTP errors (5xx, unexpected 4xx): exponential from 5 s, doubling, capped at 320 s.
- HTTP 429: exponential from 60 s, doubling; X gives no cap ("each 429 increases the
  time you must wait"), we stop doubling at 960 s (just over one 15-minute rate-limit
  window). ``x-rate-limit-reset`` / ``Retry-After`` win when the server sends them.

The same policy serves Mastodon, whose 429 carries ``X-RateLimit-Reset`` as ISO-8601.
Everything is pure: the clock comes in as an argument, so tests assert exact delays.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable, Mapping

from stream_app.records import parse_iso


class Failure(str, Enum):
    """Why a connection ended or could not be made (also the metric label)."""

    DROPPED = "dropped"            # an established stream ended or broke
    STALL = "stall"                # no byte (not even a keep-alive) for the stall timeout
    NETWORK = "network_error"      # connect/read failed at the TCP/TLS level
    HTTP = "http_error"            # non-200 status worth retrying (5xx, 409, ...)
    RATE_LIMITED = "rate_limited"  # HTTP 429


@dataclass
class LinearBackoff:
    step: float = 0.25
    cap: float = 16.0
    attempt: int = 0

    def next_delay(self) -> float:
        self.attempt += 1
        return min(self.step * self.attempt, self.cap)

    def reset(self) -> None:
        self.attempt = 0


@dataclass
class ExponentialBackoff:
    start: float = 5.0
    cap: float = 320.0
    factor: float = 2.0
    attempt: int = 0

    def next_delay(self) -> float:
        delay = min(self.start * self.factor ** self.attempt, self.cap)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


def header_wait(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds the server asks us to wait (``Retry-After`` or ``x-rate-limit-reset``).

    ``Retry-After`` is seconds or an HTTP date; ``x-rate-limit-reset`` is epoch seconds
    (X) or ISO-8601 (Mastodon). When both are present the longer wait wins. None when
    neither header is usable.
    """
    waits = []
    retry_after = _header(headers, "retry-after")
    if retry_after:
        try:
            waits.append(float(retry_after))
        except ValueError:
            try:
                waits.append(email.utils.parsedate_to_datetime(retry_after).timestamp() - now)
            except (TypeError, ValueError):
                pass
    reset = _header(headers, "x-rate-limit-reset") or _header(headers, "x-ratelimit-reset")
    if reset:
        try:
            waits.append(float(reset) - now)
        except ValueError:
            try:
                waits.append(parse_iso(reset).timestamp() - now)
            except ValueError:
                pass
    return max(0.0, max(waits)) if waits else None


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            return value.strip()
    return ""


@dataclass
class ReconnectPolicy:
    """The delay before the next connection attempt, given why the last one ended."""

    network: LinearBackoff = field(default_factory=LinearBackoff)
    http: ExponentialBackoff = field(default_factory=ExponentialBackoff)
    rate_limit: ExponentialBackoff = field(
        default_factory=lambda: ExponentialBackoff(start=60.0, cap=960.0))
    stable_after: float = 60.0
    clock: Callable[[], float] = time.time          # wall clock, for rate-limit reset headers
    monotonic: Callable[[], float] = time.monotonic
    _reconnect_now: bool = False
    _last_immediate: float = float("-inf")

    def delay(self, failure: Failure, headers: Mapping[str, str] | None = None) -> float:
        if failure in (Failure.DROPPED, Failure.STALL):
            # X: "once an established connection drops, attempt to reconnect immediately";
            # if that reconnect fails, the network backoff takes over.
            if self._reconnect_now:
                self._reconnect_now = False
                self._last_immediate = self.monotonic()
                return 0.0
            return self.network.next_delay()
        self._reconnect_now = False
        if failure is Failure.NETWORK:
            return self.network.next_delay()
        if failure is Failure.HTTP:
            return self.http.next_delay()
        fallback = self.rate_limit.next_delay()
        asked = header_wait(headers or {}, self.clock())
        # A server-given wait is honoured (bounded by the cap against absurd clock skew);
        # one that says "now" (stale or skewed clock) would make us hammer: ignore it.
        return fallback if not asked else min(asked, self.rate_limit.cap)

    def healthy(self) -> None:
        """The stream delivers data: the next drop reconnects at once, from scratch.

        Except within ``stable_after`` seconds of the last immediate reconnect: a server
        that accepts, sends a little and drops every time gets the backoff, not a loop.
        """
        if self._reconnect_now or self.monotonic() - self._last_immediate < self.stable_after:
            return
        self.network.reset()
        self.http.reset()
        self.rate_limit.reset()
        self._reconnect_now = True

    @classmethod
    def scaled(cls, factor: float, clock: Callable[[], float] = time.time) -> "ReconnectPolicy":
        """X's policy with every duration multiplied by ``factor`` (tests use tiny ones)."""
        return cls(network=LinearBackoff(step=0.25 * factor, cap=16.0 * factor),
                   http=ExponentialBackoff(start=5.0 * factor, cap=320.0 * factor),
                   rate_limit=ExponentialBackoff(start=60.0 * factor, cap=960.0 * factor),
                   stable_after=60.0 * factor, clock=clock)
