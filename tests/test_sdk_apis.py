"""The official SDKs, unchanged, on the gate's other doors: `openai` on the Responses
API, completions and embeddings; `anthropic` on Messages, streamed and not, with a
tool call. A budget refusal stops each SDK at once (no retry)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from gate.context import GATE
from mock_upstream import Fault

from .support import PREMIUM, agent, load_prices, make_config, request_lines

WORDS = "lorem ipsum dolor sit amet consectetur adipiscing elit"
KEY = "agent-key-sdk-0123456789"
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture
async def sdk_gate(start_gate, mock, tmp_path: Path) -> Any:
    cfg = make_config(tmp_path, mock.base_url, {"agent-1": agent(api_key=KEY)})
    client = await start_gate(cfg)
    await load_prices(client)
    return client


@pytest.fixture
async def oai(sdk_gate: Any) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(
        base_url=str(sdk_gate.make_url("/v1")),
        api_key=KEY,
        default_headers={"X-Agent-ID": "agent-1"},
        max_retries=2,
    )
    async with client:
        yield client


@pytest.fixture
async def claude(sdk_gate: Any) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(
        base_url=str(sdk_gate.make_url("/api")),  # OpenRouter's Anthropic base, on the gate
        api_key=KEY,  # sent as x-api-key
        default_headers={"X-Agent-ID": "agent-1"},
        max_retries=2,
    )
    async with client:
        yield client


def costs(tmp_path: Path) -> list[Decimal]:
    return [x["cost"] for x in request_lines(tmp_path / "spend.jsonl")]


async def test_openai_responses_create(oai: openai.AsyncOpenAI, mock, tmp_path: Path) -> None:
    response = await oai.responses.create(
        model=PREMIUM[1], input="hello", max_output_tokens=100, store=False
    )
    assert response.output_text.strip() == WORDS
    assert response.model == PREMIUM[1]
    assert response.usage is not None and response.usage.output_tokens == 8
    info = (response.model_extra or {})["_execwall"]
    assert info["tier"] == "premium" and info["agent_id"] == "agent-1"
    assert costs(tmp_path) == [mock.state.total_charged()]
    [line] = request_lines(tmp_path / "spend.jsonl")
    assert line["api"] == "responses" and line["cost_source"] == "usage"


async def test_openai_responses_stream(oai: openai.AsyncOpenAI, mock, tmp_path: Path) -> None:
    stream = await oai.responses.create(
        model=PREMIUM[0], input=[{"role": "user", "content": "hello"}], stream=True
    )
    text = ""
    kinds = []
    async for event in stream:
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            text += event.delta
        if event.type == "response.completed":
            completed = event
    assert text.strip() == WORDS
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert completed.response.usage is not None
    info = (completed.model_extra or {})["_execwall"]
    assert Decimal(str(info["cost"])) == mock.state.total_charged() == costs(tmp_path)[0]


async def test_openai_completions_and_embeddings(
    oai: openai.AsyncOpenAI, mock, tmp_path: Path
) -> None:
    completion = await oai.completions.create(model=PREMIUM[0], prompt="hello", max_tokens=50)
    assert completion.choices[0].text.strip() == WORDS
    vectors = await oai.embeddings.create(model=PREMIUM[0], input=["one", "two"])
    assert len(vectors.data) == 2 and vectors.usage.prompt_tokens > 0
    lines = request_lines(tmp_path / "spend.jsonl")
    assert [x["api"] for x in lines] == ["completions", "embeddings"]
    assert sum(costs(tmp_path)) == mock.state.total_charged()


async def test_anthropic_messages_create(
    claude: anthropic.AsyncAnthropic, mock, tmp_path: Path
) -> None:
    message = await claude.messages.create(
        model=PREMIUM[0],
        max_tokens=200,
        system="Be brief.",
        messages=[{"role": "user", "content": "hello"}],
    )
    assert message.content[0].type == "text"
    assert message.content[0].text.strip() == WORDS
    assert message.usage.output_tokens == 8
    assert (message.model_extra or {})["_execwall"]["tier"] == "premium"
    [line] = request_lines(tmp_path / "spend.jsonl")
    assert line["api"] == "messages" and line["cost"] == mock.state.total_charged() > 0
    [sent] = [r for r in mock.state.requests if r["api"] == "messages"]
    assert sent["path"] == "/api/v1/messages"
    assert sent["headers"]["anthropic-version"]  # as the SDK sent it


async def test_anthropic_messages_stream_with_a_tool_call(
    claude: anthropic.AsyncAnthropic, mock, tmp_path: Path
) -> None:
    mock.state.faults.append(Fault(tool_call=True))
    async with claude.messages.stream(
        model=PREMIUM[0],
        max_tokens=300,
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    ) as stream:
        async for _ in stream:
            pass
        message = await stream.get_final_message()
    assert message.stop_reason == "tool_use"
    [call] = [block for block in message.content if block.type == "tool_use"]
    assert call.name == "get_weather" and call.input == {"city": "mock"}
    assert message.usage.output_tokens == 8
    # the tool's answer goes back; the agent's second turn is billed to the same budget
    followup = await claude.messages.create(
        model=PREMIUM[0],
        max_tokens=300,
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": message.content},  # type: ignore[typeddict-item]
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}],
            },
        ],
    )
    assert followup.stop_reason == "end_turn"
    lines = request_lines(tmp_path / "spend.jsonl")
    assert [(x["api"], x["stream"]) for x in lines] == [("messages", True), ("messages", False)]
    assert sum(costs(tmp_path)) == mock.state.total_charged() > 0


async def test_a_budget_refusal_stops_both_sdks_at_once(
    sdk_gate: Any,
    oai: openai.AsyncOpenAI,
    claude: anthropic.AsyncAnthropic,
    mock,
    tmp_path: Path,
) -> None:
    await sdk_gate.app[GATE].ledger.set_budget("agent-1", None, Decimal(50))
    with pytest.raises(anthropic.APIStatusError) as refused:
        await claude.messages.create(
            model=PREMIUM[0], max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert refused.value.status_code == 402
    assert isinstance(refused.value.body, dict)
    assert refused.value.body["error"]["type"] == "billing_error"
    with pytest.raises(openai.APIStatusError) as refused_too:
        await oai.responses.create(model=PREMIUM[0], input="hi")
    assert refused_too.value.status_code == 402
    lines = request_lines(tmp_path / "spend.jsonl")
    assert [(x["api"], x["status"]) for x in lines] == [("messages", 402), ("responses", 402)]
    assert mock.state.requests == []  # nothing went upstream, and neither SDK retried
