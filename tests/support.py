"""Shared test helpers: configs built from dicts, spend-log readers, SSE reading."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from gate.config import GateConfig, parse_config

PREMIUM = ["anthropic/claude-sonnet-4.5", "openai/gpt-5", "google/gemini-2.5-pro"]
MID = ["openai/gpt-5-mini", "anthropic/claude-haiku-4.5", "google/gemini-2.5-flash"]
ECONOMY = [
    "meta-llama/llama-3.3-70b-instruct",
    "deepseek/deepseek-chat-v3.1",
    "mistralai/mistral-small-3.2-24b-instruct",
]
SEED_TIERS = [
    {"name": "premium", "threshold": 0.80, "models": PREMIUM},
    {"name": "mid", "threshold": 0.30, "models": MID},
    {"name": "economy", "threshold": 0.0, "models": ECONOMY},
]
UPSTREAM_KEY = "sk-or-v1-test-upstream-key-0000"


def agent(budget_total: float = 50, **fields: Any) -> dict[str, Any]:
    return {
        "budget_total": budget_total,
        "period": "monthly",
        "hard_cap": True,
        "tiers": copy.deepcopy(SEED_TIERS),
        **fields,
    }


def raw_config(
    tmp_path: Path, base_url: str, agents: dict[str, Any] | None = None, **top: Any
) -> dict[str, Any]:
    openrouter = {"base_url": base_url, "api_key": UPSTREAM_KEY, "timeout_seconds": 10}
    top.setdefault("loop_breaker", False)  # tests repeat requests; tests/test_loops.py turns it on
    openrouter.update(top.pop("openrouter", {}))
    root: dict[str, Any] = {
        "spend_log": str(tmp_path / "spend.jsonl"),
        "openrouter": openrouter,
        "retry": {"max_retries": 3, "backoff_seconds": 0.01, "max_backoff_seconds": 0.05},
        "agents": agents if agents is not None else {"agent-1": agent(), "default": agent(5)},
        **top,
    }
    return {"cost_routing": root}


def make_config(
    tmp_path: Path, base_url: str, agents: dict[str, Any] | None = None, **top: Any
) -> GateConfig:
    return parse_config(raw_config(tmp_path, base_url, agents, **top), {}, tmp_path)


def write_config(path: Path, raw: dict[str, Any]) -> Path:
    path.write_text(json.dumps(raw))  # JSON is YAML
    return path


def spend_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line, parse_float=Decimal) for line in path.read_text().splitlines() if line]


def request_lines(path: Path) -> list[dict[str, Any]]:
    return [r for r in spend_lines(path) if r["event"] == "request"]


def books(path: Path) -> Decimal:
    return sum((Decimal(str(r["cost"])) for r in request_lines(path)), Decimal(0))


def sse_data(raw: bytes) -> list[str]:
    """The data payloads of an SSE byte stream, in order."""
    out = []
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        lines = [ln[5:].lstrip() for ln in block.split(b"\n") if ln.startswith(b"data:")]
        if lines:
            out.append(b"\n".join(lines).decode())
    return out


def chat(content: str = "hello", **fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], **fields}


# --- helpers for the end-to-end chat tests ----------------------------------------


async def load_prices(client: Any) -> None:
    """Load the gate's price table from upstream now, instead of racing its refresh task."""
    from gate.context import GATE

    gate = client.app[GATE]
    key = gate.config.openrouter.api_key
    assert await gate.prices.refresh(gate.upstream, f"Bearer {key}" if key else None)


class Settlements:
    """Counts the gate's settlements (request lines of admitted requests) as they happen,
    so a test can await one instead of sleeping."""

    def __init__(self, client: Any) -> None:
        from gate.context import GATE

        ledger = client.app[GATE].ledger
        self.count = 0
        self._waiters: list[tuple[int, Any]] = []
        settle = ledger.settle

        def counting(hold: Any, *args: Any, **kwargs: Any) -> Any:
            first = not hold.settled
            result = settle(hold, *args, **kwargs)
            if first:
                self.count += 1
                for wanted, future in self._waiters:
                    if self.count >= wanted and not future.done():
                        future.set_result(None)
            return result

        ledger.settle = counting

    async def wait(self, count: int, timeout: float = 10) -> None:
        """Return once `count` requests have been settled since this watcher started."""
        import asyncio

        if self.count >= count:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((count, future))
        async with asyncio.timeout(timeout):
            await future
