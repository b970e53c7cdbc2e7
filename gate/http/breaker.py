"""The runaway breaker at admission: one call in the chat handler, before a slot or a
hold is taken. The decision is `gate.core.loops`; here it becomes a 429 `loop_detected`
an agent's SDK does not retry (`x-should-retry: false`), with `Retry-After` saying when
the window frees, and the first refusal of an episode tells the observers (the alert)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gate.books.lines import RequestLine
from gate.config import AgentPolicy
from gate.core.loops import SAME_REQUEST, Fingerprint, Loop, LoopDetector, chat_fingerprint
from gate.http.errors import LOOP_DETECTED, GateError

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Breaker:
    detector: LoopDetector = field(default_factory=LoopDetector)
    observers: list[Callable[[str, Loop], None]] = field(default_factory=list)
    clock: Callable[[], float] = time.monotonic

    def check(
        self,
        policy: AgentPolicy,
        body: Mapping[str, Any],
        line: RequestLine,
        fingerprint: Callable[[Mapping[str, Any]], Fingerprint] = chat_fingerprint,
    ) -> None:
        """Count the request, or raise the 429 that refuses it (and mark its line)."""
        limits = policy.loop_breaker
        if not limits.on:
            return
        loop = self.detector.check(policy.agent_id, fingerprint(body), limits, self.clock())
        if loop is None:
            return
        line["loop"] = loop.rule
        if loop.new_episode:
            for observer in self.observers:
                try:
                    observer(policy.agent_id, loop)
                except Exception:  # an alert never breaks a request
                    log.exception("loop observer failed")
        raise loop_refusal(policy.agent_id, loop)


def loop_refusal(agent_id: str, loop: Loop) -> GateError:
    seconds = max(1, math.ceil(loop.retry_after))
    what = (
        f"the same request (same messages and tools) more than {loop.limit} times within "
        f"{loop.window_seconds:g} s"
        if loop.rule == SAME_REQUEST
        else f"more than {loop.limit} requests within a minute without a new user message"
    )
    return GateError(
        429,
        LOOP_DETECTED,
        f"loop detected for agent '{agent_id}': it sent {what}, which looks like a runaway "
        f"loop; this request was not sent upstream and cost nothing. Do not retry it "
        f"unchanged: the window frees in {seconds} s.",
        {
            "x-should-retry": "false",
            "Retry-After": str(seconds),
            "retry-after-ms": str(max(0, math.ceil(loop.retry_after * 1000))),
        },
        {"rule": loop.rule},
    )
