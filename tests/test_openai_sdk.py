"""The official `openai` SDK, pointed at the gate, as an agent would use it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest

from .support import PREMIUM, make_config

ADMIN = {"Authorization": "Bearer t0k"}
WORDS = "lorem ipsum dolor sit amet consectetur adipiscing elit"


@pytest.fixture
async def sdk_gate(start_gate, mock, tmp_path: Path) -> Any:
    return await start_gate(make_config(tmp_path, mock.base_url, admin_token="t0k"))


@pytest.fixture
async def sdk(sdk_gate: Any) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(
        base_url=str(sdk_gate.make_url("/v1")),
        api_key="x",
        default_headers={"X-Agent-ID": "agent-1"},
        max_retries=0,
    )
    async with client:
        yield client


async def test_sdk_non_streaming(sdk: openai.AsyncOpenAI, mock) -> None:
    completion = await sdk.chat.completions.create(
        model="openai/gpt-5", messages=[{"role": "user", "content": "hello"}]
    )
    assert completion.choices[0].message.content.strip() == WORDS
    assert completion.model == "openai/gpt-5"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 8
    info = (completion.model_extra or {})["_execwall"]
    assert completion.to_dict()["_execwall"] == info
    assert info["agent_id"] == "agent-1"
    assert info["tier"] == "premium"
    assert info["models_allowed"] == PREMIUM
    assert Decimal(str(info["cost"])) == mock.state.generations[completion.id]["total_cost"]
    assert mock.state.chat_count() == 1


async def test_sdk_streaming_with_usage(sdk: openai.AsyncOpenAI, mock) -> None:
    stream = await sdk.chat.completions.create(
        model="anthropic/claude-sonnet-4.5",
        messages=[{"role": "user", "content": "hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text = ""
    chunks = []
    async for chunk in stream:
        chunks.append(chunk)
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
    assert text.strip() == WORDS
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None and last.usage.completion_tokens == 8
    info = (last.model_extra or {})["_execwall"]
    assert info["tier"] == "premium"
    assert Decimal(str(info["cost"])) == mock.state.generations[last.id]["total_cost"]
    assert all(c.usage is None for c in chunks[:-1])
    assert mock.state.chat_count() == 1


async def test_sdk_streaming_without_usage(sdk: openai.AsyncOpenAI, mock) -> None:
    stream = await sdk.chat.completions.create(
        model="openai/gpt-5", messages=[{"role": "user", "content": "hello"}], stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert all(c.usage is None and c.choices for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks).strip() == WORDS


async def test_sdk_budget_exhausted_raises_402(sdk: openai.AsyncOpenAI, sdk_gate, mock) -> None:
    resp = await sdk_gate.post("/api/budget/agent-1", json={"budget_spent": 50}, headers=ADMIN)
    assert resp.status == 200
    with pytest.raises(openai.APIStatusError) as caught:
        await sdk.chat.completions.create(
            model="openai/gpt-5", messages=[{"role": "user", "content": "hello"}]
        )
    err = caught.value
    assert err.status_code == 402
    assert isinstance(err.body, dict)
    assert err.body["type"] == "budget_exhausted"
    assert err.body["code"] == 402
    assert "budget" in err.body["message"]
    assert err.response.headers.get("content-type", "").startswith("application/json")
    assert mock.state.chat_count() == 0
