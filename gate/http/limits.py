"""Rate limits at admission, and what every answer says about them and the budget.

Per agent: `requests_per_minute` and `tokens_per_minute` (tokens counted from the
request's estimate at admission, corrected to the real usage at settlement). Across all
agents: OpenRouter's own limit on `:free` models (20 requests a minute per key), so a
free-model storm is refused here rather than upstream. The windows live in `RateLimits`,
owned by the gate (`Gate.limits`); the arithmetic is `gate.core.ratelimit`'s. On the
Redis store the same windows live in Redis (`gate.http.limits_shared`), shared by every
instance on it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from gate.books.accounts import Account
from gate.books.store import SpendStore
from gate.config import AgentPolicy, GateConfig, LimitsConfig
from gate.core.clock import Clock, iso, utc_now
from gate.core.periods import period_end
from gate.core.ratelimit import Entry, Window, duration
from gate.http.demand import Demand
from gate.http.errors import RATE_LIMITED, GateError

if TYPE_CHECKING:  # the shared windows are loaded with the Redis store, never before
    from gate.context import Gate
    from gate.http.limits_shared import SharedLimits, SharedTicket

FREE_SUFFIX = ":free"
KINDS = ("requests", "tokens")


@dataclass(slots=True)
class Ticket:
    """What one admitted request counted; settled (tokens) or cancelled (refused later)."""

    counted: list[tuple[Window, Entry]]
    tokens: tuple[Window, Entry] | None
    headers: dict[str, str]
    shared: SharedTicket | None = None  # on the Redis store: counted there instead

    def settled(self, tokens: int) -> None:
        if self.shared is not None:
            self.shared.settled(tokens)
        elif self.tokens is not None:
            self.tokens[0].correct(self.tokens[1], tokens)

    def cancel(self) -> None:
        if self.shared is not None:
            self.shared.cancel()
        for window, entry in self.counted:
            window.correct(entry, 0)


@dataclass(slots=True)
class RateLimits:
    clock: Clock = utc_now
    requests: dict[str, Window] = field(default_factory=dict)
    tokens: dict[str, Window] = field(default_factory=dict)
    free: Window = field(default_factory=Window)  # every agent's :free requests together
    _free_policy: dict[str, tuple[AgentPolicy, bool]] = field(default_factory=dict)
    shared: SharedLimits | None = None  # the Redis store's windows, shared by instances

    async def admit(
        self, ledger: SpendStore, policy: AgentPolicy, config: GateConfig, demand: Demand
    ) -> Ticket | None:
        """Count the request, or raise 429 `rate_limit_exceeded` with when it will fit.
        None: no limit applies to this agent (nothing counted, no headers)."""
        cfg = config.limits
        rpm, tpm = limits_of(policy, cfg)
        free = cfg.free_requests_per_minute
        if free and not self._may_use_free(ledger, policy):
            free = 0
        if not (rpm or tpm or free):
            return None
        now = self.clock().timestamp()
        agent_id = policy.agent_id
        # as the hold estimates it: the prompt, and the completion it allows
        completion = demand.max_tokens
        if completion is None:
            completion = config.holds.default_max_tokens
        estimate = demand.prompt_tokens + completion
        if self.shared is not None:
            ticket = await self.shared.ticket(agent_id, rpm, tpm, free, estimate, now)
            if ticket is not None:
                return ticket
        checks: list[tuple[str, Window, int, int]] = []
        if rpm:
            checks.append(("requests", self.requests.setdefault(agent_id, Window()), rpm, 1))
        if tpm:
            checks.append(("tokens", self.tokens.setdefault(agent_id, Window()), tpm, estimate))
        if free:
            checks.append((FREE_SUFFIX, self.free, free, 1))
        late = [(w.wait(now, limit, n), name, limit) for name, w, limit, n in checks]
        blocked = [x for x in late if x[0] > 0]
        if blocked:
            wait = max(x[0] for x in blocked)
            raise refusal(agent_id, blocked, wait, _headers(checks, now, 0))
        counted = [(w, w.add(now, n)) for _, w, _, n in checks]
        tokens = counted[1 if rpm else 0] if tpm else None
        return Ticket(counted, tokens, _headers(checks, now, 1))

    def _may_use_free(self, ledger: SpendStore, policy: AgentPolicy) -> bool:
        """Whether the agent's current tier may send the request to a `:free` model.
        Only an agent whose tiers list one pays for looking its tier up."""
        known = self._free_policy.get(policy.agent_id)
        if known is None or known[0] is not policy:
            lists_free = any(m.endswith(FREE_SUFFIX) for t in policy.tiers for m in t.models)
            known = self._free_policy[policy.agent_id] = (policy, lists_free)
        if not known[1]:
            return False
        tier = ledger.current_tier(policy.agent_id)
        return tier is not None and any(m.endswith(FREE_SUFFIX) for m in tier.models)

    async def refresh(self, policies: Iterable[AgentPolicy], cfg: LimitsConfig) -> None:
        """On the Redis store: read every instance's counts, for `view`."""
        if self.shared is not None:
            keys = [
                self.shared.prefix + shared_key(name, policy.agent_id)
                for policy in policies
                for name, limit in zip(KINDS, limits_of(policy, cfg), strict=True)
                if limit
            ]
            await self.shared.refresh(keys, round(self.clock().timestamp() * 1000))

    def view(self, policy: AgentPolicy, cfg: LimitsConfig) -> dict[str, Any]:
        """The agent's limits and what is left of them now, for the admin API (on the
        Redis store: as `refresh` last read them)."""
        limits = limits_of(policy, cfg)
        now = self.clock().timestamp()
        out: dict[str, Any] = {}
        for name, limit in zip(KINDS, limits, strict=True):
            remaining: int | None = None
            reset: float | None = None
            if limit and self.shared is not None:
                key = self.shared.prefix + shared_key(name, policy.agent_id)
                used, empty_at = self.shared.seen.get(key, (0, 0))
                remaining, reset = max(limit - used, 0), max(empty_at / 1000 - now, 0.0)
            elif limit:
                windows = self.requests if name == "requests" else self.tokens
                window = windows.get(policy.agent_id) or Window()
                remaining, reset = window.remaining(now, limit), window.reset_in(now)
            out[f"{name}_per_minute"] = limit or None
            out[f"{name}_remaining"] = remaining
            out[f"{name}_reset_seconds"] = None if reset is None else round(reset, 3)
        return out


