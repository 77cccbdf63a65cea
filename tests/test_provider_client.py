"""The provider layer against LOCAL OpenAI-compatible HTTP servers.

Every server here is started by the test on 127.0.0.1 (real sockets, real HTTP/1.1, via
``tests/live_server.py``) and plays a *paid cloud API* (``/v1/chat/completions``,
bearer key, usage, 429/5xx/401, resets, silence). Nothing leaves the machine and no
real key is used: the "key" is a random string put in the environment by the test.

Time-dependent logic (backoff, Retry-After, breaker cooldowns, rate-limit spacing,
deadlines) runs on an injected clock whose ``sleep`` only advances it, so every test is
fast and exact; the HTTP timeouts are real and short (0.3 s).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from email.utils import formatdate
from typing import Any

import pytest

from stream_app.classify.answers import extract_items, parse_items
from stream_app.classify.provider_client import (ChatResult, OpenAICompatibleClient, ProviderError,
                                                 parse_retry_after, redact)
from stream_app.classify.resilience import (Attempt, CircuitBreaker, RateLimiter, backoff_delay,
                                            call_with_retries)
from stream_app.classify.provider_config import ProviderConfig
from stream_app.classify.rules import DEFAULT_TEAMS, TOPICS
from stream_app.classify.types import Label
from tests.live_server import HOLD, RESET, FakeServer, Respond, Stream

pytestmark = pytest.mark.timeout(10)

PATH = "/v1/chat/completions"
KEY_ENV = "DALLOSH_TEST_FAKE_CLOUD_KEY"
SCHEMA = {"type": "object", "properties": {"items": {"type": "array"}}, "required": ["items"],
          "additionalProperties": False}


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    secret = f"sk-test-{uuid.uuid4().hex}"
    monkeypatch.setenv(KEY_ENV, secret)
    return secret


def cloud(server: FakeServer, **overrides: Any) -> ProviderConfig:
    values: dict[str, Any] = dict(name="fake-cloud", tier="cloud", base_url=server.url + "/v1",
                                  model="fake-model-1", key_env=KEY_ENV, price_in_per_m=0.3,
                                  price_out_per_m=2.5, context_tokens=32000, max_output_tokens=4096,
                                  timeout_s=2.0, supports_json_schema=True)
    values.update(overrides)
    return ProviderConfig(**values)


def client() -> OpenAICompatibleClient:
    # trust_env=False: an HTTP(S)_PROXY in the test environment must not catch 127.0.0.1.
    return OpenAICompatibleClient(trust_env=False)


def completion(content: str, usage: dict | None = None, finish: str = "stop") -> dict:
    body: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion", "model": "fake-model-1",
                            "choices": [{"index": 0, "finish_reason": finish,
                                         "message": {"role": "assistant", "content": content}}]}
    if usage is not None:
        body["usage"] = usage
    return body


def items_json(*items: dict) -> str:
    return json.dumps({"items": list(items)})


def item(item_id: str, sentiment: str = "negative", priority: Any = 0, topic: str = "outage",
         **extra: Any) -> dict:
    return {"id": item_id, "sentiment": sentiment, "priority": priority, "topic": topic,
            "team": DEFAULT_TEAMS.get(topic, "social_media"), "confidence": 0.9,
            "reason": "no signal", **extra}


OK = Respond(200, completion(items_json(item("1")), {"prompt_tokens": 120, "completion_tokens": 30,
                                                      "total_tokens": 150}))


class FakeClock:
    """monotonic() stand-in; ``sleep`` records each delay and advances time by it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay
        await asyncio.sleep(0)


class Silent:
    """A server that reads the request and never answers (until the client hangs up)."""

    async def run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()


async def retrying(server: FakeServer, clock: FakeClock, *, provider: ProviderConfig | None = None,
                   breaker: CircuitBreaker | None = None, deadline_in: float = 60.0,
                   rng=lambda: 0.0, **kwargs: Any) -> ChatResult:
    provider = provider or cloud(server)
    async with client() as http:
        return await call_with_retries(
            http, provider, breaker or CircuitBreaker(clock=clock),
            RateLimiter(provider.rpm, provider.max_concurrency, clock=clock, sleep=clock.sleep),
            "system: answer in JSON", "user: tweets", SCHEMA, 1000, deadline=clock() + deadline_in,
            sleep=clock.sleep, clock=clock, rng=rng, **kwargs)


