"""OpenRouter's view of the gate's key (`GET /api/v1/key`): limit, usage, remaining.

Read in the background every `openrouter.key_check_seconds` and cached; `/api/upstream`
serves the cache (asking again only when it is older than that), and `/api/health`
warns, from the cache alone, when the remaining credit is below
`openrouter.credit_floor_usd`. A key without a limit has no "remaining": the floor
cannot apply to it. In pass-through mode the gate has no key of its own to ask about.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from gate.core.clock import Clock, iso
from gate.core.cost import to_decimal

if TYPE_CHECKING:
    from gate.context import Gate

log = logging.getLogger(__name__)

RETRY_SECONDS = 30.0  # after a failed read, try again this soon (or at the interval)
NO_KEY = "pass-through mode: the gate has no OpenRouter key of its own to look up"


def parse_key(document: object) -> dict[str, Any] | None:
    """`{"data": {"limit", "usage", "limit_remaining", "is_free_tier", ...}}` → what the
    gate shows; None when the document is not of that shape. The label (part of the key)
    is left out."""
    data = document.get("data") if isinstance(document, dict) else None
    if not isinstance(data, dict):
        return None
    limit, usage = to_decimal(data.get("limit")), to_decimal(data.get("usage"))
    remaining = to_decimal(data.get("limit_remaining"))
    if remaining is None and limit is not None and usage is not None:
        remaining = limit - usage
    return {
        "limit": limit,
        "usage": usage,
        "remaining": remaining,
        "is_free_tier": data.get("is_free_tier") is True,
    }


class UpstreamBalance:
    def __init__(self, gate: Gate, clock: Clock) -> None:
        self._gate = gate
        self._clock = clock
        self.key: dict[str, Any] | None = None  # the last good answer
        self.checked_at: str | None = None
        self.error: str | None = None
        self._checked: float | None = None  # loop time of the last attempt
        self._lock = asyncio.Lock()

    async def refresh(self) -> bool:
        """Ask upstream now (one question at a time); True when it answered. The same
        answer tells the key's status (gate.upstream.keystatus): one probe serves both."""
        if self._lock.locked():  # someone is asking already: take their answer
            async with self._lock:
                return self.error is None
        async with self._lock:
            api_key = self._gate.config.openrouter.api_key
            status = self._gate.key_status
            status.for_key(api_key)
            self._checked = asyncio.get_running_loop().time()
            if not api_key:
                self.key, self.error = None, NO_KEY
                return False
            code, document = await self._gate.upstream.key_check(f"Bearer {api_key}")
            self._checked = asyncio.get_running_loop().time()
            status.probed(code, self._clock())
            found = parse_key(document) if code == 200 else None
            if found is None:
                self.error = f"GET /key: {code or 'no answer'}; no usable answer from upstream"
                log.warning("upstream balance: %s", self.error)
                return False
            self.key, self.error, self.checked_at = found, None, iso(self._clock())
            return True

    async def run(self) -> None:
        """Probe every `key_check_seconds` (sooner after a failure, at once after a
        reload wakes the key status) until cancelled."""
        while True:
            ok = await self.refresh()
            interval = self._gate.config.openrouter.key_check_seconds
            no_key = self._gate.config.openrouter.api_key is None
            await self._gate.key_status.sleep(
                interval if ok or no_key else min(RETRY_SECONDS, interval)
            )

    async def current(self) -> dict[str, Any]:
        """The body of GET /api/upstream, asking upstream first if the cache is stale."""
        max_age = self._gate.config.openrouter.key_check_seconds
        age = self._age()
        if age is None or age > max_age or self._lock.locked():
            await self.refresh()  # (or wait for the answer already being asked for)
        floor = self._gate.config.openrouter.credit_floor_usd
        return {
            "key": self.key,
            "checked_at": self.checked_at,
            "age_seconds": self._age(),
            "refresh_seconds": max_age,
            "credit_floor_usd": floor,
            "credit_low": self._low(floor),
            "error": self.error,
        }

    def health(self) -> dict[str, Any] | None:
        """The credit's part of /api/health (from the cache); None without a floor."""
        floor = self._gate.config.openrouter.credit_floor_usd
        if floor is None:
            return None
        remaining = self.key["remaining"] if self.key is not None else None
        info: dict[str, Any] = {
            "remaining": remaining,
            "floor": floor,
            "low": self._low(floor),
            "checked_at": self.checked_at,
        }
        if info["low"]:
            info["warning"] = (
                f"OpenRouter credit left ${remaining:,.2f} is below the floor ${floor:,.2f}"
            )
        return info

    def _low(self, floor: Decimal | None) -> bool | None:
        remaining = self.key["remaining"] if self.key is not None else None
        if floor is None or remaining is None:
            return None
        return bool(remaining < floor)

    def _age(self) -> float | None:
        if self._checked is None:
            return None
        return round(asyncio.get_running_loop().time() - self._checked, 3)
