"""Upstream slots: how many calls are in flight, in all and per agent.

A slot is taken synchronously at the admission check (no `await` between the check and
the count, so a burst cannot overshoot the cap) and released exactly once, when the
relay ends or when admission refuses after the check.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gate.http.errors import OVERLOADED, RATE_LIMITED, GateError


@dataclass(slots=True)
class Slot:
    slots: Slots
    agent_id: str
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.slots.give_back(self.agent_id)


@dataclass(slots=True)
class Slots:
    total: int = 0
    by_agent: dict[str, int] = field(default_factory=dict)

    def take(self, agent_id: str, cap: int, agent_cap: int) -> Slot:
        """A slot for `agent_id`, or 503 (the gate is full) / 429 (this agent's share is)."""
        held = self.by_agent.get(agent_id, 0)
        if held >= agent_cap:
            raise GateError(
                429,
                RATE_LIMITED,
                f"agent has {held} requests in flight (its limit); retry shortly",
                {"Retry-After": "1"},
            )
        if self.total >= cap:
            raise GateError(
                503, OVERLOADED, "too many requests in flight; retry shortly", {"Retry-After": "1"}
            )
        self.total += 1
        self.by_agent[agent_id] = held + 1
        return Slot(self, agent_id)

    def give_back(self, agent_id: str) -> None:
        self.total -= 1
        left = self.by_agent[agent_id] - 1
        if left:
            self.by_agent[agent_id] = left
        else:
            del self.by_agent[agent_id]
