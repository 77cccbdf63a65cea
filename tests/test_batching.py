"""Smart batching: every request respects every constraint, exactly, and leaves in time."""

from __future__ import annotations

import csv
import gzip
import math
import random

import pytest

from connectors.samples import SAMPLE_PATH
from stream_app.classify import prompt
from stream_app.classify.batching import (Budget, RequestCost, WindowedBatcher,
                                          plan_requests)
from stream_app.classify.tokens import TokenCounter
from stream_app.classify.types import Item
from stream_app.clean.cleaning import clean_text
from stream_app.clean.pii import scrub_pii

P = 401  # a fixed per-request input, like the v1 system prompt + framing


@pytest.fixture(scope="module")
def tweets() -> list[Item]:
    with gzip.open(SAMPLE_PATH, "rt", encoding="utf-8", newline="") as handle:
        texts = [clean_text(row["full_text"]) for row in csv.DictReader(handle)]
    return [Item(id=str(2031882935059436368 + 7 * i), text=t, text_scrubbed=scrub_pii(t).text)
            for i, t in enumerate(texts) if t][:1500]


def same(n: int, text: str = "La fibre est coupée à Bordeaux depuis ce matin 😡") -> list[Item]:
    """Items with equal token costs (same text, ids of one length)."""
    return [Item(id=str(1000000 + i), text=text, text_scrubbed=text) for i in range(n)]


def costs(counter: TokenCounter, item: Item) -> tuple[int, int, int]:
    return (prompt.item_input_tokens(item, counter, False),
            prompt.item_output_tokens(item.id, counter), prompt.output_envelope_tokens(counter))


def independent_cost(request: list[Item], counter: TokenCounter, use_scrubbed: bool
                     ) -> tuple[int, int]:
    """Input from the whole rendered message (not the per-item sum the batcher uses)."""
    inp = P + counter.count(prompt.render_items(request, use_scrubbed))
    out = prompt.output_envelope_tokens(counter) + sum(
        prompt.item_output_tokens(i.id, counter) for i in request)
    return inp, out


def respects(budget: Budget, n: int, inp: int, out: int) -> bool:
    return (n <= budget.max_items and out <= math.floor(budget.fill * budget.output_tokens)
            and inp + out <= math.floor(budget.fill * budget.context_tokens))


@pytest.mark.parametrize("k", [1, 7, 23])
def test_context_constraint_is_exact(counter: TokenCounter, k: int) -> None:
    items = same(200)
    inp, out, env = costs(counter, items[0])
    exact = P + k * inp + env + k * out
    fits = Budget(context_tokens=exact, output_tokens=10**9, fill=1.0, max_items=1000)
    assert {len(r) for r in plan_requests(items, fits, counter, P, False)[:-1]} == {k}
    if k > 1:
        tight = Budget(context_tokens=exact - 1, output_tokens=10**9, fill=1.0, max_items=1000)
        assert {len(r) for r in plan_requests(items, tight, counter, P, False)[:-1]} == {k - 1}


@pytest.mark.parametrize("k", [1, 7, 23])
def test_output_constraint_is_exact(counter: TokenCounter, k: int) -> None:
    items = same(200)
    _, out, env = costs(counter, items[0])
    fits = Budget(context_tokens=10**9, output_tokens=env + k * out, fill=1.0, max_items=1000)
    assert {len(r) for r in plan_requests(items, fits, counter, P, False)[:-1]} == {k}
    if k > 1:
        tight = Budget(context_tokens=10**9, output_tokens=env + k * out - 1, fill=1.0,
                       max_items=1000)
        assert {len(r) for r in plan_requests(items, tight, counter, P, False)[:-1]} == {k - 1}


