"""The bench's world: the gate's config, the request bodies, direct and gate targets."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from .load import Target

UPSTREAM_KEY = "sk-or-v1-bench-0000000000000000"
AGENT = "agent-1"
MODEL = "openai/gpt-5"
PREMIUM = ["anthropic/claude-sonnet-4.5", "openai/gpt-5", "google/gemini-2.5-pro"]
MID = ["openai/gpt-5-mini", "anthropic/claude-haiku-4.5", "google/gemini-2.5-flash"]
ECONOMY = [
    "meta-llama/llama-3.3-70b-instruct",
    "deepseek/deepseek-chat-v3.1",
    "mistralai/mistral-small-3.2-24b-instruct",
]
TIERS = [
    {"name": "premium", "threshold": 0.80, "models": PREMIUM},
    {"name": "mid", "threshold": 0.30, "models": MID},
    {"name": "economy", "threshold": 0.0, "models": ECONOMY},
]
AGENTS = ("agent-1", "agent-2", "default")
BUDGET = 1_000_000_000
MESSAGES = [
    {"role": "system", "content": "You are a terse assistant for a CI pipeline."},
    {"role": "user", "content": "Summarise the failing test in one sentence: test_spend_log."},
]
MAX_TOKENS = 16  # the mock answers with its default 8 tokens
MAX_CONCURRENT_UPSTREAM = 4096
STREAM_MAX_TOKENS = 64  # above any bench stream's chunk count, so no stream is cut short
REDIS_PREFIX = "bench:"


def gate_config(spend_log: Path, mock_url: str) -> dict[str, Any]:
    """Agents with a huge budget and no hard cap, so nothing is ever refused."""
    agent = {"budget_total": BUDGET, "period": "monthly", "hard_cap": False, "tiers": TIERS}
    return {
        "cost_routing": {
            "spend_log": str(spend_log),
            "openrouter": {
                "base_url": mock_url + "/api/v1",
                "api_key": UPSTREAM_KEY,
                "timeout_seconds": 120,
            },
            # The shipped limits (1024 calls in flight upstream, 64 of them per agent, 1024
            # connections from one address) would refuse most of (d)'s 2000 open streams:
            # raised so the bench measures holding them, not the shares.
            "limits": {
                "max_concurrent_upstream": MAX_CONCURRENT_UPSTREAM,
                "max_concurrent_per_agent": MAX_CONCURRENT_UPSTREAM,
                "max_connections": MAX_CONCURRENT_UPSTREAM,
                "max_connections_per_client": MAX_CONCURRENT_UPSTREAM,
            },
            "agents": {name: agent for name in AGENTS},
            "loop_breaker": False,  # the bench repeats one request by design
        }
    }


def write_gate_config(path: Path, spend_log: Path, mock_url: str) -> Path:
    path.write_text(json.dumps(gate_config(spend_log, mock_url), indent=2))  # JSON is YAML
    return path


def redis_gate_config(
    spend_log: Path,
    mock_url: str,
    redis_url: str,
    edge_agents: Sequence[str],
    edge_budget: Decimal,
) -> dict[str, Any]:
    """The bench's gate on the shared (Redis) store, plus agents with a small budget and a
    hard cap, one per budget-edge run: everything else as `gate_config`."""
    config = gate_config(spend_log, mock_url)
    root = config["cost_routing"]
    root["spend_store"] = {"backend": "redis", "url": redis_url, "key_prefix": REDIS_PREFIX}
    edge = {
        "budget_total": float(edge_budget),
        "period": "monthly",
        "hard_cap": True,
        "tiers": TIERS,
    }
    root["agents"].update({name: edge for name in edge_agents})
    return config


def write_redis_gate_config(
    path: Path,
    spend_log: Path,
    mock_url: str,
    redis_url: str,
    edge_agents: Sequence[str],
    edge_budget: Decimal,
) -> Path:
    config = redis_gate_config(spend_log, mock_url, redis_url, edge_agents, edge_budget)
    path.write_text(json.dumps(config, indent=2))
    return path


def _encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def gate_target(gate_url: str, agent: str = AGENT) -> Target:
    """A client of the gate: its agent id, a plain chat body."""
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": MAX_TOKENS}
    stream = {
        "model": MODEL,
        "messages": MESSAGES,
        "max_tokens": STREAM_MAX_TOKENS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    return Target(
        "gate",
        gate_url + "/v1/chat/completions",
        {"X-Agent-ID": agent, "Content-Type": "application/json"},
        _encode(body),
        _encode(stream),
    )


def direct_target(mock_url: str) -> Target:
    """The same request straight to the mock, shaped as the gate sends it upstream."""
    models = [MODEL, *(m for m in PREMIUM if m != MODEL)]
    body = {
        "model": MODEL,
        "messages": MESSAGES,
        "max_tokens": MAX_TOKENS,
        "models": models,
        "usage": {"include": True},
    }
    stream = {
        **body,
        "max_tokens": STREAM_MAX_TOKENS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    return Target(
        "direct",
        mock_url + "/api/v1/chat/completions",
        {"Authorization": f"Bearer {UPSTREAM_KEY}", "Content-Type": "application/json"},
        _encode(body),
        _encode(stream),
    )


def floor_target(floor_url: str, mock_url: str) -> Target:
    """A client of the floor: the direct request, sent to the floor instead of the mock."""
    direct = direct_target(mock_url)
    return replace(direct, name="floor", url=direct.url.replace(mock_url, floor_url, 1))
