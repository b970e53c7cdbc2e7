"""The runaway breaker: the pure detector as tables, its config, and on a running gate
(a scripted loop against the mock, a normal conversation, the OpenAI SDK's retries)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import openai
import pytest

from gate.config import ConfigError, load_config
from gate.config.types import LOOP_BREAKER_OFF, LoopBreakerConfig
from gate.context import GATE
from gate.core.loops import (
    DISTINCT,
    NO_NEW_TURN,
    SAME_REQUEST,
    Fingerprint,
    LoopDetector,
    chat_fingerprint,
)

from .support import agent, chat, make_config, request_lines

CHAT = "/v1/chat/completions"
ADMIN = {"Authorization": "Bearer t0k"}
AGENT_1 = {"X-Agent-ID": "agent-1"}
LIMITS = LoopBreakerConfig(
    same_request_max=3, same_request_window_seconds=10, no_new_turn_max_per_minute=4
)


def fp(request: str, turn: str = "t") -> Fingerprint:
    return Fingerprint(request.encode(), turn.encode())


def run(steps: list[tuple[float, Fingerprint]], limits: LoopBreakerConfig = LIMITS) -> list[Any]:
    """(time, fingerprint) requests of one agent -> None (admitted) or (rule, retry_after,
    new_episode) for each."""
    detector = LoopDetector()
    out: list[Any] = []
    for now, print_ in steps:
        loop = detector.check("a", print_, limits, now)
        out.append(None if loop is None else (loop.rule, loop.retry_after, loop.new_episode))
    return out


# -- the detector, as tables ------------------------------------------------------------

SAME = [
    pytest.param(  # three within the window pass, the fourth is refused until the first ages
        [(0, fp("x", "1")), (1, fp("x", "1")), (2, fp("x", "1")), (3, fp("x", "1"))],
        LoopBreakerConfig(3, 10, 0),
        [None, None, None, (SAME_REQUEST, 7, True)],
        id="fourth-refused",
    ),
    pytest.param(  # refusals are not counted: the window frees as the admitted ones age
        [(0, fp("x")), (1, fp("x")), (2, fp("x")), (5, fp("x")), (10, fp("x")), (10.5, fp("x"))],
        LoopBreakerConfig(3, 10, 0),
        [None, None, None, (SAME_REQUEST, 5, True), None, (SAME_REQUEST, 0.5, False)],
        id="frees-as-window-moves",
    ),
    pytest.param(  # other requests in between do not reset the count
        [(0, fp("x")), (1, fp("y")), (2, fp("x")), (3, fp("z")), (4, fp("x")), (5, fp("x"))],
        LoopBreakerConfig(3, 10, 0),
        [None, None, None, None, None, (SAME_REQUEST, 5, True)],
        id="interleaved",
    ),
    pytest.param(  # spread wider than the window: never refused
        [(0, fp("x")), (6, fp("x")), (12, fp("x")), (18, fp("x")), (24, fp("x"))],
        LoopBreakerConfig(2, 10, 0),
        [None] * 5,
        id="slow-repeats",
    ),
    pytest.param(  # off
        [(0, fp("x"))] * 10,
        LoopBreakerConfig(0, 10, 0),
        [None] * 10,
        id="off",
    ),
]


@pytest.mark.parametrize("steps, limits, expected", SAME)
def test_same_request(steps: Any, limits: LoopBreakerConfig, expected: list[Any]) -> None:
    assert run(steps, limits) == expected


TURNS = [
    pytest.param(  # a tool loop: new requests (the history grows), the user turn unchanged
        [(i, fp(f"r{i}", "u1")) for i in range(5)],
        LoopBreakerConfig(0, 10, 3),
        [None, None, None, None, (NO_NEW_TURN, 57, True)],  # the turn's first + 3 repeats
        id="tool-loop",
    ),
    pytest.param(  # a conversation: every request a new user turn
        [(i * 0.1, fp(f"r{i}", f"u{i}")) for i in range(50)],
        LoopBreakerConfig(0, 10, 3),
        [None] * 50,
        id="conversation",
    ),
    pytest.param(  # a new user turn starts the count again
        [
            (0, fp("a", "u1")),
            (1, fp("b", "u1")),
            (2, fp("c", "u1")),
            (3, fp("d", "u2")),
            (4, fp("e", "u2")),
            (5, fp("f", "u2")),
            (6, fp("g", "u2")),
        ],
        LoopBreakerConfig(0, 10, 2),
        [None, None, None, None, None, None, (NO_NEW_TURN, 58, True)],
        id="new-turn-resets",
    ),
    pytest.param(  # a minute later the old repeats no longer count
        [(0, fp("a")), (1, fp("b")), (2, fp("c")), (3, fp("d")), (62, fp("e")), (62, fp("f"))],
        LoopBreakerConfig(0, 10, 2),
        [None, None, None, (NO_NEW_TURN, 58, True), None, None],
        id="per-minute",
    ),
]


@pytest.mark.parametrize("steps, limits, expected", TURNS)
def test_no_new_turn(steps: Any, limits: LoopBreakerConfig, expected: list[Any]) -> None:
    assert run(steps, limits) == expected


def test_one_episode_until_a_window_passes_without_a_refusal() -> None:
    limits = LoopBreakerConfig(1, 10, 0)
    steps = [
        (0, fp("x")),
        (1, fp("x")),
        (5, fp("x")),
        (10, fp("x")),
        (14, fp("x")),
        (40, fp("x")),
        (41, fp("x")),
    ]
    assert [r and r[2] for r in run(steps, limits)] == [None, True, False, None, False, None, True]


def test_agents_are_counted_apart_and_memory_is_bounded() -> None:
    detector = LoopDetector()
    limits = LoopBreakerConfig(1, 10, 0)
    assert detector.check("a", fp("x"), limits, 0) is None
    assert detector.check("b", fp("x"), limits, 0) is None
    assert detector.check("a", fp("x"), limits, 1) is not None
    for i in range(DISTINCT * 3):  # many distinct requests: only the latest are kept
        assert detector.check("c", fp(f"r{i}", f"u{i}"), limits, 2) is None
    state = detector._agents["c"]
    assert len(state.requests) == DISTINCT
    assert all(len(times) <= 1 for times in state.requests.values())


def test_the_chat_fingerprint_is_messages_and_tools_and_the_last_user_turn() -> None:
    base = {
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f"}}],
    }
    same = chat_fingerprint({**base, "model": "other", "stream": True, "max_tokens": 5})
    assert same == chat_fingerprint(base)  # other fields are not what the request asks
    assert chat_fingerprint({**base, "tools": []}).request != same.request
    grown = {**base, "messages": [*base["messages"], {"role": "assistant", "content": "yo"}]}
    assert chat_fingerprint(grown).request != same.request
    assert chat_fingerprint(grown).turn == same.turn  # the same last user message
    asked = {**base, "messages": [*grown["messages"], {"role": "user", "content": "hi"}]}
    assert chat_fingerprint(asked).turn != same.turn  # the same words, a new turn


def test_the_fingerprint_of_a_60kb_body_is_cheap() -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": f"t{i}",
                "description": "d " * 100,
                "parameters": {"type": "object", "properties": {"a": {"type": "string"}}},
            },
        }
        for i in range(12)
    ]
    body = {
        "messages": [
            {"role": "system", "content": "prompt " * 7400},
            {"role": "user", "content": "go"},
        ],
        "tools": tools,
    }
    started = time.perf_counter()
    for _ in range(100):
        chat_fingerprint(body)
    per_call = (time.perf_counter() - started) / 100
    assert per_call < 0.002  # ~50 µs unloaded; a bound a loaded machine still keeps


# -- config ----------------------------------------------------------------------------


def test_config_defaults_overrides_and_off(tmp_path: Path) -> None:
    agents = {
        "a": agent(),
        "b": agent(loop_breaker={"same_request_max": 2}),
        "c": agent(loop_breaker=False),
        "d": agent(loop_breaker={"no_new_turn_max_per_minute": 0}),
    }
    cfg = make_config(
        tmp_path, "http://x/api/v1", agents, loop_breaker={"same_request_window_seconds": 30}
    )
    assert cfg.agents["a"].loop_breaker == LoopBreakerConfig(5, 30, 60)
    assert cfg.agents["b"].loop_breaker == LoopBreakerConfig(2, 30, 60)
    assert cfg.agents["c"].loop_breaker == LOOP_BREAKER_OFF and not LOOP_BREAKER_OFF.on
    assert cfg.agents["d"].loop_breaker == LoopBreakerConfig(5, 30, 0)
    shipped = make_config(tmp_path, "http://x/api/v1", {"a": agent()}, loop_breaker=None)
    assert shipped.agents["a"].loop_breaker == LoopBreakerConfig()  # on by default


def test_the_shipped_policy_states_the_defaults() -> None:
    keys = {
        "OPENROUTER_API_KEY": "x",
        "AGENT_1_API_KEY": "k1",
        "AGENT_2_API_KEY": "k2",
        "DEFAULT_AGENT_API_KEY": "k3",
    }
    cfg = load_config(Path(__file__).parent.parent / "configs" / "policy.yaml", keys)
    assert {a.loop_breaker for a in cfg.agents.values()} == {LoopBreakerConfig()}


def test_config_problems_name_their_path(tmp_path: Path) -> None:
    agents = {"a": agent(loop_breaker={"same_request": 2, "same_request_max": -1})}
    with pytest.raises(ConfigError) as info:
        make_config(tmp_path, "http://x/api/v1", agents, loop_breaker="yes")
    problems = "\n".join(info.value.problems)
    assert "cost_routing.loop_breaker: must be a mapping" in problems
    assert "cost_routing.agents.a.loop_breaker.same_request: unknown key" in problems
    assert "cost_routing.agents.a.loop_breaker.same_request_max: must not be negative" in problems


# -- on a running gate ---------------------------------------------------------------


def breaker_config(tmp_path: Path, mock: Any, **loop: Any) -> Any:
    agents = {"agent-1": agent(loop_breaker=loop), "default": agent(5)}
    return make_config(tmp_path, mock.base_url, agents, admin_token="t0k", loop_breaker=None)


async def alerts_of(client: Any) -> list[dict[str, Any]]:
    resp = await client.get("/api/alerts", headers=ADMIN)
    assert resp.status == 200
    return [a for a in (await resp.json())["alerts"] if a["kind"] == "loop_detected"]


async def test_a_scripted_loop_is_refused_after_n(start_gate, mock, tmp_path: Path) -> None:
    cfg = breaker_config(tmp_path, mock, same_request_max=4, no_new_turn_max_per_minute=0)
    client = await start_gate(cfg)
    now = [1000.0]
    client.app[GATE].breaker.clock = lambda: now[0]
    body = chat("run the tool again", model="openai/gpt-5")
    statuses = []
    for _ in range(10):
        resp = await client.post(CHAT, json=body, headers=AGENT_1)
        statuses.append(resp.status)
        payload = await resp.json()
        now[0] += 1
    assert statuses == [200] * 4 + [429] * 6
    assert mock.state.chat_count() == 4  # exactly N reached upstream
    error = payload["error"]
    assert error["type"] == "loop_detected" and error["code"] == 429
    assert "loop" in error["message"] and "same request" in error["message"]
    assert resp.headers["x-should-retry"] == "false"
    assert resp.headers["Retry-After"] == "51"  # the first of the four ages out at 1060
    lines = request_lines(cfg.spend_log)
    assert [ln["status"] for ln in lines] == statuses
    assert all(ln["loop"] == "same_request" and ln["cost"] == 0 for ln in lines[4:])
    alerts = await alerts_of(client)
    assert len(alerts) == 1  # one episode, one alert
    assert alerts[0]["agent_id"] == "agent-1" and alerts[0]["details"]["rule"] == "same_request"

    other = await client.post(CHAT, json=chat("something else"), headers=AGENT_1)
    assert other.status == 200  # only the loop is refused
    now[0] = 1061.0  # the window frees
    assert (await client.post(CHAT, json=body, headers=AGENT_1)).status == 200
    assert mock.state.chat_count() == 6


async def test_a_tool_loop_without_a_new_user_turn(start_gate, mock, tmp_path: Path) -> None:
    cfg = breaker_config(tmp_path, mock, same_request_max=0, no_new_turn_max_per_minute=3)
    client = await start_gate(cfg)
    messages: list[dict[str, Any]] = [{"role": "user", "content": "fix the build"}]
    statuses = []
    for i in range(6):
        resp = await client.post(CHAT, json={"messages": messages}, headers=AGENT_1)
        statuses.append(resp.status)
        messages = [
            *messages,
            {"role": "assistant", "content": f"calling tool {i}"},
            {"role": "tool", "tool_call_id": f"c{i}", "content": "failed"},
        ]
    assert statuses == [200] * 4 + [429] * 2  # the turn's request and 3 more
    assert mock.state.chat_count() == 4
    assert "without a new user message" in (await resp.json())["error"]["message"]
    assert len(await alerts_of(client)) == 1


async def test_a_normal_conversation_is_never_tripped(start_gate, mock, tmp_path: Path) -> None:
    cfg = breaker_config(tmp_path, mock, same_request_max=2, no_new_turn_max_per_minute=2)
    client = await start_gate(cfg)
    messages: list[dict[str, Any]] = []
    for i in range(20):
        messages = [*messages, {"role": "user", "content": "and then?"}]  # the same words
        resp = await client.post(CHAT, json={"messages": messages}, headers=AGENT_1)
        assert resp.status == 200, await resp.text()
        messages.append({"role": "assistant", "content": f"answer {i}"})
    assert mock.state.chat_count() == 20
    assert await alerts_of(client) == []


async def test_off_for_an_agent_set_off(start_gate, mock, tmp_path: Path) -> None:
    agents = {"agent-1": agent(loop_breaker=False), "default": agent(5)}
    cfg = make_config(tmp_path, mock.base_url, agents, loop_breaker={"same_request_max": 1})
    client = await start_gate(cfg)
    for _ in range(8):
        assert (await client.post(CHAT, json=chat(), headers=AGENT_1)).status == 200
    assert (await client.post(CHAT, json=chat())).status == 200  # default: max 1
    assert (await client.post(CHAT, json=chat())).status == 429


async def test_the_openai_sdk_makes_one_attempt(start_gate, mock, tmp_path: Path) -> None:
    cfg = breaker_config(tmp_path, mock, same_request_max=1, no_new_turn_max_per_minute=0)
    client = await start_gate(cfg)
    sdk = openai.AsyncOpenAI(
        base_url=str(client.make_url("/v1")), api_key="x", default_headers=AGENT_1, max_retries=3
    )
    async with sdk:
        messages: Any = [{"role": "user", "content": "again"}]
        await sdk.chat.completions.create(model="openai/gpt-5", messages=messages)
        with pytest.raises(openai.RateLimitError) as info:
            await sdk.chat.completions.create(model="openai/gpt-5", messages=messages)
    assert info.value.status_code == 429
    assert info.value.body["type"] == "loop_detected"  # type: ignore[index]
    lines = request_lines(cfg.spend_log)
    assert [ln["status"] for ln in lines] == [200, 429]  # one attempt: no retries
    assert mock.state.chat_count() == 1
