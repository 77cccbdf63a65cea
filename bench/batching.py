"""``dallosh bench batching``: how well smart batching packs LLM requests, in tokens.

The tweets are the bundled sample (``connectors.samples.SAMPLE_PATH``: 2,994 synthetic
French/English customer-care tweets with text), cleaned with the clean stage's
``clean_text`` and scrubbed with its ``scrub_pii``, repeated and shuffled with a fixed
seed to 10,000 tweets with distinct 19-digit ids, and played as a steady stream
(``rate`` tweets per second, evenly spaced; the batcher is polled at every deadline).
No provider is called: the figures are token arithmetic with the o200k tokenizer
(exact for OpenAI models, an estimate for the others) and the prompt's measured output
estimate.

Three strategies on the same stream, for each reference budget:

* ``smart``: :class:`~stream_app.classify.batching.WindowedBatcher` (greedy token
  packing, ``max_items`` 50, ``max_wait`` 1 s);
* ``single``: one tweet per request;
* ``fixed20``: fixed 20-tweet requests, whatever their tokens (``fixed20_over_budget``
  counts those that would break the budget).

Reference budgets:

* ``onprem_small`` (the default): a small on-prem model (Ollama/vLLM), context 8,192,
  output 2,048, full text (runs on our side). The budget binds here: a tweet costs
  ~39 input tokens but ~68 expected output tokens, so the output limit (90 % of 2,048)
  fills at 27 tweets, before the 50-item cap.
* ``gemini_flash``: context 1,048,576, output 8,192, scrubbed text (cloud). Only the
  50-item cap binds: 50 tweets need ~3,400 output tokens of the 7,372 allowed.

Figures (per budget):

``fill_ratio``
    Mean, over the *full* requests of ``smart`` (those sent because the next tweet did
    not fit or ``max_items`` was reached; not those sent by the ``max_wait`` deadline or
    the final flush), of used / allowed on the binding constraint, i.e.
    ``max(items / max_items, expected_output / floor(fill x output_tokens),
    (input + expected_output) / floor(fill x context_tokens))``. 1.0 means no room left
    for one more tweet's worth; it is measured against the budget *after* the ``fill``
    safety margin.
``prompt_overhead_ratio``
    For ``smart``: tokens of the per-request fixed part (system prompt + chat framing)
    summed over requests / all input tokens (fixed part + tweet lines). The share of
    input paid for instructions rather than tweets.
``requests_per_1k``, ``tokens_per_1k``
    Requests and tokens (input + expected output) per 1,000 tweets, for ``smart``,
    ``single`` and ``fixed20``.
``load_sweep``
    ``smart`` at lower rates: at low traffic requests leave on the deadline, part-full.
``overhead_target``
    What the prompt-overhead target (<= 0.05) needs: the item cap that meets it, and
    whether any reference budget's output limit allows that many tweets per request.
"""

from __future__ import annotations

import csv
import gzip
import math
import os
import platform
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from connectors.samples import SAMPLE_PATH
from stream_app.classify.batching import Budget, RequestCost, WindowedBatcher, plan_requests
from stream_app.classify.prompt import (PROMPT_VERSION, expected_output_tokens,
                                        item_output_tokens, output_envelope_tokens,
                                        request_overhead_tokens)
from stream_app.classify.tokens import TokenCounter
from stream_app.classify.types import Item
from stream_app.clean.cleaning import clean_text
from stream_app.clean.pii import scrub_pii
from stream_app.records import iso, utc_now
from stream_app.settings import Settings

FIXED_BATCH = 20
FILL_TARGET = 0.95
OVERHEAD_TARGET = 0.05
FIRST_ID = 2031882935059436368  # the sample's first id: keeps X-like 19-digit ids


@dataclass(frozen=True)
class Reference:
    name: str
    budget: Budget
    use_scrubbed: bool
    note: str


