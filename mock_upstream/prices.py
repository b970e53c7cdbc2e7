"""The mock's price table and the pure arithmetic of what a generation costs.

Prices are USD per token as `Decimal`, so a cost is exact and sums are exact; floats
appear only where a cost is written into JSON.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from types import MappingProxyType
from typing import Any, NamedTuple


class ModelPrice(NamedTuple):
    """USD per token; unpacks like the `(prompt, completion)` pair it is."""

    prompt: Decimal
    completion: Decimal


def _p(prompt: str, completion: str) -> ModelPrice:
    return ModelPrice(Decimal(prompt), Decimal(completion))


PRICES: MappingProxyType[str, ModelPrice] = MappingProxyType(
    {
        "anthropic/claude-sonnet-4.5": _p("0.000003", "0.000015"),
        "openai/gpt-5": _p("0.00000125", "0.00001"),
        "google/gemini-2.5-pro": _p("0.00000125", "0.00001"),
        "openai/gpt-5-mini": _p("0.00000025", "0.000002"),
        "anthropic/claude-haiku-4.5": _p("0.000001", "0.000005"),
        "google/gemini-2.5-flash": _p("0.0000003", "0.0000025"),
        "meta-llama/llama-3.3-70b-instruct": _p("0.00000013", "0.00000039"),
        "deepseek/deepseek-chat-v3.1": _p("0.0000002", "0.0000008"),
        "mistralai/mistral-small-3.2-24b-instruct": _p("0.00000005", "0.0000001"),
        "openai/gpt-5:online": _p("0.00000125", "0.00001"),
        "openai/gpt-4o": _p("0.0000025", "0.00001"),
        "meta-llama/llama-3.3-70b-instruct:free": _p("0", "0"),  # OpenRouter: 20 a minute
        # the founding document's seed config (configs/examples/seed-policy.yaml)
        "anthropic/claude-3.5-sonnet": _p("0.000003", "0.000015"),
        "anthropic/claude-3-haiku": _p("0.00000025", "0.00000125"),
        "openai/gpt-4o-mini": _p("0.00000015", "0.0000006"),
        "mistralai/mistral-7b-instruct": _p("0.000000028", "0.000000054"),
        "openai/text-embedding-3-small": _p("0.00000002", "0"),  # for /embeddings
    }
)

CONTEXT_LENGTH = 128_000

_PROVIDERS: MappingProxyType[str, str] = MappingProxyType(
    {
        "anthropic": "Anthropic",
        "openai": "OpenAI",
        "google": "Google",
        "meta-llama": "DeepInfra",
        "deepseek": "DeepSeek",
        "mistralai": "Mistral",
    }
)


def provider_name(model: str) -> str:
    """The provider the mock claims served `model` (`Mock` for an unknown vendor)."""
    return _PROVIDERS.get(model.split("/", 1)[0], "Mock")


def display_name(model: str) -> str:
    vendor, _, name = model.partition("/")
    return f"{provider_name(model)}: {name or vendor}"


def price_string(usd_per_token: Decimal) -> str:
    """OpenRouter's pricing strings: plain decimal notation, never exponent form."""
    return format(usd_per_token.normalize(), "f")


def cost_of(price: ModelPrice, prompt_tokens: int, completion_tokens: int) -> Decimal:
    return price.prompt * prompt_tokens + price.completion * completion_tokens


def count_prompt_tokens(prompt: Any) -> int:
    """A deterministic prompt-token count: about four UTF-8 bytes of the prompt's JSON a
    token (messages and, where sent, tool definitions), uncapped, as a provider bills
    it. The gate's holds must cover it: see `gate.prompt` and `gate.calibrate`.
    """
    compact = json.dumps(prompt, separators=(",", ":"), ensure_ascii=False)
    return math.ceil(len(compact.encode("utf-8", "surrogatepass")) / 4)
