"""The provider cascade: every tweet ends classified by the cheapest tier that is up.

For a group of items: the cache answers what it already knows; then each available
provider in priority order (cloud, then on-prem) gets token-budgeted requests of what
is still pending. Items a provider answered invalidly or not at all are re-sent once to
the same provider in smaller requests, then fall to the next provider; a provider whose
breaker is open, whose key is missing, or that the budget governor refuses is skipped.
What no provider classified goes to the local model tier when there is one, and to the
degraded rules otherwise: a tweet is never dropped. Every request is a ledger record.

Local-first mode (``escalate_below`` > 0, with a local tier): the local model answers
first, and only items whose calibrated confidence is below the threshold go up to the
providers; if no provider answers them, the local answer stands.

Privacy: a provider without zero data retention receives ``text_scrubbed`` only.

Labels: every tier classifies into the brand's taxonomy (``taxonomy=``, from the brand
file): the providers' prompt and response schema are generated from it, their answers
are read against its topic names and teams, and the degraded rules use its keywords.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Mapping, Sequence

from stream_app import metrics
from stream_app.classify.batching import Budget, plan_requests
from stream_app.classify.finops import BudgetGovernor, ClassificationCache
from stream_app.classify.prompt import (PROMPT_VERSION, expected_output_tokens, render_items,
                                        request_overhead_tokens, response_schema, system_prompt)
from stream_app.classify.answers import parse_items
from stream_app.classify.provider_client import OpenAICompatibleClient, ProviderError
from stream_app.classify.resilience import Attempt, CircuitBreaker, RateLimiter, call_with_retries
from stream_app.classify.provider_config import ProviderConfig
from stream_app.classify.rules import DEFAULT_TAXONOMY, RuleSet, compile_rules
from stream_app.classify.tokens import TokenCounter
from stream_app.classify.types import Item, Label, Outcome
from stream_app.records import ProviderCall, iso, utc_now
from stream_app.taxonomy import Taxonomy

LocalTier = Callable[[Sequence[Item], str], Awaitable[tuple[list[Outcome], ProviderCall]]]
DEGRADED_PROVIDER, DEGRADED_MODEL = "rules", "lexicon-v1"
CACHE_PROVIDER = "cache"


@dataclass
class CascadeResult:
    outcomes: list[Outcome]
    calls: list[ProviderCall] = field(default_factory=list)


class Cascade:
    def __init__(self, providers: Sequence[ProviderConfig], client: OpenAICompatibleClient,
                 counter: TokenCounter, topics: Sequence[str] | None = None,
                 teams: Mapping[str, str] | None = None, *, taxonomy: Taxonomy | None = None,
                 governor: BudgetGovernor | None = None, cache: ClassificationCache | None = None,
                 local_tier: LocalTier | None = None, escalate_below: float = 0.0,
                 deadline_s: float = 20.0,
                 fill: float = 0.9, max_items: int = 50, breaker_factory=CircuitBreaker) -> None:
        self.providers = list(providers)
        self.client, self.counter = client, counter
        self.taxonomy = taxonomy if taxonomy is not None else _default_taxonomy(topics, teams)
        self.topics, self.teams = self.taxonomy.topic_names, dict(self.taxonomy.teams)
        self.rules = compile_rules(self.taxonomy)
        self.governor = governor or BudgetGovernor()
        self.cache = cache or ClassificationCache()
        self.local_tier, self.escalate_below = local_tier, escalate_below
        self.deadline_s, self.fill, self.max_items = deadline_s, fill, max_items
        self.breakers = {p.name: breaker_factory() for p in self.providers}
        self.limiters = {p.name: RateLimiter(p.rpm, p.max_concurrency) for p in self.providers}
        self._system = system_prompt(self.taxonomy)
        self._schema = response_schema(self.topics, self.teams)
        # Fixed input of a request: system prompt + chat framing (+ the schema, billed as
        # input, for providers that take structured output).
        self._overhead = {structured: request_overhead_tokens(counter, self.taxonomy, structured)
                          for structured in (False, True)}

    # ------------------------------------------------------------------ entry point

    async def classify(self, items: Sequence[Item], run_id: str) -> CascadeResult:
        result = CascadeResult(outcomes=[])
        done: dict[str, Outcome] = {}
        pending = list(items)
        fallback: dict[str, Outcome] = {}
        if self.local_tier is not None and self.escalate_below > 0:
            outcomes, call = await self.local_tier(pending, run_id)
            result.calls.append(call)
            for outcome in outcomes:
                target = done if outcome.label.confidence >= self.escalate_below else fallback
                target[outcome.item_id] = outcome
            pending = [item for item in pending if item.id not in done]
        for provider in self.providers:
            if not pending:
                break
            pending = self._from_cache(pending, provider, done)
            if pending and self._usable(provider):
                pending = await self._through_provider(provider, pending, run_id, done, result)
        if pending and fallback:
            done.update((item.id, fallback[item.id]) for item in pending)
            pending = []
        if pending and self.local_tier is not None:
            outcomes, call = await self.local_tier(pending, run_id)
            result.calls.append(call)
            done.update((o.item_id, o) for o in outcomes)
            pending = [item for item in pending if item.id not in done]
        if pending:
            outcomes, call = degraded(pending, run_id, self.rules)
            result.calls.append(call)
            done.update((o.item_id, o) for o in outcomes)
        result.outcomes = [done[item.id] for item in items]
        return result

    async def classify_free(self, items: Sequence[Item], run_id: str) -> tuple[list[Outcome], ProviderCall]:
        """The tiers that cost nothing: the local model when there is one, else the rules."""
        if self.local_tier is not None:
            return await self.local_tier(items, run_id)
        return degraded(items, run_id, self.rules)

    # ------------------------------------------------------------------ one provider

    def _usable(self, provider: ProviderConfig) -> bool:
        return provider.available and self.breakers[provider.name].ready()

    def _from_cache(self, pending: list[Item], provider: ProviderConfig,
                    done: dict[str, Outcome]) -> list[Item]:
        still = []
        for item in pending:
            label = self.cache.get(item.text, PROMPT_VERSION, provider.model)
            if label is None:
                still.append(item)
            else:
                # provider "cache": no request was made (the model that labelled it is kept).
                done[item.id] = Outcome(item.id, label, provider.tier, CACHE_PROVIDER, provider.model,
                                        cached=True)
                metrics.CLASSIFIER_CACHE_HITS.inc()
        return still

    async def _through_provider(self, provider: ProviderConfig, pending: list[Item], run_id: str,
                                done: dict[str, Outcome], result: CascadeResult) -> list[Item]:
        budget = Budget(provider.context_tokens, provider.max_output_tokens, self.fill, self.max_items)
        scrub = not provider.zero_retention
        for attempt in range(2):  # the second pass re-sends only failed items, in halves
            overhead = self._overhead[provider.supports_json_schema]
            requests = plan_requests(pending, budget, self.counter, overhead, scrub)
            if attempt == 1:
                requests = [half for request in requests for half in _halves(request)]
            answers = await asyncio.gather(*(self._request(provider, request, run_id, scrub)
                                             for request in requests))
            failed: list[Item] = []
            for request, (labels, calls) in zip(requests, answers):
                result.calls.extend(calls)
                for item in request:
                    label = labels.get(item.id)
                    if label is None:
                        failed.append(item)
                        continue
                    done[item.id] = Outcome(item.id, label, provider.tier, provider.name,
                                            provider.model, latency_s=calls[-1].latency_s)
                    self.cache.put(item.text, PROMPT_VERSION, provider.model, label)
            pending = failed
            if not pending or not self._usable(provider):
                break
        return pending

    async def _request(self, provider: ProviderConfig, items: list[Item], run_id: str,
                       scrub: bool) -> tuple[dict[str, Label], list[ProviderCall]]:
        """One request (with its retries) to ``provider``: the labels it gave, and one
        ledger record per HTTP request made (a refused request gets one record too)."""
        user = render_items(items, use_scrubbed=scrub)
        expected_out = expected_output_tokens(len(items), self.counter)
        estimate = _cost(provider, self._overhead[provider.supports_json_schema] + self.counter.count(user),
                         expected_out)

        def ledger(outcome: str, error: str = "", latency_s: float = 0.0, input_tokens: int = 0,
                   output_tokens: int = 0) -> ProviderCall:
            cost = round(_cost(provider, input_tokens, output_tokens), 8)
            metrics.PROVIDER_REQUESTS.labels(provider.name, outcome).inc()
            metrics.PROVIDER_COST_USD.labels(provider.name).inc(cost)
            metrics.PROVIDER_TOKENS.labels(provider.name, "input").inc(input_tokens)
            metrics.PROVIDER_TOKENS.labels(provider.name, "output").inc(output_tokens)
            return ProviderCall(call_id=uuid.uuid4().hex, at=iso(utc_now()), run_id=_run(run_id),
                                tier=provider.tier, provider=provider.name, model=provider.model,
                                tweets=len(items), input_tokens=input_tokens,
                                output_tokens=output_tokens, cost_usd=cost,
                                latency_s=round(latency_s, 4), outcome=outcome, error=error[:300])

        if not self.governor.reserve(estimate):
            return {}, [ledger("skipped_budget", f"estimated ${estimate:.6f} would exceed the budget")]
        attempts: list[Attempt] = []
        try:
            chat = await call_with_retries(
                self.client, provider, self.breakers[provider.name], self.limiters[provider.name],
                self._system, user, self._schema if provider.supports_json_schema else None,
                min(provider.max_output_tokens, expected_out * 2),
                deadline=time.monotonic() + self.deadline_s, on_attempt=attempts.append)
        except ProviderError as exc:
            calls = [ledger(a.outcome, a.error, a.latency_s, a.input_tokens, a.output_tokens)
                     for a in attempts] or [ledger(exc.kind, str(exc))]
            self.governor.settle(estimate, sum(c.cost_usd for c in calls))
            return {}, calls
        calls = [ledger(a.outcome, a.error, a.latency_s, a.input_tokens, a.output_tokens)
                 for a in attempts[:-1]]  # the failed tries before the answer
        labels, missing = parse_items(chat.content, [i.id for i in items], self.topics, self.teams)
        outcome = "ok" if not missing else ("partial" if labels else "bad_response")
        calls.append(ledger(outcome, f"{len(missing)} item(s) missing or invalid" if missing else "",
                            chat.latency_s, chat.input_tokens, chat.output_tokens))
        self.governor.settle(estimate, sum(c.cost_usd for c in calls))
        return labels, calls


def _default_taxonomy(topics: Sequence[str] | None, teams: Mapping[str, str] | None) -> Taxonomy:
    """The built-in ``free`` taxonomy, routed by ``teams``, for callers that name its topics
    (or none) instead of passing a brand's taxonomy."""
    if topics is not None and tuple(topics) != DEFAULT_TAXONOMY.topic_names:
        raise ValueError("topics other than the built-in ones need their taxonomy: pass "
                         "taxonomy=brand.taxonomy")
    return DEFAULT_TAXONOMY.with_teams(teams or {})