# --------------------------------------------------------------------------- the request

def test_a_normal_response_gives_content_usage_and_latency_from_an_openai_shaped_request(key):
    async def main():
        async with FakeServer() as server:
            server.route(PATH, OK)
            provider = cloud(server, extra_body={"reasoning_effort": "none"})
            async with client() as http:
                result = await http.chat(provider, "the system prompt", "the tweets", SCHEMA, 900)
            return result, server.requests_to(PATH)

    result, requests = asyncio.run(main())
    assert json.loads(result.content) == {"items": [item("1")]}
    assert (result.input_tokens, result.output_tokens, result.finish_reason) == (120, 30, "stop")
    assert 0 < result.latency_s < 2
    [request] = requests
    assert request.method == "POST"
    assert request.headers["authorization"] == f"Bearer {key}"
    assert request.headers["content-type"] == "application/json"
    body = request.json()
    assert body["model"] == "fake-model-1"
    assert body["messages"] == [{"role": "system", "content": "the system prompt"},
                                {"role": "user", "content": "the tweets"}]
    assert body["temperature"] == 0 and body["max_tokens"] == 900
    assert body["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "classification", "schema": SCHEMA, "strict": True}}
    assert body["reasoning_effort"] == "none"  # extra_body is merged


def test_without_json_schema_support_it_asks_for_a_json_object_and_sends_no_key_when_none(key):
    async def main():
        async with FakeServer() as server:
            server.route(PATH, Respond(200, completion(items_json(item("1")))))  # no usage
            provider = cloud(server, tier="onprem", key_env=None, supports_json_schema=False,
                             max_output_tokens=256)
            async with client() as http:
                result = await http.chat(provider, "s", "u", SCHEMA, 5000)
            return result, server.requests_to(PATH)[0]

    result, request = asyncio.run(main())
    assert (result.input_tokens, result.output_tokens) == (0, 0)
    assert "authorization" not in request.headers
    assert request.json()["response_format"] == {"type": "json_object"}
    assert request.json()["max_tokens"] == 256  # capped at the provider's max_output_tokens


def test_thinking_tokens_reported_only_in_total_tokens_count_as_output(key):
    async def main():
        async with FakeServer() as server:
            server.route(PATH, Respond(200, completion("{}", {"prompt_tokens": 100, "completion_tokens": 20,
                                                              "total_tokens": 150})))
            async with client() as http:
                return await http.chat(cloud(server), "s", "u", None, 100)

    result = asyncio.run(main())
    assert (result.input_tokens, result.output_tokens) == (100, 50)


def test_a_missing_key_is_an_auth_error_without_a_request(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)

    async def main():
        async with FakeServer() as server:
            server.route(PATH, OK)
            async with client() as http:
                with pytest.raises(ProviderError) as caught:
                    await http.chat(cloud(server), "s", "u", None, 100)
            return caught.value, len(server.requests)

    error, requests = asyncio.run(main())
    assert (error.kind, error.retryable, requests) == ("auth", False, 0)
    assert KEY_ENV in str(error)


# --------------------------------------------------------------------------- HTTP errors

def test_429_retry_after_seconds_is_waited_at_least_before_the_retry(key):
    async def main():
        clock = FakeClock()
        async with FakeServer() as server:
            server.route(PATH, Respond(429, {"error": {"message": "Rate limit reached", "type": "requests"}},
                                       headers={"Retry-After": "2"}), OK)
            attempts: list[Attempt] = []
            result = await retrying(server, clock, rng=lambda: 0.0, on_attempt=attempts.append)
            return result, clock.sleeps, len(server.requests_to(PATH)), attempts

    result, sleeps, requests, attempts = asyncio.run(main())
    assert result.input_tokens == 120
    assert requests == 2
    # the jitter alone would have retried at once (rng 0): the server's 2 s win, once
    # (the limiter's pause ends at the same moment, it adds no second wait)
    assert sleeps == [2.0]
    assert [a.outcome for a in attempts] == ["rate_limited", "ok"]


def test_429_retry_after_as_an_http_date_is_honoured(key):
    async def main():
        clock = FakeClock()
        async with FakeServer() as server:
            server.route(PATH, lambda request: Respond(
                429, {"error": {"message": "slow down"}},
                headers={"Retry-After": formatdate(time.time() + 4, usegmt=True)}), OK)
            await retrying(server, clock)
            return clock.sleeps

    [delay] = asyncio.run(main())
    assert 2.9 <= delay <= 4.1  # HTTP-dates have one-second resolution


@pytest.mark.parametrize("headers,expected", [
    ({"Retry-After": "7"}, 7.0),
    ({"retry-after": "1.5"}, 1.5),
    ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 10.0),
    ({"retry-after-ms": "250"}, 0.25),
    ({"x-ratelimit-reset-requests": "1m30.5s", "x-ratelimit-reset-tokens": "20ms"}, 90.5),
    ({"x-ratelimit-reset-requests": "1m30.5s", "x-ratelimit-reset-tokens": "20ms",
      "x-ratelimit-remaining-tokens": "0", "x-ratelimit-remaining-requests": "12"}, 0.02),
    ({"x-ratelimit-reset": "1445412485"}, 15.0),  # an epoch timestamp
    ({"x-ratelimit-reset": "6m0s"}, 360.0),
    ({"Retry-After": "99999"}, 3600.0),
    ({"Retry-After": "soon"}, None),
    ({}, None),
])
def test_retry_after_headers_are_parsed(headers, expected):
    assert parse_retry_after(headers, now=1445412470.0) == expected


