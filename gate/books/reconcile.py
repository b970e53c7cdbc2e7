"""Holds left open by a crash: settled once, at their real cost where upstream knows it."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from gate.books.holds import Hold
from gate.core.cost import ZERO, to_decimal

if TYPE_CHECKING:
    from gate.context import Gate

log = logging.getLogger(__name__)


async def reconcile_open_holds(gate: Gate) -> int:
    """Settle every hold the log left open; returns how many were settled by generation."""
    holds = gate.ledger.open_holds()
    if not holds:
        return 0
    log.warning("reconciling %d holds left open by an unclean stop", len(holds))
    results = await asyncio.gather(*(_reconcile(gate, hold) for hold in holds))
    by_generation = sum(results)
    log.info("reconciled %d holds, %d by generation id", len(holds), by_generation)
    return by_generation


async def recover_expired_holds(gate: Gate, sweep_seconds: float) -> None:
    """A shared store: holds whose instance died (it stopped renewing them) are claimed
    by one surviving instance and settled here, once, written as recovered lines."""
    while True:
        await asyncio.sleep(sweep_seconds)  # a sweep period, not a sync wait
        holds = await gate.ledger.claim_expired()
        if holds:
            log.warning("settling %d holds of an instance that stopped", len(holds))
            await asyncio.gather(*(_reconcile(gate, hold) for hold in holds))


async def _reconcile(gate: Gate, hold: Hold) -> bool:
    """Recovery charges only what upstream could have charged: the generation's real
    cost when upstream names it; nothing when the request never left the gate (its
    hold promised a send mark that never came, gate.upstream.sendmark); else, an unknown
    outcome, the whole hold."""
    line: dict[str, object] = {
        "request_id": hold.request_id,
        "api": hold.api,  # from its hold line (`chat` on lines from before `api`)
        "generation_id": hold.generation_id,
        "agent_id": hold.agent_id,
        "model": None,
        "status": None,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "recovered": True,
    }
    if hold.generation_id is not None:
        key = gate.config.openrouter.api_key
        record = await gate.upstream.generation(
            hold.generation_id, f"Bearer {key}" if key else None
        )
        cost = to_decimal(record.get("total_cost")) if record is not None else None
        if record is not None and cost is not None:
            line.update(
                model=record.get("model"),
                prompt_tokens=record.get("tokens_prompt") or 0,
                completion_tokens=record.get("tokens_completion") or 0,
                cost_source="generation",
            )
            gate.ledger.settle(hold, cost, line)
            return True
    if hold.generation_id is None and hold.sent is False:
        line.update(cost_source="none", recovery="not_sent")
        gate.ledger.settle(hold, ZERO, line)
        return False
    line["cost_source"] = "hold"
    gate.ledger.settle(hold, hold.amount, line)
    return False
