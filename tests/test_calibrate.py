"""Holds no larger than a request can really cost (issue 15 (b)): the prompt estimated
from the billed text (`gate.core.prompt`), calibrated per model against settled usage
(`gate.core.calibrate`), and the hard cap's overshoot bound, measured against the mock."""

from __future__ import annotations

import asyncio
import json
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gate.context import GATE
from gate.core.calibrate import (
    CEILING,
    DEFAULT_FACTOR,
    FLOOR,
    MARGIN,
    MIN_UNITS,
    PENDING_MAX,
    UNSEEN_MARGIN,
    WINDOW,
    Calibration,
)
from gate.core.prompt import (
    BYTES_PER_UNIT,
    MESSAGE_UNITS,
    REQUEST_UNITS,
    TOOL_UNITS,
    estimate_prompt,
)
from mock_upstream import Fault

from .support import agent, load_prices, make_config, request_lines, spend_lines

D = Decimal
SONNET = "anthropic/claude-sonnet-4.5"
P, C = D("0.000003"), D("0.000015")  # sonnet's prompt and completion prices at the mock
ONE_MODEL = [{"name": "only", "threshold": 0, "models": [SONNET]}]
ADMIN = "adm-" + "5" * 24
BASE = REQUEST_UNITS + MESSAGE_UNITS  # one message's units before its text


def units(size: int) -> int:
    return -(-size // BYTES_PER_UNIT)


# --- the estimate: what is billed, not the envelope ------------------------------

TOOL = {"type": "function", "function": {"name": "ls", "parameters": {"type": "object"}}}
TOOL_JSON = len(json.dumps([TOOL], separators=(",", ":")))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, REQUEST_UNITS),
        ({"messages": [{"role": "user", "content": "abcd" * 100}]}, BASE + 100),
        # text parts count their text; an image part nothing (priced apart)
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "x" * 40},
                            {"type": "image_url", "image_url": {"url": "data:," + "A" * 9000}},
                        ],
                    }
                ]
            },
            BASE + 10,
        ),
        # a tool call's name and arguments; a tool result's content
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "ls", "arguments": '{"p":"/"}'},
                            }
                        ],
                    },
                    {"role": "tool", "tool_call_id": "call_1", "content": "a.txt b.txt"},
                ]
            },
            REQUEST_UNITS + 2 * MESSAGE_UNITS + units(2 + 9 + 11),
        ),
        # tool definitions as their JSON, plus a few units of framing each
        ({"tools": [TOOL, TOOL]}, REQUEST_UNITS + 2 * TOOL_UNITS + units(2 * TOOL_JSON + 1)),
        # `system` (Messages) and `instructions` (Responses), string or text blocks
        (
            {"system": [{"type": "text", "text": "s" * 8}], "instructions": "i" * 8},
            REQUEST_UNITS + units(16),
        ),
        # UTF-8 bytes, not characters; a name counts
        ({"messages": [{"role": "user", "content": "日本", "name": "bob"}]}, BASE + units(9)),
        # the envelope is no prompt: model, limits, stream options, metadata
        (
            {
                "model": "x/" + "y" * 500,
                "max_completion_tokens": 8192,
                "stream": True,
                "stream_options": {"include_usage": True},
                "metadata": {"k": "v" * 500},
                "messages": [{"role": "user", "content": "hi"}],
            },
            BASE + 1,
        ),
        # a response schema is put in the prompt
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "n"}}},
            REQUEST_UNITS + units(len('{"type":"json_schema","json_schema":{"name":"n"}}')),
        ),
    ],
)
def test_the_estimate_counts_what_is_billed(body: dict[str, Any], expected: int) -> None:
    assert estimate_prompt(body) == expected


def test_a_part_the_gate_cannot_read_counts_as_its_whole_json() -> None:
    audio = {"type": "input_audio", "input_audio": {"data": "QUJD" * 100, "format": "wav"}}
    body = {"messages": [{"role": "user", "content": [audio]}]}
    assert estimate_prompt(body) == BASE + units(len(json.dumps(audio, separators=(",", ":"))))


# --- the calibration: per model, from settled lines ------------------------------


def line(request_id: str, model: str | None, tokens: int) -> dict[str, Any]:
    return {"request_id": request_id, "model": model, "prompt_tokens": tokens}