def test_500_and_503_are_retried_with_exponential_full_jitter_then_succeed(key):
    async def main():
        clock = FakeClock()
        async with FakeServer() as server:
            server.route(PATH, Respond(500, {"error": {"message": "internal"}}),
                         Respond(503, b"upstream overloaded", headers={"Content-Type": "text/plain"}), OK)
            attempts: list[Attempt] = []
            result = await retrying(server, clock, rng=lambda: 1.0, on_attempt=attempts.append)
            return result, clock.sleeps, attempts, len(server.requests_to(PATH))

    result, sleeps, attempts, requests = asyncio.run(main())
    assert result.output_tokens == 30
    assert requests == 3
    assert sleeps == [0.5, 1.0]  # rng 1.0 = the top of the jitter range: base * 2**attempt
    assert [(a.outcome, a.status) for a in attempts] == [("server_error", 500), ("server_error", 503),
                                                         ("ok", 200)]


def test_backoff_is_full_jitter_between_zero_and_a_capped_exponential():
    assert backoff_delay(0, lambda: 1.0) == 0.5
    assert backoff_delay(3, lambda: 1.0) == 4.0
    assert backoff_delay(10, lambda: 1.0) == 8.0  # the cap
    assert backoff_delay(2, lambda: 0.25) == 0.5
    assert backoff_delay(5, lambda: 0.0) == 0.0


def test_retries_stop_after_max_retries_with_the_last_error(key):
    async def main():
        clock = FakeClock()
        async with FakeServer() as server:
            server.route(PATH, Respond(502, {"error": {"message": "bad gateway"}}))
            with pytest.raises(ProviderError) as caught:
                await retrying(server, clock, max_retries=2,
                               breaker=CircuitBreaker(consecutive_failures=10, clock=clock))
            return caught.value, len(server.requests_to(PATH))

    error, requests = asyncio.run(main())
    assert (error.kind, error.status, error.attempts, requests) == ("server_error", 502, 3, 3)


def test_a_server_that_holds_the_response_times_out(key):
    async def main():
        async with FakeServer() as server:
            server.route(PATH, Silent(), Stream([b'{"choices": [{"mess', HOLD]))
            errors = []
            async with client() as http:
                for _ in range(2):  # silent before the headers, then silent mid-body
                    started = time.monotonic()
                    with pytest.raises(ProviderError) as caught:
                        await http.chat(cloud(server, timeout_s=0.3), "s", "u", None, 100)
                    errors.append((caught.value, time.monotonic() - started))
            return errors

    for error, elapsed in asyncio.run(main()):
        assert error.kind == "timeout" and error.retryable
        assert 0.25 <= elapsed < 1.5


def test_a_connection_reset_mid_response_is_a_retryable_connection_error(key):
    async def main():
        async with FakeServer() as server:
            server.route(PATH, Stream([b'{"choices": [{"message": {"content": "{\\"items', RESET]))
            async with client() as http:
                with pytest.raises(ProviderError) as caught:
                    await http.chat(cloud(server), "s", "u", None, 100)
            return caught.value

    error = asyncio.run(main())
    assert error.kind == "connection" and error.retryable and error.status is None


