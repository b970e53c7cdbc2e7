"""What every handler shares, under one typed AppKey: no module-level state."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web

from .config import GateConfig
from .ledger import Ledger
from .metrics import Metrics
from .prices import PriceTable
from .upstream import Upstream

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(slots=True)
class Gate:
    config: GateConfig  # replaced whole by /api/reload; handlers take it once per request
    ledger: Ledger
    upstream: Upstream
    prices: PriceTable
    metrics: Metrics
    # Relays whose handler was cancelled (client gone, shutdown): they finish billing here.
    orphans: set[asyncio.Task[Any]] = field(default_factory=set)
    in_flight: int = 0  # relays running (upstream calls open), for the concurrency cap

    async def shielded(self, work: Coroutine[Any, Any, T]) -> T:
        """Run a relay so that cancelling the handler cannot stop it half-way: it reads
        on, settles its hold and writes its line whatever happens to the client."""
        task = asyncio.ensure_future(work)
        self.in_flight += 1
        task.add_done_callback(self._relay_done)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            self.orphans.add(task)
            task.add_done_callback(self._orphan_done)
            raise

    def _relay_done(self, _task: asyncio.Task[Any]) -> None:
        self.in_flight -= 1

    def _orphan_done(self, task: asyncio.Task[Any]) -> None:
        self.orphans.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("relay failed after its client left", exc_info=task.exception())

    def secrets(self) -> list[str]:
        """Every secret the gate knows, for scrubbing what it relays."""
        cfg = self.config
        found = [cfg.openrouter.api_key, cfg.admin_token, cfg.console.api_key]
        found += [a.api_key for a in cfg.agents.values()]
        return [s for s in found if s]


GATE = web.AppKey("gate", Gate)
