"""The shared store's Lua scripts on one Redis client, and whether Redis answers.

Every account script runs through `Scripts.call`, which turns what Redis says into
the store's two errors: `SpendStoreError` (Redis cannot be used now: unreachable, an
error, or its state lost) and `SpendStoreRefused` (this one change carried amounts
Redis cannot count). The first failure is logged once, and so is the recovery.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from gate.books import redis_scripts as lua
from gate.books.redis_connect import not_ready_message
from gate.books.store import SpendStoreError, SpendStoreRefused
from gate.config import SpendStoreConfig

log = logging.getLogger(__name__)


class Scripts:
    def __init__(self, client: Redis, store: SpendStoreConfig) -> None:
        self.client = client
        self._store = store
        self.state = client.register_script(lua.STATE)
        self.reserve = client.register_script(lua.RESERVE)
        self.settle = client.register_script(lua.SETTLE)
        self.budget = client.register_script(lua.BUDGET)
        self.policy = client.register_script(lua.POLICY)
        self.name = client.register_script(lua.NAME)
        self.renew = client.register_script(lua.RENEW)
        self.claim = client.register_script(lua.CLAIM)
        self.error: str | None = None  # why the store cannot be used now, or None

    async def call(self, script: Any, keys: Sequence[str], args: Sequence[Any]) -> list[Any]:
        """Run an account script; raises SpendStoreError when Redis cannot answer or
        has lost its state, SpendStoreRefused for amounts it cannot count."""
        try:
            reply = await script(keys=keys, args=args)
        except ResponseError as exc:
            if "overflow" not in str(exc) and "out of range" not in str(exc):
                self.failed(f"redis error: {exc}")
                raise SpendStoreError(self.error or "redis error") from None
            log.warning("spend store: refused one change: %s", exc)
            raise SpendStoreRefused("the spend store cannot count this request's amounts") from None
        except (RedisError, OSError) as exc:
            self.unreachable(exc)
            raise SpendStoreError(self.error or "redis unreachable") from None
        if reply[0] == lua.NOT_READY:
            self.failed("redis holds no gate state: " + not_ready_message(self._store))
            raise SpendStoreError(self.error or "")
        self.recovered()
        return list(reply)

    def unreachable(self, exc: BaseException) -> None:
        self.failed(f"redis unreachable: {type(exc).__name__}: {exc}")

    def failed(self, reason: str) -> None:
        if self.error is None:
            log.error("spend store: %s", reason)
        self.error = reason

    def recovered(self) -> None:
        if self.error is not None:
            log.warning("spend store: working again after: %s", self.error)
            self.error = None
