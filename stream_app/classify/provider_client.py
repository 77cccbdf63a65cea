"""Talking to OpenAI-compatible chat providers: one request, its errors, its retries.

The cascade (``cascade.py``) decides *which* provider gets *which* tweets; this module
makes one provider request robust:

* :class:`OpenAICompatibleClient` - one shared ``httpx.AsyncClient`` (pooled
  connections, explicit timeouts, no redirects) for every provider. ``chat()`` POSTs
  ``{base_url}/chat/completions`` and returns a :class:`ChatResult`, or raises a
  :class:`ProviderError` whose ``kind`` says what went wrong and ``retryable`` whether
  trying again may help.
* :class:`CircuitBreaker` - per provider; stops sending to a provider that keeps
  failing, then lets one probe through after a cooldown.
* :class:`RateLimiter` - per provider; a requests-per-minute token bucket plus a
  concurrency cap.
* :func:`call_with_retries` - retries one provider with full-jitter exponential
  backoff, honouring ``Retry-After`` and a hard deadline. Falling to the next provider
  is the cascade's job, not this one's.
* :func:`parse_items` - turns the model's JSON into validated :class:`Label` s by id.

Secrets: a key is read from the environment for each request and only ever put in the
``Authorization`` header. Error messages carry the provider's own message with the key
(and any ``Bearer ...``) replaced by ``***``, and exceptions are raised ``from None`` so
that no chained httpx exception (whose request holds the headers) travels with them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import re
import time
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, Sequence

import httpx

from stream_app.classify.provider_config import ProviderConfig
from stream_app.classify.rules import DEFAULT_TEAMS, TOPICS
from stream_app.classify.types import SENTIMENTS, Label

log = logging.getLogger(__name__)

ERROR_KINDS = ("rate_limited", "server_error", "timeout", "connection", "bad_response", "auth",
               "client_error", "circuit_open")
RETRYABLE_KINDS = frozenset({"rate_limited", "server_error", "timeout", "connection"})
MAX_RETRY_AFTER_S = 3600.0  # a longer Retry-After is taken as this: the deadline decides anyway
REASON_MAX_CHARS = 200


# --------------------------------------------------------------------------- errors

class ProviderError(Exception):
    """A provider request failed. ``kind`` is one of :data:`ERROR_KINDS`.

    ``retryable``: whether the same request to the same provider may succeed later
    (rate limits, 5xx, timeouts, connection failures). ``retry_after``: seconds the
    provider asked us to wait (429/503 headers), or None. ``status``: the HTTP status
    when there was a response. ``attempts``: requests made by :func:`call_with_retries`.
    """

    def __init__(self, kind: str, message: str, *, provider: str = "", status: int | None = None,
                 retry_after: float | None = None, retryable: bool | None = None,
                 attempts: int = 1) -> None:
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown ProviderError kind {kind!r}")
        self.kind = kind
        self.message = message
        self.provider = provider
        self.status = status
        self.retry_after = retry_after
        self.retryable = kind in RETRYABLE_KINDS if retryable is None else retryable
        self.attempts = attempts
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.provider}: " if self.provider else ""
        status = f" (HTTP {self.status})" if self.status is not None else ""
        return f"{where}{self.kind}{status}: {self.message}"

    def __repr__(self) -> str:
        return (f"ProviderError(kind={self.kind!r}, provider={self.provider!r}, status={self.status!r}, "
                f"retry_after={self.retry_after!r}, retryable={self.retryable!r}, "
                f"message={self.message!r})")

    @property
    def counts_against_provider(self) -> bool:
        """Whether the breaker counts it as a provider failure. A 400/413/422 blames
        this one request (too long, a field the model rejects), not the provider."""
        return not (self.kind == "client_error" and self.status in (400, 413, 422))


def redact(text: str, secrets: Sequence[str | None] = ()) -> str:
    """``text`` with each secret and any bearer token replaced by ``***``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return re.sub(r"(?i)\bbearer\s+[^\s\"',;]+", "Bearer ***", text)


# --------------------------------------------------------------------------- Retry-After

