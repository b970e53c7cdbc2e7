"""Task budgets as a store offers them (`SpendStore.tasks`, the `TaskStore` protocol):
open a task against an agent's budget, find it by its key, list, close.

`TaskDesk` is the JSONL store's: the tasks live in its ledger's `TaskBook` (they are
state, in its snapshots and replay) and each change is a line of its log, made under
the agent's lock. `NoTasks` is a store's that has none (the shared Redis store: a
task's reservation would have to be shared too), and refuses to open one.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from gate.books.lines import task_end_line, task_line
from gate.books.spendlog import SpendLogError
from gate.books.store import TaskRefused
from gate.books.tasks import Task, TaskBook, key_hash, mint_key, new_task_id
from gate.core.cost import ZERO

if TYPE_CHECKING:
    from gate.books.ledger import Ledger


class TaskDesk:
    def __init__(self, ledger: Ledger, book: TaskBook) -> None:
        self._ledger = ledger
        self._book = book

    def for_key(self, key: str) -> Task | None:
        """The open task whose key this is (compared by SHA-256), else None."""
        return self._book.for_key(key, self._ledger.now())

    def all(self) -> list[Task]:
        """Every task, its `held` and `ended` brought up to now."""
        for agent_id in {t.agent_id for t in self._book.by_id.values()}:
            acct = self._ledger.book(agent_id)
            if acct is not None:
                self._ledger.sync_held(acct)
        return list(self._book.by_id.values())

    async def open(
        self, agent_id: str, cap: Decimal, expires_at: datetime, name: str | None
    ) -> tuple[Task, str]:
        """Mint a task key with its own cap, reserved out of the agent's budget; the
        task line is on disk on return. Raises TaskRefused when the budget cannot
        cover the cap (with a hard cap)."""
        ledger = self._ledger
        acct = ledger.configured(agent_id)
        async with acct.lock:
            now = ledger.now()
            ledger.roll(acct, now)
            ledger.sync_held(acct)
            left = acct.budget_total - acct.committed
            if acct.policy.hard_cap and cap > left:
                raise TaskRefused(f"agent '{agent_id}' has {max(left, ZERO)} USD left to reserve")
            key = mint_key()
            task = Task(new_task_id(), agent_id, cap, expires_at, key_hash(key), name)
            self._book.add(task)
            written = ledger.append(task_line(task, now), durable=True)
            ledger.sync_held(acct)
        assert written is not None
        try:
            await written
        except SpendLogError:
            self._book.drop(task)
            ledger.sync_held(acct)
            raise
        ledger.notify(agent_id, "task")
        return task, key

    def close(self, task_id: str) -> Task | None:
        """End a task now: its key stops working and its unspent cap is released."""
        task = self._book.by_id.get(task_id)
        if task is None:
            return None
        if task.ended is None:
            task.ended = "closed"
            self._ledger.append(task_end_line(task, self._ledger.now()))
        acct = self._ledger.book(task.agent_id)
        if acct is not None:
            self._ledger.sync_held(acct)
        return task


class NoTasks:
    """A store without task budgets: no key is a task's, and none can be opened."""

    def __init__(self, why: str) -> None:
        self._why = why

    def for_key(self, key: str) -> Task | None:
        return None

    def all(self) -> list[Task]:
        return []

    async def open(
        self, agent_id: str, cap: Decimal, expires_at: datetime, name: str | None
    ) -> tuple[Task, str]:
        raise TaskRefused(self._why)

    def close(self, task_id: str) -> Task | None:
        return None
