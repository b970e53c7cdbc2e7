"""Rate limits an agent understands (issue 15): requests and tokens per minute per agent,
OpenRouter's `:free` limit across agents, OpenAI's `x-ratelimit-*` headers, and a 429
whose `Retry-After` / `retry-after-ms` say when the limit really frees up. The window
arithmetic as tables; the gate on real sockets, on a clock of the test's own."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openai
import pytest

from gate.config import ConfigError
from gate.context import GATE
from gate.core.ratelimit import Window, duration

from .support import agent, chat, make_config, request_lines

CHAT = "/v1/chat/completions"
T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
FREE = ["meta-llama/llama-3.3-70b-instruct:free"]


class Clock:
    """The gate's clock, moved by the test."""

    def __init__(self, now: datetime = T0, real: bool = False) -> None:
        self.now = now
        self.real = real  # also run on with real time (for a client that sleeps)
        self._origin = time.monotonic()

    def __call__(self) -> datetime:
        if self.real:
            return self.now + timedelta(seconds=time.monotonic() - self._origin)
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


# --- the window, as tables ---------------------------------------------------------


@pytest.mark.parametrize(
    "admitted, now, limit, amount, wait",
    [
        ([], 0.0, 3, 1, 0.0),  # empty: fits
        ([(0.0, 1), (1.0, 1)], 2.0, 3, 1, 0.0),  # under the limit
        ([(0.0, 1), (1.0, 1), (2.0, 1)], 3.0, 3, 1, 57.0),  # full: the oldest leaves at 60
        ([(0.0, 1), (1.0, 1), (2.0, 1)], 60.0, 3, 1, 0.0),  # the oldest has left
        ([(0.0, 1), (1.0, 1), (2.0, 1)], 60.5, 3, 1, 0.0),
        ([(0.0, 400), (10.0, 400)], 20.0, 1000, 300, 40.0),  # tokens: one entry must go
        ([(0.0, 400), (10.0, 400)], 20.0, 1000, 700, 50.0),  # both must go
        ([(0.0, 400)], 20.0, 1000, 5000, 40.0),  # larger than the limit: once empty
        ([], 20.0, 1000, 5000, 0.0),  # ... which an empty window is
    ],
)
def test_the_window_says_when_an_amount_fits(
    admitted: list[tuple[float, int]], now: float, limit: int, amount: int, wait: float
) -> None:
    window = Window()
    for at, n in admitted:
        window.add(at, n)
    assert window.wait(now, limit, amount) == pytest.approx(wait)


def test_corrections_and_cancels_change_what_the_window_counts() -> None:
    window = Window()
    estimate = window.add(0.0, 900)
    assert window.wait(1.0, 1000, 200) == pytest.approx(59.0)
    window.correct(estimate, 100)  # settled: the real usage was smaller
    assert window.wait(1.0, 1000, 200) == 0.0
    assert window.remaining(1.0, 1000) == 900
    window.correct(estimate, 0)  # cancelled
    assert window.remaining(1.0, 1000) == 1000
    late = window.add(2.0, 50)
    assert window.remaining(70.0, 1000) == 1000  # expired ...
    window.correct(late, 500)  # ... so a late correction counts nothing
    assert window.used == 0 and window.remaining(70.0, 1000) == 1000


def test_reset_is_when_the_window_is_empty_again() -> None:
    window = Window()
    assert window.reset_in(5.0) == 0.0
    window.add(0.0, 1)
    window.add(30.0, 1)
    assert window.reset_in(40.0) == pytest.approx(50.0)


@pytest.mark.parametrize(
    "seconds, text",
    [(0.02, "20ms"), (0.0, "0ms"), (1.0, "1s"), (1.5, "1.5s"), (59.25, "59.25s"), (60, "1m0s")],
)
def test_reset_times_are_spelled_like_openai(seconds: float, text: str) -> None:
    assert duration(seconds) == text


# --- config ------------------------------------------------------------------------


def test_limits_are_off_by_default_and_set_per_agent_or_for_all(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, "http://127.0.0.1:9/api/v1")
    assert (cfg.limits.requests_per_minute, cfg.limits.tokens_per_minute) == (0, 0)
    assert cfg.limits.free_requests_per_minute == 20
    assert cfg.agents["agent-1"].requests_per_minute is None
    agents = {"a": agent(requests_per_minute=5, tokens_per_minute=0), "b": agent()}
    cfg = make_config(
        tmp_path, "http://127.0.0.1:9/api/v1", agents, limits={"requests_per_minute": 60}
    )
    assert cfg.agents["a"].requests_per_minute == 5
    assert cfg.agents["a"].tokens_per_minute == 0  # set off for this agent
    assert cfg.limits.requests_per_minute == 60
    with pytest.raises(ConfigError) as caught:
        make_config(tmp_path, "http://x/api/v1", {"a": agent(requests_per_minute=-1)})
    assert "agents.a.requests_per_minute" in str(caught.value)