REFERENCES = (
    Reference("onprem_small", Budget(context_tokens=8_192, output_tokens=2_048), False,
              "small on-prem model (Ollama/vLLM, 8k context, 2k output), full text"),
    Reference("gemini_flash", Budget(context_tokens=1_048_576, output_tokens=8_192), True,
              "Gemini-Flash-like cloud model (1M context, 8k output), scrubbed text"),
)
DEFAULT_REFERENCE = "onprem_small"


def load_tweets(n: int = 10_000, seed: int = 7, path: Path = SAMPLE_PATH) -> list[Item]:
    """The sample's tweets, cleaned and scrubbed, repeated and shuffled to ``n``."""
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        texts = [clean_text(row["full_text"]) for row in csv.DictReader(handle)]
    base = [(t, scrub_pii(t, public_handles={"free", "freebox", "freemobile"}).text)
            for t in texts if t]
    rng = random.Random(seed)
    pool: list[tuple[str, str]] = []
    while len(pool) < n:
        block = list(base)
        rng.shuffle(block)
        pool.extend(block)
    return [Item(id=str(FIRST_ID + i * 1_000_003), text=text, text_scrubbed=scrubbed)
            for i, (text, scrubbed) in enumerate(pool[:n])]


@dataclass
class _Run:
    costs: list[RequestCost] = field(default_factory=list)
    full: list[bool] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)  # per tweet: send time - arrival

    def totals(self, n_items: int, prompt_tokens: int) -> dict:
        inp = sum(c.input_tokens for c in self.costs)
        out = sum(c.output_tokens for c in self.costs)
        return {"requests": len(self.costs),
                "requests_per_1k": round(1000 * len(self.costs) / n_items, 2),
                "input_tokens_per_1k": round(1000 * inp / n_items),
                "output_tokens_per_1k": round(1000 * out / n_items),
                "tokens_per_1k": round(1000 * (inp + out) / n_items),
                "prompt_overhead_ratio": round(prompt_tokens * len(self.costs) / inp, 4)}


def _stream(items: Sequence[Item], ref: Reference, counter: TokenCounter, prompt_tokens: int,
            rate: float, max_wait: float) -> _Run:
    """Play ``items`` at ``rate``/s through a WindowedBatcher polled at every deadline."""
    batcher = WindowedBatcher(ref.budget, counter, prompt_tokens, ref.use_scrubbed,
                              max_wait=max_wait)
    run, arrival = _Run(), {}

    def sent(requests: list[list[Item]], now: float, full: bool) -> None:
        for request in requests:
            run.costs.append(RequestCost.of(request, counter, prompt_tokens, ref.use_scrubbed))
            run.full.append(full)
            run.waits.extend(now - arrival[item.id] for item in request)

    for i, item in enumerate(items):
        now = i / rate
        deadline = batcher.next_deadline()
        while deadline is not None and deadline <= now:  # the agent's timer fires
            sent(batcher.due(deadline), deadline, full=False)
            deadline = batcher.next_deadline()
        arrival[item.id] = now
        sent(batcher.add(item, now), now, full=True)
    end = len(items) / rate
    sent(batcher.flush(), end, full=False)
    return run


def _fixed(items: Sequence[Item], size: int, ref: Reference, counter: TokenCounter,
           prompt_tokens: int) -> _Run:
    run = _Run()
    for start in range(0, len(items), size):
        run.costs.append(RequestCost.of(items[start:start + size], counter, prompt_tokens,
                                        ref.use_scrubbed))
    return run


