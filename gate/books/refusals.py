"""Refusals of requests no known agent was authenticated for — a malformed `X-Agent-ID`
(400), an agent not configured (403), a wrong or missing key (401) — are counted, not
logged one by one: anyone who reaches the port can send them as fast as the loop answers,
and a line each would fill the disk. One `{"event": "refusals"}` line per interval (and at
a graceful stop) carries the counts; every request of a known, authenticated agent still
writes its own line.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from gate.books.lines import RequestLine, refused
from gate.books.observers import LineObserver, tell_line
from gate.core.clock import Clock, iso

INTERVAL_SECONDS = 60.0  # one refusals line at most this often
MAX_AGENT_IDS = 32  # distinct claimed agent ids named per line; the rest are only counted

REASONS = {
    400: "invalid X-Agent-ID",
    403: "agent not configured",
}


def reason_of(status: int, message: str) -> str:
    """A bounded reason: the 401 messages are fixed texts, the 403's names the claimed id
    (which is counted on its own)."""
    return REASONS.get(status, message)


class RefusalTally:
    """Counts since the last line written; `take` empties it into one record."""

    def __init__(self) -> None:
        self._clear()

    def _clear(self) -> None:
        self.count = 0
        self._since: str | None = None
        self._reasons: dict[tuple[int, str], int] = {}
        self._agents: dict[str, int] = {}
        self._agents_omitted = 0

    def add(self, ts: str, status: int, reason: str, agent_id: object) -> None:
        if self._since is None:
            self._since = ts
        self.count += 1
        key = (status, reason)
        self._reasons[key] = self._reasons.get(key, 0) + 1
        if not isinstance(agent_id, str):
            return
        if agent_id in self._agents or len(self._agents) < MAX_AGENT_IDS:
            self._agents[agent_id] = self._agents.get(agent_id, 0) + 1
        else:
            self._agents_omitted += 1

    def take(self, ts: str) -> dict[str, Any] | None:
        """The line for the counts so far (None when there were none), and a fresh start."""
        if not self.count:
            return None
        record = {
            "ts": ts,
            "event": "refusals",
            "since": self._since,
            "count": self.count,
            "reasons": [
                {"status": status, "reason": reason, "count": n}
                for (status, reason), n in sorted(self._reasons.items())
            ],
            "agent_ids": dict(sorted(self._agents.items())),
            "agent_ids_omitted": self._agents_omitted,
        }
        self._clear()
        return record


class Refusals:
    """A store's refused requests: a known agent's each write a line (cost 0, no state
    change), the rest are counted into the next `refusals` line."""

    def __init__(
        self,
        append: Callable[[Mapping[str, Any]], object],
        clock: Clock,
        remaining: Callable[[str], Decimal | None],
        line_observers: list[LineObserver],
    ) -> None:
        self._append = append
        self._clock = clock
        self._remaining = remaining  # an agent's remaining budget, None if unknown
        self._line_observers = line_observers
        self._tally = RefusalTally()

    @property
    def count(self) -> int:
        """Refusals counted since the last `refusals` line."""
        return self._tally.count

    def take(self, ts: str) -> dict[str, Any] | None:
        """The `refusals` line for the counts so far, and a fresh start."""
        return self._tally.take(ts)

    def record(self, line: RequestLine) -> None:
        """A request that never went upstream: its line, with cost 0."""
        agent_id = line.get("agent_id")
        remaining = self._remaining(agent_id) if isinstance(agent_id, str) else None
        refused(line, iso(self._clock()), remaining)
        self._append(line)
        tell_line(self._line_observers, line, True)

    def count_one(self, line: RequestLine, reason: str) -> None:
        """A request refused before a known agent was authenticated: counted into the
        next `refusals` line, not written on its own."""
        refused(line, iso(self._clock()), None)
        self._tally.add(line["ts"], line["status"] or 0, reason, line["agent_id"])
        tell_line(self._line_observers, line, True)

    def flush(self) -> None:
        """Write the refusals counted since the last such line, if any."""
        record = self._tally.take(iso(self._clock()))
        if record is not None:
            self._append(record)


async def flush_every(flush: Callable[[], None]) -> None:
    """Write the refusals line every INTERVAL_SECONDS (a task; cancelled at stop, when
    the caller flushes once more)."""
    while True:
        await asyncio.sleep(INTERVAL_SECONDS)
        flush()