def _halves(items: list[Item]) -> list[list[Item]]:
    middle = (len(items) + 1) // 2
    return [part for part in (items[:middle], items[middle:]) if part]


def _cost(provider: ProviderConfig, input_tokens: int, output_tokens: int) -> float:
    return (input_tokens * provider.price_in_per_m + output_tokens * provider.price_out_per_m) / 1e6


def _run(run_id: str) -> str:
    return run_id or "mixed"


def degraded(items: Sequence[Item], run_id: str,
             rules: RuleSet | None = None) -> tuple[list[Outcome], ProviderCall]:
    """The last resort: lexicon rules (the brand's ``rules``, the built-in ``free`` ones
    by default), which cannot fail and cost nothing."""
    rules = rules or compile_rules(DEFAULT_TAXONOMY)
    started = time.perf_counter()
    outcomes = []
    for item in items:
        rule = rules.classify(item.text)
        label = Label(rule.sentiment, rule.priority, rule.topic, rule.team, round(rule.confidence, 4),
                      rule.reason)
        outcomes.append(Outcome(item.id, label, "degraded", DEGRADED_PROVIDER, DEGRADED_MODEL))
    call = ProviderCall(call_id=uuid.uuid4().hex, at=iso(utc_now()), run_id=_run(run_id),
                        tier="degraded", provider=DEGRADED_PROVIDER, model=DEGRADED_MODEL,
                        tweets=len(items), latency_s=round(time.perf_counter() - started, 6))
    return outcomes, call
