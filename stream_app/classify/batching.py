"""Smart batching: pack tweets into LLM requests that fill a provider's budget.

A request costs, in tokens (see :mod:`stream_app.classify.prompt`):

* ``input  = prompt_tokens + sum(item_input_tokens)`` -- the fixed per-request part
  (system prompt + chat framing, given by the caller) plus each item's rendered line
  (exact: the user message's count is the sum of its lines' counts);
* ``output = output_envelope + sum(item_output_tokens)`` -- the *expected* answer.

A request may hold items while all three hold (:class:`Budget`):

1. context: ``input + output <= floor(fill x context_tokens)``;
2. output:  ``output <= floor(fill x output_tokens)``;
3. count:   ``items <= max_items`` (accuracy drops late in long batches).

Packing is greedy and keeps order: a request is *full* when the next item would break a
constraint (or ``max_items`` is reached); that item opens the next request.

An item too big for an empty request (a long post on a small context window) still goes
alone, untouched: the batcher never truncates, because cutting a text silently changes
what is classified. Such a request is recognisable with
``RequestCost.of(...).fits(budget)``; the provider then rejects it (context length)
and the cascade passes it to a tier with a larger window or to the local/rules tiers.

Streaming (:class:`WindowedBatcher`): a request is sent when it is full, or when its
oldest tweet has waited ``max_wait`` seconds -- bounded latency at low traffic, full
(cheap) requests at high traffic. The clock is passed in, so it is pure and testable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from stream_app.classify.prompt import (item_input_tokens, item_output_tokens,
                                        output_envelope_tokens)
from stream_app.classify.tokens import TokenCounter
from stream_app.classify.types import Item

__all__ = ["Budget", "RequestCost", "Packer", "plan_requests", "WindowedBatcher"]


@dataclass(frozen=True)
class Budget:
    """What one request to a provider may use.

    ``fill`` is the share of the context window AND of the output limit a request may
    use: the margin absorbs tokenizer differences (counts are tiktoken ``o200k_base``;
    Gemini, Mistral or Llama count somewhat differently) and answers longer than expected.
    """
    context_tokens: int
    output_tokens: int
    fill: float = 0.9
    max_items: int = 50

    def __post_init__(self) -> None:
        if self.context_tokens <= 0 or self.output_tokens <= 0:
            raise ValueError("context_tokens and output_tokens must be positive")
        if not 0 < self.fill <= 1:
            raise ValueError("fill must be in (0, 1]")
        if self.max_items < 1:
            raise ValueError("max_items must be at least 1")

    @property
    def context_limit(self) -> int:
        """Most input + expected output tokens per request: floor(fill x context)."""
        return math.floor(self.fill * self.context_tokens + 1e-9)

    @property
    def output_limit(self) -> int:
        """Most expected output tokens per request: floor(fill x output)."""
        return math.floor(self.fill * self.output_tokens + 1e-9)


@dataclass(frozen=True)
class RequestCost:
    items: int
    input_tokens: int   # prompt + items
    output_tokens: int  # expected

    def fits(self, budget: Budget) -> bool:
        return (self.items <= budget.max_items
                and self.output_tokens <= budget.output_limit
                and self.input_tokens + self.output_tokens <= budget.context_limit)

    def fill(self, budget: Budget) -> float:
        """Used / allowed on the binding constraint: the largest of the three ratios."""
        return max(self.items / budget.max_items,
                   self.output_tokens / budget.output_limit,
                   (self.input_tokens + self.output_tokens) / budget.context_limit)

    def binding(self, budget: Budget) -> str:
        """Which constraint is the tightest: ``context``, ``output`` or ``items``."""
        ratios = {"items": self.items / budget.max_items,
                  "output": self.output_tokens / budget.output_limit,
                  "context": (self.input_tokens + self.output_tokens) / budget.context_limit}
        return max(ratios, key=ratios.__getitem__)

    @classmethod
    def of(cls, items: Sequence[Item], counter: TokenCounter, prompt_tokens: int,
           use_scrubbed: bool) -> RequestCost:
        return cls(len(items),
                   prompt_tokens + sum(item_input_tokens(i, counter, use_scrubbed) for i in items),
                   output_envelope_tokens(counter)
                   + sum(item_output_tokens(i.id, counter) for i in items))


class Packer:
    """The one greedy packing rule, shared by :func:`plan_requests` and
    :class:`WindowedBatcher`: holds the open request and its running token sums."""

    def __init__(self, budget: Budget, counter: TokenCounter, prompt_tokens: int,
                 use_scrubbed: bool) -> None:
        if prompt_tokens < 0:
            raise ValueError("prompt_tokens must be >= 0")
        self.budget, self.counter = budget, counter
        self.prompt_tokens, self.use_scrubbed = prompt_tokens, use_scrubbed
        self._envelope = output_envelope_tokens(counter)
        # The cheapest item there can be: an empty text with a one-token id. When the
        # room left cannot take it, the request is full without waiting for the next item.
        tiny = Item(id="0", text="", text_scrubbed="")
        self._min_in = item_input_tokens(tiny, counter, use_scrubbed)
        self._min_out = item_output_tokens(tiny.id, counter)
        self.items: list[Item] = []
        self.input_tokens = prompt_tokens
        self.output_tokens = self._envelope

    def cost(self) -> RequestCost:
        return RequestCost(len(self.items), self.input_tokens, self.output_tokens)

    def _fits(self, n: int, inp: int, out: int) -> bool:
        b = self.budget
        return n <= b.max_items and out <= b.output_limit and inp + out <= b.context_limit

    def add(self, item: Item) -> list[Item] | None:
        """Add ``item``; returns the request it closed (full before it), if any."""
        inp = item_input_tokens(item, self.counter, self.use_scrubbed)
        out = item_output_tokens(item.id, self.counter)
        closed = None
        if self.items and not self._fits(len(self.items) + 1, self.input_tokens + inp,
                                         self.output_tokens + out):
            closed = self.take()
        # An oversized item in an empty request is accepted: it goes alone (see module doc).
        self.items.append(item)
        self.input_tokens += inp
        self.output_tokens += out
        return closed

    def is_full(self) -> bool:
        """No item at all could join the open request any more."""
        return bool(self.items) and not self._fits(len(self.items) + 1,
                                                   self.input_tokens + self._min_in,
                                                   self.output_tokens + self._min_out)

    def take(self) -> list[Item]:
        request, self.items = self.items, []
        self.input_tokens, self.output_tokens = self.prompt_tokens, self._envelope
        return request


def plan_requests(items: Sequence[Item], budget: Budget, counter: TokenCounter,
                  prompt_tokens: int, use_scrubbed: bool) -> list[list[Item]]:
    """Pack ``items`` in order into as few requests as the greedy rule gives.

    ``prompt_tokens``: the fixed input of every request (system prompt + framing; see
    :func:`stream_app.classify.prompt.request_overhead_tokens`)."""
    packer = Packer(budget, counter, prompt_tokens, use_scrubbed)
    requests = []
    for item in items:
        closed = packer.add(item)
        if closed:
            requests.append(closed)
        if packer.is_full():
            requests.append(packer.take())
    if packer.items:
        requests.append(packer.take())
    return requests


class WindowedBatcher:
    """Streaming batcher: full requests leave at once, a partial one after ``max_wait``.

    * ``add(item, now)`` -> requests that are ready: the open one when ``item`` does not
      fit in it (or it reached ``max_items`` / cannot take even the smallest item), and
      the open one when its oldest item is already due (so holding time stays bounded
      even by a caller that never polls ``due``);
    * ``due(now)`` -> the open request if its oldest item has waited ``>= max_wait``;
    * ``next_deadline()`` -> when ``due`` will next return something (None: empty), for
      the caller's sleep;
    * ``flush()`` -> the open request, whatever its state (shutdown, rebalance).

    ``now`` is any monotonic clock in seconds (``time.monotonic()`` in production).
    """

    def __init__(self, budget: Budget, counter: TokenCounter, prompt_tokens: int,
                 use_scrubbed: bool, max_wait: float = 1.0) -> None:
        if max_wait < 0:
            raise ValueError("max_wait must be >= 0")
        self.max_wait = max_wait
        self._packer = Packer(budget, counter, prompt_tokens, use_scrubbed)
        self._oldest: float | None = None  # arrival time of the open request's first item

    @property
    def pending(self) -> int:
        return len(self._packer.items)

    def cost(self) -> RequestCost:
        """Tokens of the open request so far."""
        return self._packer.cost()

    def next_deadline(self) -> float | None:
        return None if self._oldest is None else self._oldest + self.max_wait

    def add(self, item: Item, now: float) -> list[list[Item]]:
        ready = self.due(now)
        closed = self._packer.add(item)
        if closed:
            ready.append(closed)
            self._oldest = None
        if self._oldest is None:
            self._oldest = now
        if self._packer.is_full():
            ready.append(self._take())
        return ready

    def due(self, now: float) -> list[list[Item]]:
        deadline = self.next_deadline()  # the same float a timer was armed with
        if deadline is not None and now >= deadline:
            return [self._take()]
        return []

    def flush(self) -> list[list[Item]]:
        return [self._take()] if self._packer.items else []

    def _take(self) -> list[Item]:
        self._oldest = None
        return self._packer.take()
