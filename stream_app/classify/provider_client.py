"""Talking to OpenAI-compatible chat providers: one request and its errors.

* :class:`OpenAICompatibleClient` - one shared ``httpx.AsyncClient`` (pooled
  connections, explicit timeouts, no redirects) for every provider. ``chat()`` POSTs
  ``{base_url}/chat/completions`` and returns a :class:`ChatResult`, or raises a
  :class:`ProviderError` whose ``kind`` says what went wrong and ``retryable`` whether
  trying again may help.
* :func:`parse_retry_after` - how long a provider asked us to wait.

Retries, breakers and rate limits are in ``resilience.py``; reading the model's answer
is ``answers.py``; which provider gets which tweets is the cascade's (``cascade.py``).

Secrets: a key is read from the environment for each request and only ever put in the
``Authorization`` header. Error messages carry the provider's own message with the key
(and any ``Bearer ...``) replaced by ``***``, and exceptions are raised ``from None`` so
that no chained httpx exception (whose request holds the headers) travels with them.
A message is redacted first and shortened after (:func:`safe_message`): shortening first
could cut a key in two and leave a piece that no longer matches it (issue 15).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Mapping, Sequence

import httpx

from stream_app.classify.provider_config import ProviderConfig

log = logging.getLogger(__name__)

ERROR_KINDS = ("rate_limited", "server_error", "timeout", "connection", "bad_response", "auth",
               "client_error", "circuit_open")
RETRYABLE_KINDS = frozenset({"rate_limited", "server_error", "timeout", "connection"})
MAX_RETRY_AFTER_S = 3600.0  # a longer Retry-After is taken as this: the deadline decides anyway
REASON_MAX_CHARS = 200
MESSAGE_MAX_CHARS = 300    # an error message, after redaction
DETAIL_SCAN_CHARS = 4000   # what is read of a provider's error text (bounds the work only)
MIN_SECRET_FRAGMENT = 8    # a piece of a key this long is a leak: redacted too


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
    """``text`` with each secret, any piece of one that a cut could have left (a prefix or
    a suffix of :data:`MIN_SECRET_FRAGMENT` characters or more), and any bearer token
    replaced by ``***``."""
    for secret in secrets:
        if not secret or len(secret) < 4:
            continue
        text = text.replace(secret, "***")
        for size in range(len(secret) - 1, MIN_SECRET_FRAGMENT - 1, -1):
            for piece in (secret[:size], secret[-size:]):
                if piece in text:
                    text = text.replace(piece, "***")
    return re.sub(r"(?i)\bbearer\s+[^\s\"',;]+", "Bearer ***", text)


def safe_message(text: str, secrets: Sequence[str | None] = (),
                 limit: int = MESSAGE_MAX_CHARS) -> str:
    """What may be shown, logged and stored of a message that quotes a provider:
    redacted, then shortened (in this order)."""
    return _excerpt(redact(text, secrets), limit)


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
            return ProviderError(kind, safe_message(message, secrets), provider=provider.name,
                                 **kwargs)

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
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise error("bad_response", "response body is not JSON: "
                        f"{_excerpt(response.text, 80 + DETAIL_SCAN_CHARS)!r}",
                        status=status) from None
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
    list of those, Mistral's ``{"message"}``/``{"detail"}``), NOT yet redacted nor
    shortened to its final length (the caller's :func:`safe_message` does both)."""
    limit = DETAIL_SCAN_CHARS
    try:
        data: Any = response.json()
    except (ValueError, UnicodeDecodeError, RecursionError):
        return _excerpt(response.text, limit)
    if isinstance(data, list) and data:
        data = data[0]
    if isinstance(data, dict):
        inner = data.get("error", data)
        if isinstance(inner, dict):
            for name in ("message", "detail", "msg"):
                if inner.get(name):
                    return _excerpt(str(inner[name]), limit)
        elif isinstance(inner, str):
            return _excerpt(inner, limit)
        for name in ("message", "detail"):
            if data.get(name):
                return _excerpt(str(data[name]), limit)
    return _excerpt(response.text, limit)


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
    """Not redacted yet: it goes into a message that the caller's ``error()`` redacts."""
    inner = data.get("error")
    if isinstance(inner, dict):
        return _excerpt(str(inner.get("message", "")), DETAIL_SCAN_CHARS)
    return _excerpt(str(inner), DETAIL_SCAN_CHARS)
