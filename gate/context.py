"""What every handler shares, under one typed AppKey: no module-level state."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from .config import GateConfig
from .ledger import Ledger
from .metrics import Metrics
from .prices import PriceTable
from .upstream import Upstream


@dataclass(slots=True)
class Gate:
    config: GateConfig  # replaced whole by /api/reload; handlers take it once per request
    ledger: Ledger
    upstream: Upstream
    prices: PriceTable
    metrics: Metrics

    def secrets(self) -> list[str]:
        """Every secret the gate knows, for scrubbing what it relays."""
        cfg = self.config
        found = [cfg.openrouter.api_key, cfg.admin_token, cfg.console.api_key]
        found += [a.api_key for a in cfg.agents.values()]
        return [s for s in found if s]


GATE = web.AppKey("gate", Gate)
