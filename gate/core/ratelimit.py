"""Rate limits as sliding windows. Pure: the caller passes the time in (seconds).

A `Window` keeps what was admitted in the last `seconds` as entries (a time and an
amount: 1 for a request, tokens for a token limit). An entry's amount can be corrected
later (tokens estimated at admission, settled with the real usage) or cancelled (a
request refused after it was counted). `wait()` says when a new amount really fits:
the moment enough of the oldest entries leave the window.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

MINUTE = 60.0


class Entry:
    __slots__ = ("amount", "at", "live")

    def __init__(self, at: float, amount: int) -> None:
        self.at = at
        self.amount = amount
        self.live = True  # still counted in its window


@dataclass(slots=True)
class Window:
    seconds: float = MINUTE
    entries: deque[Entry] = field(default_factory=deque)
    used: int = 0

    def _expire(self, now: float) -> None:
        edge = now - self.seconds
        entries = self.entries
        while entries and entries[0].at <= edge:
            gone = entries.popleft()
            gone.live = False
            self.used -= gone.amount

    def wait(self, now: float, limit: int, amount: int) -> float:
        """Seconds until `amount` fits under `limit` (0.0: it fits now). An amount
        larger than the whole limit fits once the window is empty."""
        self._expire(now)
        excess = self.used + amount - limit
        if excess <= 0 or self.used <= 0:
            return 0.0
        freed = 0
        for entry in self.entries:
            freed += entry.amount
            if freed >= excess or freed >= self.used:
                return max(entry.at + self.seconds - now, 0.001)
        return max(self.entries[-1].at + self.seconds - now, 0.001)  # pragma: no cover

    def add(self, now: float, amount: int) -> Entry:
        entry = Entry(now, amount)
        self.entries.append(entry)
        self.used += amount
        return entry

    def correct(self, entry: Entry, amount: int) -> None:
        """Count `amount` for `entry` from now on (nothing once it left the window)."""
        if entry.live:
            self.used += amount - entry.amount
            entry.amount = amount

    def remaining(self, now: float, limit: int) -> int:
        self._expire(now)
        return max(limit - self.used, 0)

    def reset_in(self, now: float) -> float:
        """Seconds until the window is empty again: the limit back at its full size."""
        self._expire(now)
        return max(self.entries[-1].at + self.seconds - now, 0.0) if self.entries else 0.0


def duration(seconds: float) -> str:
    """OpenAI's spelling of a reset time: `20ms`, `1.5s`, `1m0s`."""
    if seconds < 1:
        return f"{max(round(seconds * 1000), 0)}ms"
    minutes, rest = divmod(seconds, 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text