def test_fill_applies_to_context_and_output_and_rounds_down(counter: TokenCounter) -> None:
    items = same(100)
    inp, out, env = costs(counter, items[0])
    k = 9
    x = P + k * inp + env + k * out
    # floor(0.5 * (2x + 1)) == x: exactly k fit; floor(0.5 * (2x - 1)) == x - 1: k - 1.
    def sizes(budget: Budget) -> set[int]:
        return {len(r) for r in plan_requests(items, budget, counter, P, False)[:-1]}

    assert sizes(Budget(2 * x + 1, 10**9, fill=0.5, max_items=1000)) == {k}
    assert sizes(Budget(2 * x - 1, 10**9, fill=0.5, max_items=1000)) == {k - 1}
    y = env + k * out
    assert Budget(10**9, 2 * y + 1, fill=0.5).output_limit == y
    assert sizes(Budget(10**9, 2 * y + 1, fill=0.5, max_items=1000)) == {k}
    assert sizes(Budget(10**9, 2 * y - 1, fill=0.5, max_items=1000)) == {k - 1}
    assert Budget(8192, 2048).context_limit == 7372 and Budget(8192, 2048).output_limit == 1843


def test_max_items(counter: TokenCounter) -> None:
    requests = plan_requests(same(103), Budget(10**9, 10**9, max_items=10), counter, P, False)
    assert [len(r) for r in requests] == [10] * 10 + [3]


@pytest.mark.parametrize("use_scrubbed", [False, True])
@pytest.mark.parametrize("budget", [Budget(8192, 2048), Budget(4096, 4096, fill=0.8),
                                    Budget(1_048_576, 8192, max_items=50),
                                    Budget(2000, 10**6, fill=1.0, max_items=1000)])
def test_real_tweets_every_request_fits_is_maximal_and_order_is_kept(
        counter: TokenCounter, tweets: list[Item], budget: Budget, use_scrubbed: bool) -> None:
    requests = plan_requests(tweets, budget, counter, P, use_scrubbed)
    assert [i for r in requests for i in r] == tweets  # order kept, nothing lost or doubled
    for request, following in zip(requests, requests[1:] + [None]):
        inp, out = independent_cost(request, counter, use_scrubbed)
        assert respects(budget, len(request), inp, out)
        cost = RequestCost.of(request, counter, P, use_scrubbed)
        assert cost == RequestCost(len(request), inp, out)
        if following is not None:  # greedy: the next tweet would not have fitted
            inp2, out2 = independent_cost(request + following[:1], counter, use_scrubbed)
            assert not respects(budget, len(request) + 1, inp2, out2)


def test_a_huge_item_goes_alone_untouched(counter: TokenCounter) -> None:
    budget = Budget(8192, 2048)
    small = same(4)
    huge = Item(id="2031882935059436999", text="panne " * 20_000, text_scrubbed="panne " * 20_000)
    requests = plan_requests(small[:2] + [huge] + small[2:], budget, counter, P, False)
    assert requests == [small[:2], [huge], small[2:]]
    assert requests[1][0] is huge  # not truncated
    assert not RequestCost.of([huge], counter, P, False).fits(budget)
    assert RequestCost.of(small[:2], counter, P, False).fits(budget)
    batcher = WindowedBatcher(budget, counter, P, False)
    assert batcher.add(small[0], 0.0) == []
    assert batcher.add(huge, 0.1) == [[small[0]], [huge]]  # alone, and sent at once
    assert batcher.pending == 0


def test_budget_validation() -> None:
    for bad in ({"fill": 0}, {"fill": 1.2}, {"max_items": 0}, {"context_tokens": 0}):
        with pytest.raises(ValueError):
            Budget(**{"context_tokens": 8192, "output_tokens": 2048, **bad})


# ----------------------------------------------------------------------- windowed


