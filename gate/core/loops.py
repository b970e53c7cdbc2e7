"""The runaway breaker's decision, pure: the clock is passed in, memory per agent bounded.

Two rules, each per agent (`LoopBreakerConfig`; 0 turns a rule off):
- `same_request`: the same request (what it asks: for chat completions, `messages` and
  `tools`) admitted `same_request_max` times within `same_request_window_seconds`: one
  more is refused;
- `no_new_turn`: `no_new_turn_max_per_minute` requests within a minute whose last user
  message is the one of the request before (a tool loop that never gets back to the
  person): one more is refused.

Only admitted requests are counted, so a refused loop frees as its window moves on, and
`Loop.retry_after` says when. An episode is a run of refusals of one agent with less than
a window between them; `Loop.new_episode` marks its first refusal (one alert each).

A fingerprint is one pass of C code over the parsed body: `marshal` (format 2: no
back-references, so equal values give equal bytes) and SHA-256, about 50 µs for a 60 KB
body where `json.dumps(..., sort_keys=True)` takes 200 µs. Keys are taken in the order the
client sent them: a client that resends a request resends it identically.
"""

from __future__ import annotations

import hashlib
import marshal
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gate.config.types import LoopBreakerConfig

DISTINCT = 64  # distinct requests remembered per agent (a loop repeats one of them)
MINUTE = 60.0
SAME_REQUEST = "same_request"
NO_NEW_TURN = "no_new_turn"


@dataclass(frozen=True, slots=True)
class Fingerprint:
    request: bytes  # what the request asks
    turn: bytes  # its last user message (position and content)


def digest(*values: Any) -> bytes:
    try:
        data = marshal.dumps(values, 2)
    except ValueError:  # nested past marshal's depth: hash its text instead
        data = repr(values).encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).digest()[:16]


def chat_fingerprint(body: Mapping[str, Any]) -> Fingerprint:
    """Chat completions: the request is its `messages` and `tools`; the turn is the last
    message with role `user`. Other APIs add their own function of this shape."""
    messages = body.get("messages")
    messages = messages if isinstance(messages, list) else []
    return Fingerprint(digest(messages, body.get("tools")), digest(*last_turn(messages)))


def last_turn(
    messages: list[Any], is_turn: Callable[[Mapping[str, Any]], bool] = lambda _m: True
) -> tuple[int, Any]:
    """(index, message) of the last message with role `user` that `is_turn` counts as
    a person's turn; (-1, None) when there is none."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if isinstance(message, dict) and message.get("role") == "user" and is_turn(message):
            return index, message
    return -1, None


@dataclass(frozen=True, slots=True)
class Loop:
    """A refusal: which rule, its limit and window, and when the window frees."""

    rule: str
    limit: int
    window_seconds: float
    retry_after: float  # seconds until one more such request would be admitted
    new_episode: bool


@dataclass(slots=True)
class _Agent:
    requests: OrderedDict[bytes, deque[float]] = field(default_factory=OrderedDict)
    turn: bytes | None = None
    turn_times: deque[float] = field(default_factory=deque)
    quiet_at: float = float("-inf")  # a refusal from here on starts a new episode


def _recent(times: deque[float], window: float, now: float) -> deque[float]:
    while times and times[0] <= now - window:
        times.popleft()
    return times


class LoopDetector:
    """Per-agent state; `check` decides and, when it admits, counts the request."""

    def __init__(self) -> None:
        self._agents: dict[str, _Agent] = {}

    def check(
        self, agent_id: str, fp: Fingerprint, limits: LoopBreakerConfig, now: float
    ) -> Loop | None:
        state = self._agents.get(agent_id)
        if state is None:
            state = self._agents[agent_id] = _Agent()
        same, window = limits.same_request_max, limits.same_request_window_seconds
        times = state.requests.get(fp.request)
        if same > 0 and times is not None and len(_recent(times, window, now)) >= same:
            return self._refuse(state, SAME_REQUEST, same, window, times[0] + window - now, now)
        turns, per_minute = state.turn_times, limits.no_new_turn_max_per_minute
        repeat = fp.turn == state.turn
        if per_minute > 0 and repeat and len(_recent(turns, MINUTE, now)) >= per_minute:
            return self._refuse(
                state, NO_NEW_TURN, per_minute, MINUTE, turns[0] + MINUTE - now, now
            )
        if same > 0:
            if times is None or times.maxlen != same:
                times = state.requests[fp.request] = deque(times or (), maxlen=same)
            times.append(now)
            state.requests.move_to_end(fp.request)
            if len(state.requests) > DISTINCT:
                state.requests.popitem(last=False)
        if not repeat:
            state.turn = fp.turn
            turns.clear()
        elif per_minute > 0:
            if turns.maxlen != per_minute:
                turns = state.turn_times = deque(turns, maxlen=per_minute)
            turns.append(now)
        return None

    @staticmethod
    def _refuse(
        state: _Agent, rule: str, limit: int, window: float, frees_in: float, now: float
    ) -> Loop:
        new = now >= state.quiet_at
        state.quiet_at = now + window
        return Loop(rule, limit, window, max(frees_in, 0.0), new)