def test_a_refused_connection_is_a_connection_error(key):
    async def main():
        async with FakeServer() as server:
            provider = cloud(server)
        async with client() as http:  # the server is gone: its port refuses
            with pytest.raises(ProviderError) as caught:
                await http.chat(provider, "s", "u", None, 100)
        return caught.value

    assert asyncio.run(main()).kind == "connection"


@pytest.mark.parametrize("response,fragment", [
    (Respond(200, b"<html>502 from the load balancer</html>", headers={"Content-Type": "text/html"}),
     "not JSON"),
    (Respond(200, {"id": "x", "object": "chat.completion", "choices": []}), "no choices"),
    (Respond(200, {"error": {"message": "quota"}}), "no choices in the response (quota)"),
    (Respond(200, completion("")), "empty message content"),
    (Respond(200, [1, 2]), "expected a JSON object"),
])
def test_a_malformed_body_is_a_bad_response_that_is_not_retried(key, response, fragment):
    async def main():
        clock = FakeClock()
        async with FakeServer() as server:
            server.route(PATH, response, OK)
            with pytest.raises(ProviderError) as caught:
                await retrying(server, clock)
            return caught.value, len(server.requests_to(PATH)), clock.sleeps

    error, requests, sleeps = asyncio.run(main())
    assert (error.kind, error.retryable, error.status) == ("bad_response", False, 200)
    assert fragment in str(error)
    assert (requests, sleeps) == (1, [])


@pytest.mark.parametrize("status,body,kind", [
    (401, {"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}, "auth"),
    (403, {"error": {"message": "Project does not have access to model"}}, "auth"),
    (400, [{"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
                      "status": "INVALID_ARGUMENT"}}], "auth"),  # Gemini's answer to a bad key
    (404, {"error": {"message": "The model `fake-model-1` does not exist"}}, "client_error"),
    (400, {"message": "Input is too long"}, "client_error"),  # Mistral's shape
])
def test_auth_and_client_errors_are_not_retried(key, status, body, kind):
    async def main():
        clock = FakeClock()
        breaker = CircuitBreaker(consecutive_failures=1, clock=clock)
        async with FakeServer() as server:
            server.route(PATH, Respond(status, body), OK)
            with pytest.raises(ProviderError) as caught:
                await retrying(server, clock, breaker=breaker)
            return caught.value, len(server.requests_to(PATH)), clock.sleeps, breaker.state

    error, requests, sleeps, state = asyncio.run(main())
    assert (error.kind, error.status, error.retryable) == (kind, status, False)
    assert (requests, sleeps) == (1, [])
    message = body[0]["error"]["message"] if isinstance(body, list) else \
        body.get("error", body)["message"]
    assert message in str(error)
    # a provider-wide failure counts against it; a 400 blames only this request
    assert state == ("closed" if (status, kind) == (400, "client_error") else "open")


# --------------------------------------------------------------------------- deadline

def test_a_retry_after_beyond_the_deadline_gives_up_at_once_as_a_timeout(key):
    async def main():
        clock = FakeClock()
        async with FakeServer() as server:
            server.route(PATH, Respond(503, {"error": {"message": "overloaded"}}, headers={"Retry-After": "30"}), OK)
            with pytest.raises(ProviderError) as caught:
                await retrying(server, clock, deadline_in=5.0)
            return caught.value, clock.sleeps, len(server.requests_to(PATH))

    error, sleeps, requests = asyncio.run(main())
    assert (error.kind, error.retry_after, error.retryable, error.attempts) == ("timeout", 30.0, False, 1)
    assert "server_error" in str(error) and "overloaded" in str(error)
    assert (sleeps, requests) == ([], 1)


def test_an_attempt_never_runs_past_the_deadline(key):
    async def main():
        async with FakeServer() as server:
            server.route(PATH, Silent())
            provider = cloud(server, timeout_s=3.0)
            started = time.monotonic()
            async with client() as http:
                with pytest.raises(ProviderError) as caught:
                    await call_with_retries(http, provider, CircuitBreaker(), RateLimiter(), "s", "u",
                                            None, 100, deadline=time.monotonic() + 0.4)
            return caught.value, time.monotonic() - started, len(server.requests_to(PATH))

    error, elapsed, requests = asyncio.run(main())
    assert error.kind == "timeout"
    assert elapsed < 1.5  # not the provider's 3 s
    assert requests == 1  # no second attempt: there was no time left for one


def test_a_passed_deadline_sends_nothing(key):
    async def main():
        clock = FakeClock()
        async with FakeServer() as server:
            server.route(PATH, OK)
            with pytest.raises(ProviderError) as caught:
                await retrying(server, clock, deadline_in=0.0)
            return caught.value, len(server.requests)

    error, requests = asyncio.run(main())
    assert (error.kind, error.attempts, requests) == ("timeout", 0, 0)


# --------------------------------------------------------------------------- circuit breaker

def test_breaker_opens_after_consecutive_failures_rejects_then_probes_and_recovers():
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock)  # defaults: 3 in a row, 5 s cooldown
    for _ in range(2):
        assert breaker.allow()
        breaker.record(False)
    assert breaker.state == "closed"
    breaker.record(False)
    assert breaker.state == "open" and not breaker.allow() and not breaker.ready()
    assert breaker.retry_in() == 5.0
    clock.now += 4.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.state == "half_open"
    assert breaker.ready() and breaker.ready()  # ready() does not take the probe
    assert breaker.allow()  # the probe
    assert not breaker.allow() and not breaker.ready()  # only one
    breaker.record(True)
    assert breaker.state == "closed"
    breaker.record(False)
    breaker.record(False)
    assert breaker.state == "closed"  # history was cleared on closing


