"""What a body can cost, read from it: every count it names, checked and bounded.

Pure (no I/O): each API's adapter (`gate.http.apis`) calls `read_demand` once per
request; `gate.core.cost` prices the result. A count the gate cannot bound is refused
(400) before anything is held, so no hold is ever larger than the integers and decimals
that carry it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gate.core.cost import DEFAULT_WEB_RESULTS, BodyCost
from gate.core.prompt import estimate_prompt
from gate.http.errors import INVALID_REQUEST, GateError

MAX_CHOICES = 128  # `n`, as OpenAI bounds it
MAX_WEB_RESULTS = 100  # a web plugin's `max_results`
ONLINE_SUFFIX = ":online"  # a model variant that is the web plugin


@dataclass(frozen=True, slots=True)
class Demand:
    prompt_tokens: int  # estimate units of billed text (`gate.core.prompt`), calibrated per model
    max_tokens: int | None  # per choice; bounds reasoning too
    body: BodyCost
    unpriced_plugins: int  # plugins the gate has no price for: a flat charge each


CHAT_LIMITS = ("max_tokens", "max_completion_tokens")


def read_demand(
    body: Mapping[str, Any],
    size: int,
    max_tokens_ceiling: int,
    limit_fields: tuple[str, ...] = CHAT_LIMITS,
    generates: bool = True,
) -> Demand:
    """`limit_fields`: the output-token limits the API names (the lowest counts);
    `generates=False` (embeddings): no output at all, so the hold is the prompt's."""
    max_tokens: int | None = None if generates else 0
    for key in limit_fields:
        value = _count(body, key, max_tokens_ceiling)
        if value is not None:
            max_tokens = value if max_tokens is None else min(max_tokens, value)
    choices = _count(body, "n", MAX_CHOICES) or 1
    reasoning = body.get("reasoning")
    budget = None
    if isinstance(reasoning, Mapping):
        budget = _count(reasoning, "max_tokens", max_tokens_ceiling, "reasoning.max_tokens")
    images, _ = _images(body.get("messages"))
    web_results, native, unpriced = _plugins(body)
    model = body.get("model")
    if isinstance(model, str) and model.endswith(ONLINE_SUFFIX) and not web_results:
        web_results, native = DEFAULT_WEB_RESULTS, native + 1
    return Demand(
        prompt_tokens=estimate_prompt(body),
        max_tokens=max_tokens,
        body=BodyCost(choices, budget or 0, images, web_results, native),
        unpriced_plugins=unpriced,
    )


def _count(
    where: Mapping[str, Any], key: str, ceiling: int, name: str | None = None
) -> int | None:
    value = where.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= ceiling:
        raise GateError(
            400, INVALID_REQUEST, f"'{name or key}' must be an integer from 1 to {ceiling}"
        )
    return value


def _images(messages: object) -> tuple[int, int]:
    """Image parts, and the bytes of their URLs (base64 data is no prompt text)."""
    count = size = 0
    for message in messages if isinstance(messages, list) else ():
        content = message.get("content") if isinstance(message, Mapping) else None
        for part in content if isinstance(content, list) else ():
            if not isinstance(part, Mapping) or part.get("type") != "image_url":
                continue
            count += 1
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, Mapping) else image
            size += len(url) if isinstance(url, str) else 0
    return count, size


def _plugins(body: Mapping[str, Any]) -> tuple[int, int, int]:
    """(web results, native searches, unpriced plugins). A web plugin is billed per
    result (Exa) or per search (native engine): the hold covers both."""
    results = native = unpriced = 0
    plugins = body.get("plugins")
    for plugin in plugins if isinstance(plugins, list) else ([plugins] if plugins else []):
        if isinstance(plugin, Mapping) and plugin.get("id") == "web":
            asked = _count(plugin, "max_results", MAX_WEB_RESULTS, "plugins[].max_results")
            results += asked or DEFAULT_WEB_RESULTS
            native += 1
        else:
            unpriced += 1
    if body.get("web_search_options") is not None:
        native += 1
    return results, native, unpriced
