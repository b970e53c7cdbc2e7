"""Holds left open by a crash: settled once, at their real cost where upstream knows it."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from gate.books.holds import Hold
from gate.books.lines import request_line
from gate.core.cost import ZERO, to_decimal

if TYPE_CHECKING:
    from gate.context import Gate

log = logging.getLogger(__name__)

GENERATION_FIELDS = ("model", "tokens_prompt", "tokens_completion")  # of GET /generation


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
    line = request_line(hold.request_id, hold.api)  # its hold line's api (`chat` before it)
    line["generation_id"] = hold.generation_id
    line["agent_id"] = hold.agent_id
    line["recovered"] = True
    if hold.generation_id is not None:
        key = gate.config.openrouter.api_key
        record = await gate.upstream.generation(
            hold.generation_id, f"Bearer {key}" if key else None
        )
        cost = to_decimal(record.get("total_cost")) if record is not None else None
        if record is not None and cost is not None:
            model, prompt, completion = (record.get(k) for k in GENERATION_FIELDS)
            line["model"] = model if isinstance(model, str) else None
            line["prompt_tokens"] = prompt if isinstance(prompt, int) else 0
            line["completion_tokens"] = completion if isinstance(completion, int) else 0
            line["cost_source"] = "generation"
            gate.ledger.settle(hold, cost, line)
            return True
    if hold.generation_id is None and hold.sent is False:
        line["cost_source"], line["recovery"] = "none", "not_sent"
        gate.ledger.settle(hold, ZERO, line)
        return False
    line["cost_source"] = "hold"
    gate.ledger.settle(hold, hold.amount, line)
    return False