def test_a_failed_probe_reopens_with_a_doubled_cooldown_up_to_the_cap():
    clock = FakeClock()
    breaker = CircuitBreaker(consecutive_failures=1, cooldown_s=5, max_cooldown_s=15, clock=clock)
    breaker.record(False)
    cooldowns = []
    for _ in range(4):
        cooldowns.append(breaker.retry_in())
        clock.now += breaker.retry_in()
        assert breaker.allow()
        breaker.record(False)
        assert breaker.state == "open"
    assert cooldowns == [5, 10, 15, 15]
    clock.now += 15
    assert breaker.allow()
    breaker.record(True)
    assert breaker.state == "closed" and breaker.cooldown_s == 5


def test_breaker_opens_when_half_of_at_least_five_requests_fail_within_the_window():
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock)
    for ok in (True, False, True, False):  # 2 of 4: too few requests to judge
        breaker.record(ok)
        clock.now += 1
    assert breaker.state == "closed"
    breaker.record(False)  # 3 of 5 = 60 %
    assert breaker.state == "open"

    old = CircuitBreaker(clock=clock)
    for ok in (False, True, False, True):
        old.record(ok)
    clock.now += 61  # those fell out of the 60 s window
    old.record(True)
    old.record(False)
    old.record(True)
    old.record(False)
    assert old.state == "closed"  # 2 of 4 in the window


def test_a_lost_probe_is_released_after_the_probe_timeout_and_abandon_frees_it():
    clock = FakeClock()
    breaker = CircuitBreaker(consecutive_failures=1, probe_timeout_s=30, clock=clock)
    breaker.record(False)
    clock.now += 5
    probe = breaker.allow()
    assert probe and not breaker.allow()
    breaker.abandon(probe)
    assert breaker.allow()
    clock.now += 30
    assert breaker.allow()  # the previous probe never reported back


def test_only_the_probe_holder_can_free_or_settle_the_probe():
    clock = FakeClock()
    breaker = CircuitBreaker(consecutive_failures=1, cooldown_s=5, probe_timeout_s=30, clock=clock)
    early = breaker.allow()        # let through while closed, still in flight
    breaker.record(False)          # another request's failure opens the breaker
    clock.now += 5
    probe = breaker.allow()
    assert probe and probe.probe and not early.probe
    breaker.abandon(early)         # the early request is cancelled: not the probe's to free
    assert not breaker.allow(), "a second probe was let through"
    breaker.record(True, early)    # nor is its late success the probe's outcome
    assert breaker.state == "half_open" and not breaker.allow()
    clock.now += 30                # the probe is presumed lost; a new one goes...
    second = breaker.allow()
    assert second
    breaker.abandon(probe)         # ...and the lost one, coming back, cannot free it
    assert not breaker.allow()
    breaker.record(True, second)
    assert breaker.state == "closed"


