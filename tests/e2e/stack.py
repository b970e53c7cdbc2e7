"""mock_upstream and the gate as real subprocesses, with the books to compare."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp

from mock_upstream import wire
from mock_upstream.state import MockState

from ..procs import Proc, start_gate, start_mock
from ..support import UPSTREAM_KEY, agent, raw_config, request_lines, write_config

AGENT = "agent-1"
AGENT_KEY = "agent-1-e2e-key"
ADMIN = {"Authorization": "Bearer e2e-admin-token"}
MODEL = "anthropic/claude-sonnet-4.5"
# What the mock answers by default, token by token.
ANSWER = "".join(wire.token_text(i) for i in range(MockState().default_chunks)).strip()


@dataclass
class Stack:
    mock: Proc
    gate: Proc
    spend_log: Path
    session: aiohttp.ClientSession

    async def set_spent(self, spent: float) -> dict[str, Any]:
        async with self.session.post(
            f"{self.gate.url}/api/budget/{AGENT}", json={"budget_spent": spent}, headers=ADMIN
        ) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def mock_charged(self) -> Decimal:
        async with self.session.get(self.mock.url + "/_mock/stats") as resp:
            return Decimal((await resp.json())["total_charged_str"])

    async def generation_cost(self, gen_id: str) -> Decimal:
        async with self.session.get(
            self.mock.url + "/api/v1/generation",
            params={"id": gen_id},
            headers={"Authorization": f"Bearer {UPSTREAM_KEY}"},
        ) as resp:
            assert resp.status == 200, gen_id
            return Decimal(str((await resp.json())["data"]["total_cost"]))

    def requests(self) -> list[dict[str, Any]]:
        return request_lines(self.spend_log) if self.spend_log.exists() else []

    async def assert_books_exact(self) -> None:
        """Every admitted request line costs what the mock charged for its generation,
        and the log's total is the mock's total."""
        lines = [r for r in self.requests() if r["status"] == 200]
        assert lines
        for line in lines:
            assert Decimal(str(line["cost"])) == await self.generation_cost(line["generation_id"])
        total = sum((Decimal(str(r["cost"])) for r in self.requests()), Decimal(0))
        assert total == await self.mock_charged()


@asynccontextmanager
async def running_stack(tmp_path: Path, budget_total: float = 5) -> AsyncIterator[Stack]:
    mock = await start_mock(tmp_path)
    raw = raw_config(
        tmp_path,
        mock.url + "/api/v1",
        agents={AGENT: agent(budget_total, api_key=AGENT_KEY)},
        admin_token=ADMIN["Authorization"].split()[1],
        require_agent_keys=True,
    )
    gate = None
    try:
        gate = await start_gate(write_config(tmp_path / "gate.yaml", raw), tmp_path)
        async with aiohttp.ClientSession() as session:
            yield Stack(mock, gate, tmp_path / "spend.jsonl", session)
    finally:
        if gate is not None:
            await gate.stop()
            assert "Traceback" not in gate.errors(), gate.errors()
        await mock.stop()
