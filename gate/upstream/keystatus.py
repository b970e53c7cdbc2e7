"""Is the upstream key still good? What an operator asks after rotating it.

The upstream balance's background probe (gate.upstream.balance) asks OpenRouter's `GET /key`
with the gate's key every `openrouter.key_check_seconds` (and at once after a reload)
and reports here: 200 confirms the key, 401 means upstream rejects it. A 401 to a chat
call says the same, sooner. `/api/health` shows the result. The key itself is never
kept here, only a digest to notice a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

log = logging.getLogger(__name__)

UNKNOWN, VALID, REJECTED, UNREACHABLE, PASS_THROUGH = (
    "unknown",
    "valid",
    "rejected",
    "unreachable",
    "pass-through",
)


def fingerprint(key: str | None) -> str | None:
    return hashlib.sha256(key.encode()).hexdigest()[:16] if key else None


class KeyStatus:
    def __init__(self) -> None:
        self.status = UNKNOWN
        self.confirmed_at: datetime | None = None  # upstream last accepted the key
        self.rejected_at: datetime | None = None  # upstream last answered 401 to it
        self.checked_at: datetime | None = None  # the last probe, whatever it found
        self.detail: str | None = None
        self.key_id: str | None = "-"  # digest of the key this is about (None: no key)
        self._wakeup = asyncio.Event()

    def wake(self) -> None:
        """Probe now (the config was reloaded: perhaps a new key)."""
        self._wakeup.set()

    async def sleep(self, seconds: float) -> None:
        """Until the next probe is due, or `wake()`."""
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wakeup.wait()

    def for_key(self, key: str | None) -> None:
        """Forget what was learnt about another key (a rotation, a reload)."""
        key_id = fingerprint(key)
        if key_id != self.key_id:
            self.key_id = key_id
            self.status = UNKNOWN if key else PASS_THROUGH
            self.confirmed_at = self.rejected_at = self.checked_at = None
            self.detail = None

    def accepted(self, now: datetime) -> None:
        if self.status == REJECTED:
            log.warning("upstream accepts the key again")
        self.status, self.confirmed_at, self.detail = VALID, now, None

    def rejected(self, now: datetime, where: str) -> None:
        if self.status != REJECTED:
            log.error("upstream rejected the key (401 from %s): rotate it, then reload", where)
        self.status, self.rejected_at = REJECTED, now
        self.detail = f"key rejected: upstream answered 401 to {where}"

    def probed(self, code: int | None, now: datetime) -> None:
        """What a `GET /key` probe found (code None: no answer)."""
        self.checked_at = now
        if code == 200:
            self.accepted(now)
        elif code == 401:
            self.rejected(now, "GET /key")
        elif self.status != REJECTED:  # an outage says nothing new about the key
            if code is None:
                self.status = UNREACHABLE
            self.detail = f"GET /key: {code or 'no answer'}"

    def saw_chat_status(self, status: int, now: Callable[[], datetime]) -> None:
        """A chat call's status, with the gate's own key: 401 rejects; 200 after a
        rejection confirms again (nothing else touches the hot path)."""
        if status == 401:
            self.rejected(now(), "a chat completion")
        elif status == 200 and self.status == REJECTED:
            self.accepted(now())

    def view(self) -> dict[str, Any]:
        def at(ts: datetime | None) -> str | None:
            return ts.isoformat(timespec="seconds").replace("+00:00", "Z") if ts else None

        body: dict[str, Any] = {
            "status": self.status,
            "key_rejected": self.status == REJECTED,
            "confirmed_at": at(self.confirmed_at),
            "checked_at": at(self.checked_at),
        }
        if self.rejected_at is not None:
            body["rejected_at"] = at(self.rejected_at)
        if self.detail is not None:
            body["detail"] = self.detail
        return body