def test_a_cancelled_request_does_not_free_a_concurrent_probe(key):
    """Two requests at once through call_with_retries: one let through while the breaker
    was closed, the other the half-open probe. Cancelling the first must leave the probe
    held: a third request is refused (before the fix it got a second probe)."""
    async def main():
        clock = FakeClock()
        breaker = CircuitBreaker(consecutive_failures=1, cooldown_s=5, clock=clock)
        async with FakeServer() as server:
            server.route(PATH, Silent(), Silent(), OK)
            early = asyncio.create_task(retrying(server, clock, breaker=breaker))
            while len(server.requests) < 1:
                await asyncio.sleep(0.01)
            breaker.record(False)  # a third party's failure opens the breaker meanwhile
            clock.now += 5
            probe = asyncio.create_task(retrying(server, clock, breaker=breaker))
            while len(server.requests) < 2:
                await asyncio.sleep(0.01)
            early.cancel()
            with pytest.raises(asyncio.CancelledError):
                await early
            with pytest.raises(ProviderError) as caught:
                await retrying(server, clock, breaker=breaker)
            probe.cancel()
            with pytest.raises(asyncio.CancelledError):
                await probe
            return caught.value, len(server.requests)

    error, requests = asyncio.run(main())
    assert (error.kind, requests) == ("circuit_open", 2)


def test_call_with_retries_stops_when_the_breaker_opens_and_probes_after_the_cooldown(key):
    async def main():
        clock = FakeClock()
        breaker = CircuitBreaker(clock=clock)  # 3 failures in a row open it
        async with FakeServer() as server:
            server.route(PATH, Respond(503, {"error": {"message": "down"}}),
                         Respond(503, {"error": {"message": "down"}}),
                         Respond(503, {"error": {"message": "down"}}), OK)
            with pytest.raises(ProviderError) as first:
                await retrying(server, clock, breaker=breaker, max_retries=5)
            after_first = len(server.requests_to(PATH))
            with pytest.raises(ProviderError) as second:
                await retrying(server, clock, breaker=breaker)
            after_second = len(server.requests_to(PATH))
            clock.now += breaker.retry_in()
            assert breaker.state == "half_open"
            result = await retrying(server, clock, breaker=breaker)
            return first.value, after_first, second.value, after_second, result, breaker.state

    first, after_first, second, after_second, result, state = asyncio.run(main())
    assert (first.kind, first.attempts, after_first) == ("circuit_open", 3, 3)
    assert (second.kind, second.attempts, after_second) == ("circuit_open", 0, 3)  # nothing sent
    assert second.retry_after is not None and second.retry_after > 0
    assert result.input_tokens == 120 and state == "closed"


# --------------------------------------------------------------------------- rate limiter

def test_rate_limiter_spaces_requests_by_the_rpm():
    async def main():
        clock = FakeClock(0.0)
        limiter = RateLimiter(60, 4, clock=clock, sleep=clock.sleep)  # 1 a second, burst 1
        times = []
        for _ in range(4):
            async with limiter.slot():
                times.append(clock())
        burst = RateLimiter(120, 4, burst=2, clock=clock, sleep=clock.sleep)
        start = clock()
        burst_times = []
        for _ in range(4):
            await burst.acquire()
            burst_times.append(round(clock() - start, 6))
        return times, burst_times

    times, burst_times = asyncio.run(main())
    assert times == pytest.approx([0.0, 1.0, 2.0, 3.0])
    assert burst_times == [0.0, 0.0, 0.5, 1.0]


def test_rate_limiter_refuses_a_token_that_would_come_after_the_deadline_and_pauses_on_429():
    async def main():
        clock = FakeClock(0.0)
        limiter = RateLimiter(6, 1, clock=clock, sleep=clock.sleep)  # one per 10 s
        await limiter.acquire(deadline=5.0)
        with pytest.raises(ProviderError) as caught:
            await limiter.acquire(deadline=5.0)
        assert clock.sleeps == []  # refused at once, no waiting
        unlimited = RateLimiter(None, 1, clock=clock, sleep=clock.sleep)
        await unlimited.acquire()
        unlimited.pause(3.0)
        await unlimited.acquire()
        return caught.value, clock.sleeps

    error, sleeps = asyncio.run(main())
    assert error.kind == "timeout"
    assert sleeps == [3.0]