def test_a_model_starts_at_the_safe_default_and_learns_from_its_settled_lines() -> None:
    cal = Calibration()
    hold = cal.prompt_tokens("r1", 1000)
    assert hold(["m/a"]) == math.ceil(1000 * DEFAULT_FACTOR)  # 1 token per 2 bytes
    cal.request_line(line("r1", "m/a", 800), False)
    assert cal.factor("m/a") == pytest.approx(0.8 * MARGIN)
    assert cal.prompt_tokens("r2", 1000)(["m/a"]) == math.ceil(1000 * 0.8 * MARGIN)
    # a model not seen yet: the highest factor of the others, with a margin
    assert cal.factor("m/b") == pytest.approx(0.8 * MARGIN * UNSEEN_MARGIN)
    # a hold that may go to either assumes the higher
    assert cal.prompt_tokens("r3", 1000)(["m/a", "m/b"]) == math.ceil(1000 * cal.factor("m/b"))
    assert cal.view()["m/a"]["samples"] == 1


def test_the_factor_is_the_highest_recent_ratio_within_floor_and_ceiling() -> None:
    cal = Calibration()
    for ratio in (0.7, 1.2, 0.9):
        cal.learn("m/a", ratio)
    assert cal.factor("m/a") == pytest.approx(1.2 * MARGIN)
    for _ in range(WINDOW):  # the high one ages out of the window
        cal.learn("m/a", 0.9)
    assert cal.factor("m/a") == pytest.approx(0.9 * MARGIN)
    cal.learn("m/low", 0.01)  # a provider reporting almost nothing
    assert cal.factor("m/low") == FLOOR
    cal.learn("m/high", 100.0)
    assert cal.factor("m/high") == CEILING
    assert cal.factor("m/new") == DEFAULT_FACTOR  # never above the default for the unseen


def test_only_settled_lines_with_usage_and_an_estimate_teach() -> None:
    cal = Calibration()
    cal.prompt_tokens("refused", 1000)
    cal.request_line(line("refused", "m/a", 5000), True)
    cal.prompt_tokens("tiny", MIN_UNITS - 1)
    cal.request_line(line("tiny", "m/a", 5000), False)
    cal.prompt_tokens("no-usage", 1000)
    cal.request_line(line("no-usage", "m/a", 0), False)
    cal.prompt_tokens("no-model", 1000)
    cal.request_line(line("no-model", None, 5000), False)
    cal.request_line(line("unknown-id", "m/a", 5000), False)  # replayed, or another gate's
    assert cal.view() == {}
    assert cal._pending == {}
    for i in range(PENDING_MAX + 10):  # lines that never come do not pile up
        cal.prompt_tokens(f"r{i}", 100)
    assert len(cal._pending) == PENDING_MAX


# --- end to end: an OpenClaw-like body through a running gate --------------------

PARAGRAPH = (
    "## Tooling\nYou are a personal assistant running inside OpenClaw. Use the tools "
    "below when they help; prefer reading files over guessing, and say what you did. "
    "Never run destructive commands without asking. Keep answers short and concrete.\n"
)


