"""What runs beside the request path: alerts, the JetPatch console sync and the upstream
balance. `start_ops` wires them to the gate's hooks and returns their background tasks
(run and cancelled by `app.resources`); `add_ops_routes` adds their admin endpoints
(`/api/alerts`, `/api/upstream`, `/api/prices`), which follow the admin API's token rules.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from aiohttp import web

from gate.context import GATE, Gate
from gate.core.clock import Clock
from gate.core.cost import ModelPrice
from gate.core.jsonfmt import dumps
from gate.ops.alerts import Alerter
from gate.ops.console import ConsoleSync
from gate.upstream.balance import UpstreamBalance

log = logging.getLogger(__name__)

MILLION = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class Ops:
    alerts: Alerter
    console: ConsoleSync
    balance: UpstreamBalance


OPS = web.AppKey("ops", Ops)


def start_ops(app: web.Application, gate: Gate, clock: Clock) -> list[asyncio.Task[None]]:
    """Create the three, hook them up, and start their tasks."""
    alerts = Alerter(gate, clock)
    ops = Ops(alerts, ConsoleSync(gate, clock), UpstreamBalance(gate, clock))
    app[OPS] = ops
    gate.ledger.observers.append(alerts.ledger_changed)
    gate.ledger.spend_log.observers.append(alerts.spend_log_changed)
    gate.breaker.observers.append(alerts.loop_detected)
    metrics = gate.metrics

    def on_answer(status: int, seconds: float, retry_after: float | None) -> None:
        try:
            metrics.upstream_answer(status, seconds)
            alerts.upstream_answer(status, retry_after)
        except Exception:  # watching upstream never breaks a request
            log.exception("upstream answer hook failed")

    gate.live = replace(gate.live, upstream=replace(gate.upstream, on_answer=on_answer))
    metrics.track_ledger(gate.ledger)
    gate.health_checks["console"] = ops.console.health
    gate.health_checks["upstream_credit"] = ops.balance.health
    return [
        asyncio.create_task(alerts.run(), name="alerts"),
        asyncio.create_task(ops.console.run(), name="console-sync"),
        asyncio.create_task(ops.balance.run(), name="upstream-balance"),
    ]


def _json(body: Any) -> web.Response:
    return web.json_response(body, dumps=dumps)


async def alerts_list(request: web.Request) -> web.Response:
    """The most recent alerts, newest first, with how each was delivered."""
    alerter = request.config_dict[OPS].alerts
    cfg = request.config_dict[GATE].config.alerts
    return _json(
        {
            "webhook": {"configured": cfg.webhook_url is not None, "format": cfg.format},
            "queued": alerter.queued,
            "alerts": [alert.view() for alert in reversed(alerter.recent)],
        }
    )


async def upstream_status(request: web.Request) -> web.Response:
    return _json(await request.config_dict[OPS].balance.current())


def _per_token(value: Decimal) -> str:
    return format(value, "f")  # exact, never 1E-7


def price_view(price: ModelPrice) -> dict[str, Any]:
    return {
        "prompt_usd_per_million": price.prompt * MILLION,
        "completion_usd_per_million": price.completion * MILLION,
        "request_usd": price.request,
        "prompt_usd_per_token": _per_token(price.prompt),
        "completion_usd_per_token": _per_token(price.completion),
    }


async def prices(request: web.Request) -> web.Response:
    """The price table in use: per million tokens to read, per token as upstream gave it."""
    gate = request.config_dict[GATE]
    table, cfg = gate.prices.prices, gate.config
    configured = sorted({m for a in cfg.agents.values() for t in a.tiers for m in t.models})
    unknown = cfg.holds.unknown_model_usd_per_token
    return _json(
        {
            "loaded": gate.prices.loaded,
            "refresh_seconds": cfg.openrouter.prices_refresh_seconds,
            "unknown_model": {
                "usd_per_million": unknown * MILLION,
                "usd_per_token": _per_token(unknown),
            },
            # null: upstream does not price it, so holds use the unknown-model price
            "tier_models": {m: price_view(table[m]) if m in table else None for m in configured},
            "models": {m: price_view(table[m]) for m in sorted(table)},
            "prompt_calibration": gate.calibration.view(),  # gate.calibrate
        }
    )


def add_ops_routes(admin: web.Application) -> None:
    admin.router.add_get("/alerts", alerts_list)
    admin.router.add_get("/upstream", upstream_status)
    admin.router.add_get("/prices", prices)
