"""`python -m gate store-rebuild`: the shared store's state, rebuilt from the spend logs
of every instance (or initialised empty for a new deployment).

The logs are merged in time order and replayed exactly as the JSONL store replays its
own log (request lines summed per agent and period, budget and reset lines in order,
snapshots of a JSONL store being migrated); holds without a request line are left
out — an instance still running settles its own, and the settlement counts then.
Request ids settled within the last `DONE_TTL_SECONDS` are marked done, so a
settlement an instance still has queued is not counted a second time.

Order: by ts; lines of one log keep their order; at an equal ts in different logs a
request line comes before a reset or budget line (Redis does not count a settlement
whose line has the ts of a later reset, see redis_scripts.SETTLE). The epoch the
replay ends in (the last reset or spent-set, the newest request line) goes to Redis
too, so a settlement still queued somewhere counts only if the replay would count it.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from gate.books import redis_scripts as lua
from gate.books.ledger import Ledger
from gate.books.lines import event_of
from gate.books.logscan import read_records
from gate.books.redis_connect import connect, epoch, epoch_ms
from gate.books.spendlog import SpendLog
from gate.config import GateConfig
from gate.core.clock import Clock, iso, utc_now


class RebuildRefused(Exception):
    """The store already holds state and --force was not given."""


@dataclass(slots=True)
class Rebuilt:
    records: int = 0
    spent: dict[str, Decimal] = field(default_factory=dict)
    since: dict[str, str] = field(default_factory=dict)  # agent -> ts of its last reset
    last: dict[str, str] = field(default_factory=dict)  # agent -> ts of its newest request


def _order(record: dict[str, Any]) -> tuple[str, bool]:
    return str(record.get("ts", "")), event_of(record) in ("reset", "budget")


def merged(logs: Sequence[Path]) -> Iterator[dict[str, Any]]:
    """Every log's records in the order the replay applies them (see the module doc)."""
    return heapq.merge(*(read_records(p) for p in logs), key=_order)


def _epochs(record: dict[str, Any], result: Rebuilt) -> None:
    agent_id, ts, event = record.get("agent_id"), record.get("ts"), event_of(record)
    if not isinstance(agent_id, str) or not isinstance(ts, str):
        return
    if event == "request":
        result.last[agent_id] = max(ts, result.last.get(agent_id, ""))
    elif (event == "reset" and record.get("reason") != "period") or (
        event == "budget" and "budget_spent" in record
    ):
        result.since[agent_id] = ts


async def rebuild(
    cfg: GateConfig,
    logs: Sequence[Path],
    *,
    force: bool = False,
    clock: Clock = utc_now,
    client: Redis | None = None,
) -> Rebuilt:
    store = cfg.spend_store
    keys = lua.Keys(store.key_prefix)
    redis = client if client is not None else connect(store)
    try:
        if not force and await redis.exists(keys.marker):
            raise RebuildRefused(
                "the spend store already holds gate state; "
                "--force replaces it (holds of requests in flight are dropped)"
            )
        ledger = Ledger(cfg.agents, SpendLog(Path(os.devnull)), clock)  # never started
        now = clock()
        recent = iso(now - timedelta(seconds=lua.DONE_TTL_SECONDS))
        done: list[str] = []

        result = Rebuilt()

        def watched() -> Iterator[dict[str, Any]]:
            for record in merged(logs):
                _epochs(record, result)
                rid = record.get("request_id")
                if event_of(record) == "request" and isinstance(rid, str):
                    if str(record.get("ts", "")) >= recent:
                        done.append(rid)
                yield record

        result.records = ledger.replay(watched())
        async with redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.holds, keys.expiry)
            for agent_id in ledger.agent_ids():
                acct = ledger.account(agent_id)
                assert acct is not None
                result.spent[agent_id] = acct.spent
                pipe.delete(keys.account(agent_id))
                pipe.hset(
                    keys.account(agent_id),
                    mapping={
                        "budget_total": lua.to_units(acct.budget_total),
                        "spent": lua.to_units(acct.spent),
                        "held": 0,
                        "period_start": epoch(acct.period_start),
                        "admin": "1" if acct.total_set_by_admin else "0",
                        "config_total": lua.to_units(acct.policy.budget_total),
                        "since": epoch_ms(result.since.get(agent_id)),
                        "last": epoch_ms(result.last.get(agent_id)),
                    },
                )
            for rid in done:
                pipe.set(keys.done(rid), "1", ex=lua.DONE_TTL_SECONDS)
            pipe.set(keys.marker, iso(now))
            await pipe.execute()
        return result
    finally:
        if client is None:
            await redis.aclose()
