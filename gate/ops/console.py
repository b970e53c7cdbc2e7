"""JetPatch console sync: spend out, budgets in, in the background.

While `console.enabled`, every `sync_interval_seconds` the gate POSTs a spend snapshot
to `{url}/api/gate/spend` and GETs `{url}/api/gate/budgets`, applying each budget to an
agent whose `budget_source` is `jetpatch` (as a `budget` line with `"source":
"jetpatch"` in the spend log, so it survives a restart). Both calls carry
`Authorization: Bearer <console.api_key>`. After a failed round the next one waits 2,
4, 8, then 16 intervals, and the failure shows in /api/health; requests never wait on
the console. The config is read at every round, so a reload that enables,
disables or re-points the console takes effect at the next one.
"""

from __future__ import annotations

import asyncio
import json
import logging
from decimal import Decimal
from typing import Any

import aiohttp

from gate.config import ConsoleConfig
from gate.context import Gate
from gate.core.clock import Clock, iso
from gate.core.cost import to_decimal
from gate.core.jsonfmt import dumps

log = logging.getLogger(__name__)

SPEND_PATH = "/api/gate/spend"
BUDGETS_PATH = "/api/gate/budgets"
CALL_TIMEOUT_SECONDS = 10.0
MAX_BODY_BYTES = 1024 * 1024  # a budgets answer larger than this is refused
MAX_BACKOFF_FACTOR = 16  # a failing console is tried at most this many intervals apart


def next_delay(interval: float, failures: int) -> float:
    """The wait before the next round: the interval, doubled per failed round in a row
    up to `MAX_BACKOFF_FACTOR` times it."""
    return interval * min(2**failures, MAX_BACKOFF_FACTOR)


class ConsoleError(Exception):
    """One console call failed; the message names the call, never a key."""


def spend_snapshot(gate: Gate, ts: str) -> dict[str, Any]:
    """The body of POST /api/gate/spend: every agent as /api/spend shows it."""
    ledger = gate.ledger
    views = (ledger.view(agent_id) for agent_id in ledger.agent_ids())
    return {"ts": ts, "agents": {v["agent_id"]: v for v in views if v is not None}}


def parse_budgets(document: object) -> dict[str, Decimal]:
    """`{"budgets": {agent_id: {"budget_total": number >= 0}}}` → totals; entries that
    are not of that shape are skipped with a warning, a wrong document is an error."""
    budgets = document.get("budgets") if isinstance(document, dict) else None
    if not isinstance(budgets, dict):
        raise ConsoleError(f'GET {BUDGETS_PATH}: expected {{"budgets": {{...}}}}')
    found: dict[str, Decimal] = {}
    for agent_id, entry in budgets.items():
        value = entry.get("budget_total") if isinstance(entry, dict) else None
        total = None if isinstance(value, str) else to_decimal(value)
        if total is None or total < 0:
            log.warning("console: budget for %.64r is not a number >= 0; skipped", agent_id)
            continue
        found[str(agent_id)] = total
    return found


class ConsoleSync:
    def __init__(self, gate: Gate, clock: Clock) -> None:
        self._gate = gate
        self._clock = clock
        self.rounds = 0  # rounds done since start (by `run`)
        self.failures = 0  # failed rounds in a row
        self.last_sync: str | None = None  # when the last round fully succeeded
        self.last_error: str | None = None
        self.applied = 0  # budgets changed by the console since start
        self._next_at: float | None = None  # loop time of the next round
        self._round_done = asyncio.Condition()

    async def run(self) -> None:
        """Sync now, then every interval (longer after failures), until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            console = self._gate.config.console
            enabled = console.enabled and console.url is not None
            if enabled:
                await self.sync_once(console)
            delay = next_delay(console.sync_interval_seconds, self.failures)
            self._next_at = loop.time() + delay
            if enabled:
                async with self._round_done:
                    self.rounds += 1
                    self._round_done.notify_all()
            await asyncio.sleep(delay)

    async def wait_rounds(self, count: int) -> None:
        """Return once `run` has done `count` rounds since start."""
        async with self._round_done:
            await self._round_done.wait_for(lambda: self.rounds >= count)

    async def sync_once(self, console: ConsoleConfig) -> bool:
        errors: list[str] = []
        try:
            await self._call(console, "POST", SPEND_PATH, spend_snapshot(self._gate, self._now()))
        except ConsoleError as err:
            errors.append(str(err))
        try:
            budgets = parse_budgets(await self._call(console, "GET", BUDGETS_PATH))
            await self._apply(budgets)
        except ConsoleError as err:
            errors.append(str(err))
        if errors:
            self.failures += 1
            self.last_error = "; ".join(errors)
            log.warning("console sync failed (%d in a row): %s", self.failures, self.last_error)
        else:
            if self.failures:
                log.info("console sync works again after %d failed rounds", self.failures)
            self.failures, self.last_error, self.last_sync = 0, None, self._now()
        return not errors

    async def _call(self, console: ConsoleConfig, method: str, path: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {console.api_key}"} if console.api_key else {}
        data = None
        if body is not None:
            data = dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            async with self._gate.upstream.session.request(
                method,
                f"{console.url}{path}",
                data=data,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT_SECONDS),
            ) as resp:
                if resp.status >= 300:
                    raise ConsoleError(f"{method} {path}: the console answered {resp.status}")
                if method != "GET":
                    return None
                raw = bytearray()
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    raw += chunk
                    if len(raw) > MAX_BODY_BYTES:
                        raise ConsoleError(f"{method} {path}: answer over {MAX_BODY_BYTES} bytes")
                return json.loads(raw)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ConsoleError(f"{method} {path}: unreachable ({type(exc).__name__})") from None
        except ValueError:
            raise ConsoleError(f"{method} {path}: the answer is not JSON") from None

    async def _apply(self, budgets: dict[str, Decimal]) -> None:
        ledger = self._gate.ledger
        for agent_id, total in budgets.items():
            acct = ledger.account(agent_id)
            if acct is None or acct.policy.budget_source != "jetpatch":
                log.debug("console: budget for %s ignored (not a jetpatch agent)", agent_id)
                continue
            if acct.budget_total != total:
                await ledger.set_budget(agent_id, total, None, source="jetpatch")
                self.applied += 1
                log.info("console: %s budget_total set to %s", agent_id, total)

    def health(self) -> dict[str, Any] | None:
        """The console's part of /api/health; None while the sync is off."""
        if not self._gate.config.console.enabled:
            return None
        next_in = None
        if self._next_at is not None:
            next_in = round(max(0.0, self._next_at - asyncio.get_running_loop().time()), 3)
        info: dict[str, Any] = {
            "last_sync": self.last_sync,
            "consecutive_failures": self.failures,
            "last_error": self.last_error,
            "next_sync_in_seconds": next_in,
            "budgets_applied": self.applied,
        }
        if self.failures:
            info["warning"] = f"console sync failing ({self.failures} in a row): {self.last_error}"
        return info

    def _now(self) -> str:
        return iso(self._clock())