def test_rate_limiter_caps_concurrency():
    async def main():
        limiter = RateLimiter(None, 2)
        in_flight, peak = 0, 0

        async def request():
            nonlocal in_flight, peak
            async with limiter.slot():
                in_flight += 1
                peak = max(peak, in_flight)
                await asyncio.sleep(0.02)
                in_flight -= 1

        await asyncio.gather(*(request() for _ in range(6)))
        return peak

    assert asyncio.run(main()) == 2


# --------------------------------------------------------------------------- parsing

EXPECTED = ["101", "102", "103"]


def test_items_with_missing_and_wrong_ids_come_back_as_missing(key):
    content = items_json(item("101"), item("999"), item("103", "positive", 2, "billing"),
                         item("101", "positive", 2, "billing"))  # a duplicate: the first wins

    async def main():
        async with FakeServer() as server:
            server.route(PATH, Respond(200, completion(content)))
            async with client() as http:
                return await http.chat(cloud(server), "s", "u", SCHEMA, 500)

    result = asyncio.run(main())
    labels, missing = parse_items(result.content, EXPECTED, TOPICS, DEFAULT_TEAMS)
    assert set(labels) == {"101", "103"}
    assert labels["101"] == Label("negative", 0, "outage", "network_ops", 0.9, "no signal")
    assert labels["103"].topic == "billing" and labels["103"].team == "billing"
    assert missing == ["102"]


def test_truncated_output_keeps_the_items_completed_before_the_cut(key):
    full = json.dumps({"items": [item("101"), item("102", "neutral", 1, "mobile"), item("103")]})
    cut = full[:full.index('"id": "103"') + 20]  # the model hit max_tokens inside item 103

    async def main():
        async with FakeServer() as server:
            server.route(PATH, Respond(200, completion(cut, finish="length")))
            async with client() as http:
                return await http.chat(cloud(server), "s", "u", SCHEMA, 500)

    result = asyncio.run(main())
    assert result.finish_reason == "length"
    labels, missing = parse_items(result.content, EXPECTED)
    assert list(labels) == ["101", "102"] and labels["102"].topic == "mobile"
    assert missing == ["103"]


@pytest.mark.parametrize("cut_after", ['{"items": [', '{"items": [{"id": "101", "sentiment": "neg',
                                       '{"items": [{"id": "101", "sentiment": "negative", "priority": 0}',
                                       '[{"id": "101", "sentiment": "negative", "priority": 0}, {"id"'])
def test_truncation_recovery_never_accepts_a_cut_object(cut_after):
    labels, missing = parse_items(cut_after, EXPECTED)
    complete = cut_after.count("}")
    assert len(labels) == complete
    assert missing == EXPECTED[complete:]


@pytest.mark.parametrize("content", [
    "```json\n" + items_json(item("101"), item("102")) + "\n```",
    "Here is the classification:\n```\n" + items_json(item("101"), item("102")) + "\n```\nHope it helps!",
    json.dumps([item("101"), item("102")]),
    items_json(item("101"), item("102")) + "\n\nNote: tweet 103 was ambiguous {sic}.",
    "<think>the user wants {json}</think>" + items_json(item("101"), item("102")),
    json.dumps({"classifications": [item("101"), item("102")]}),
    "```json\n" + items_json(item("101"), item("102"))[:-2],  # fence never closed, array cut
])
def test_tolerated_shapes(content):
    labels, missing = parse_items(content, EXPECTED)
    assert set(labels) == {"101", "102"} and missing == ["103"]


def test_field_validation_and_normalisation():
    raw = [
        {"id": 101, "sentiment": "Negative", "priority": "P0", "topic": "Customer Service",
         "team": "nobody", "confidence": 7, "reason": "x" * 500},
        {"id": "102", "sentiment": "positive", "priority": "low", "topic": "weather",
         "confidence": "80%", "team": "SALES"},
        {"id": "103", "sentiment": "neutral", "priority": 1.0},
        {"id": "104", "sentiment": "angry", "priority": 0},
        {"id": "105", "sentiment": "negative", "priority": 3},
        {"id": "106", "sentiment": "negative", "priority": True},
        {"id": "107", "sentiment": "negative", "priority": "high", "confidence": float("nan")},
        {"id": "108", "sentiment": "negative", "priority": "2", "confidence": -1},
        "not an object",
    ]
    ids = [str(i) for i in range(101, 109)]
    labels, missing = parse_items(json.dumps(raw), ids, TOPICS, DEFAULT_TEAMS)
    assert missing == ["104", "105", "106"]
    assert labels["101"] == Label("negative", 0, "customer_service", "customer_care", 1.0, "x" * 200)
    assert labels["102"] == Label("positive", 2, "other", "sales", 0.8, "")
    assert labels["103"] == Label("neutral", 1, "other", "social_media", 0.5, "")
    assert labels["107"].priority == 0 and labels["107"].confidence == 0.5
    assert labels["108"].priority == 2 and labels["108"].confidence == 0.0


