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
    images = _images(body)
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


def _count(where: Mapping[str, Any], key: str, ceiling: int, name: str | None = None) -> int | None:
    value = where.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= ceiling:
        raise GateError(
            400, INVALID_REQUEST, f"'{name or key}' must be an integer from 1 to {ceiling}"
        )
    return value


IMAGE_PARTS = frozenset({"image_url", "input_image", "image"})  # chat, Responses, Messages


def _images(body: Mapping[str, Any]) -> int:
    """Image parts in any API's shape: chat's `image_url` parts in `messages`, the
    Responses API's `input_image` in `input` (as items or inside their `content`),
    Anthropic's `image` blocks in `messages`, also inside a `tool_result`. Each is
    priced apart (per image, and the tokens one image may be billed as)."""
    count = 0
    for key in ("messages", "input"):
        items = body.get(key)
        for item in items if isinstance(items, list) else ():
            if not isinstance(item, Mapping):
                continue
            if item.get("type") in IMAGE_PARTS:
                count += 1
            count += _images_in(item.get("content"), nested=True)
    return count


def _images_in(content: object, *, nested: bool) -> int:
    count = 0
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, Mapping):
            continue
        kind = part.get("type")
        if kind in IMAGE_PARTS:
            count += 1
        elif kind == "tool_result" and nested:  # a tool's answer may carry images
            count += _images_in(part.get("content"), nested=False)
    return count


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