def test_partial_request_leaves_when_its_oldest_item_waited_max_wait(counter: TokenCounter) -> None:
    a, b, c, d = same(4)
    batcher = WindowedBatcher(Budget(8192, 2048), counter, P, False, max_wait=1.0)
    assert batcher.add(a, 10.0) == [] and batcher.add(b, 10.5) == []
    assert batcher.next_deadline() == 11.0
    assert batcher.due(10.999) == []
    assert batcher.due(11.0) == [[a, b]]  # b waited only 0.5 s: the oldest decides
    assert batcher.next_deadline() is None and batcher.due(99.0) == []
    assert batcher.add(c, 12.0) == [] and batcher.add(d, 12.9) == []
    assert batcher.due(12.95) == []
    # A caller that did not poll in time: the overdue request leaves before d's successor.
    e = same(5)[4]
    assert batcher.add(e, 13.5) == [[c, d]]
    assert batcher.next_deadline() == 14.5
    assert batcher.flush() == [[e]] and batcher.flush() == []


def test_full_requests_leave_at_once(counter: TokenCounter) -> None:
    items = same(7)
    batcher = WindowedBatcher(Budget(10**6, 10**6, max_items=3), counter, P, False, max_wait=60)
    out = [batcher.add(item, 0.0) for item in items]
    assert out == [[], [], [items[:3]], [], [], [items[3:6]], []]
    # Output budget for exactly 2 items: the second makes it full without waiting.
    _, per, env = costs(counter, items[0])
    batcher = WindowedBatcher(Budget(10**6, env + 2 * per, fill=1.0), counter, P, False, 60)
    assert [batcher.add(item, 0.0) for item in items[:4]] == [[], [items[:2]], [], [items[2:4]]]


def test_next_item_that_does_not_fit_closes_the_request_and_starts_the_clock(
        counter: TokenCounter) -> None:
    items = same(3)
    _, per, env = costs(counter, items[0])
    budget = Budget(10**6, env + 3 * per - 1, fill=1.0)  # room for 2 of these, not 3
    batcher = WindowedBatcher(budget, counter, P, False, max_wait=1.0)
    assert batcher.add(items[0], 0.0) == [] and batcher.add(items[1], 0.2) == []
    assert batcher.add(items[2], 0.7) == [items[:2]]
    assert batcher.next_deadline() == 1.7  # items[2]'s arrival, not items[0]'s


def test_streaming_equals_plan_requests_when_nothing_times_out(
        counter: TokenCounter, tweets: list[Item]) -> None:
    budget = Budget(8192, 2048)
    batcher = WindowedBatcher(budget, counter, P, True, max_wait=math.inf)
    streamed = [r for i, item in enumerate(tweets) for r in batcher.add(item, float(i))]
    assert streamed + batcher.flush() == plan_requests(tweets, budget, counter, P, True)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_item_waits_longer_than_max_wait_when_due_is_polled(
        counter: TokenCounter, tweets: list[Item], seed: int) -> None:
    """A timer polls ``due`` at ``next_deadline()``; bursts and lulls mixed."""
    rng = random.Random(seed)
    budget, max_wait = Budget(8192, 2048), 0.5
    batcher = WindowedBatcher(budget, counter, P, False, max_wait=max_wait)
    arrived: dict[str, float] = {}
    waits: list[float] = []
    deadline_requests = 0
    now = 0.0

    def sent(requests: list[list[Item]], at: float) -> None:
        for request in requests:
            waits.extend(at - arrived[i.id] for i in request)

    for item in tweets:
        now += rng.choice([0.0, 0.001, 0.01, 0.05, 0.3, 0.7, 2.0])
        while (deadline := batcher.next_deadline()) is not None and deadline <= now:
            due = batcher.due(deadline)
            assert len(due) == 1
            assert math.isclose(max(deadline - arrived[i.id] for i in due[0]), max_wait)
            deadline_requests += 1
            sent(due, deadline)
        arrived[item.id] = now
        sent(batcher.add(item, now), now)
        assert batcher.pending == 0 or batcher.next_deadline() > now  # nothing overdue left
    sent(batcher.flush(), now)
    assert len(waits) == len(tweets)
    assert max(waits) <= max_wait + 1e-9  # float time: (t + 0.5) - t may round below 0.5
    assert deadline_requests > 10  # the lulls really exercised the deadline path
    assert sum(w == 0 for w in waits) < len(waits)
