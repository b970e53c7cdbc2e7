"""Reading `cost_routing.agents`: each agent's policy, its tiers and their models, and
the per-agent limits (gate.config.parse calls it with the shared `_Reader`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from gate.config.loops import read_loop_breaker
from gate.config.reader import _FAILED, _Reader
from gate.config.sections import _ROOT
from gate.config.types import (
    BUDGET_SOURCES,
    OLD_BUDGET_SOURCES,
    PERIODS,
    AgentPolicy,
    LoopBreakerConfig,
    Tier,
)

_AGENT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


_TIER_NAME = re.compile(r"[\x21-\x7e]([\x20-\x7e]{0,62}[\x21-\x7e])?")  # header-safe text


_MODEL_ID = re.compile(r"[^\s,]+")  # ids travel comma-separated in a response header


_AGENT_KEYS = (
    "budget_total",
    "budget_spent",
    "budget_source",
    "period",
    "hard_cap",
    "api_key",
    "tiers",
    "max_concurrent",
    "loop_breaker",
    "requests_per_minute",
    "tokens_per_minute",
)


_TIER_KEYS = ("threshold", "models", "name")


def _agents(r: _Reader, root: Mapping[Any, Any]) -> Mapping[str, AgentPolicy]:
    p = f"{_ROOT}.agents"
    breaker = read_loop_breaker(r, root, _ROOT, LoopBreakerConfig())  # every agent's default
    m = r.mapping(root.get("agents"), p)
    if m is not None and not m:
        r.fail(p, "at least one agent is required")
    agents: dict[str, AgentPolicy] = {}
    key_owner: dict[str, str] = {}
    for agent_id, body in (m or {}).items():
        if not isinstance(agent_id, str) or not _AGENT_ID.fullmatch(agent_id):
            r.fail(f"{p}.{agent_id}", "agent id must match [A-Za-z0-9._-]{1,64}")
            continue
        if (agent := _agent(r, agent_id, body, f"{p}.{agent_id}", breaker)) is None:
            continue
        agents[agent_id] = agent
        owner = key_owner.setdefault(agent.api_key, agent_id) if agent.api_key else agent_id
        if owner != agent_id:
            r.fail(f"{p}.{agent_id}.api_key", f"must differ from agent {owner}'s")
    return MappingProxyType(agents)


def _agent(
    r: _Reader, agent_id: str, body: object, p: str, breaker: LoopBreakerConfig
) -> AgentPolicy | None:
    if not (m := r.mapping(body, p)):
        if m is not None:
            r.fail(p, "must set budget_total and tiers")
        return None
    r.unknown(m, p, _AGENT_KEYS)
    return AgentPolicy(
        agent_id=agent_id,
        budget_total=r.decimal(m, "budget_total", p, Decimal(0), required=True),
        budget_spent=r.decimal(m, "budget_spent", p, Decimal(0)),
        budget_source=_budget_source(r, m, p),
        period=r.choice(m, "period", p, PERIODS, "monthly"),
        hard_cap=r.flag(m, "hard_cap", p, True),
        tiers=_tiers(r, m, f"{p}.tiers"),
        api_key=r.secret(m, "api_key", p),
        max_concurrent=r.integer(m, "max_concurrent", p, 0, positive=True) or None,
        loop_breaker=read_loop_breaker(r, m, p, breaker),
        requests_per_minute=_per_minute(r, m, "requests_per_minute", p),
        tokens_per_minute=_per_minute(r, m, "tokens_per_minute", p),
    )


def _per_minute(r: _Reader, m: Mapping[Any, Any], key: str, p: str) -> int | None:
    """A rate limit the agent sets (0: none), or None to take `limits.`'s."""
    if key not in m:
        return None
    value = r.integer(m, key, p, 0)
    if value < 0:
        r.fail(f"{p}.{key}", "must be >= 0 (0: no limit)")
    return value


def _budget_source(r: _Reader, m: Mapping[Any, Any], p: str) -> str:
    value = r.text(m, "budget_source", p)
    if value in OLD_BUDGET_SOURCES:
        new = OLD_BUDGET_SOURCES[value]
        r.warn(f"{p}.budget_source", f"'{value}' is an older spelling of '{new}'; write {new}")
        return new
    if value is not None and value not in BUDGET_SOURCES:
        r.fail(f"{p}.budget_source", f"must be one of {', '.join(BUDGET_SOURCES)}")
    return value if value in BUDGET_SOURCES else "local"


def _tiers(r: _Reader, m: Mapping[Any, Any], p: str) -> tuple[Tier, ...]:
    items = m.get("tiers")
    if not isinstance(items, list) or not items:
        r.fail(p, "must be a non-empty list of tiers")
        return ()
    found: list[tuple[Decimal, str | None, tuple[str, ...]]] = []
    first_at: dict[Decimal, int] = {}
    for i, item in enumerate(items):
        ip = f"{p}[{i}]"
        if (t := r.mapping(item, ip)) is None:
            continue
        r.unknown(t, ip, _TIER_KEYS)
        threshold = r.number(t, "threshold", ip, required=True, high=Decimal(1))
        name = r.text(t, "name", ip)
        if name is not None and not _TIER_NAME.fullmatch(name):
            r.fail(f"{ip}.name", "must be 1-64 printable ASCII characters")
        models = _models(r, t.get("models"), f"{ip}.models")
        if threshold is not None and first_at.setdefault(threshold, i) != i:
            r.fail(f"{ip}.threshold", f"must be unique (tiers[{first_at[threshold]}] has it)")
        elif threshold is not None:
            found.append((threshold, name, models))
    found.sort(key=lambda tier: tier[0], reverse=True)
    n = len(found)
    defaults = ("premium", "mid", "economy") if n == 3 else [f"tier-{k + 1}" for k in range(n)]
    tiers = tuple(
        Tier(name or defaults[k], threshold, models)
        for k, (threshold, name, models) in enumerate(found)
    )
    names = [tier.name for tier in tiers]
    for dup in sorted({x for x in names if names.count(x) > 1}):
        r.fail(p, f"tier name {dup} is used twice")
    return tiers


def _models(r: _Reader, items: object, p: str) -> tuple[str, ...]:
    if not isinstance(items, list) or not items:
        r.fail(p, "must be a non-empty list of model ids")
        return ()
    models: list[str] = []
    for i, item in enumerate(items):
        value = r.interpolate(item, f"{p}[{i}]") if isinstance(item, str) else item
        if value is _FAILED:
            continue
        if not isinstance(value, str) or not _MODEL_ID.fullmatch(value):
            r.fail(f"{p}[{i}]", "must be a model id (text without spaces or commas)")
        elif value in models:
            r.fail(f"{p}[{i}]", f"repeats {value}")
        else:
            models.append(str(value))
    return tuple(models)
