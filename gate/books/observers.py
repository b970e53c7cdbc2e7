"""Who the ledger tells of its changes (alerts, the console sync, metrics, the
dashboard): called synchronously, in order; an observer's bug is logged and never
breaks the books."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

log = logging.getLogger(__name__)

# Told (agent_id, change) after an agent's state changed: "settle", "budget", "reset",
# "period", "policy", or "refused" (a request refused by the budget). Synchronous and
# cheap; an observer reads what it needs itself. See `Ledger.observers`.
Observer = Callable[[str, str], None]
# Told each request line as it is written, and whether the request was refused before
# going upstream (`Refusals.record`) rather than settled. Synchronous and cheap, too.
LineObserver = Callable[[Mapping[str, Any], bool], None]


def notify(observers: Iterable[Observer], agent_id: str, change: str) -> None:
    for observer in observers:
        try:
            observer(agent_id, change)
        except Exception:  # an observer's bug never breaks the books
            log.exception("ledger observer failed on %s %s", change, agent_id)


def tell_line(observers: Iterable[LineObserver], line: Mapping[str, Any], refused: bool) -> None:
    for observer in observers:
        try:
            observer(line, refused)
        except Exception:  # an observer's bug never breaks the books
            log.exception("ledger line observer failed")
