from __future__ import annotations

from .support import chat, request_lines, sse_data


async def test_non_stream(gate, mock, tmp_path):
    resp = await gate.post("/v1/chat/completions", json=chat(), headers={"X-Agent-ID": "agent-1"})
    body = await resp.json()
    assert resp.status == 200, body
    assert body["_execwall"]["tier"] == "premium"


async def test_stream(gate, mock, tmp_path):
    resp = await gate.post(
        "/v1/chat/completions",
        json=chat(stream=True, stream_options={"include_usage": True}),
        headers={"X-Agent-ID": "agent-1"},
    )
    raw = await resp.read()
    assert resp.status == 200
    data = sse_data(raw)
    assert data[-1] == "[DONE]"
    lines = request_lines(tmp_path / "spend.jsonl")
    assert lines, lines
