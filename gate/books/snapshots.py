"""The snapshot line: every account (configured and dormant) and every open hold in one
spend-log line, written now and then so that start-up replays only the log's tail, and
read back here (`restore_snapshot`) when the replay reaches it."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from gate.books.accounts import Account, Books, dormant_account
from gate.books.holds import Hold
from gate.books.tasks import snapshot_entry, task_of_record
from gate.core.clock import iso, parse_ts
from gate.core.cost import ZERO, to_decimal


def snapshot_record(now: datetime, books: Books) -> dict[str, Any]:
    return {
        "event": "snapshot",
        "ts": iso(now),
        "agents": {
            agent_id: {
                "budget_total": acct.budget_total,
                "total_set_by_admin": acct.total_set_by_admin,
                "spent": acct.spent,
                "period_start": iso(acct.period_start) if acct.period_start else None,
            }
            for agent_id, acct in books.accounts.items()
        }
        | {agent_id: _dormant_entry(acct) for agent_id, acct in books.dormant.items()},
        "holds": {
            h.request_id: {
                "agent_id": h.agent_id,
                "held": h.amount,
                "generation_id": h.generation_id,
                "sent": h.sent,
                "api": h.api,
                "task_id": h.task_id,
            }
            for h in books.holds.values()
            if not h.settled
        },
        "tasks": {t.task_id: snapshot_entry(t) for t in books.tasks.values()},
    }


def _dormant_entry(acct: Account) -> dict[str, Any]:
    """A dormant account in a snapshot: what a configured one has, and what a start
    without the agent in its config needs to keep it (its period, its config total)."""
    return {
        "budget_total": acct.budget_total,
        "total_set_by_admin": acct.total_set_by_admin,
        "spent": acct.spent,
        "period_start": iso(acct.period_start) if acct.period_start else None,
        "dormant": True,
        "period": acct.policy.period,
        "config_total": acct.policy.budget_total,
    }


def restore_snapshot(snapshot: Mapping[str, Any], books: Books) -> None:
    """Set the accounts and the open holds to what the snapshot says; an agent the
    config does not name is kept dormant, never forgotten."""
    agents = snapshot.get("agents")
    for agent_id, saved in (agents if isinstance(agents, dict) else {}).items():
        if not isinstance(saved, dict):
            continue
        acct = books.accounts.get(agent_id)
        if acct is None:  # not configured now: kept dormant, never forgotten
            acct = books.dormant[agent_id] = dormant_account(agent_id, saved)
        total = to_decimal(saved.get("budget_total"))
        if saved.get("total_set_by_admin") is True and total is not None:
            acct.budget_total, acct.total_set_by_admin = total, True
        acct.spent = to_decimal(saved.get("spent")) or ZERO
        acct.period_start = parse_ts(saved.get("period_start"))
    books.holds.clear()
    saved_holds = snapshot.get("holds")
    for request_id, saved in (saved_holds if isinstance(saved_holds, dict) else {}).items():
        if isinstance(saved, dict) and isinstance(saved.get("agent_id"), str):
            hold = Hold(request_id, saved["agent_id"], to_decimal(saved.get("held")) or ZERO)
            gen = saved.get("generation_id")
            hold.generation_id = gen if isinstance(gen, str) else None
            sent = saved.get("sent")
            hold.sent = sent if isinstance(sent, bool) else None
            api = saved.get("api")
            hold.api = api if isinstance(api, str) else "chat"
            task_id = saved.get("task_id")
            hold.task_id = task_id if isinstance(task_id, str) else None
            books.holds[request_id] = hold
    books.tasks.clear()
    saved_tasks = snapshot.get("tasks")
    for saved in (saved_tasks if isinstance(saved_tasks, dict) else {}).values():
        task = task_of_record(saved) if isinstance(saved, dict) else None
        if task is not None:
            books.tasks[task.task_id] = task