def _bench_reference(items: Sequence[Item], ref: Reference, counter: TokenCounter,
                     prompt_tokens: int, rate: float, max_wait: float) -> dict:
    smart = _stream(items, ref, counter, prompt_tokens, rate, max_wait)
    single = _fixed(items, 1, ref, counter, prompt_tokens)
    fixed = _fixed(items, FIXED_BATCH, ref, counter, prompt_tokens)
    full_costs = [c for c, full in zip(smart.costs, smart.full) if full]
    fills = [c.fill(ref.budget) for c in full_costs]
    binding: dict[str, int] = {}
    for cost in full_costs:
        binding[cost.binding(ref.budget)] = binding.get(cost.binding(ref.budget), 0) + 1
    runs = {"smart": smart.totals(len(items), prompt_tokens),
            "single": single.totals(len(items), prompt_tokens),
            "fixed20": fixed.totals(len(items), prompt_tokens)}
    b = ref.budget
    return {
        "note": ref.note,
        "budget": {"context_tokens": b.context_tokens, "output_tokens": b.output_tokens,
                   "fill": b.fill, "max_items": b.max_items, "context_limit": b.context_limit,
                   "output_limit": b.output_limit},
        "use_scrubbed": ref.use_scrubbed,
        "fill_ratio": round(sum(fills) / len(fills), 4) if fills else None,
        "fill_ratio_min": round(min(fills), 4) if fills else None,
        "full_requests": len(full_costs),
        "deadline_or_flush_requests": len(smart.costs) - len(full_costs),
        "binding_constraint": binding,
        "items_per_request_mean": round(len(items) / len(smart.costs), 2),
        "prompt_overhead_ratio": runs["smart"]["prompt_overhead_ratio"],
        "requests_per_1k": {k: v["requests_per_1k"] for k, v in runs.items()},
        "tokens_per_1k": {k: v["tokens_per_1k"] for k, v in runs.items()},
        "detail": runs,
        "max_wait_observed_s": round(max(smart.waits), 4),
        "fixed20_over_budget": sum(not c.fits(b) for c in fixed.costs),
    }


def _load_sweep(items: Sequence[Item], ref: Reference, counter: TokenCounter,
                prompt_tokens: int, rates: Sequence[float], max_wait: float) -> list[dict]:
    rows = []
    for rate in rates:
        run = _stream(items, ref, counter, prompt_tokens, rate, max_wait)
        fills = [c.fill(ref.budget) for c in run.costs]
        rows.append({"rate_per_s": rate,
                     "requests_per_1k": round(1000 * len(run.costs) / len(items), 2),
                     "items_per_request_mean": round(len(items) / len(run.costs), 2),
                     "fill_all_requests_mean": round(sum(fills) / len(fills), 4),
                     "full_request_share": round(sum(run.full) / len(run.full), 4),
                     "max_wait_observed_s": round(max(run.waits), 4),
                     **{k: v for k, v in run.totals(len(items), prompt_tokens).items()
                        if k in ("tokens_per_1k", "prompt_overhead_ratio")}})
    return rows


