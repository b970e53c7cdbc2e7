"""The model price table, from upstream's `/models`, refreshed in the background.

Prices arrive as strings of USD per token and are turned into `ModelPrice` once per
refresh, so the hot path only looks a model up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from gate.core.cost import ZERO, ModelPrice, to_decimal
from gate.upstream.client import Upstream

log = logging.getLogger(__name__)

RETRY_SECONDS = 30.0
# Where and with which Authorization to ask, read again before every refresh: a reload
# that moves `base_url` or rotates the key reaches the next one.
Source = Callable[[], tuple[Upstream, str | None]]


def parse_models(document: Any) -> dict[str, ModelPrice]:
    """`{"data": [{"id", "context_length", "pricing": {"prompt", "completion", "request",
    "image", "web_search"}}]}` → prices. Entries without a usable price are left out (the
    unknown-model price applies); a missing or odd context length leaves it unknown."""
    prices: dict[str, ModelPrice] = {}
    data = document.get("data") if isinstance(document, dict) else None
    if not isinstance(data, list):
        return prices
    for entry in data:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            continue
        pricing = entry.get("pricing")
        if not isinstance(pricing, dict):
            continue
        prompt = to_decimal(pricing.get("prompt"))
        completion = to_decimal(pricing.get("completion"))
        if prompt is None or completion is None or prompt < 0 or completion < 0:
            continue  # OpenRouter marks variable-priced routers with -1
        context = entry.get("context_length")
        if isinstance(context, bool) or not isinstance(context, int) or context < 1:
            context = None
        prices[entry["id"]] = ModelPrice(
            prompt,
            completion,
            _extra(pricing, "request"),
            _extra(pricing, "image"),
            _extra(pricing, "web_search"),
            context,
        )
    return prices


def _extra(pricing: dict[str, Any], key: str) -> Decimal:
    value = to_decimal(pricing.get(key))
    return value if value is not None and value > 0 else ZERO


class PriceTable:
    def __init__(self) -> None:
        self._prices: Mapping[str, ModelPrice] = MappingProxyType({})
        self.loaded = False
        self._wakeup = asyncio.Event()

    def wake(self) -> None:
        """Refresh now (a reload: perhaps a new upstream or key)."""
        self._wakeup.set()

    @property
    def prices(self) -> Mapping[str, ModelPrice]:
        return self._prices

    def replace(self, prices: dict[str, ModelPrice]) -> None:
        self._prices = MappingProxyType(prices)
        self.loaded = True

    async def refresh(self, upstream: Upstream, authorization: str | None) -> bool:
        document = await upstream.get_json("/models", authorization)
        prices = parse_models(document)
        if not prices:
            return False
        self.replace(prices)
        return True

    async def keep_fresh(self, source: Source) -> None:
        """Refresh forever: every `prices_refresh_seconds`, sooner after a failure, at
        once after `wake()`; each round asks the upstream and key `source` gives now."""
        ok = self.loaded
        while True:
            interval = source()[0].config.prices_refresh_seconds
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval if ok else min(RETRY_SECONDS, interval)):
                    await self._wakeup.wait()
            ok = await self.refresh(*source())
            if not ok:
                log.warning("prices: could not load the model list from upstream")
