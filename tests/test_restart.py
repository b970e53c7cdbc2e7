"""State survives restarts: graceful (SIGTERM) and kill -9, through real subprocesses."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import aiohttp

from .procs import start_gate, start_mock
from .support import UPSTREAM_KEY, agent, books, chat, raw_config, spend_lines, write_config

ADMIN = {"Authorization": "Bearer admin-secret"}


def config_file(tmp_path: Path, mock_url: str) -> Path:
    raw = raw_config(
        tmp_path,
        mock_url + "/api/v1",
        agents={"agent-1": agent(50), "agent-2": agent(10)},
        admin_token="admin-secret",
    )
    return write_config(tmp_path / "gate.yaml", raw)


async def spend(session: aiohttp.ClientSession, url: str) -> dict:
    async with session.get(url + "/api/spend", headers=ADMIN) as resp:
        assert resp.status == 200
        agents = (await resp.json())["agents"]
    for view in agents.values():  # the books, not the in-memory pace projected from them
        view.pop("forecast")
    return agents


async def wait_reconciled(session: aiohttp.ClientSession, url: str) -> None:
    for _ in range(300):
        async with session.get(url + "/api/health") as resp:
            if (await resp.json())["open_holds"] == 0:
                return
        await asyncio.sleep(0.05)
    raise AssertionError("holds never reconciled")


async def mock_stats(session: aiohttp.ClientSession, url: str) -> dict:
    async with session.get(url + "/_mock/stats") as resp:
        return await resp.json()


async def test_sigterm_restart_keeps_spend_and_admin_changes(tmp_path: Path) -> None:
    mock = await start_mock(tmp_path)
    cfg = config_file(tmp_path, mock.url)
    gate = await start_gate(cfg, tmp_path)
    try:
        async with aiohttp.ClientSession() as s:
            for agent_id, stream in [("agent-1", False), ("agent-1", True), ("agent-2", False)]:
                async with s.post(
                    gate.url + "/v1/chat/completions",
                    json=chat(stream=stream),
                    headers={"X-Agent-ID": agent_id},
                ) as resp:
                    assert resp.status == 200
                    await resp.read()
            async with s.post(
                gate.url + "/api/budget/agent-2", json={"budget_total": 12}, headers=ADMIN
            ) as resp:
                assert resp.status == 200
            before = await spend(s, gate.url)
            assert await gate.stop(signal.SIGTERM) == 0
            gate = await start_gate(cfg, tmp_path)
            after = await spend(s, gate.url)
        assert after == before
        assert after["agent-2"]["budget_total"] == 12
        assert Decimal(str(after["agent-1"]["budget_spent"])) > 0
    finally:
        await gate.stop()
        await mock.stop()
    assert "Traceback" not in gate.errors()


async def test_kill_9_mid_stream_reconciles_by_generation(tmp_path: Path) -> None:
    mock = await start_mock(tmp_path)
    cfg = config_file(tmp_path, mock.url)
    gate = await start_gate(cfg, tmp_path)
    log = tmp_path / "spend.jsonl"
    streams = 8
    try:
        async with aiohttp.ClientSession() as s:
            faults = [{"chunks": 200, "chunk_delay": 0.05}] * streams
            async with s.post(mock.url + "/_mock/faults", json=faults) as resp:
                assert resp.status == 200
            responses = []
            for _ in range(streams):
                resp = await s.post(
                    gate.url + "/v1/chat/completions",
                    json=chat(stream=True),
                    headers={"X-Agent-ID": "agent-1"},
                )
                assert resp.status == 200
                await resp.content.readany()  # the stream is under way
                responses.append(resp)
            # Wait until every hold has its generation id on disk, then crash
            # (bounded polling of a subprocess's file: up to 20 s on a loaded machine).
            for _ in range(1000):
                named = [
                    r for r in spend_lines(log) if r["event"] == "hold" and "generation_id" in r
                ]
                if len(named) == streams:
                    break
                await asyncio.sleep(0.02)
            assert len(named) == streams
            await gate.stop(signal.SIGKILL)
            for resp in responses:
                resp.close()
            assert not [r for r in spend_lines(log) if r["event"] == "request"]

            gate = await start_gate(cfg, tmp_path)
            await wait_reconciled(s, gate.url)
            recovered = [r for r in spend_lines(log) if r["event"] == "request"]
            assert len(recovered) == streams
            assert all(r["recovered"] and r["cost_source"] == "generation" for r in recovered)
            stats = await mock_stats(s, mock.url)
            assert books(log) == Decimal(stats["total_charged_str"])
            state = await spend(s, gate.url)
            assert Decimal(str(state["agent-1"]["budget_spent"])) == books(log)
            # A second restart changes nothing: recovered holds are settled once.
            assert await gate.stop(signal.SIGTERM) == 0
            gate = await start_gate(cfg, tmp_path)
            assert await spend(s, gate.url) == state
            assert len([r for r in spend_lines(log) if r["event"] == "request"]) == streams
    finally:
        await gate.stop()
        await mock.stop()


async def test_bad_config_exits_2_with_one_line_per_problem(tmp_path: Path) -> None:
    raw = raw_config(tmp_path, "http://127.0.0.1:9/api/v1")
    raw["cost_routing"]["agents"]["agent-1"]["tiers"] = [{"threshold": 1.5, "models": ["a/b"]}]
    raw["cost_routing"]["openrouter"]["api_key"] = "${NOT_SET_ANYWHERE}"
    cfg = write_config(tmp_path / "bad.yaml", raw)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gate",
        "--config",
        str(cfg),
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent,
    )
    _out, err = await proc.communicate()
    assert proc.returncode == 2
    lines = err.decode().strip().splitlines()
    assert "cost_routing.agents.agent-1.tiers[0].threshold: must be within 0..1" in "\n".join(lines)
    assert any("cost_routing.openrouter.api_key" in ln and "NOT_SET_ANYWHERE" in ln for ln in lines)
    assert len(lines) == 2, lines
    assert UPSTREAM_KEY not in err.decode()


def test_policy_yaml_without_keys_names_each_variable(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    env = {"PATH": "/usr/bin:/bin", "SPEND_LOG": str(tmp_path / "s.jsonl")}
    done = subprocess.run(
        [sys.executable, "-m", "gate", "--port", "0"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "gate: cost_routing.openrouter.api_key: environment variable OPENROUTER_API_KEY is not set",
        "gate: cost_routing.agents.agent-1.api_key: "
        "environment variable AGENT_1_API_KEY is not set",
        "gate: cost_routing.agents.agent-2.api_key: "
        "environment variable AGENT_2_API_KEY is not set",
        "gate: cost_routing.agents.default.api_key: "
        "environment variable DEFAULT_AGENT_API_KEY is not set",
    ]


async def test_a_snapshot_torn_at_a_graceful_stop_keeps_the_spend(tmp_path: Path) -> None:
    """Issue 12 #1: a crash while the stop's snapshot was written leaves it torn; the
    next start replays from the snapshot before it (or the start), never from the torn
    one, which would drop every request line before it from the books."""
    mock = await start_mock(tmp_path)
    cfg = config_file(tmp_path, mock.url)
    log = tmp_path / "spend.jsonl"
    gate = await start_gate(cfg, tmp_path)
    try:
        async with aiohttp.ClientSession() as s:
            for stream in (False, True):
                async with s.post(
                    gate.url + "/v1/chat/completions",
                    json=chat(stream=stream),
                    headers={"X-Agent-ID": "agent-1"},
                ) as resp:
                    assert resp.status == 200
                    await resp.read()
            before = await spend(s, gate.url)
            assert await gate.stop(signal.SIGTERM) == 0
            charged = books(log)
            raw = log.read_bytes()
            last = raw.rstrip(b"\n").rfind(b"\n") + 1
            assert raw[last:].startswith(b'{"event":"snapshot"')  # the stop's snapshot
            log.write_bytes(raw[: last + (len(raw) - last) // 2])  # torn mid-write
            gate = await start_gate(cfg, tmp_path)
            after = await spend(s, gate.url)
            assert await gate.stop(signal.SIGTERM) == 0
        assert Decimal(str(before["agent-1"]["budget_spent"])) == charged > 0
        assert after == before
        for line in log.read_bytes().splitlines():  # the torn one set aside: all whole
            json.loads(line)
    finally:
        await gate.stop()
        await mock.stop()


async def test_a_removed_agents_spend_survives_graceful_stops_until_it_is_added_back(
    tmp_path: Path,
) -> None:
    """Reload removes agent-2; the graceful stop's snapshot keeps its books (dormant);
    a start whose config still lacks it keeps them through its own snapshot; the start
    that names it again resumes its spend."""
    mock = await start_mock(tmp_path)
    cfg = config_file(tmp_path, mock.url)
    full = json.loads(cfg.read_text())
    without = json.loads(cfg.read_text())
    del without["cost_routing"]["agents"]["agent-2"]
    log = tmp_path / "spend.jsonl"

    async def ask(s: aiohttp.ClientSession, url: str, agent_id: str) -> None:
        async with s.post(
            url + "/v1/chat/completions", json=chat(), headers={"X-Agent-ID": agent_id}
        ) as resp:
            assert resp.status == 200
            await resp.read()

    gate = await start_gate(cfg, tmp_path)
    try:
        async with aiohttp.ClientSession() as s:
            await ask(s, gate.url, "agent-2")
            spent = (await spend(s, gate.url))["agent-2"]["budget_spent"]
            assert Decimal(str(spent)) > 0
            write_config(cfg, without)
            async with s.post(gate.url + "/api/reload", headers=ADMIN) as resp:
                assert resp.status == 200
            assert await gate.stop(signal.SIGTERM) == 0
            snapshot = spend_lines(log)[-1]
            assert snapshot["event"] == "snapshot" and "agent-2" in snapshot["agents"]

            gate = await start_gate(cfg, tmp_path)  # still without agent-2
            assert "agent-2" not in await spend(s, gate.url)
            await ask(s, gate.url, "agent-1")  # a line, so this stop writes a snapshot too
            assert await gate.stop(signal.SIGTERM) == 0
            assert spend_lines(log)[-1]["event"] == "snapshot"

            write_config(cfg, full)
            gate = await start_gate(cfg, tmp_path)
            after = (await spend(s, gate.url))["agent-2"]
        assert after["budget_spent"] == spent
        assert Decimal(str(after["budget_spent"])) == books_of(log, "agent-2")
    finally:
        await gate.stop()
        await mock.stop()
    assert "Traceback" not in gate.errors()


def books_of(path: Path, agent_id: str) -> Decimal:
    lines = [r for r in spend_lines(path) if r["event"] == "request" and r["agent_id"] == agent_id]
    return sum((Decimal(str(r["cost"])) for r in lines), Decimal(0))
