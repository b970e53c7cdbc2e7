"""The lines the ledger writes to the spend log for a change of state: a hold placed,
its generation named, its request sent, a budget set, a reset; and what the ledger adds
to a request line the relay wrote (settled or refused). The snapshot line is
`gate.books.snapshots`'."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from gate.books.holds import Hold
from gate.core.clock import iso
from gate.core.cost import ZERO


def _of_hold(event: str, hold: Hold, now: datetime) -> dict[str, Any]:
    return {
        "ts": iso(now),
        "event": event,
        "request_id": hold.request_id,
        "agent_id": hold.agent_id,
    }


def hold_line(hold: Hold, tier: str, now: datetime) -> dict[str, Any]:
    return {
        **_of_hold("hold", hold, now),
        "api": hold.api,  # a crash's recovered line names it too
        **({"task_id": hold.task_id} if hold.task_id is not None else {}),
        "held": hold.amount,
        "tier": tier,
        **({"sent": False} if hold.sent is False else {}),
    }


def generation_line(hold: Hold, generation_id: str, now: datetime) -> dict[str, Any]:
    return {**_of_hold("hold", hold, now), "held": hold.amount, "generation_id": generation_id}


def sent_line(hold: Hold, now: datetime) -> dict[str, Any]:
    return _of_hold("sent", hold, now)


def budget_line(
    ts: str,
    agent_id: str,
    budget_total: Decimal | None,
    budget_spent: Decimal | None,
    source: str | None,
) -> dict[str, Any]:
    line: dict[str, Any] = {"ts": ts, "event": "budget", "agent_id": agent_id}
    if budget_total is not None:
        line["budget_total"] = budget_total
    if budget_spent is not None:
        line["budget_spent"] = budget_spent
    if source is not None:
        line["source"] = source
    return line


def reset_line(ts: str, agent_id: str, reason: str) -> dict[str, Any]:
    return {"ts": ts, "event": "reset", "agent_id": agent_id, "reason": reason}


def settled(
    line: dict[str, Any], ts: str, hold: Hold, cost: Decimal, remaining: Decimal | None
) -> None:
    """Complete a settled request's line (in place)."""
    line.update(
        ts=ts,
        event="request",
        request_id=hold.request_id,
        agent_id=hold.agent_id,
        cost=cost,
        budget_remaining=remaining,
    )
    if hold.task_id is not None:
        line["task_id"] = hold.task_id


def refused(line: dict[str, Any], ts: str, remaining: Decimal | None) -> None:
    """Complete the line of a request that never went upstream (in place): cost 0."""
    line.update(ts=ts, event="request", cost=ZERO, cost_source="none", budget_remaining=remaining)
