"""A key echoed back by upstream upper-cased, spaced out or split is still scrubbed
(finding 16 of issue 12)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gate.core.scrub import FRAGMENT, scrub
from mock_upstream import Fault

from .support import chat, make_config

CHAT = "/v1/chat/completions"
AGENT = {"X-Agent-ID": "agent-1"}
UPSTREAM_KEY = "sk-or-v1-" + "9f3a7c1e5b2d4680aa17ce93b0d2"  # no English word inside; split so
# the source holds nothing shaped like a real key


def _config(tmp_path: Path, base_url: str) -> Any:
    return make_config(tmp_path, base_url, openrouter={"api_key": UPSTREAM_KEY})


def leaked(raw: bytes) -> list[str]:
    """Every 8-character piece of the key found in `raw`, in any case, spaces ignored."""
    text = "".join(raw.decode("utf-8", "replace").split()).lower()
    key = UPSTREAM_KEY.lower()
    pieces = (key[i : i + FRAGMENT] for i in range(len(key) - FRAGMENT + 1))
    return [p for p in pieces if p in text]


ECHOES = {
    "upper": UPSTREAM_KEY.upper(),
    "spaced": " ".join(UPSTREAM_KEY),
    "mixed": " - ".join(part.swapcase() for part in UPSTREAM_KEY.split("-")),
    "two-strings": f'{UPSTREAM_KEY[:12]}", "{UPSTREAM_KEY[12:]}',
}


@pytest.mark.parametrize("echo", ECHOES.values(), ids=ECHOES.keys())
def test_scrub_finds_the_key_in_any_case_and_spacing(echo: str) -> None:
    cleaned = scrub(f"invalid key: {echo} (check it)", [UPSTREAM_KEY])
    assert not leaked(cleaned.encode()), cleaned
    assert cleaned.startswith("invalid key: ") and cleaned.endswith(" (check it)")


@pytest.mark.parametrize("echo", ECHOES.values(), ids=ECHOES.keys())
async def test_an_error_status_echoing_the_key_is_scrubbed(
    start_gate, mock, tmp_path: Path, echo: str
) -> None:
    client = await start_gate(_config(tmp_path, mock.base_url))
    mock.state.faults.append(Fault(status=400, message=f"bad key {echo}"))
    resp = await client.post(CHAT, json=chat(), headers=AGENT)
    raw = await resp.read()
    assert resp.status == 400
    assert not leaked(raw), raw


def _error_event(message: str) -> bytes:
    payload = {"id": "gen-x", "error": {"code": 401, "message": message}, "choices": []}
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


async def _upstream(aiohttp_server: Any, writes: list[bytes]) -> str:
    async def complete(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for data in writes:
            await resp.write(data)
            await resp.drain()
        await resp.write_eof()
        return resp

    async def nothing(request: web.Request) -> web.Response:
        return web.json_response({"data": []})

    app = web.Application()
    app.router.add_post("/api/v1/chat/completions", complete)
    app.router.add_route("*", "/{tail:.*}", nothing)
    return str((await aiohttp_server(app)).make_url("/api/v1"))


def _split_writes() -> dict[str, list[bytes]]:
    whole = _error_event(f"key {UPSTREAM_KEY.upper()} refused")
    cut = whole.index(UPSTREAM_KEY.upper().encode()) + 14
    return {
        "upper-one-event": [whole],
        "spaced-one-event": [_error_event(f"key {' '.join(UPSTREAM_KEY)} refused")],
        "split-across-chunks": [whole[:cut], whole[cut:]],
        "split-across-events": [
            _error_event(f"key {UPSTREAM_KEY[:14].upper()}"),
            _error_event(f"{UPSTREAM_KEY[14:].upper()} refused"),
        ],
    }


@pytest.mark.parametrize("name", list(_split_writes()))
async def test_a_streamed_error_echoing_the_key_is_scrubbed(
    start_gate, aiohttp_server, tmp_path: Path, name: str
) -> None:
    base_url = await _upstream(aiohttp_server, _split_writes()[name])
    client = await start_gate(_config(tmp_path, base_url))
    resp = await client.post(CHAT, json=chat(stream=True), headers=AGENT)
    raw = await resp.read()
    assert resp.status == 200
    assert b'"error"' in raw
    assert not leaked(raw), raw