def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait before retrying, from the response headers, or None.

    ``Retry-After`` (seconds or an HTTP-date) wins, then ``retry-after-ms``, then the
    ``x-ratelimit-reset*`` family: OpenAI-style durations (``"1s"``, ``"6m0s"``,
    ``"20ms"``), plain seconds, or an epoch timestamp. When the ``-requests`` and
    ``-tokens`` resets are both given, the one whose ``x-ratelimit-remaining-*`` is 0 is
    used (the exhausted limit), else the longer. ``now`` is wall time (epoch seconds),
    for HTTP-dates and epochs. The result is clamped to [0, :data:`MAX_RETRY_AFTER_S`].
    """
    now = time.time() if now is None else now
    lower = {k.lower(): v for k, v in headers.items()}
    value = _header_seconds(lower.get("retry-after"), now, allow_date=True)
    if value is None and lower.get("retry-after-ms"):
        try:
            value = float(lower["retry-after-ms"]) / 1000.0
        except ValueError:
            value = None
    if value is None:
        resets: dict[str, float] = {}
        for name, raw in lower.items():
            if name.startswith("x-ratelimit-reset"):
                seconds = _header_seconds(raw, now, allow_date=False)
                if seconds is not None:
                    resets[name[len("x-ratelimit-reset"):].lstrip("-")] = seconds
        exhausted = [seconds for suffix, seconds in resets.items()
                     if suffix and lower.get(f"x-ratelimit-remaining-{suffix}", "").strip() == "0"]
        chosen = exhausted or list(resets.values())
        value = max(chosen) if chosen else None
    if value is None or not math.isfinite(value):
        return None
    return min(max(value, 0.0), MAX_RETRY_AFTER_S)


_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?"
                       r"(?:(\d+(?:\.\d+)?)ms)?$")


def _header_seconds(raw: str | None, now: float, allow_date: bool) -> float | None:
    if raw is None or not raw.strip():
        return None
    raw = raw.strip()
    try:
        number = float(raw)
    except ValueError:
        number = None
    if number is not None:
        if number > 1e9:  # an epoch timestamp (x-ratelimit-reset on some APIs)
            return number - now
        return number
    match = _DURATION.match(raw)
    if match and any(match.groups()):
        h, m, s, ms = (float(g) if g else 0.0 for g in match.groups())
        return h * 3600 + m * 60 + s + ms / 1000
    if allow_date:
        try:
            return parsedate_to_datetime(raw).timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return None


# --------------------------------------------------------------------------- the client

@dataclass(frozen=True)
class ChatResult:
    content: str
    input_tokens: int
    output_tokens: int
    latency_s: float
    finish_reason: str = ""  # "length": the output was cut at max_tokens


def build_request_body(provider: ProviderConfig, system: str, user: str,
                       response_schema: dict | None, max_tokens: int) -> dict[str, Any]:
    """The chat-completions request body (separate from the HTTP call, for tests and
    for token estimates)."""
    if response_schema is not None and provider.supports_json_schema:
        response_format: dict[str, Any] = {
            "type": "json_schema",
            "json_schema": {"name": "classification", "schema": response_schema, "strict": True}}
    else:
        # json_object needs the word "JSON" in the messages (OpenAI checks): the prompt has it.
        response_format = {"type": "json_object"}
    body: dict[str, Any] = dict(provider.extra_body)
    body.update({
        "model": provider.model,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        "temperature": 0,
        "max_tokens": max(1, min(int(max_tokens), provider.max_output_tokens)),
        "response_format": response_format,
    })
    return body


class OpenAICompatibleClient:
    """One pooled HTTP client for every provider. Use ``async with`` or :meth:`aclose`."""

    def __init__(self, *, connect_timeout_s: float = 5.0, max_connections: int = 64,
                 max_keepalive_connections: int = 16, transport: httpx.AsyncBaseTransport | None = None,
                 trust_env: bool = True) -> None:
        self.connect_timeout_s = connect_timeout_s
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(30.0, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_keepalive_connections,
                                keepalive_expiry=30.0),
            transport=transport, trust_env=trust_env, follow_redirects=False,
            headers={"User-Agent": "dallosh-stream", "Accept": "application/json"})

    async def __aenter__(self) -> "OpenAICompatibleClient":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def chat(self, provider: ProviderConfig, system: str, user: str,
                   response_schema: dict | None, max_tokens: int, *,
                   timeout_s: float | None = None) -> ChatResult:
        """One request, no retry. ``timeout_s`` caps this attempt below the provider's
        ``timeout_s`` (the whole exchange, not each read). Raises :class:`ProviderError`."""
        key = provider.api_key()
        secrets = (key,)

        def error(kind: str, message: str, **kwargs: Any) -> ProviderError:
            return ProviderError(kind, redact(message, secrets), provider=provider.name, **kwargs)

        if provider.key_env and not key:
            raise error("auth", f"{provider.key_env} is not set", retryable=False)
        limit = provider.timeout_s if timeout_s is None else min(timeout_s, provider.timeout_s)
        if limit <= 0:
            raise error("timeout", "no time left for the request")
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        body = build_request_body(provider, system, user, response_schema, max_tokens)
        started = time.perf_counter()
        try:
            # asyncio.timeout bounds the whole exchange: httpx's read timeout is per read,
            # and a server trickling bytes would never trip it.
            async with asyncio.timeout(limit):
                response = await self._http.post(
                    provider.chat_url, json=body, headers=headers,
                    timeout=httpx.Timeout(limit, connect=min(limit, self.connect_timeout_s)))
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise error("timeout", f"no complete response within {limit:.3g}s "
                                   f"({type(exc).__name__})") from None
        except httpx.DecodingError as exc:
            raise error("bad_response", f"undecodable response body: {exc}") from None
        except httpx.UnsupportedProtocol as exc:
            raise error("client_error", f"{exc}", retryable=False) from None
        except httpx.HTTPError as exc:  # connect refused, reset, cut body, protocol errors
            raise error("connection", f"{type(exc).__name__}: {exc or 'connection failed'}") from None
        latency = time.perf_counter() - started
        status = response.status_code
        if status >= 300:
            raise self._status_error(response, error)
        try:
            data = response.json()
        except (ValueError, UnicodeDecodeError):
            raise error("bad_response", "response body is not JSON: "
                        f"{_excerpt(response.text, 80)!r}", status=status) from None
        return _chat_result(data, latency, lambda message: error("bad_response", message, status=status))

    @staticmethod
    def _status_error(response: httpx.Response, error: Callable[..., ProviderError]) -> ProviderError:
        status = response.status_code
        detail = _error_detail(response)
        retry_after = parse_retry_after(response.headers)
        if status == 429:
            return error("rate_limited", detail or "rate limited", status=status, retry_after=retry_after)
        if status in (401, 403):
            return error("auth", detail or "not authorised", status=status, retryable=False)
        if status == 400 and re.search(r"API_KEY_INVALID|api key not valid|invalid api key", detail, re.I):
            # Gemini answers a bad key with 400 INVALID_ARGUMENT
            return error("auth", detail, status=status, retryable=False)
        if status == 408:
            return error("timeout", detail or "request timeout", status=status, retry_after=retry_after)
        if status >= 500:
            return error("server_error", detail or "server error", status=status, retry_after=retry_after)
        if status < 400:
            return error("client_error", f"unexpected redirect or status {status}", status=status)
        return error("client_error", detail or "request rejected", status=status)


def _excerpt(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _error_detail(response: httpx.Response) -> str:
    """The provider's own error message (OpenAI ``{"error": {"message"}}``, Gemini's
    list of those, Mistral's ``{"message"}``/``{"detail"}``), shortened."""
    try:
        data: Any = response.json()
    except (ValueError, UnicodeDecodeError):
        return _excerpt(response.text, 200)
    if isinstance(data, list) and data:
        data = data[0]
    if isinstance(data, dict):
        inner = data.get("error", data)
        if isinstance(inner, dict):
            for name in ("message", "detail", "msg"):
                if inner.get(name):
                    return _excerpt(str(inner[name]), 200)
        elif isinstance(inner, str):
            return _excerpt(inner, 200)
        for name in ("message", "detail"):
            if data.get(name):
                return _excerpt(str(data[name]), 200)
    return _excerpt(json.dumps(data)[:400], 200)


