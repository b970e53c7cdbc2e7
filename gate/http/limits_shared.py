"""The rate limits on the Redis store: every instance counts into the same windows
(`gate.books.redis_limits`), one `ADMIT` script call (EVALSHA) per request a limit
applies to. A settlement's or a refusal's correction goes out in the background, tracked
here so that shutdown waits for it; it never holds up an answer."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from gate.books.redis_limits import Check, Counted, RedisWindows
from gate.core.ratelimit import duration
from gate.http.errors import store_unavailable
from gate.http.limits import FREE_SUFFIX, Ticket, refusal, shared_key

log = logging.getLogger(__name__)


@dataclass(slots=True)
class SharedTicket:
    """What one request counted in the shared windows, and its corrections."""

    limits: SharedLimits
    entry_id: str
    checks: list[Check]
    amounts: list[int]  # as counted now (a correction changes it)
    tokens: int | None  # the index of the tokens check, if any

    def settled(self, tokens: int) -> None:
        if self.tokens is not None:
            self._correct(self.tokens, tokens)

    def cancel(self) -> None:
        for i in range(len(self.checks)):
            self._correct(i, 0)

    def _correct(self, i: int, amount: int) -> None:
        old = self.amounts[i]
        if old == amount:
            return
        self.amounts[i] = amount
        self.limits.spawn(
            self.limits.windows.correct(self.checks[i].key, self.entry_id, old, amount)
        )


@dataclass(slots=True)
class SharedLimits:
    windows: RedisWindows
    prefix: str  # the spend store's key prefix
    open: bool = False  # on_store_error "open": Redis away, this instance's windows decide
    pending: set[asyncio.Task[Any]] = field(default_factory=set)
    seen: dict[str, tuple[int, int]] = field(default_factory=dict)  # key -> usage, for views

    async def admit(self, checks: list[Check], now_ms: int) -> tuple[Counted, str] | None:
        """Count the request in every window or in none. Redis away: the store's 503, or
        None in open mode (the caller counts in this instance's windows instead)."""
        entry_id = secrets.token_hex(8)
        try:
            return await self.windows.admit(checks, now_ms, entry_id), entry_id
        except (RedisError, OSError) as exc:
            if self.open:
                return None
            raise store_unavailable(f"redis unreachable: {type(exc).__name__}") from None

    async def refresh(self, keys: list[str], now_ms: int) -> None:
        """Read what every instance counted in `keys` into `seen` (kept as it was when
        Redis cannot answer)."""
        if not keys:
            return
        try:
            usage = await self.windows.usage(keys, now_ms)
        except (RedisError, OSError):
            return
        self.seen.update(zip(keys, usage, strict=True))

    async def ticket(
        self, agent_id: str, rpm: int, tpm: int, free: int, estimate: int, now: float
    ) -> Ticket | None:
        """`RateLimits.admit`'s checks in the windows every instance shares: one ADMIT
        call. None: Redis is away and the store is open (this instance's windows decide)."""
        wanted = [("requests", rpm, 1), ("tokens", tpm, estimate), (FREE_SUFFIX, free, 1)]
        used = [(name, limit, n) for name, limit, n in wanted if limit]
        checks = [Check(self.prefix + shared_key(name, agent_id), lim, n) for name, lim, n in used]
        answer = await self.admit(checks, round(now * 1000))
        if answer is None:
            return None
        counted, entry_id = answer
        names, limits = [u[0] for u in used], [u[1] for u in used]
        if counted.blocked:
            blocked = [
                (w / 1000, name, limit)
                for w, (name, limit, _) in zip(counted.waits_ms, used, strict=True)
                if w > 0
            ]
            headers = shared_headers(names, limits, counted, False)
            raise refusal(agent_id, blocked, wait_seconds(counted), headers)
        tokens = names.index("tokens") if tpm else None
        ticket = SharedTicket(self, entry_id, checks, [c.amount for c in checks], tokens)
        return Ticket([], None, shared_headers(names, limits, counted, True), ticket)

    def spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(work)
        self.pending.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("rate limits: a correction was lost: %r", task.exception())

    async def drain(self) -> None:
        """Wait for the corrections still going out (shutdown, before Redis closes)."""
        while self.pending:
            await asyncio.wait(set(self.pending))


def shared_headers(
    names: list[str], limits: list[int], counted: Counted, added: bool
) -> dict[str, str]:
    """OpenAI's `x-ratelimit-*` trios from what ADMIT answered (as `limits._headers`)."""
    out: dict[str, str] = {}
    for i, name in enumerate(names):
        kind = "tokens" if name == "tokens" else "requests"
        if f"x-ratelimit-limit-{kind}" in out:
            continue
        remaining = max(limits[i] - counted.used[i], 0) if added else 0
        out[f"x-ratelimit-limit-{kind}"] = str(limits[i])
        out[f"x-ratelimit-remaining-{kind}"] = str(remaining)
        out[f"x-ratelimit-reset-{kind}"] = duration(counted.reset_ms[i] / 1000)
    return out


def wait_seconds(counted: Counted) -> float:
    """When the request would fit: the longest wait of the windows it did not fit."""
    return max(counted.waits_ms) / 1000
