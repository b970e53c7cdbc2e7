"""Pure money arithmetic: prices, the cost of a usage, hold estimates.

Money is `Decimal` throughout; prices are USD per token, normalised once when the price
table is loaded, so a cost is a couple of multiplications. A hold is rounded up to whole
pico-USD (`PICO`), the unit the Redis store counts in: every count a body can name is
bounded when it is read (see `gate.http.demand`), so holds and their sums stay exact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, InvalidOperation

ZERO = Decimal(0)
PICO = Decimal("1e-12")

# OpenRouter's web plugin: $4 per 1000 results, 5 results unless `max_results` says.
WEB_RESULT_USD = Decimal("0.004")
DEFAULT_WEB_RESULTS = 5
# What one image can be billed as prompt tokens, on top of the model's per-image price
# (`pricing.image`): the most current vision models count for one image (dynamic-
# resolution models cap near 16k). Its base64 bytes are not counted as text.
IMAGE_PROMPT_TOKENS = 16_384


@dataclass(frozen=True, slots=True)
class ModelPrice:
    prompt: Decimal  # USD per prompt token
    completion: Decimal  # USD per completion token
    request: Decimal = ZERO  # USD per request
    image: Decimal = ZERO  # USD per input image
    web_search: Decimal = ZERO  # USD per native web search (`web_search_options`)
    context_length: int | None = None  # prompt + completion tokens, when upstream says

    def cost(self, prompt_tokens: int, completion_tokens: int) -> Decimal:
        return self.prompt * prompt_tokens + self.completion * completion_tokens + self.request


def flat_price(usd_per_token: Decimal) -> ModelPrice:
    return ModelPrice(usd_per_token, usd_per_token)


def price_of(prices: Mapping[str, ModelPrice], model: str, unknown: Decimal) -> ModelPrice:
    found = prices.get(model)
    return found if found is not None else flat_price(unknown)


def worst_price(
    prices: Mapping[str, ModelPrice], models: Sequence[str], unknown: Decimal
) -> ModelPrice:
    """The highest price per token of any model that may answer: what a hold must assume."""
    found = [prices.get(m) for m in models]
    if len(found) == 1 and found[0] is not None:
        return found[0]  # one known model: its own price (one pass per request, not five)
    each = [p if p is not None else flat_price(unknown) for p in found]
    contexts = [p.context_length for p in each]
    return ModelPrice(
        prompt=max(p.prompt for p in each),
        completion=max(p.completion for p in each),
        request=max(p.request for p in each),
        image=max(p.image for p in each),
        web_search=max(p.web_search for p in each),
        context_length=None if None in contexts else max(c for c in contexts if c is not None),
    )


@dataclass(frozen=True, slots=True)
class BodyCost:
    """What a body asks for beyond its prompt and `max_tokens`, each billed on top."""

    choices: int = 1  # `n`: every choice is billed its own completion
    reasoning_tokens: int = 0  # `reasoning.max_tokens`: output, within max_tokens only if set
    images: int = 0  # image parts: the per-image price and IMAGE_PROMPT_TOKENS each
    web_results: int = 0  # web plugin results, WEB_RESULT_USD each
    native_searches: int = 0  # native searches, at the model's web_search price


NO_EXTRAS = BodyCost()


def completion_per_choice(
    max_tokens: int | None, body: BodyCost, default_max_tokens: int, price: ModelPrice
) -> int:
    """The output tokens one choice may be billed: `max_tokens` bounds reasoning too;
    without it, the default answer plus the reasoning budget. Never more than the
    context of the largest model that may answer (when every model's is known)."""
    completion = default_max_tokens + body.reasoning_tokens if max_tokens is None else max_tokens
    if price.context_length is not None:
        completion = min(completion, max(price.context_length, 1))
    return completion


def fixed_cost(
    price: ModelPrice, prompt_tokens: int, body: BodyCost = NO_EXTRAS, extra_usd: Decimal = ZERO
) -> Decimal:
    """Everything a request can be billed apart from its completions."""
    search = price.web_search if price.web_search > 0 else WEB_RESULT_USD * DEFAULT_WEB_RESULTS
    return (
        price.prompt * (prompt_tokens + IMAGE_PROMPT_TOKENS * body.images)
        + price.image * body.images
        + price.request
        + WEB_RESULT_USD * body.web_results
        + search * body.native_searches
        + extra_usd
    )


def hold_usd(
    price: ModelPrice,
    prompt_tokens: int,
    completion_tokens: int,
    body: BodyCost = NO_EXTRAS,
    extra_usd: Decimal = ZERO,
) -> Decimal:
    """The most this request can be billed, rounded up to whole pico-USD."""
    completions = price.completion * completion_tokens * body.choices
    total = fixed_cost(price, prompt_tokens, body, extra_usd) + completions
    return total.quantize(PICO, ROUND_CEILING)


def affordable_completion_tokens(
    price: ModelPrice,
    prompt_tokens: int,
    budget: Decimal,
    body: BodyCost = NO_EXTRAS,
    extra_usd: Decimal = ZERO,
) -> int:
    """How many completion tokens per choice `budget` pays for after everything else;
    -1 if not even that."""
    left = budget - fixed_cost(price, prompt_tokens, body, extra_usd)
    if left < 0:
        return -1
    if price.completion <= 0:
        return 2**31
    return int(left / (price.completion * body.choices))


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
