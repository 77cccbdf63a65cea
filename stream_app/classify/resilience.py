"""Making one provider dependable: circuit breaker, rate limiter, retries.

* :class:`CircuitBreaker` - per provider; stops sending to a provider that keeps
  failing, then lets one probe through after a cooldown.
* :class:`RateLimiter` - per provider; a requests-per-minute token bucket plus a
  concurrency cap.
* :func:`call_with_retries` - retries one provider with full-jitter exponential
  backoff, honouring ``Retry-After`` and a hard deadline. Falling to the next provider
  is the cascade's job, not this one's.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable

from stream_app.classify.provider_client import ChatResult, OpenAICompatibleClient, ProviderError
from stream_app.classify.provider_config import ProviderConfig

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- circuit breaker

class Permit:
    """What :meth:`CircuitBreaker.allow` hands a request it lets through. Only the permit
    that took the half-open probe can give the probe back (:meth:`CircuitBreaker.abandon`)
    or report the probe's outcome: a request let through earlier, while the breaker was
    closed, cannot free or settle another request's probe (issue 15)."""

    __slots__ = ("probe",)

    def __init__(self, probe: bool) -> None:
        self.probe = probe

    def __repr__(self) -> str:
        return f"Permit(probe={self.probe})"


class CircuitBreaker:
    """closed -> open -> half_open -> closed|open, per provider.

    Opens after ``consecutive_failures`` failures in a row, or when at least
    ``min_requests`` outcomes within the last ``window_s`` seconds include a share of
    failures >= ``failure_rate`` (LiteLLM-like defaults: 3, 5 requests, 50 %, 60 s).
    Stays open ``cooldown_s`` (5 s), then half-open: :meth:`allow` lets exactly one
    probe through; its success closes the breaker (window and cooldown reset), its
    failure re-opens it with the cooldown doubled, up to ``max_cooldown_s``. A probe
    that reports nothing for ``probe_timeout_s`` is presumed lost and another is allowed.

    :meth:`allow` *takes* the half-open probe and returns a :class:`Permit` (None when
    refused): callers that only want to know whether a request could go now use
    :meth:`ready`, which changes nothing. Outcomes recorded while open (requests that
    started before it opened) are ignored, and so are those recorded while half-open
    with a permit that is not the probe's.
    """

    def __init__(self, *, consecutive_failures: int = 3, failure_rate: float = 0.5,
                 min_requests: int = 5, window_s: float = 60.0, cooldown_s: float = 5.0,
                 max_cooldown_s: float = 60.0, probe_timeout_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if consecutive_failures < 1 or min_requests < 1 or not 0 < failure_rate <= 1:
            raise ValueError("consecutive_failures and min_requests must be >= 1, "
                             "failure_rate in (0, 1]")
        self.consecutive_failures = consecutive_failures
        self.failure_rate = failure_rate
        self.min_requests = min_requests
        self.window_s = window_s
        self.base_cooldown_s = cooldown_s
        self.max_cooldown_s = max(max_cooldown_s, cooldown_s)
        self.probe_timeout_s = probe_timeout_s
        self._clock = clock
        self._state = "closed"
        self._cooldown = cooldown_s
        self._opened_at = 0.0
        self._probe_at: float | None = None
        self._probe: Permit | None = None  # the permit holding the half-open probe
        self._streak = 0
        self._window: deque[tuple[float, bool]] = deque()
        self.opened_count = 0  # times it opened (for metrics and tests)

    @property
    def state(self) -> str:
        return self._advance(self._clock())

    @property
    def cooldown_s(self) -> float:
        """The current cooldown (doubles on each failed probe)."""
        return self._cooldown

    def retry_in(self) -> float:
        """Seconds until the breaker lets a probe through (0 when it would now)."""
        now = self._clock()
        if self._advance(now) != "open":
            return 0.0
        return max(0.0, self._opened_at + self._cooldown - now)

    def ready(self) -> bool:
        """Whether :meth:`allow` would say yes now, without taking the probe."""
        now = self._clock()
        state = self._advance(now)
        return state == "closed" or (state == "half_open" and not self._probe_pending(now))

    def allow(self) -> Permit | None:
        """A :class:`Permit` when a request may go now (in half-open, the first caller
        gets the probe), None when not."""
        now = self._clock()
        state = self._advance(now)
        if state == "closed":
            return Permit(probe=False)
        if state == "open" or self._probe_pending(now):
            return None
        self._probe_at = now
        self._probe = Permit(probe=True)
        return self._probe

    def abandon(self, permit: Permit | None) -> None:
        """The request holding ``permit`` ended without telling anything about the
        provider (cancelled, our own deadline): give the probe back if, and only if,
        this permit holds it."""
        if permit is not None and permit is self._probe:
            self._probe, self._probe_at = None, None

    def record(self, success: bool, permit: Permit | None = None) -> None:
        """The outcome of a request. ``permit``: the one :meth:`allow` gave it (None:
        trusted as is, for callers that do not track permits)."""
        now = self._clock()
        state = self._advance(now)
        if state == "open":
            return
        if state == "half_open":
            if permit is not None and permit is not self._probe:
                return  # let through before the breaker opened: says nothing of the probe
            if success:
                self._close()
            else:
                self._open(now, min(self._cooldown * 2, self.max_cooldown_s))
            return
        self._window.append((now, success))
        self._prune(now)
        self._streak = 0 if success else self._streak + 1
        if not success and self._should_trip():
            self._open(now, self.base_cooldown_s)

    def _should_trip(self) -> bool:
        if self._streak >= self.consecutive_failures:
            return True
        if len(self._window) < self.min_requests:
            return False
        failures = sum(1 for _, ok in self._window if not ok)
        return failures / len(self._window) >= self.failure_rate

    def _probe_pending(self, now: float) -> bool:
        return self._probe_at is not None and now - self._probe_at < self.probe_timeout_s

    def _prune(self, now: float) -> None:
        while self._window and self._window[0][0] <= now - self.window_s:
            self._window.popleft()

    def _advance(self, now: float) -> str:
        if self._state == "open" and now >= self._opened_at + self._cooldown:
            self._state = "half_open"
            self._probe_at, self._probe = None, None
        return self._state

    def _open(self, now: float, cooldown: float) -> None:
        self._state = "open"
        self._opened_at = now
        self._cooldown = cooldown
        self._probe_at, self._probe = None, None
        self.opened_count += 1

    def _close(self) -> None:
        self._state = "closed"
        self._cooldown = self.base_cooldown_s
        self._probe_at, self._probe = None, None
        self._streak = 0
        self._window.clear()  # the failures that opened it must not re-open it at once


# --------------------------------------------------------------------------- rate limiter

class RateLimiter:
    """A token bucket on requests per minute plus a concurrency cap, per provider.

    ``rpm`` None or 0: no rate cap. The bucket holds ``burst`` tokens (default: one
    second's worth, at least 1), so a provider's per-second enforcement is not tripped
    by a burst of a minute's quota. :meth:`pause` blocks every caller for a while (a
    429's Retry-After applies to the whole account, not just the request that got it).
    """

    def __init__(self, rpm: float | None = None, max_concurrency: int = 4, *,
                 burst: float | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self.rate = rpm / 60.0 if rpm else None
        self.capacity = float(burst) if burst else max(1.0, self.rate or 1.0)
        self.max_concurrency = max_concurrency
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.capacity
        self._updated = clock()
        self._paused_until = float("-inf")
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._lock = asyncio.Lock()

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    def _refill(self, now: float) -> None:
        if self.rate is not None:
            self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    async def acquire(self, deadline: float | None = None) -> None:
        """Wait for a request token. Raises ProviderError(kind="timeout") at once when
        the token would come after ``deadline`` (a ``clock()`` time)."""
        async with self._lock:  # waiters are served in order
            while True:
                now = self._clock()
                self._refill(now)
                wait = self._paused_until - now
                if wait <= 0:
                    if self.rate is None:
                        return
                    if self._tokens >= 1.0:
                        self._tokens -= 1.0
                        return
                    wait = (1.0 - self._tokens) / self.rate
                if deadline is not None and now + wait > deadline:
                    raise ProviderError("timeout", f"the local rate limit frees a request in "
                                        f"{wait:.2f}s, after the deadline", retryable=False)
                await self._sleep(wait)

    @asynccontextmanager
    async def slot(self, deadline: float | None = None) -> AsyncIterator[None]:
        """``async with limiter.slot(): ...`` - a concurrency slot, then a rate token."""
        if deadline is None:
            await self._semaphore.acquire()
        else:
            try:
                async with asyncio.timeout(max(0.0, deadline - self._clock())):
                    await self._semaphore.acquire()
            except TimeoutError:
                raise ProviderError("timeout", f"all {self.max_concurrency} concurrent slots "
                                    "stayed busy until the deadline", retryable=False) from None
        try:
            await self.acquire(deadline)
            yield
        finally:
            self._semaphore.release()


# --------------------------------------------------------------------------- retries

@dataclass(frozen=True)
class Attempt:
    """One HTTP request made by :func:`call_with_retries` (for a per-request ledger)."""
    provider: str
    number: int          # 1-based
    outcome: str         # "ok" or a ProviderError kind
    latency_s: float
    status: int | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    error: str = ""


def backoff_delay(attempt: int, rng: Callable[[], float] = random.random,
                  base_s: float = 0.5, cap_s: float = 8.0) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)] (attempt from 0)."""
    return rng() * min(cap_s, base_s * (2 ** attempt))


async def call_with_retries(client: OpenAICompatibleClient, provider: ProviderConfig,
                            breaker: CircuitBreaker, limiter: RateLimiter, system: str, user: str,
                            schema: dict | None, max_tokens: int, *, deadline: float,
                            max_retries: int = 2,
                            sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                            clock: Callable[[], float] = time.monotonic,
                            rng: Callable[[], float] = random.random,
                            base_delay_s: float = 0.5, max_delay_s: float = 8.0,
                            on_attempt: Callable[[Attempt], None] | None = None) -> ChatResult:
    """One provider request with up to ``max_retries`` retries, all before ``deadline``
    (a ``clock()`` time).

    * The breaker is asked before every attempt; when it refuses, ProviderError
      ``circuit_open`` is raised at once. Each attempt's outcome is recorded in it
      (a 400/413/422 is not held against the provider).
    * Retryable errors (rate_limited, server_error, timeout, connection) are retried
      after a full-jitter backoff (base 0.5 s, cap 8 s), never sooner than the
      provider's ``retry_after``; a 429 also pauses the limiter for every caller.
    * An attempt gets at most the time left before the deadline; when the next attempt
      could not start before it, ProviderError ``timeout`` is raised instead of waiting.
    * Non-retryable errors (auth, client_error, bad_response) are raised at once.
    """
    attempt = 0
    while True:
        permit = breaker.allow()
        if permit is None:
            raise ProviderError("circuit_open", f"circuit breaker open, next probe in "
                                f"{breaker.retry_in():.1f}s", provider=provider.name,
                                retry_after=breaker.retry_in() or None, retryable=False,
                                attempts=attempt)
        sent = False
        started = time.perf_counter()
        try:
            remaining = deadline - clock()
            if remaining <= 0:
                raise ProviderError("timeout", "the deadline passed before the request could start",
                                    retryable=False)
            async with limiter.slot(deadline):
                remaining = deadline - clock()
                if remaining <= 0:
                    raise ProviderError("timeout", "the deadline passed while waiting for a slot",
                                        retryable=False)
                sent = True
                result = await client.chat(provider, system, user, schema, max_tokens,
                                           timeout_s=remaining)
        except ProviderError as err:
            err.provider = err.provider or provider.name
            err.attempts = attempt + (1 if sent else 0)
            if not sent:
                breaker.abandon(permit)
                raise
            if err.counts_against_provider:
                breaker.record(False, permit)
            else:
                breaker.abandon(permit)
            if on_attempt is not None:
                on_attempt(Attempt(provider.name, attempt + 1, err.kind,
                                   time.perf_counter() - started, err.status, error=str(err)))
            if not err.retryable or attempt >= max_retries:
                raise
            delay = backoff_delay(attempt, rng, base_delay_s, max_delay_s)
            if err.retry_after is not None:
                delay = max(delay, err.retry_after)
                if err.kind == "rate_limited":
                    limiter.pause(err.retry_after)
            if clock() + delay >= deadline:
                raise ProviderError(
                    "timeout", f"gave up after {err.kind}: the next attempt would start in "
                    f"{delay:.2f}s, after the deadline (last error: {err.message})",
                    provider=provider.name, status=err.status, retry_after=err.retry_after,
                    retryable=False, attempts=attempt + 1) from None
            log.warning("%s; retry %d/%d in %.2fs", err, attempt + 1, max_retries, delay)
            await sleep(delay)
            attempt += 1
            continue
        except BaseException:  # cancelled: says nothing about the provider
            breaker.abandon(permit)
            raise
        breaker.record(True, permit)
        if on_attempt is not None:
            on_attempt(Attempt(provider.name, attempt + 1, "ok", result.latency_s, 200,
                               result.input_tokens, result.output_tokens))
        return result