def _overhead_target(items: Sequence[Item], counter: TokenCounter, prompt_tokens: int) -> dict:
    """The item cap meeting the overhead target on a budget where only the cap binds."""
    unbounded = Budget(context_tokens=10**9, output_tokens=10**9)
    caps = {}
    for cap in (20, 50, 100, 150, 200, 250, 300):
        budget = Budget(unbounded.context_tokens, unbounded.output_tokens, max_items=cap)
        requests = plan_requests(items, budget, counter, prompt_tokens, use_scrubbed=True)
        costs = [RequestCost.of(r, counter, prompt_tokens, True) for r in requests]
        inp = sum(c.input_tokens for c in costs)
        caps[str(cap)] = {"prompt_overhead_ratio": round(prompt_tokens * len(costs) / inp, 4),
                          "expected_output_tokens_per_request":
                              round(sum(c.output_tokens for c in costs) / len(costs))}
    mean_item = (sum(c.input_tokens for c in costs) - prompt_tokens * len(costs)) / len(items)
    # overhead = P / (P + k * mean_item) <= t  <=>  k >= P (1 - t) / (t * mean_item)
    needed = math.ceil(prompt_tokens * (1 - OVERHEAD_TARGET) / (OVERHEAD_TARGET * mean_item))
    per_item_out = item_output_tokens(str(FIRST_ID), counter)
    envelope = output_envelope_tokens(counter)
    return {
        "target": OVERHEAD_TARGET, "prompt_tokens": prompt_tokens,
        "mean_item_input_tokens": round(mean_item, 2),
        "items_per_request_needed": needed,
        "expected_output_tokens_needed": expected_output_tokens(needed, counter),
        "met_with_max_items_50": caps["50"]["prompt_overhead_ratio"] <= OVERHEAD_TARGET,
        "by_max_items": caps,
        "max_items_allowed_by_output_limit": {
            ref.name: (ref.budget.output_limit - envelope) // per_item_out for ref in REFERENCES},
    }


def bench_batching(settings: Settings, n: int = 10_000, rate: float = 100.0,
                   max_wait: float = 1.0, sweep_rates: Sequence[float] = (1, 5, 20, 50),
                   say: Callable[[str], None] = lambda _line: None) -> dict:
    counter = TokenCounter("o200k_base", cache_dir=settings.cache_dir)
    prompt_tokens = request_overhead_tokens(counter)
    say(f"Loading {n:,} tweets from {SAMPLE_PATH.name}...")
    items = load_tweets(n)

    # Packing speed on a cold tokenizer cache (every distinct text counted once).
    cold = TokenCounter("o200k_base", cache_dir=settings.cache_dir)
    started = time.perf_counter()
    plan_requests(items, REFERENCES[0].budget, cold, prompt_tokens, REFERENCES[0].use_scrubbed)
    pack_s = time.perf_counter() - started

    budgets = {}
    for ref in REFERENCES:
        say(f"Streaming through the {ref.name} budget at {rate:g} tweets/s...")
        budgets[ref.name] = _bench_reference(items, ref, counter, prompt_tokens, rate, max_wait)
        budgets[ref.name]["load_sweep"] = _load_sweep(items, ref, counter, prompt_tokens,
                                                      sweep_rates, max_wait)
    default = budgets[DEFAULT_REFERENCE]
    return {
        "benchmark": "batching", "at": iso(utc_now()), "tweets": n,
        "distinct_texts": len({i.text for i in items}),
        "rate_per_s": rate, "max_wait_s": max_wait, "prompt_version": PROMPT_VERSION,
        "tokenizer": "o200k_base", "prompt_tokens_per_request": prompt_tokens,
        "default_budget": DEFAULT_REFERENCE,
        "fill_ratio": default["fill_ratio"],
        "prompt_overhead_ratio": default["prompt_overhead_ratio"],
        "requests_per_1k": default["requests_per_1k"],
        "tokens_per_1k": default["tokens_per_1k"],
        "targets": {"fill_ratio": FILL_TARGET, "prompt_overhead_ratio": OVERHEAD_TARGET},
        "budgets": budgets,
        "overhead_target": _overhead_target(items, counter, prompt_tokens),
        "pack_tweets_per_s_cold_cache": round(n / pack_s),
        "cost_per_1k_usd": _cost_per_1k(budgets),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
    }



def _cost_per_1k(budgets: dict) -> dict[str, dict[str, float]]:
    """Expected USD per 1,000 tweets for each packaged provider: smart batching's input
    and output tokens per 1,000 tweets (the cloud-sized budget for cloud providers, the
    small one for on-prem) at the provider's configured prices. What production really
    costs is in the ledger (the ledger query in docs/benchmarks.md)."""
    from stream_app.classify.provider_config import load_providers
    costs = {}
    for provider in load_providers(None, environ={}):
        reference = budgets["gemini_flash" if provider.tier == "cloud" else DEFAULT_REFERENCE]
        smart = reference["detail"]["smart"]
        costs[provider.name] = {mode: round((d["input_tokens_per_1k"] * provider.price_in_per_m
                                             + d["output_tokens_per_1k"] * provider.price_out_per_m) / 1e6, 4)
                                for mode, d in reference["detail"].items()}
        costs[provider.name]["smart_input_tokens_per_1k"] = smart["input_tokens_per_1k"]
    return costs
