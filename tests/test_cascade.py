"""The provider cascade against LOCAL OpenAI-compatible servers started by the tests
(real sockets). ``cloud`` servers play paid cloud APIs (Gemini/Mistral/OpenAI: no real
key, nothing leaves 127.0.0.1); ``onprem`` servers play an Ollama/vLLM box. A fake
model labels each item from its text, so answers are checkable.

Fault injection: 503s, 429 with Retry-After, missing items, wrong ids, truncated output,
connection refused. Whatever happens, every tweet ends classified exactly once, and
the ledger accounts for every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from typing import Any, Callable

import pytest

from stream_app.classify.cascade import Cascade
from stream_app.classify.finops import BudgetGovernor
from stream_app.classify.provider_client import OpenAICompatibleClient
from stream_app.classify.resilience import CircuitBreaker
from stream_app.classify.provider_config import ProviderConfig
from stream_app.classify.rules import DEFAULT_TEAMS, TOPICS
from stream_app.classify.types import Item
from tests.conftest import free_port
from tests.live_server import FakeServer, Request, Respond

pytestmark = pytest.mark.timeout(30)
PATH = "/v1/chat/completions"
KEY_ENV = "DALLOSH_TEST_CASCADE_KEY"


@pytest.fixture(autouse=True)
def cloud_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, f"sk-test-{uuid.uuid4().hex}")


def items_in(request: Request) -> list[dict]:
    user = request.json()["messages"][-1]["content"]
    return [json.loads(line) for line in user.splitlines() if line.startswith("{")]


def fake_model_answer(items: list[dict]) -> list[dict]:
    return [{"id": it["id"], "sentiment": "negative" if "panne" in it["text"] else "neutral",
             "priority": 0 if "panne" in it["text"] else 2,
             "topic": "outage" if "panne" in it["text"] else "other",
             "team": "network_ops" if "panne" in it["text"] else "social_media",
             "confidence": 0.9, "reason": "fake model"} for it in items]


def completion(answer: list[dict] | str, prompt_tokens: int = 100, completion_tokens: int = 50) -> Respond:
    content = answer if isinstance(answer, str) else json.dumps({"items": answer})
    return Respond(200, {"choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": content}}],
                         "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                   "total_tokens": prompt_tokens + completion_tokens}})


def model(transform: Callable[[list[dict]], list[dict] | str] = lambda a: a) -> Callable[[Request], Respond]:
    return lambda request: completion(transform(fake_model_answer(items_in(request))))


def provider(server_url: str, name: str, tier: str = "cloud", **overrides: Any) -> ProviderConfig:
    values: dict[str, Any] = dict(
        name=name, tier=tier, base_url=server_url + "/v1", model=f"{name}-model",
        key_env=KEY_ENV if tier == "cloud" else None, price_in_per_m=0.3 if tier == "cloud" else 0.0,
        price_out_per_m=2.5 if tier == "cloud" else 0.0, context_tokens=32000, max_output_tokens=4096,
        timeout_s=2.0, supports_json_schema=True, zero_retention=tier != "cloud")
    values.update(overrides)
    return ProviderConfig(**values)


def tweets(n: int, start: int = 0) -> list[Item]:
    return [Item(str(1000 + i), f"{'panne fibre' if i % 2 else 'merci'} tweet {i} à Lyon",
                 f"{'panne fibre' if i % 2 else 'merci'} tweet {i} à Lyon") for i in range(start, start + n)]


def cascade_of(counter, *providers: ProviderConfig, **kwargs: Any) -> Cascade:
    kwargs.setdefault("breaker_factory", lambda: CircuitBreaker(cooldown_s=60))
    return Cascade(list(providers), OpenAICompatibleClient(trust_env=False), counter, TOPICS,
                   DEFAULT_TEAMS, **kwargs)


@contextlib.asynccontextmanager
async def serving(*servers: FakeServer):
    """Run ``servers`` for the body of an ``async with``; they stop at its end."""
    async with contextlib.AsyncExitStack() as stack:
        for server in servers:
            await stack.enter_async_context(server)
        yield


def assert_exactly_once(items: list[Item], result) -> None:
    assert [o.item_id for o in result.outcomes] == [i.id for i in items]


def test_healthy_cloud_classifies_everything_and_the_ledger_has_its_cost(counter):
    async def main():
        cloud = FakeServer().route(PATH, model())
        async with serving(cloud):
            items = tweets(120)
            cascade = cascade_of(counter, provider(cloud.url, "cloud-a"), max_items=50)
            result = await cascade.classify(items, "run-1")
            assert_exactly_once(items, result)
            assert {o.provider for o in result.outcomes} == {"cloud-a"}
            assert result.outcomes[1].label.sentiment == "negative" and result.outcomes[0].label.sentiment == "neutral"
            assert len(cloud.requests_to(PATH)) == 3  # 50 + 50 + 20: capped items per request
            assert [c.tweets for c in result.calls] == [50, 50, 20]
            assert all(c.outcome == "ok" and c.cost_usd == pytest.approx((100 * 0.3 + 50 * 2.5) / 1e6)
                       for c in result.calls)
            again = await cascade.classify(items, "run-2")  # a replay costs nothing
            assert all(o.cached for o in again.outcomes) and again.calls == []
            assert len(cloud.requests_to(PATH)) == 3
    asyncio.run(main())


def test_a_failing_cloud_opens_its_breaker_and_traffic_falls_to_onprem(counter):
    async def main():
        cloud = FakeServer().route(PATH, Respond(503, {"error": "overloaded"}))
        onprem = FakeServer().route(PATH, model())
        async with serving(cloud, onprem):
            cascade = cascade_of(counter, provider(cloud.url, "cloud-a"), provider(onprem.url, "ollama", "onprem"),
                                 max_items=10)
            items = tweets(40)
            result = await cascade.classify(items, "r")
            assert_exactly_once(items, result)
            assert {o.provider for o in result.outcomes} == {"ollama"}
            assert cascade.breakers["cloud-a"].state == "open"
            cloud_calls = len(cloud.requests_to(PATH))
            second = await cascade.classify(tweets(5, start=100), "r")  # breaker open: cloud not tried
            assert {o.provider for o in second.outcomes} == {"ollama"}
            assert len(cloud.requests_to(PATH)) == cloud_calls
            assert any(c.outcome == "server_error" for c in result.calls)
    asyncio.run(main())


def test_missing_and_wrong_ids_are_resent_alone_then_fall_through(counter):
    async def main():
        def drop_every_third_and_rename_one(answer):
            kept = [a for i, a in enumerate(answer) if i % 3]
            if kept:
                kept[0] = dict(kept[0], id="not-a-real-id")
            return kept
        cloud = FakeServer().route(PATH, model(drop_every_third_and_rename_one))
        onprem = FakeServer().route(PATH, model())
        async with serving(cloud, onprem):
            cascade = cascade_of(counter, provider(cloud.url, "cloud-a"), provider(onprem.url, "ollama", "onprem"))
            items = tweets(30)
            result = await cascade.classify(items, "r")
            assert_exactly_once(items, result)
            by_provider = {p: sum(o.provider == p for o in result.outcomes) for p in ("cloud-a", "ollama")}
            assert by_provider["cloud-a"] > 0 and by_provider["ollama"] > 0
            assert sum(by_provider.values()) == 30
            # Only what the first answer lacked (every third item, and the one it
            # misnamed) was re-sent, in two halves.
            resent = [{it["id"] for it in items_in(r)} for r in cloud.requests_to(PATH)[1:]]
            failed_first = {items[i].id for i in range(30) if i % 3 == 0} | {items[1].id}
            assert len(resent) == 2 and set().union(*resent) == failed_first
            assert {c.outcome for c in result.calls if c.provider == "cloud-a"} == {"partial"}
    asyncio.run(main())


def test_truncated_output_keeps_complete_items(counter):
    async def main():
        cut = lambda answer: json.dumps({"items": answer})[:-120]  # cut inside the last items
        cloud = FakeServer().route(PATH, model(cut), model())
        async with serving(cloud):
            items = tweets(10)
            result = await cascade_of(counter, provider(cloud.url, "cloud-a")).classify(items, "r")
            assert_exactly_once(items, result)
            assert {o.provider for o in result.outcomes} == {"cloud-a"}
            first, second = cloud.requests_to(PATH)[:2]
            assert 0 < len(items_in(second)) < len(items_in(first))  # only the cut ones re-sent
    asyncio.run(main())


def test_rate_limited_request_waits_for_retry_after_then_succeeds(counter):
    async def main():
        cloud = FakeServer().route(PATH, Respond(429, {"error": "slow down"}, {"Retry-After": "1"}), model())
        async with serving(cloud):
            loop = asyncio.get_running_loop()
            began = loop.time()
            items = tweets(4)
            result = await cascade_of(counter, provider(cloud.url, "cloud-a")).classify(items, "r")
            assert loop.time() - began >= 1.0
            assert {o.provider for o in result.outcomes} == {"cloud-a"}
            assert len(cloud.requests_to(PATH)) == 2
    asyncio.run(main())


def test_everything_down_still_classifies_every_tweet_with_rules(counter):
    async def main():
        cloud = FakeServer().route(PATH, Respond(500, {"error": "boom"}))
        async with serving(cloud):
            dead_onprem = provider(f"http://127.0.0.1:{free_port()}", "ollama", "onprem")  # connection refused
            items = tweets(25)
            result = await cascade_of(counter, provider(cloud.url, "cloud-a"), dead_onprem).classify(items, "r")
            assert_exactly_once(items, result)
            assert {(o.tier, o.provider) for o in result.outcomes} == {("degraded", "rules")}
            assert {c.outcome for c in result.calls} >= {"server_error", "connection", "ok"}
            assert sum(c.tweets for c in result.calls if c.tier == "degraded") == 25
    asyncio.run(main())


def test_budget_governor_shifts_traffic_to_the_cheaper_tier(counter):
    async def main():
        cloud = FakeServer().route(PATH, model())
        onprem = FakeServer().route(PATH, model())
        async with serving(cloud, onprem):
            governor = BudgetGovernor(max_per_hour=0.003)  # a few cloud requests, estimated ~0.001 each
            cascade = cascade_of(counter, provider(cloud.url, "cloud-a"), provider(onprem.url, "ollama", "onprem"),
                                 governor=governor, max_items=5)
            result = await cascade.classify(tweets(40), "r")
            providers = [o.provider for o in result.outcomes]
            assert "cloud-a" in providers and "ollama" in providers
            assert governor.spent_last_hour() <= 0.003
            assert any(c.outcome == "skipped_budget" for c in result.calls)
    asyncio.run(main())


def test_no_planted_pii_reaches_a_provider_without_zero_retention(counter):
    async def main():
        cloud = FakeServer().route(PATH, model())
        onprem = FakeServer().route(PATH, model())
        async with serving(cloud, onprem):
            planted = ["06 12 34 56 78", "jean.dupont@gmail.com", "FR76 3000 6000 0112 3456 7890 189"]
            items = [Item(str(i), f"panne à Lyon, rappelez-moi au {pii}", "panne à Lyon, rappelez-moi au <PII>")
                     for i, pii in enumerate(planted)]
            await cascade_of(counter, provider(cloud.url, "cloud-a")).classify(items, "r")
            sent = b"".join(r.body for r in cloud.requests)
            assert sent and not any(p.encode() in sent for p in planted)
            await cascade_of(counter, provider(onprem.url, "ollama", "onprem")).classify(items, "r")
            assert all(p.encode() in b"".join(r.body for r in onprem.requests) for p in planted)
    asyncio.run(main())


def test_breaker_recovers_through_a_half_open_probe(counter):
    async def main():
        cloud = FakeServer().route(PATH, *[Respond(503, {"error": "down"})] * 3, model())
        onprem = FakeServer().route(PATH, model())
        async with serving(cloud, onprem):
            cascade = cascade_of(counter, provider(cloud.url, "cloud-a"), provider(onprem.url, "ollama", "onprem"),
                                 breaker_factory=lambda: CircuitBreaker(cooldown_s=0.3))
            first = await cascade.classify(tweets(6), "r")
            assert {o.provider for o in first.outcomes} == {"ollama"}
            assert cascade.breakers["cloud-a"].state == "open"
            await asyncio.sleep(0.4)  # cooldown over: the next request is the probe
            second = await cascade.classify(tweets(6)[::-1], "r")
            assert {o.provider for o in second.outcomes} == {"cloud-a"}
            assert cascade.breakers["cloud-a"].state == "closed"
    asyncio.run(main())


def test_every_tier_uses_the_brand_taxonomy(counter):
    """An airline brand: the provider receives the airline's prompt and schema and its
    airline labels are kept (team from the taxonomy when the model gives none that
    exists); when the provider is down, the rules classify into the airline's topics."""
    from stream_app.taxonomy import builtin_taxonomy
    airline = builtin_taxonomy("airline")

    def airline_model(request: Request) -> Respond:
        return completion([{"id": it["id"], "sentiment": "negative", "priority": 1,
                            "topic": "Baggage", "team": "network_ops", "confidence": 0.8,
                            "reason": "bag lost"} for it in items_in(request)])

    async def main():
        items = [Item("1", "@united you lost my suitcase, awful", "@united you lost my suitcase, awful"),
                 Item("2", "flight cancelled, stuck in Denver", "flight cancelled, stuck in Denver")]
        cloud = FakeServer().route(PATH, airline_model)
        async with serving(cloud):
            cascade = Cascade([provider(cloud.url, "cloud-a")], OpenAICompatibleClient(trust_env=False),
                              counter, taxonomy=airline)
            result = await cascade.classify(items, "run-1")
            body = cloud.requests_to(PATH)[0].json()
        system = body["messages"][0]["content"]
        assert "baggage -> baggage_services" in system and "fibre" not in system
        schema = body["response_format"]["json_schema"]["schema"]
        assert schema["properties"]["items"]["items"]["properties"]["topic"]["enum"] == list(airline.topic_names)
        assert {(o.label.topic, o.label.team) for o in result.outcomes} == {("baggage", "baggage_services")}

        down = Cascade([provider(f"http://127.0.0.1:{free_port()}", "dead")],
                       OpenAICompatibleClient(trust_env=False), counter, taxonomy=airline)
        result = await down.classify(items, "run-2")
        labels = [(o.tier, o.label.topic, o.label.team, o.label.priority) for o in result.outcomes]
        assert labels == [("degraded", "baggage", "baggage_services", 1),
                          ("degraded", "delays_cancellations", "operations", 0)]
    asyncio.run(main())


def test_topics_without_their_taxonomy_are_refused(counter):
    with pytest.raises(ValueError, match="pass taxonomy="):
        Cascade([], OpenAICompatibleClient(trust_env=False), counter, ("cards", "other"),
                {"cards": "x", "other": "y"})
