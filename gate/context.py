"""What every handler shares, under one typed AppKey: no module-level state. What a
reload changes is one immutable `Live` bundle, swapped whole."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from aiohttp import web

from gate.books.paces import Paces
from gate.books.store import SpendStore
from gate.config import GateConfig
from gate.core.calibrate import Calibration
from gate.core.ids import RequestIds
from gate.http.bodies import BodyChecker
from gate.http.breaker import Breaker
from gate.http.limits import RateLimits
from gate.http.slots import Slot, Slots
from gate.ops.metrics import Metrics
from gate.sinks.postgres import PostgresSink, dsn_secrets
from gate.upstream.client import Upstream
from gate.upstream.keystatus import KeyStatus
from gate.upstream.prices import PriceTable

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Live:
    """What a reload replaces, as one value: the config, the upstream client built on it,
    the sinks running and every secret to scrub. `/api/reload` builds a new one, checks
    it, and swaps it in with one assignment (`Gate.live`); a handler or a background
    round reads `gate.live` (or `gate.config`) once and works with that."""

    config: GateConfig
    upstream: Upstream
    sinks: tuple[PostgresSink, ...] = ()
    secrets: tuple[str, ...] = ()  # computed once per load, not per scrub

    @classmethod
    def build(
        cls, config: GateConfig, upstream: Upstream, sinks: Iterable[PostgresSink] = ()
    ) -> Live:
        """A bundle whose secrets are the config's and those of the sinks actually
        running (a reload does not replace them, so their DSNs may no longer be in the
        config)."""
        running = tuple(sinks)
        found = secrets_of(config) + [s for sink in running for s in dsn_secrets(sink.cfg.dsn)]
        return cls(config, upstream, running, tuple(dict.fromkeys(found)))

    def reloaded(self, config: GateConfig) -> Live:
        """The bundle for a reloaded config: the upstream client on its new settings
        (the session and its hooks kept), the running sinks kept."""
        upstream = replace(self.upstream, config=config.openrouter, retry=config.retry)
        return Live.build(config, upstream, self.sinks)


@dataclass(slots=True)
class Gate:
    live: Live  # replaced whole by /api/reload
    ledger: SpendStore  # the JSONL or the Redis store (gate.books.store)
    prices: PriceTable
    metrics: Metrics
    # Relays whose handler was cancelled (client gone, shutdown): they finish billing here.
    orphans: set[asyncio.Task[Any]] = field(default_factory=set)
    bodies: BodyChecker = field(default_factory=BodyChecker)  # large bodies, off the loop
    slots: Slots = field(default_factory=Slots)  # calls in flight, for the concurrency caps
    limits: RateLimits = field(default_factory=RateLimits)  # requests and tokens per minute
    key_status: KeyStatus = field(default_factory=KeyStatus)  # is the upstream key good?
    # name -> what a background part (console sync, upstream credit) adds to /api/health;
    # None leaves it out, a "warning" key goes to the body's "warnings" list.
    health_checks: dict[str, Callable[[], dict[str, Any] | None]] = field(default_factory=dict)
    # Prompt tokens per estimate unit, per model, learnt from settled lines (holds use it).
    calibration: Calibration = field(default_factory=Calibration)
    breaker: Breaker = field(default_factory=Breaker)  # runaway loops, per agent
    paces: Paces = field(default_factory=Paces)  # recent spend rates, for the forecast
    ids: RequestIds = field(default_factory=RequestIds)  # each request's request_id

    @property
    def config(self) -> GateConfig:
        return self.live.config

    @property
    def upstream(self) -> Upstream:
        return self.live.upstream

    @property
    def sinks(self) -> tuple[PostgresSink, ...]:
        """The copies of the spend log running since start-up."""
        return self.live.sinks

    def secrets(self) -> tuple[str, ...]:
        """Every secret the gate knows, for scrubbing what it relays or logs."""
        return self.live.secrets

    async def shielded(self, work: Coroutine[Any, Any, T], slot: Slot) -> T:
        """Run a relay so that cancelling the handler cannot stop it half-way: it reads
        on, settles its hold and writes its line whatever happens to the client. The
        relay's `slot` is given back when it ends."""
        task = asyncio.ensure_future(work)
        task.add_done_callback(lambda _task: slot.release())
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            self.orphans.add(task)
            task.add_done_callback(self._orphan_done)
            raise

    def _orphan_done(self, task: asyncio.Task[Any]) -> None:
        self.orphans.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("relay failed after its client left", exc_info=task.exception())

    def health_extras(self) -> dict[str, Any]:
        """What the `health_checks` add to /api/health (warnings never change its status)."""
        body: dict[str, Any] = {}
        warnings: list[str] = []
        for name, check in self.health_checks.items():
            info = check()
            if info is None:
                continue
            warning = info.pop("warning", None)
            if warning:
                warnings.append(warning)
            body[name] = info
        if warnings:
            body["warnings"] = warnings
        return body

    def price_source(self) -> tuple[Upstream, str | None]:
        """The upstream and the Authorization the price refresh uses now (after a reload:
        the new ones)."""
        live = self.live
        key = live.config.openrouter.api_key
        return live.upstream, f"Bearer {key}" if key else None


def secrets_of(cfg: GateConfig) -> list[str]:
    found = [cfg.openrouter.api_key, cfg.admin_token, cfg.console.api_key]
    found += [a.api_key for a in cfg.agents.values()]
    found += [secret for sink in cfg.sinks for secret in dsn_secrets(sink.dsn)]
    if cfg.spend_store.url:
        found += dsn_secrets(cfg.spend_store.url)
    found += [  # credential headers sent upstream (x-portkey-api-key, ...)
        value
        for name, value in cfg.openrouter.headers.items()
        if f"cost_routing.openrouter.headers.{name}" in cfg.secret_sources
    ]
    return [s for s in found if s]


GATE = web.AppKey("gate", Gate)