# --- the gate ----------------------------------------------------------------------


async def _post(client: Any, agent_id: str, **fields: Any) -> tuple[int, dict[str, Any], Any]:
    resp = await client.post(CHAT, json=chat(**fields), headers={"X-Agent-ID": agent_id})
    body = await resp.read()
    return resp.status, dict(resp.headers), body


async def test_a_burst_is_held_to_requests_per_minute_at_the_mock(
    start_gate, mock, tmp_path: Path
) -> None:
    clock = Clock()
    agents = {"agent-1": agent(requests_per_minute=5), "default": agent(5)}
    client = await start_gate(make_config(tmp_path, mock.base_url, agents), clock=clock)
    answers = await asyncio.gather(*(_post(client, "agent-1") for _ in range(12)))
    assert mock.state.chat_count() == 5  # counted where it matters
    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [200] * 5 + [429] * 7
    for status, headers, body in answers:
        assert headers["x-ratelimit-limit-requests"] == "5"
        if status == 429:
            assert b'"rate_limit_exceeded"' in body
            assert headers["Retry-After"] == "60"  # the first request leaves the window then
            assert headers["retry-after-ms"] == "60000"
            assert headers["x-ratelimit-remaining-requests"] == "0"
    status, _, _ = await _post(client, "default")  # another agent is not limited
    assert status == 200
    clock.advance(30)
    status, headers, _ = await _post(client, "agent-1")
    assert status == 429 and headers["retry-after-ms"] == "30000"
    clock.advance(30)  # a minute after the burst: the window is free again
    status, headers, _ = await _post(client, "agent-1")
    assert status == 200 and headers["x-ratelimit-remaining-requests"] == "4"
    refused = [r for r in request_lines(tmp_path / "spend.jsonl") if r["status"] == 429]
    assert len(refused) == 8  # every refusal wrote its line


async def test_tokens_are_counted_from_the_estimate_then_from_the_usage(
    start_gate, mock, tmp_path: Path
) -> None:
    clock = Clock()
    agents = {"agent-1": agent(tokens_per_minute=3000)}
    client = await start_gate(make_config(tmp_path, mock.base_url, agents), clock=clock)
    status, headers, _ = await _post(client, "agent-1", max_tokens=2000)
    assert status == 200
    window = client.app[GATE].limits.tokens["agent-1"]
    assert headers["x-ratelimit-limit-tokens"] == "3000"
    assert int(headers["x-ratelimit-remaining-tokens"]) <= 1000  # the estimate counted
    line = request_lines(tmp_path / "spend.jsonl")[-1]
    real = line["prompt_tokens"] + line["completion_tokens"]
    assert 0 < real < 2000
    assert window.used == real  # settled: the real usage, not the estimate
    status, headers, _ = await _post(client, "agent-1", max_tokens=2000)
    assert status == 200  # fits again only because the estimate was corrected
    left = 3000 - window.used  # a request that may use more than that: refused
    status, headers, body = await _post(client, "agent-1", max_tokens=left)
    assert status == 429, body
    assert headers["x-ratelimit-remaining-tokens"] == "0"
    assert headers["retry-after-ms"] == "60000"


