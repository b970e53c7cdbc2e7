"""`create_app(cfg)`: the route table, the middleware, and every resource's life cycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from gate.books.opening import open_store
from gate.books.paces import Paces
from gate.books.reconcile import reconcile_open_holds, recover_expired_holds
from gate.books.refusals import flush_every
from gate.books.spendlog import SpendLog
from gate.books.store import Sharing
from gate.config import GateConfig
from gate.context import GATE, Gate, Live
from gate.core.clock import Clock, utc_now
from gate.http.admin import check_admin, create_admin_app
from gate.http.apis import for_path
from gate.http.dashboard import add_dashboard
from gate.http.errors import SERVER_ERROR, GateError, type_for_status
from gate.http.limits import RateLimits
from gate.http.openapi import openapi
from gate.http.origin import door_middleware
from gate.http.surface import add_inference_routes
from gate.ops.metrics import Metrics
from gate.ops.wiring import start_ops
from gate.sinks.postgres import running_sinks
from gate.upstream.client import Upstream
from gate.upstream.keystatus import KeyStatus
from gate.upstream.prices import PriceTable
from gate.upstream.sendmark import SendMarkConnector

if TYPE_CHECKING:
    from gate.http.limits_shared import SharedLimits

log = logging.getLogger(__name__)

CONFIG = web.AppKey("config", GateConfig)
PRICES_AT_START = 5.0  # seconds start-up waits for the price table
CLOCK: web.AppKey[Clock] = web.AppKey("clock")


@web.middleware
async def error_middleware(
    request: web.Request, handler: aiohttp.typedefs.Handler
) -> web.StreamResponse:
    """Every error the gate answers itself leaves here, in the shape of the API the path
    belongs to (OpenAI's; Anthropic's for Messages)."""
    try:
        return await handler(request)
    except GateError as err:
        api = for_path(request.path)
        return api.error_response(err.status, err.type, err.message, err.headers, err.extra)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
        api = for_path(request.path)
        return api.error_response(exc.status, type_for_status(exc.status), exc.reason, headers)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        api = for_path(request.path)
        return api.error_response(500, SERVER_ERROR, "internal error in the gate")


async def metrics(request: web.Request) -> web.Response:
    gate = request.app[GATE]
    check_admin(request, gate.config.admin_token)
    return web.Response(body=gate.metrics.render(), content_type="text/plain", charset="utf-8")


async def resources(app: web.Application) -> AsyncIterator[None]:
    """Open everything the gate needs; close it in reverse, even after a failure."""
    cfg = app[CONFIG]
    spend_log = SpendLog(cfg.spend_log, fsync=cfg.spend_log_fsync)
    await spend_log.start()
    try:
        ledger = await open_store(cfg, spend_log, app[CLOCK])
        connector = SendMarkConnector(limit=0, ttl_dns_cache=300)
        key_status = KeyStatus()
        async with (
            contextlib.aclosing(ledger),  # closed last: settlements still owed go out
            aiohttp.ClientSession(connector=connector) as session,
            running_sinks(cfg.sinks, spend_log) as sinks,  # closed after the tasks below
        ):
            upstream = Upstream(session, cfg.openrouter, cfg.retry, key_status=key_status)
            gate = Gate(
                live=Live.build(cfg, upstream, sinks),
                ledger=ledger,
                prices=PriceTable(),
                metrics=Metrics(cfg.agents),
                key_status=key_status,
                limits=RateLimits(app[CLOCK], shared=_shared_limits(ledger.sharing)),
                paces=Paces(app[CLOCK]),
            )
            app[GATE] = gate
            ledger.line_observers.append(gate.calibration.request_line)
            ledger.line_observers.append(gate.paces.request_line)
            # Holds are only as good as the prices: try to have them before serving.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gate.prices.refresh(*gate.price_source()), PRICES_AT_START)
            tasks = [
                asyncio.create_task(gate.prices.keep_fresh(gate.price_source), name="prices"),
                asyncio.create_task(reconcile_open_holds(gate), name="reconcile"),
                asyncio.create_task(flush_every(ledger.refusals.flush), name="refusals"),
                *start_ops(app, gate, app[CLOCK]),  # alerts, console sync, upstream key + balance
            ]
            if ledger.sharing is not None:  # dead instances' holds, settled here
                sweep = recover_expired_holds(gate, ledger.sharing.sweep_seconds)
                tasks.append(asyncio.create_task(sweep, name="claim-expired"))
            try:
                yield
            finally:
                if gate.orphans:  # relays still billing a client that left
                    await asyncio.wait(gate.orphans, timeout=cfg.openrouter.drain_timeout_seconds)
                if gate.limits.shared is not None:  # corrections still going out to Redis
                    await gate.limits.shared.drain()
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                ledger.refusals.flush()  # the refusals counted since the last line
                if ledger.lines_since_snapshot:
                    ledger.write_snapshot()  # a graceful stop: the next start replays nothing
                gate.bodies.close()
    finally:
        await spend_log.close()


def _shared_limits(sharing: Sharing | None) -> SharedLimits | None:
    """On a shared store the rate limits are counted there, shared by every instance."""
    if sharing is None:
        return None
    # Loaded here, with the shared store: a gate on the JSONL store never loads redis
    from gate.books.redis_limits import RedisWindows
    from gate.http.limits_shared import SharedLimits

    return SharedLimits(RedisWindows(sharing.client), sharing.key_prefix, open=sharing.fail_open)


def create_app(
    cfg: GateConfig, *, env: Mapping[str, str] | None = None, clock: Clock = utc_now
) -> web.Application:
    def allowed_hosts() -> tuple[str, ...]:  # as of now: a reload may change them
        return app[GATE].config.allowed_hosts if GATE in app else cfg.allowed_hosts

    app = web.Application(
        middlewares=[door_middleware(allowed_hosts), error_middleware],
        client_max_size=cfg.limits.max_body_bytes,
    )
    app[CONFIG] = cfg
    app[CLOCK] = clock
    app.cleanup_ctx.append(resources)
    add_inference_routes(app)  # before the admin sub-app: /api/v1/* is inference
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
    admin = create_admin_app(dict(env or {}))
    add_dashboard(app, admin, clock)  # GET / and /api/dashboard
    app.add_subapp("/api", admin)
    return app
