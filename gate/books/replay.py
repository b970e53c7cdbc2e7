"""Start-up: the accounts and open holds rebuilt from the spend log's records, from
its last snapshot on (see `gate.books.snapshots`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gate.books.accounts import Account, Books, roll_period
from gate.books.holds import Hold
from gate.books.lines import event_of
from gate.books.snapshots import restore_snapshot
from gate.books.tasks import task_of_record
from gate.core.clock import Clock, parse_ts
from gate.core.cost import ZERO, to_decimal


def replay_records(records: Iterable[Mapping[str, Any]], books: Books, clock: Clock) -> int:
    """Apply every record to the accounts and holds (in place), then roll them to
    the clock's now and add the open holds to their accounts' `held`; returns the number of
    records applied. Holds without a request line stay in `holds`."""
    for acct in books.accounts.values():
        acct.period_start = None  # set by the agent's first line, rolled by later ones
    count = 0
    for record in records:
        count += 1
        _apply(record, books)
    now = clock()
    for acct in [*books.accounts.values(), *books.dormant.values()]:
        roll_period(acct, now)
    for hold in books.holds.values():
        holder = books.book(hold.agent_id)
        if holder is not None:
            holder.held += hold.amount
    return count


def _apply(record: Mapping[str, Any], books: Books) -> None:
    event = event_of(record)
    if event == "snapshot":
        restore_snapshot(record, books)
        return
    agent_id = record.get("agent_id")
    request_id = record.get("request_id")
    if event == "hold" and isinstance(request_id, str) and isinstance(agent_id, str):
        hold = books.holds.get(request_id)
        if hold is None:
            amount = to_decimal(record.get("held")) or ZERO
            hold = books.holds[request_id] = Hold(request_id, agent_id, amount)
            api = record.get("api")
            if isinstance(api, str):
                hold.api = api
            task_id = record.get("task_id")
            if isinstance(task_id, str):
                hold.task_id = task_id
        gen = record.get("generation_id")
        if isinstance(gen, str):
            hold.generation_id = gen
        if record.get("sent") is False and hold.sent is None:
            hold.sent = False  # a send mark comes before the request can leave
        return
    if event == "task":
        task = task_of_record(record)
        if task is not None:
            books.tasks[task.task_id] = task
        return
    if event == "task_end":
        ended = books.tasks.get(str(record.get("task_id")))
        if ended is not None and ended.ended is None:
            reason = record.get("reason")
            ended.ended = reason if isinstance(reason, str) else "closed"
        return
    if event == "sent":
        if isinstance(request_id, str) and (sent := books.holds.get(request_id)):
            sent.sent = True
        return
    if event == "request" and isinstance(request_id, str):
        books.holds.pop(request_id, None)
    acct = books.book(agent_id) if isinstance(agent_id, str) else None
    if acct is None:
        return
    ts = parse_ts(record.get("ts"))
    if ts is not None:
        roll_period(acct, ts)
    if event == "request":
        cost = to_decimal(record.get("cost")) or ZERO
        acct.spent += cost
        task = books.tasks.get(str(record.get("task_id")))
        if task is not None:
            task.spent += cost
    elif event == "reset" and not _rolled_already(acct, record):
        acct.spent = ZERO
    elif event == "budget":
        total = to_decimal(record.get("budget_total"))
        spent = to_decimal(record.get("budget_spent"))
        if total is not None:
            acct.budget_total = total
            acct.total_set_by_admin = True
        if spent is not None:
            acct.spent = spent


def _rolled_already(acct: Account, record: Mapping[str, Any]) -> bool:
    """A period line naming the start it rolled to (the Redis store's) when the books
    are in that period already: the lines' own timestamps rolled them, and lines of the
    new period written before this one (on any instance) count in it."""
    rolled_to = parse_ts(record.get("period_start")) if record.get("reason") == "period" else None
    if rolled_to is None or acct.period_start is None:
        return False
    return acct.period_start >= rolled_to