async def test_every_answer_kind_carries_the_budget_and_the_limits(
    start_gate, mock, tmp_path: Path
) -> None:
    clock = Clock()
    agents = {
        "agent-1": agent(50, period="daily", requests_per_minute=3, tokens_per_minute=10**6),
        "spent": agent(1, period="never", requests_per_minute=3),
    }
    cfg = make_config(tmp_path, mock.base_url, agents, admin_token="t0k")
    client = await start_gate(cfg, clock=clock)
    resp = await client.post(
        "/api/budget/spent", json={"budget_spent": 1}, headers={"Authorization": "Bearer t0k"}
    )
    assert resp.status == 200

    def budget(headers: dict[str, Any], resets: str | None) -> None:
        assert float(headers["X-Execwall-Budget-Total"]) in (50, 1)
        assert float(headers["X-Execwall-Budget-Remaining"]) >= 0
        assert headers.get("X-Execwall-Budget-Resets-At") == resets

    def limits(headers: dict[str, Any], remaining: str) -> None:
        assert headers["x-ratelimit-limit-requests"] == "3"
        assert headers["x-ratelimit-remaining-requests"] == remaining
        assert headers["x-ratelimit-reset-requests"].endswith("s")

    midnight = "2026-12-03T00:00:00.000Z"
    status, headers, body = await _post(client, "agent-1")  # JSON
    assert status == 200
    budget(headers, midnight)
    assert float(headers["X-Execwall-Budget-Remaining"]) < 50  # after this answer's cost
    limits(headers, "2")
    assert "x-ratelimit-limit-tokens" in headers
    status, headers, body = await _post(client, "agent-1", stream=True)  # stream
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    budget(headers, midnight)
    limits(headers, "1")
    status, headers, body = await _post(client, "spent")  # 402
    assert status == 402, body
    assert headers["X-Execwall-Budget-Remaining"] == "0"
    budget(headers, None)  # `never`: no reset header
    assert headers["x-should-retry"] == "false"
    await _post(client, "agent-1")
    status, headers, body = await _post(client, "agent-1")  # 429
    assert status == 429, body
    budget(headers, midnight)
    limits(headers, "0")
    assert int(headers["retry-after-ms"]) > 0
    # and the admin API shows the limits and what is left of them
    resp = await client.get("/api/spend/agent-1", headers={"Authorization": "Bearer t0k"})
    shown = (await resp.json())["rate_limits"]
    assert shown["requests_per_minute"] == 3 and shown["requests_remaining"] == 0
    assert shown["tokens_per_minute"] == 10**6 and 0 < shown["tokens_remaining"] < 10**6


async def test_a_refused_request_gives_back_what_it_counted(
    start_gate, mock, tmp_path: Path
) -> None:
    agents = {"spent": agent(1, requests_per_minute=2)}
    cfg = make_config(tmp_path, mock.base_url, agents, admin_token="t0k")
    client = await start_gate(cfg, clock=Clock())
    resp = await client.post(
        "/api/budget/spent", json={"budget_spent": 1}, headers={"Authorization": "Bearer t0k"}
    )
    assert resp.status == 200
    for _ in range(4):  # a 402 never uses up the agent's requests
        status, _, _ = await _post(client, "spent")
        assert status == 402
    assert client.app[GATE].limits.requests["spent"].used == 0


async def test_the_openai_sdk_waits_as_retry_after_ms_says(
    start_gate, mock, tmp_path: Path
) -> None:
    clock = Clock(real=True)
    agents = {"agent-1": agent(requests_per_minute=1)}
    client = await start_gate(make_config(tmp_path, mock.base_url, agents), clock=clock)
    status, _, _ = await _post(client, "agent-1")
    assert status == 200
    clock.advance(58)  # the window frees up in 2 s: longer than the SDK's own backoff
    sdk = openai.AsyncOpenAI(
        base_url=str(client.make_url("/v1")),
        api_key="x",
        default_headers={"X-Agent-ID": "agent-1"},
        max_retries=2,
    )
    started = time.monotonic()
    async with sdk:
        answer = await sdk.chat.completions.create(model="openai/gpt-5", **chat())
    waited = time.monotonic() - started
    assert answer.choices[0].message.content
    statuses = [r["status"] for r in request_lines(tmp_path / "spend.jsonl")]
    # one refusal, then the retry the SDK timed by retry-after-ms: two attempts, not three
    assert statuses == [200, 429, 200]
    assert waited >= 1.9


async def test_a_free_model_storm_from_two_agents_stays_under_openrouters_limit(
    start_gate, mock, tmp_path: Path
) -> None:
    clock = Clock()
    free_tiers = [{"name": "free", "threshold": 0.0, "models": FREE}]
    agents = {"a": agent(tiers=free_tiers), "b": agent(tiers=free_tiers), "paid": agent()}
    client = await start_gate(make_config(tmp_path, mock.base_url, agents), clock=clock)
    storm = [_post(client, who, model=FREE[0]) for _ in range(15) for who in ("a", "b")]
    answers = await asyncio.gather(*storm)
    assert mock.state.chat_count() == 20  # never more than OpenRouter allows a key
    refused = [(h, b) for s, h, b in answers if s == 429]
    assert len(refused) == 10
    assert all(b":free" in body and h["retry-after-ms"] == "60000" for h, body in refused)
    status, _, _ = await _post(client, "paid")  # a paid model is not held back
    assert status == 200
    clock.advance(59.5)
    status, headers, _ = await _post(client, "b", model=FREE[0])
    assert status == 429 and headers["retry-after-ms"] == "500"
    clock.advance(0.5)
    answers = await asyncio.gather(*(_post(client, w, model=FREE[0]) for w in ("a", "b") * 12))
    assert sorted(s for s, _, _ in answers) == [200] * 20 + [429] * 4, answers[0]
    assert mock.state.chat_count() == 41
