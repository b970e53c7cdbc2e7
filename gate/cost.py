"""Pure money arithmetic: prices, the cost of a usage, hold estimates.

Money is `Decimal` throughout; prices are USD per token, normalised once when the price
table is loaded, so a cost is a couple of multiplications.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

ZERO = Decimal(0)

# A prompt token is at least ~3-4 bytes of JSON; dividing the body's size by 3 gives a
# count that is high for real text, which is what a hold wants.
BYTES_PER_PROMPT_TOKEN = 3


@dataclass(frozen=True, slots=True)
class ModelPrice:
    prompt: Decimal  # USD per prompt token
    completion: Decimal  # USD per completion token
    request: Decimal = ZERO  # USD per request

    def cost(self, prompt_tokens: int, completion_tokens: int) -> Decimal:
        return self.prompt * prompt_tokens + self.completion * completion_tokens + self.request


def flat_price(usd_per_token: Decimal) -> ModelPrice:
    return ModelPrice(usd_per_token, usd_per_token)


def price_of(prices: Mapping[str, ModelPrice], model: str, unknown: Decimal) -> ModelPrice:
    found = prices.get(model)
    return found if found is not None else flat_price(unknown)


def estimate_prompt_tokens(body_bytes: int) -> int:
    return -(-body_bytes // BYTES_PER_PROMPT_TOKEN)


def worst_price(
    prices: Mapping[str, ModelPrice], models: Sequence[str], unknown: Decimal
) -> ModelPrice:
    """The highest price per token of any model that may answer: what a hold must assume."""
    found = [price_of(prices, m, unknown) for m in models]
    return ModelPrice(
        prompt=max(p.prompt for p in found),
        completion=max(p.completion for p in found),
        request=max(p.request for p in found),
    )


def affordable_completion_tokens(price: ModelPrice, prompt_tokens: int, budget: Decimal) -> int:
    """How many completion tokens `budget` pays for after the prompt; -1 if not even that."""
    left = budget - price.prompt * prompt_tokens - price.request
    if left < 0:
        return -1
    if price.completion <= 0:
        return 2**31
    return int(left / price.completion)


def to_decimal(value: object) -> Decimal | None:
    """A JSON number (or numeric string) as Decimal; None for anything else."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int | float | str):
        try:
            result = Decimal(str(value))
        except InvalidOperation:
            return None
        return result if result.is_finite() else None
    return None


def usage_cost(usage: Mapping[str, object]) -> Decimal | None:
    """The cost OpenRouter reported in a usage object; None when it reported none."""
    return to_decimal(usage.get("cost"))


def usage_tokens(usage: Mapping[str, object]) -> tuple[int, int]:
    def count(key: str) -> int:
        value = usage.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    return count("prompt_tokens"), count("completion_tokens")
