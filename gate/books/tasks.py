"""Task budgets: a short-lived key for one job of an agent, with a cap of its own drawn
from the agent's budget.

While a task is open its cap is held against the agent's budget (what its requests have
not spent or hold yet counts as held), so the agent's other requests cannot spend it;
a request made with the task's key must fit both the task's cap and the agent's budget.
When the task ends (closed through the admin API, or past its expiry) the unspent part
is released. The key itself is never kept: only its SHA-256, in memory and on the
`task` line that opens it, so a restart rebuilds every task from the spend log.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from gate.books.lines import task_line
from gate.core.clock import iso, parse_ts
from gate.core.cost import ZERO, to_decimal

if TYPE_CHECKING:
    from gate.books.holds import Hold

KEY_PREFIX = "ewt_"  # a task key: told apart from agent keys before any lookup


@dataclass(slots=True)
class Task:
    task_id: str
    agent_id: str
    cap: Decimal
    expires_at: datetime
    key_sha256: str
    name: str | None = None
    spent: Decimal = ZERO
    held: Decimal = ZERO  # its requests' open holds (kept by the ledger)
    ended: str | None = None  # "closed" or "expired" once it has ended

    def open_at(self, now: datetime) -> bool:
        return self.ended is None and now < self.expires_at

    def unused(self) -> Decimal:
        """What the task may still spend: its cap less what it spent and holds."""
        return max(ZERO, self.cap - self.spent - self.held)

    def view(self, now: datetime) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "agent_id": self.agent_id,
            "name": self.name,
            "cap": self.cap,
            "spent": self.spent,
            "held": self.held,
            "remaining": self.unused(),
            "expires_at": iso(self.expires_at),
            "open": self.open_at(now),
            "ended": self.ended or ("expired" if now >= self.expires_at else None),
        }


def mint_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(24)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def new_task_id() -> str:
    return "task-" + secrets.token_hex(8)


def held_with_tasks(
    holds: Iterable[Hold], agent_id: str, tasks: Iterable[Task], now: datetime
) -> Decimal:
    """The agent's `held`: its open holds, plus what its open tasks still reserve. Each
    task's own `held` (its requests' open holds) is brought up to date on the way."""
    total = ZERO
    by_task: dict[str, Decimal] = {}
    for hold in holds:
        if hold.agent_id != agent_id or hold.settled:
            continue
        total += hold.amount
        if hold.task_id is not None:
            by_task[hold.task_id] = by_task.get(hold.task_id, ZERO) + hold.amount
    for task in tasks:
        task.held = by_task.get(task.task_id, ZERO)
        if task.open_at(now):
            total += task.unused()
    return total


class TaskBook:
    """Every task by id, and each task's id by its key's SHA-256 (never the key)."""

    __slots__ = ("_keys", "by_id")

    def __init__(self) -> None:
        self.by_id: dict[str, Task] = {}
        self._keys: dict[str, str] = {}

    def add(self, task: Task) -> None:
        self.by_id[task.task_id] = task
        self._keys[task.key_sha256] = task.task_id

    def drop(self, task: Task) -> None:
        self.by_id.pop(task.task_id, None)
        self._keys.pop(task.key_sha256, None)

    def reindex(self) -> None:
        """After a replay filled `by_id`: the keys' index again."""
        self._keys = {t.key_sha256: t.task_id for t in self.by_id.values()}

    def for_key(self, key: str, now: datetime) -> Task | None:
        """The open task whose key this is, else None."""
        task_id = self._keys.get(key_hash(key))
        task = self.by_id.get(task_id) if task_id is not None else None
        return task if task is not None and task.open_at(now) else None

    def unused(self, task_id: str | None, now: datetime) -> Decimal | None:
        """What a task's request may still spend of it (None: no task; 0: ended)."""
        if task_id is None:
            return None
        task = self.by_id.get(task_id)
        return task.unused() if task is not None and task.open_at(now) else ZERO

    def held(
        self, holds: Iterable[Hold], agent_id: str, now: datetime
    ) -> tuple[Decimal, list[Task]]:
        """The agent's `held` (`held_with_tasks`), and its tasks that have just expired
        (marked ended here: the caller writes their end lines)."""
        tasks = [t for t in self.by_id.values() if t.agent_id == agent_id]
        if not tasks:
            return sum(
                (h.amount for h in holds if h.agent_id == agent_id and not h.settled), ZERO
            ), []
        held = held_with_tasks(holds, agent_id, tasks, now)
        expired = [t for t in tasks if t.ended is None and now >= t.expires_at]
        for task in expired:
            task.ended = "expired"
        return held, expired


def task_of_record(record: Mapping[str, Any]) -> Task | None:
    """A `task` line (or a snapshot's entry) read back; None when it is not whole."""
    task_id, agent_id = record.get("task_id"), record.get("agent_id")
    cap = to_decimal(record.get("cap"))
    expires = parse_ts(record.get("expires_at"))
    digest = record.get("key_sha256")
    if not (isinstance(task_id, str) and isinstance(agent_id, str) and isinstance(digest, str)):
        return None
    if cap is None or expires is None:
        return None
    name = record.get("name")
    task = Task(task_id, agent_id, cap, expires, digest, name if isinstance(name, str) else None)
    task.spent = to_decimal(record.get("spent")) or ZERO
    ended = record.get("ended")
    task.ended = ended if isinstance(ended, str) else None
    return task


def snapshot_entry(task: Task) -> dict[str, Any]:
    """A task as a snapshot carries it: its `task` line's fields, spent and ended."""
    line = task_line(task, task.expires_at)
    entry: dict[str, Any] = {k: v for k, v in line.items() if k not in ("ts", "event")}
    return entry | {"spent": task.spent, "ended": task.ended}