def shared_key(name: str, agent_id: str) -> str:
    """A shared window's key under the store's prefix."""
    return "limit:free" if name == FREE_SUFFIX else f"limit:{name}:{agent_id}"


def limits_of(policy: AgentPolicy, cfg: LimitsConfig) -> tuple[int, int]:
    """The agent's requests and tokens per minute (0: no limit)."""
    rpm = policy.requests_per_minute
    tpm = policy.tokens_per_minute
    return (
        cfg.requests_per_minute if rpm is None else rpm,
        cfg.tokens_per_minute if tpm is None else tpm,
    )


def _headers(checks: list[tuple[str, Window, int, int]], now: float, added: int) -> dict[str, str]:
    """OpenAI's `x-ratelimit-*` trios; the `:free` limit shows as the requests trio when
    the agent has no requests limit of its own."""
    out: dict[str, str] = {}
    for name, window, limit, _ in checks:
        kind = "requests" if name == FREE_SUFFIX else name
        if f"x-ratelimit-limit-{kind}" in out:
            continue
        out[f"x-ratelimit-limit-{kind}"] = str(limit)
        out[f"x-ratelimit-remaining-{kind}"] = str(window.remaining(now, limit) if added else 0)
        out[f"x-ratelimit-reset-{kind}"] = duration(window.reset_in(now))
    return out


def refusal(
    agent_id: str, blocked: list[tuple[float, str, int]], wait: float, headers: dict[str, str]
) -> GateError:
    what = ", ".join(
        f"{limit} {name} per minute"
        if name != FREE_SUFFIX
        else f"{limit} requests per minute to :free models (all agents)"
        for _, name, limit in blocked
    )
    headers["Retry-After"] = str(max(math.ceil(wait), 1))
    headers["retry-after-ms"] = str(max(math.ceil(wait * 1000), 1))
    return GateError(
        429,
        RATE_LIMITED,
        f"rate limit reached for agent '{agent_id}' ({what}); retry in {duration(wait)}",
        headers,
    )


def budget_headers(acct: Account | None, now: datetime) -> dict[str, str]:
    """`X-Execwall-Budget-*` from the account itself (no view built): what is left of
    the budget (never below 0), its total, and the period's end (none for `never`)."""
    if acct is None:
        return {}
    remaining = max(acct.remaining, 0)
    out = {
        "X-Execwall-Budget-Remaining": _number(remaining),
        "X-Execwall-Budget-Total": _number(acct.budget_total),
    }
    known = acct.period_known
    if known is not None and known[0] == acct.policy.period and known[1] <= now < known[2]:
        out["X-Execwall-Budget-Resets-At"] = iso(known[2])
    else:
        end = period_end(acct.policy.period, now)
        if end is not None:
            out["X-Execwall-Budget-Resets-At"] = iso(end)
    return out


def _number(value: Any) -> str:
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def answer_headers(gate: Gate, agent_id: str, ticket: Ticket | None) -> dict[str, str]:
    """The budget and rate-limit headers of one answer (or refusal) to a known agent."""
    ledger = gate.ledger
    out = budget_headers(ledger.account(agent_id), gate.limits.clock())
    if ticket is not None:
        out.update(ticket.headers)
    return out


def refusal_headers(gate: Gate, agent_id: str, ticket: Ticket | None) -> dict[str, str]:
    """A refusal's headers for a known agent; what its request counted is given back."""
    if ticket is not None:
        ticket.cancel()
    return answer_headers(gate, agent_id, ticket)