def openclaw_body(user: str = "What changed in the repo today?") -> dict[str, Any]:
    """Like OpenClaw 2026.9.6's openai-completions requests: a ~52 KB system prompt, 12
    tools, `max_completion_tokens: 8192`, streaming with usage; about 60 KB."""
    system = "".join(f"{PARAGRAPH}(section {i})\n" for i in range(205))
    tools = [
        {
            "type": "function",
            "function": {
                "name": f"tool_{i}",
                "description": f"Tool number {i}: reads, writes or searches the workspace. " * 4,
                "parameters": {
                    "type": "object",
                    "properties": {
                        "path": {"type": "string", "description": "a path in the workspace"},
                        "query": {"type": "string", "description": "what to look for"},
                        "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                    "required": ["path"],
                },
            },
        }
        for i in range(12)
    ]
    return {
        "model": SONNET,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        "tools": tools,
        "max_completion_tokens": 8192,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def post(client: Any, body: dict[str, Any], agent_id: str = "oc") -> int:
    resp = await client.post(
        "/v1/chat/completions",
        data=json.dumps(body, separators=(",", ":")),
        headers={"X-Agent-ID": agent_id, "Content-Type": "application/json"},
    )
    await resp.read()
    return resp.status


async def test_an_openclaw_request_is_held_near_its_real_prompt_once_calibrated(
    start_gate, mock, tmp_path: Path
) -> None:
    cfg = make_config(
        tmp_path, mock.base_url, agents={"oc": agent(5, tiers=ONE_MODEL)}, admin_token=ADMIN
    )
    client = await start_gate(cfg)
    await load_prices(client)
    bodies = [openclaw_body(), openclaw_body("And yesterday?")]
    size = len(json.dumps(bodies[0], separators=(",", ":")))
    assert 55_000 < size < 65_000
    for body in bodies:
        assert await post(client, body) == 200
    await client.app[GATE].ledger.spend_log.flush()
    records = spend_lines(tmp_path / "spend.jsonl")
    holds = {r["request_id"]: r["held"] for r in records if r["event"] == "hold"}
    held = [h - 8192 * C for h in holds.values()]  # the prompt parts
    real = [r["prompt_tokens"] * P for r in request_lines(tmp_path / "spend.jsonl")]
    old = math.ceil(size / 3) * P  # the whole body's bytes / 3, as the gate held before
    print(f"body {size} B; prompt held before {old}, now first {held[0]}, then {held[1]};")
    print(f"real prompt {real[0]}, {real[1]}")
    assert held[0] >= real[0]  # the first, uncalibrated: conservative
    assert real[1] <= held[1] <= D("1.3") * real[1] < old  # after one settled request
    prices = await client.get("/api/prices", headers={"Authorization": f"Bearer {ADMIN}"})
    learnt = (await prices.json())["prompt_calibration"]
    assert learnt[SONNET]["samples"] == 2 and 1 < learnt[SONNET]["tokens_per_unit"] < DEFAULT_FACTOR


async def test_a_request_costing_less_than_what_is_left_is_not_refused(
    start_gate, mock, tmp_path: Path
) -> None:
    # A prompt sent as Python's json.dumps sends it (accents as \\u escapes): more body
    # bytes than billed bytes. About $0.007 at sonnet's price, with $0.01 left.
    text = "Résumé des étapes: vérifier, décider, répondre. " * 168
    body = {"model": SONNET, "messages": [{"role": "system", "content": text}], "max_tokens": 8}
    raw = json.dumps(body)
    assert math.ceil(len(raw) / 3) * P > D("0.01")  # the old estimate: refused
    cfg = make_config(tmp_path, mock.base_url, agents={"oc": agent(1, tiers=ONE_MODEL)})
    client = await start_gate(cfg)
    await load_prices(client)
    assert await post(client, body) == 200  # the model's first request calibrates it
    gate = client.app[GATE]
    await gate.ledger.set_budget("oc", None, D("0.99"))  # $0.01 left
    resp = await client.post(
        "/v1/chat/completions",
        data=raw,
        headers={"X-Agent-ID": "oc", "Content-Type": "application/json"},
    )
    assert resp.status == 200, await resp.text()
    cost = request_lines(tmp_path / "spend.jsonl")[-1]["cost"]
    assert D("0.006") < cost < D("0.008")


async def test_the_hard_cap_overshoot_is_bounded_by_the_prompt_the_holds_undershot(
    start_gate, mock, tmp_path: Path
) -> None:
    """Calibrated on prose, then a burst of newline-heavy prompts (twice the tokens
    per byte at the mock) at the edge of a small capped budget: each is billed more
    prompt than its hold assumed, and the books pass the cap by at most that sum."""
    budget = D("0.03")
    cfg = make_config(tmp_path, mock.base_url, agents={"oc": agent(float(budget), tiers=ONE_MODEL)})
    client = await start_gate(cfg)
    await load_prices(client)
    gate = client.app[GATE]
    prose = {"model": SONNET, "messages": [{"role": "user", "content": "word " * 800}]}
    assert await post(client, {**prose, "max_tokens": 4}) == 200
    factor = gate.calibration.factor(SONNET)
    lines = [{"model": SONNET, "messages": [{"role": "user", "content": "\n" * 4000}]}]
    burst = [{**lines[0], "max_tokens": 4} for _ in range(12)]
    mock.state.faults.extend(Fault(hang=0.3) for _ in burst)  # all in flight at once
    statuses = await asyncio.gather(*(post(client, body) for body in burst))
    assert 200 in statuses and 402 in statuses  # the budget's edge was reached
    await gate.ledger.spend_log.flush()
    path = tmp_path / "spend.jsonl"
    holds = {r["request_id"]: r["held"] for r in spend_lines(path) if r["event"] == "hold"}
    settled = [r for r in request_lines(path) if r["status"] == 200][1:]
    spent = sum((r["cost"] for r in request_lines(path)), D(0))
    held_prompt = math.ceil(estimate_prompt(burst[0]) * factor)
    undershoot = sum(
        ((r["prompt_tokens"] - held_prompt) * P for r in settled), D(0)
    )  # the stated bound: prompt tokens billed beyond what the holds assumed
    overshoot = spent - budget
    print(f"overshoot {overshoot} USD, bound {undershoot} USD, {len(settled)} in flight")
    assert D(0) < overshoot <= undershoot
    assert overshoot <= sum((r["cost"] - holds[r["request_id"]] for r in settled), D(0))
    # and the factor has learnt the burst: the next such request is held for all of it
    assert math.ceil(estimate_prompt(burst[0]) * gate.calibration.factor(SONNET)) >= max(
        r["prompt_tokens"] for r in settled
    )