def _token_count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _chat_result(data: Any, latency: float, bad: Callable[[str], ProviderError]) -> ChatResult:
    if not isinstance(data, dict):
        raise bad(f"expected a JSON object, got {type(data).__name__}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        extra = f" ({_error_detail_of(data)})" if "error" in data else ""
        raise bad(f"no choices in the response{extra}")
    choice = choices[0]
    finish = str(choice.get("finish_reason") or "")
    message = choice.get("message")
    if not isinstance(message, dict):
        raise bad("the first choice has no message")
    content = message.get("content")
    if isinstance(content, list):  # content parts (Mistral reasoning models, some gateways)
        content = "".join(part.get("text", "") for part in content
                          if isinstance(part, dict) and part.get("type", "text") == "text")
    if not isinstance(content, str) or not content.strip():
        why = "refused" if message.get("refusal") else f"finish_reason={finish or 'none'}"
        raise bad(f"empty message content ({why})")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    input_tokens = _token_count(usage.get("prompt_tokens")) or _token_count(usage.get("input_tokens"))
    output_tokens = (_token_count(usage.get("completion_tokens"))
                     or _token_count(usage.get("output_tokens")))
    total = _token_count(usage.get("total_tokens"))
    if total and input_tokens and total - input_tokens > output_tokens:
        # Gemini reports thinking tokens in total_tokens only; they are billed as output.
        output_tokens = total - input_tokens
    return ChatResult(content=content, input_tokens=input_tokens, output_tokens=output_tokens,
                      latency_s=latency, finish_reason=finish)


def _error_detail_of(data: dict) -> str:
    inner = data.get("error")
    if isinstance(inner, dict):
        return _excerpt(str(inner.get("message", "")), 200)
    return _excerpt(str(inner), 200)


# --------------------------------------------------------------------------- circuit breaker

class CircuitBreaker:
    """closed -> open -> half_open -> closed|open, per provider.

    Opens after ``consecutive_failures`` failures in a row, or when at least
    ``min_requests`` outcomes within the last ``window_s`` seconds include a share of
    failures >= ``failure_rate`` (LiteLLM-like defaults: 3, 5 requests, 50 %, 60 s).
    Stays open ``cooldown_s`` (5 s), then half-open: :meth:`allow` lets exactly one
    probe through; its success closes the breaker (window and cooldown reset), its
    failure re-opens it with the cooldown doubled, up to ``max_cooldown_s``. A probe
    that reports nothing for ``probe_timeout_s`` is presumed lost and another is allowed.

    :meth:`allow` *takes* the half-open probe: callers that only want to know whether a
    request could go now use :meth:`ready`, which changes nothing. Outcomes recorded
    while open (requests that started before it opened) are ignored.
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

    def allow(self) -> bool:
        """Whether a request may go now; in half-open, the first caller gets the probe."""
        now = self._clock()
        state = self._advance(now)
        if state == "closed":
            return True
        if state == "open" or self._probe_pending(now):
            return False
        self._probe_at = now
        return True

    def abandon(self) -> None:
        """A request allowed by :meth:`allow` ended without telling anything about the
        provider (cancelled, our own deadline): free the probe if it held it."""
        self._probe_at = None

    def record(self, success: bool) -> None:
        now = self._clock()
        state = self._advance(now)
        if state == "open":
            return
        if state == "half_open":
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
            self._probe_at = None
        return self._state

    def _open(self, now: float, cooldown: float) -> None:
        self._state = "open"
        self._opened_at = now
        self._cooldown = cooldown
        self._probe_at = None
        self.opened_count += 1

    def _close(self) -> None:
        self._state = "closed"
        self._cooldown = self.base_cooldown_s
        self._probe_at = None
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
        if not breaker.allow():
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
                breaker.abandon()
                raise
            if err.counts_against_provider:
                breaker.record(False)
            else:
                breaker.abandon()
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
            breaker.abandon()
            raise
        breaker.record(True)
        if on_attempt is not None:
            on_attempt(Attempt(provider.name, attempt + 1, "ok", result.latency_s, 200,
                               result.input_tokens, result.output_tokens))
        return result


# --------------------------------------------------------------------------- parsing

_SENTIMENT_WORDS = {"negative": "negative", "neg": "negative", "negatif": "negative",
                    "négatif": "negative", "neutral": "neutral", "neutre": "neutral",
                    "positive": "positive", "pos": "positive", "positif": "positive"}
_PRIORITY_WORDS = {"high": 0, "urgent": 0, "critical": 0, "haute": 0, "medium": 1, "normal": 1,
                   "moderate": 1, "moyenne": 1, "low": 2, "basse": 2}
_THINK = re.compile(r"<think>.*?(</think>|$)", re.S | re.I)
_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)(?:```|$)", re.S)
_ITEMS_ARRAY = re.compile(r'"items"\s*:\s*\[')


def parse_items(content: str, expected_ids: Sequence[str], topics: Sequence[str] = TOPICS,
                teams: Mapping[str, str] = DEFAULT_TEAMS) -> tuple[dict[str, Label], list[str]]:
    """The labels in a model's answer, by id, and the expected ids to send again.

    Accepted shapes: ``{"items": [...]}`` (or another single list of objects under any
    key), a bare list, a single item object; inside a ```json fence or not, after a
    ``<think>`` block, with prose before or after the JSON.

    Truncated output (the model hit max_tokens): the items array is read object by
    object and every *complete* object before the cut is kept; the cut one is dropped
    and its id reported missing. A complete object is syntactically closed, so none of
    its fields can have been cut.

    Per item: ``id`` must be one of ``expected_ids`` (others are ignored; the first
    occurrence of an id decides, later duplicates are ignored); ``sentiment`` one of
    negative/neutral/positive (also neg/pos and French); ``priority`` 0-2, also from
    "1", "P0", "high"/"medium"/"low", 1.0; an item without a valid sentiment or
    priority is invalid (missing). ``topic`` is matched case-insensitively (spaces and
    hyphens as underscores), unknown or missing -> "other"; ``team`` must be one of the
    teams' values, else the topic's team; ``confidence`` is a number (or "0.8", "80%"),
    clamped to [0, 1], 0.5 when missing; ``reason`` is a string cut to 200 characters.
    """
    expected = list(dict.fromkeys(str(i) for i in expected_ids))
    wanted = set(expected)
    topic_names = {_norm(t): t for t in topics}
    team_names = {t.lower(): t for t in teams.values()}
    labels: dict[str, Label] = {}
    decided: set[str] = set()
    for raw in extract_items(content or ""):
        if not isinstance(raw, dict):
            continue
        item_id = raw.get("id")
        if isinstance(item_id, bool) or not isinstance(item_id, (str, int)):
            continue
        item_id = str(item_id).strip()
        if item_id not in wanted or item_id in decided:
            continue
        decided.add(item_id)
        label = _label(raw, topic_names, team_names, teams)
        if label is not None:
            labels[item_id] = label
    return labels, [i for i in expected if i not in labels]


def extract_items(content: str) -> list[Any]:
    """The list of item objects in ``content`` (see :func:`parse_items`); [] if none."""
    text = _THINK.sub("", content)
    fence = _FENCE.search(text)
    if fence and fence.group(1).strip():
        text = fence.group(1)
    decoder = json.JSONDecoder()
    for match in list(re.finditer(r"[\[{]", text))[:20]:  # prose may hold a stray bracket
        start = match.start()
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            items = _recover_truncated(text, start, decoder)
        else:
            items = _items_of(value)
        if items:
            return items
    return []


def _items_of(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value if any(isinstance(v, dict) for v in value) else []
    if isinstance(value, dict):
        if isinstance(value.get("items"), list):
            return value["items"]
        if "id" in value:
            return [value]
        lists = [v for v in value.values() if isinstance(v, list) and any(isinstance(x, dict) for x in v)]
        if len(lists) == 1:
            return lists[0]
    return []


def _recover_truncated(text: str, start: int, decoder: json.JSONDecoder) -> list[Any]:
    """The complete objects of the items array that begins at or after ``start``, up to
    the first one that does not parse (the cut)."""
    match = _ITEMS_ARRAY.search(text, start)
    if match and (text[start] == "{" or match.start() == start):
        position = match.end()
    elif text[start] == "[":
        position = start + 1
    else:
        return []
    items: list[Any] = []
    while True:
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        if position >= len(text) or text[position] != "{":
            return items
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            return items  # the cut object: dropped
        items.append(value)


def _norm(text: str) -> str:
    return re.sub(r"[\s\-]+", "_", text.strip().lower())


def _label(raw: dict, topic_names: Mapping[str, str], team_names: Mapping[str, str],
           teams: Mapping[str, str]) -> Label | None:
    sentiment = raw.get("sentiment")
    sentiment = _SENTIMENT_WORDS.get(sentiment.strip().lower()) if isinstance(sentiment, str) else None
    priority = _priority(raw.get("priority"))
    if sentiment not in SENTIMENTS or priority is None:
        return None
    topic = raw.get("topic")
    topic = topic_names.get(_norm(topic)) if isinstance(topic, str) else None
    if topic is None:
        topic = topic_names.get("other")
        if topic is None:
            return None
    team = raw.get("team")
    team = team_names.get(team.strip().lower()) if isinstance(team, str) else None
    if team is None:
        team = teams.get(topic) or DEFAULT_TEAMS.get(topic, DEFAULT_TEAMS["other"])
    reason = raw.get("reason")
    reason = " ".join(str(reason).split())[:REASON_MAX_CHARS] if reason is not None else ""
    return Label(sentiment=sentiment, priority=priority, topic=topic, team=team,
                 confidence=_confidence(raw.get("confidence")), reason=reason)


def _priority(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        return value if 0 <= value <= 2 else None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _PRIORITY_WORDS:
            return _PRIORITY_WORDS[text]
        if text.startswith("p"):
            text = text[1:]
        if text in ("0", "1", "2"):
            return int(text)
    return None


def _confidence(value: Any) -> float:
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            number = None
    if number is None or not math.isfinite(number):
        return 0.5
    return min(1.0, max(0.0, number))
