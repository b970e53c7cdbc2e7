"""`loop_breaker:`, the runaway breaker's thresholds: a top-level section with every
agent's defaults, and `agents.<id>.loop_breaker:` overriding them key by key.
`false` (or a rule's 0) turns the breaker (or that rule) off; `true` takes the defaults."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gate.config.reader import _Reader
from gate.config.types import LOOP_BREAKER_OFF, LoopBreakerConfig

KEYS = ("same_request_max", "same_request_window_seconds", "no_new_turn_max_per_minute")


def read_loop_breaker(
    r: _Reader, m: Mapping[Any, Any], p: str, default: LoopBreakerConfig
) -> LoopBreakerConfig:
    """`m["loop_breaker"]` read over `default`; problems are reported under `p`."""
    value = m.get("loop_breaker")
    if value is None or value is True:
        return default
    if value is False:
        return LOOP_BREAKER_OFF
    p = f"{p}.loop_breaker"
    section = r.mapping(value, p)
    if section is None:
        return default
    r.unknown(section, p, KEYS)
    return LoopBreakerConfig(
        same_request_max=r.integer(section, "same_request_max", p, default.same_request_max),
        same_request_window_seconds=r.seconds(
            section, "same_request_window_seconds", p, default.same_request_window_seconds
        ),
        no_new_turn_max_per_minute=r.integer(
            section, "no_new_turn_max_per_minute", p, default.no_new_turn_max_per_minute
        ),
    )