def test_custom_teams_are_used_for_the_topic_fallback():
    teams = {**DEFAULT_TEAMS, "outage": "noc_bordeaux"}
    labels, _ = parse_items(json.dumps([{"id": "1", "sentiment": "negative", "priority": 0,
                                         "topic": "outage"}]), ["1"], TOPICS, teams)
    assert labels["1"].team == "noc_bordeaux"


@pytest.mark.parametrize("content", ["", "I cannot help with that.", "{}", '{"items": []}', "[1, 2]",
                                     '{"items": "none"}', "null"])
def test_unusable_content_reports_every_id_missing(content):
    assert parse_items(content, EXPECTED) == ({}, EXPECTED)
    assert extract_items(content) == []


# --------------------------------------------------------------------------- secrets

def test_secrets_never_appear_in_errors_reprs_or_logs(key, caplog):
    caplog.set_level(logging.DEBUG)  # every logger: ours, httpx, httpcore

    async def main():
        clock = FakeClock()
        errors: list[ProviderError] = []
        async with FakeServer() as server:
            server.route(PATH,
                         # a gateway echoing our header back, then an API quoting the key
                         Respond(500, {"error": {"message": f"upstream said: Authorization: Bearer {key}"}}),
                         Respond(401, {"error": {"message": f"Incorrect API key provided: {key}."}}),
                         Respond(200, f"<html>token={key}</html>".encode()))
            provider = cloud(server)
            with pytest.raises(ProviderError) as caught:
                await retrying(server, clock, provider=provider)
            errors.append(caught.value)
            async with client() as http:
                with pytest.raises(ProviderError) as caught:
                    await http.chat(provider, "s", "u", None, 10)
            errors.append(caught.value)
            return provider, errors, server.requests_to(PATH)

    provider, errors, requests = asyncio.run(main())
    assert [e.kind for e in errors] == ["auth", "bad_response"]
    assert all(r.headers["authorization"] == f"Bearer {key}" for r in requests)  # it was sent
    assert "upstream said" in caplog.text  # the retry of the 500 was logged...
    texts = [caplog.text, repr(provider), str(provider)]
    for error in errors:
        texts += [str(error), repr(error), error.message, str(error.args)]
        # no chained httpx exception (its request holds the Authorization header)
        assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    for text in texts:
        assert key not in text
        assert key[8:20] not in text
    assert "***" in str(errors[0])  # ...with the key masked


def test_redact_masks_keys_and_bearer_tokens():
    assert redact("key sk-abcdef and Bearer xyz.123", ["sk-abcdef"]) == "key *** and Bearer ***"
    assert redact("nothing here", [None, ""]) == "nothing here"
    secret = "sk-proj-" + "a1b2c3d4" * 5
    assert redact(f"cut here: {secret[:17]}", [secret]) == "cut here: ***"
    assert redact(f"{secret[-12:]} starts it", [secret]) == "*** starts it"
    assert redact("sk-proj is a prefix name", [secret]) == "sk-proj is a prefix name"  # < 8 chars


@pytest.mark.parametrize("status", [401, 500])
def test_no_piece_of_the_key_survives_a_long_provider_message(key, status):
    """The provider quotes the key after ~180 characters: shortening the message before
    redacting it used to cut the key in two and leave its first part in the error."""
    message = "x" * 150 + f" Incorrect API key provided: {key}. See the docs."

    async def main():
        async with FakeServer() as server:
            server.route(PATH, Respond(status, {"error": {"message": message}}))
            async with client() as http:
                with pytest.raises(ProviderError) as caught:
                    await http.chat(cloud(server), "s", "u", None, 10)
        return caught.value

    error = asyncio.run(main())
    shown = [str(error), repr(error), error.message]
    for text in shown:
        assert not any(key[i:i + 8] in text for i in range(len(key) - 7)), text
    assert "Incorrect API key provided: ***" in error.message
    assert len(error.message) <= 303  # still shortened, after the redaction
