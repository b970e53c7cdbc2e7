"""The founding document's own config starts the gate as printed, and its walkthrough
works against it: `configs/examples/seed-policy.yaml` is that block byte for byte (but
for the `base_url` the document itself points at the mock), started as a subprocess
through the documented environment variables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gate.config import load_config

from .procs import ROOT, Proc, spawn, start_mock

SEED = ROOT / "configs" / "examples" / "seed-policy.yaml"
SPEC = ROOT.parent / "shared" / "SPEC.md"
DOCUMENT_BASE_URL = 'base_url: "https://openrouter.ai/api/v1"'
MOCK_BASE_URL = 'base_url: "http://127.0.0.1:9000/api/v1"'
UPSTREAM_KEY = "sk-or-v1-seed-walkthrough-upstream-key"
ADMIN_TOKEN = "seed-walkthrough-admin-token"
PREMIUM = ["anthropic/claude-3.5-sonnet", "openai/gpt-4o"]
MID = ["anthropic/claude-3-haiku", "openai/gpt-4o-mini"]
ECONOMY = ["mistralai/mistral-7b-instruct"]


def seed_block() -> str:
    """The fixture without its header comment: what the document prints."""
    text = SEED.read_text(encoding="utf-8")
    return text[text.index("cost_routing:\n") :]


def test_fixture_is_the_documents_block_but_for_base_url() -> None:
    if not SPEC.is_file():
        pytest.skip("SPEC.md is not beside the repo: nothing to compare the fixture with")
    spec = SPEC.read_text(encoding="utf-8")
    start = spec.index("```yaml\ncost_routing:") + len("```yaml\n")
    document = spec[start : spec.index("```", start)]
    assert seed_block() == document.replace(DOCUMENT_BASE_URL, MOCK_BASE_URL)


def test_seed_config_parses_with_the_documented_values() -> None:
    cfg = load_config(SEED, {"OPENROUTER_API_KEY": UPSTREAM_KEY})
    assert cfg.warnings == ()  # `budget_source: local` is the documented word
    agent = cfg.agents["agent-1"]
    assert agent.budget_source == "local"
    assert (agent.period, agent.hard_cap) == ("daily", True)
    assert [t.models for t in agent.tiers] == [tuple(PREMIUM), tuple(MID), tuple(ECONOMY)]
    assert cfg.spend_log == SEED.parent / "spend.jsonl"
    assert not cfg.console.enabled
    assert cfg.openrouter.timeout_seconds == 120


async def _chat(session: aiohttp.ClientSession, gate: Proc) -> tuple[int, dict[str, Any], Any]:
    async with session.post(
        f"{gate.url}/v1/chat/completions",
        headers={"X-Agent-ID": "agent-1", "Content-Type": "application/json"},
        json={
            "model": "anthropic/claude-3.5-sonnet",
            "messages": [{"role": "user", "content": "hi"}],
        },
    ) as resp:
        return resp.status, dict(resp.headers), await resp.json()


async def _admin(
    session: aiohttp.ClientSession, gate: Proc, method: str, path: str, body: Any = None
) -> dict[str, Any]:
    async with session.request(
        method,
        f"{gate.url}{path}",
        json=body,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ) as resp:
        assert resp.status == 200, await resp.text()
        result: dict[str, Any] = await resp.json()
        return result


def _upstream_models(log: Path) -> list[list[str]]:
    """The `models` list of each chat completion the mock received, in order."""
    found = []
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        body = entry.get("body")
        if isinstance(body, dict) and "messages" in body:
            found.append(body["models"])
    return found


async def test_seed_config_starts_and_replays_the_walkthrough(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mock = await start_mock(tmp_path)
    try:
        config = tmp_path / "policy.yaml"
        host_port = mock.url.removeprefix("http://")
        config.write_text(SEED.read_text().replace("127.0.0.1:9000", host_port))
        # The console block is disabled: its ${JETPATCH_API_KEY} need not be set.
        monkeypatch.delenv("JETPATCH_API_KEY", raising=False)
        gate = await spawn(
            "gate",
            [],
            tmp_path / "gate.stderr",
            env={
                "CONFIG_PATH": str(config),
                "ADAPTER_HOST": "127.0.0.1",
                "ADAPTER_PORT": "0",
                "OPENROUTER_API_KEY": UPSTREAM_KEY,
                "GATE_ADMIN_TOKEN": ADMIN_TOKEN,
            },
        )
        try:
            await _walkthrough(gate, tmp_path)
        finally:
            assert await gate.stop() == 0, gate.errors()
        assert "config:" not in gate.errors()  # no deprecated spelling warned about
    finally:
        await mock.stop()


async def _walkthrough(gate: Proc, tmp_path: Path) -> None:
    request_log = tmp_path / "openrouter_requests.log"
    async with aiohttp.ClientSession() as session:
        status, headers, body = await _chat(session, gate)
        assert status == 200, body
        assert headers["X-Execwall-Tier"] == "premium"
        assert headers["X-Execwall-Models-Allowed"] == ",".join(PREMIUM)
        execwall = body["_execwall"]
        assert {"agent_id", "cost", "budget_remaining", "models_allowed"} <= set(execwall)
        assert execwall["agent_id"] == "agent-1"
        assert execwall["models_allowed"] == PREMIUM
        assert body["usage"]["cost"] > 0
        assert execwall["cost"] == body["usage"]["cost"]

        steps = [(20.0, "mid", MID), (40.0, "economy", ECONOMY)]
        for spent, tier, models in steps:
            state = await _admin(
                session, gate, "POST", "/api/budget/agent-1", {"budget_spent": spent}
            )
            assert state["budget_spent"] == spent
            status, headers, body = await _chat(session, gate)
            assert status == 200, body
            assert headers["X-Execwall-Tier"] == tier  # 20 % left is economy: thresholds win
            assert body["_execwall"]["models_allowed"] == models

        sent_before = len(request_log.read_text().splitlines())
        await _admin(session, gate, "POST", "/api/budget/agent-1", {"budget_spent": 50.0})
        status, _, body = await _chat(session, gate)
        assert status == 402, body
        assert body["error"]["code"] == 402
        assert len(request_log.read_text().splitlines()) == sent_before  # nothing upstream

        state = await _admin(session, gate, "POST", "/api/reset/agent-1")
        assert state["budget_spent"] == 0
        status, headers, _ = await _chat(session, gate)
        assert status == 200
        assert headers["X-Execwall-Tier"] == "premium"

        one = await _admin(session, gate, "GET", "/api/spend/agent-1")
        assert one["agent_id"] == "agent-1"
        assert one["tier"] == "premium"
        assert one["budget_total"] == 50.0
        assert one["budget_source"] == "local"
        every = await _admin(session, gate, "GET", "/api/spend")
        assert set(every["agents"]) == {"agent-1"}

    assert _upstream_models(request_log) == [PREMIUM, MID, ECONOMY, PREMIUM]
    spend_log = tmp_path / "spend.jsonl"  # `./spend.jsonl`: beside the config
    lines = [json.loads(x) for x in spend_log.read_text().splitlines()]
    requests = [x for x in lines if x["event"] == "request"]
    assert [x["status"] for x in requests] == [200, 200, 200, 402, 200]
    assert len({x["request_id"] for x in requests}) == len(requests)
    assert [x["tier"] for x in requests if x["status"] == 200] == [
        "premium",
        "mid",
        "economy",
        "premium",
    ]
