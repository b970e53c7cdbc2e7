"""The shared store's writer: changes this instance made (settlements, generation
names, policies) queued for Redis in order and sent by one task, each kept and retried
until Redis has taken it, with what the queue still owes Redis per agent."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from gate.core.cost import ZERO

log = logging.getLogger(__name__)

RETRY_MIN_SECONDS = 0.05
RETRY_MAX_SECONDS = 1.0


@dataclass(slots=True)
class Change:
    """One change queued for Redis, and what it did to the mirror before Redis saw it."""

    agent_id: str
    run: Callable[[], Awaitable[Any]]
    spent: Decimal = ZERO
    held: Decimal = ZERO


class ChangeWriter:
    def __init__(
        self, on_reply: Callable[[str, list[Any]], None], retry_on: type[Exception]
    ) -> None:
        self._on_reply = on_reply  # told each account reply Redis gave a change
        self._retry_on = retry_on  # the store cannot be used now: keep the change, retry
        self.queue: deque[Change] = deque()
        self._wakeup = asyncio.Event()
        self.drained = asyncio.Event()
        self.drained.set()
        self.pending: dict[str, list[Decimal]] = {}  # agent -> [spent, held] not yet in Redis

    def owe(self, agent_id: str, spent: Decimal, held: Decimal) -> None:
        pending = self.pending.setdefault(agent_id, [ZERO, ZERO])
        pending[0] += spent
        pending[1] += held

    def put(self, op: Change) -> None:
        self.owe(op.agent_id, op.spent, op.held)
        self.queue.append(op)
        self.drained.clear()
        self._wakeup.set()

    async def run(self) -> None:
        """Send queued changes to Redis in order; keep each until Redis has taken it."""
        delay = RETRY_MIN_SECONDS
        while True:
            if not self.queue:
                self.drained.set()
                await self._wakeup.wait()
                self._wakeup.clear()
                continue
            op = self.queue[0]
            try:
                reply = await op.run()
            except self._retry_on:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                continue
            except Exception:  # a bug must not stop the books: drop this change, loudly
                log.exception("spend store: change for %s dropped", op.agent_id)
                reply = None
            self.queue.popleft()
            delay = RETRY_MIN_SECONDS
            self.owe(op.agent_id, -op.spent, -op.held)
            if isinstance(reply, list):
                self._on_reply(op.agent_id, reply)
