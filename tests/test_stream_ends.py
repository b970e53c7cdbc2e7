"""How streams end: a last event without its blank line (finding 14 of issue 12), and an
upstream error status kept when the client also left (finding b of issue 13)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from .support import chat, make_config, request_lines, sse_data

CHAT = "/v1/chat/completions"
MODEL = "anthropic/claude-sonnet-4.5"


def _event(payload: dict[str, Any] | str, eol: bytes) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return b"data: " + data.encode() + eol


def _body(eol: bytes, with_done: bool) -> bytes:
    """A stream framed with `eol`, whose very last event lacks its blank line."""
    content = {"id": "gen-tail", "model": MODEL, "choices": [{"delta": {"content": "hi"}}]}
    usage = {
        "id": "gen-tail",
        "model": MODEL,
        "choices": [],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "cost": 0.0042},
    }
    events = [_event(content, eol), _event(usage, eol)] + (
        [_event("[DONE]", eol)] if with_done else []
    )
    return eol.join(events)  # a blank line between events, none after the last


async def _upstream(aiohttp_server: Any, body: bytes) -> str:
    async def complete(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(body)
        await resp.write_eof()
        return resp

    async def nothing(request: web.Request) -> web.Response:
        return web.json_response({"data": []})

    app = web.Application()
    app.router.add_post("/api/v1/chat/completions", complete)
    app.router.add_route("*", "/{tail:.*}", nothing)
    server = await aiohttp_server(app)
    return str(server.make_url("/api/v1"))


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
@pytest.mark.parametrize("with_done", [True, False], ids=["done-last", "usage-last"])
async def test_a_last_event_without_its_blank_line_ends_the_stream_properly(
    start_gate, aiohttp_server, tmp_path: Path, eol: bytes, with_done: bool
) -> None:
    base_url = await _upstream(aiohttp_server, _body(eol, with_done))
    client = await start_gate(make_config(tmp_path, base_url))
    body = chat(stream=True, stream_options={"include_usage": True}, model=MODEL)
    resp = await client.post(CHAT, json=body, headers={"X-Agent-ID": "agent-1"})
    raw = await resp.read()
    assert resp.status == 200
    data = sse_data(raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n"))
    assert not any('"error"' in d for d in data), data
    usage = [json.loads(d) for d in data if d.startswith("{") and '"usage"' in d]
    assert usage and usage[-1]["_execwall"]["cost"] == 0.0042  # relayed, with the gate's note
    assert (data[-1] == "[DONE]") is with_done
    [line] = request_lines(tmp_path / "spend.jsonl")
    assert line["status"] == 200 and line["cost_source"] == "usage"
    assert float(line["cost"]) == 0.0042


def test_the_parser_finishes_an_event_that_lacks_its_blank_line() -> None:
    from gate.core.sse import SSEParser

    parser = SSEParser()
    assert [e.data for e in parser.feed(b"data: a\r\rdata: b\r")] == [b"a"]
    [last] = parser.finish()
    assert last.data == b"b" and parser.pending == b""


async def test_an_upstream_error_keeps_its_status_when_the_client_also_left(
    start_gate, mock, tmp_path: Path
) -> None:
    from mock_upstream import Fault

    from .support import Settlements

    client = await start_gate(make_config(tmp_path, mock.base_url))
    settled = Settlements(client)
    mock.state.faults.append(Fault(chunks=40, chunk_delay=0.02, error_after=20))
    resp = await client.post(CHAT, json=chat(stream=True), headers={"X-Agent-ID": "agent-1"})
    assert resp.status == 200
    await resp.content.readany()  # the first bytes; then the client leaves
    resp.close()
    await settled.wait(1, timeout=15)
    [line] = request_lines(tmp_path / "spend.jsonl")
    assert line["client_disconnected"] is True
    assert line["status"] == 502  # the error event upstream sent while the gate drained
