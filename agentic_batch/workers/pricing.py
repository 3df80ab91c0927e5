"""What a model call costs, so a job's budget (`--budget-usd`) means something for API workers.

Providers report tokens, not dollars, so the worker prices each call from this table (USD per
million input / output tokens, list prices at the time of writing, matched by the longest model-name
prefix, where the prefix must end at a `-`, `:` or `@` boundary, so dated snapshots like
`gpt-4o-2024-08-06` are covered but `gpt-5.5` is not taken for `gpt-5`). Prices change and local models are
free: `price_in` / `price_out` options override the table. An unknown model with no override costs
0.0 and says so once in a `warning` event, rather than silently reporting a budget that never moves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

def usd(value: float) -> float:
    """A cost as a clean number: float prices and sums carry noise (0.0001 + 0.00018 is
    0.00028000000000000003); nine decimals keep a fraction of a micro-dollar (a few tokens of a cheap
    model) and drop the noise. Every cost a user or an export sees goes through here."""
    return round(value, 9)


#: (model-name prefix, USD per 1M input tokens, USD per 1M output tokens). Longest prefix wins.
PRICES: tuple[tuple[str, float, float], ...] = (
    # OpenAI
    ("gpt-5", 1.25, 10.00),
    ("gpt-5-mini", 0.25, 2.00),
    ("gpt-5-nano", 0.05, 0.40),
    ("gpt-4.1", 2.00, 8.00),
    ("gpt-4.1-mini", 0.40, 1.60),
    ("gpt-4.1-nano", 0.10, 0.40),
    ("gpt-4o", 2.50, 10.00),
    ("gpt-4o-mini", 0.15, 0.60),
    ("gpt-4-turbo", 10.00, 30.00),
    ("gpt-4", 30.00, 60.00),
    ("gpt-3.5-turbo", 0.50, 1.50),
    ("o1", 15.00, 60.00),
    ("o1-mini", 1.10, 4.40),
    ("o3", 2.00, 8.00),
    ("o3-pro", 20.00, 80.00),
    ("o3-mini", 1.10, 4.40),
    ("o4-mini", 1.10, 4.40),
    # Anthropic
    ("claude-opus-4", 15.00, 75.00),
    ("claude-opus-4-5", 5.00, 25.00),  # Opus 4.5 and later 4.x dropped to $5 / $25
    ("claude-opus-4-6", 5.00, 25.00),
    ("claude-opus-4-7", 5.00, 25.00),
    ("claude-opus-4-8", 5.00, 25.00),
    ("claude-sonnet-4", 3.00, 15.00),
    ("claude-haiku-4", 1.00, 5.00),
    ("claude-3-7-sonnet", 3.00, 15.00),
    ("claude-3-5-sonnet", 3.00, 15.00),
    ("claude-3-5-haiku", 0.80, 4.00),
    ("claude-3-opus", 15.00, 75.00),
    ("claude-3-haiku", 0.25, 1.25),
)


#: What a provider batch (OpenAI Batch, Anthropic Message Batches) bills of the online price.
BATCH_PRICE_FACTOR = 0.5


def table_price(model: str) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens for `model`, or None when the table does not know it.

    A routing prefix such as OpenRouter's `openai/gpt-4o` is ignored.
    """
    name = model.rsplit("/", 1)[-1].strip().lower()
    best: tuple[str, float, float] | None = None
    for prefix, price_in, price_out in PRICES:
        if not name.startswith(prefix) or name[len(prefix):len(prefix) + 1] not in ("", "-", ":", "@"):
            continue
        if best is None or len(prefix) > len(best[0]):
            best = (prefix, price_in, price_out)
    return (best[1], best[2]) if best else None


class Pricing:
    """Prices one model's calls; lives as long as its worker so the unknown-model warning fires once."""

    def __init__(self, model: str, price_in: float | None = None, price_out: float | None = None) -> None:
        self.model = model
        table = table_price(model)
        self.known = table is not None or (price_in is not None and price_out is not None)
        self.price_in = price_in if price_in is not None else (table[0] if table else 0.0)
        self.price_out = price_out if price_out is not None else (table[1] if table else 0.0)
        self._warned = False

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return usd((tokens_in * self.price_in + tokens_out * self.price_out) / 1_000_000)

    def batch_cost(self, tokens_in: int, tokens_out: int) -> float:
        """The same tokens through the provider's batch API (`BATCH_PRICE_FACTOR` of online)."""
        return usd((tokens_in * self.price_in + tokens_out * self.price_out) * BATCH_PRICE_FACTOR / 1_000_000)

    def warn_if_unknown(self, emit: Callable[[str, dict[str, Any]], None]) -> None:
        """Emit one `warning` event (per worker) when the cost of this model cannot be known."""
        if self.known or self._warned:
            return
        self._warned = True
        emit("warning", {"message": f"cost of model {self.model!r} is unknown (not in the price table); "
                                    "reporting $0.00 — set the price_in/price_out options (USD per "
                                    "million tokens) to track spend and budgets"})
