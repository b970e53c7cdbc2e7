"""A real `POST /api/reload` with the config file rewritten in between: what it does to
requests still arriving, to the background tasks, and to what the scrubber covers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

import gate.proxy
from gate.config import load_config
from gate.context import GATE
from mock_upstream import Fault
from mock_upstream import create_app as create_mock_app

from .support import agent, chat, raw_config, request_lines, write_config

CHAT = "/v1/chat/completions"
TOKEN = "reload-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


async def reload(client: Any) -> dict[str, Any]:
    resp = await client.post("/api/reload", headers=ADMIN)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def test_reload_removing_an_agent_while_its_body_arrives_answers_403_with_a_line(
    start_gate, mock, tmp_path: Path, monkeypatch: Any
) -> None:
    """Identified under the old config, admitted under the new one: the agent is gone
    by the time its body is read, so it is refused like an unknown agent (403), in
    OpenAI's shape, and its line is written."""
    raw = raw_config(
        tmp_path, mock.base_url, agents={"agent-1": agent(), "agent-2": agent()}, admin_token=TOKEN
    )
    path = write_config(tmp_path / "gate.yaml", raw)
    client = await start_gate(load_config(path, {}), env={})
    reading = asyncio.Event()
    real_read = gate.proxy.read_json_object

    async def probed_read(*args: Any) -> Any:
        reading.set()  # identify() has passed: the handler waits for the body now
        return await real_read(*args)

    monkeypatch.setattr(gate.proxy, "read_json_object", probed_read)
    rest = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b'{"model": "openai/gpt-5-mini", '
        await rest.wait()
        yield b'"messages": [{"role": "user", "content": "hi"}]}'

    posting = asyncio.ensure_future(
        client.post(
            CHAT,
            data=body(),
            headers={"X-Agent-ID": "agent-2", "Content-Type": "application/json"},
        )
    )
    await asyncio.wait_for(reading.wait(), 10)
    del raw["cost_routing"]["agents"]["agent-2"]
    write_config(path, raw)
    await reload(client)
    rest.set()
    resp = await posting
    assert resp.status == 403, await resp.text()
    error = (await resp.json())["error"]
    assert set(error) >= {"message", "type", "code"} and "agent-2" in error["message"]
    lines = request_lines(tmp_path / "spend.jsonl")
    assert [(r["agent_id"], r["status"]) for r in lines] == [("agent-2", 403)]
    assert mock.state.chat_count() == 0


async def test_reload_moves_price_refresh_and_key_probe_to_the_new_upstream_and_key(
    start_gate, aiohttp_server, tmp_path: Path
) -> None:
    """After a reload that changes `base_url` and the key, the next price refresh and
    the next key probe go to the new upstream with the new key (seen by a middleware on
    each mock, which sees the real Authorization; the request log redacts it)."""
    seen: dict[str, list[tuple[str, str]]] = {"old": [], "new": []}
    arrived = asyncio.Event()

    def recording(name: str) -> Any:
        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            seen[name].append((request.path, request.headers.get("Authorization", "")))
            arrived.set()
            return await handler(request)

        return record

    servers = {}
    for name in ("old", "new"):
        app = create_mock_app()
        app.middlewares.append(recording(name))
        servers[name] = await aiohttp_server(app)
    slow = {"prices_refresh_seconds": 3600, "key_check_seconds": 3600}
    raw = raw_config(
        tmp_path,
        str(servers["old"].make_url("/api/v1")),
        openrouter={"api_key": "sk-or-v1-old-key", **slow},
        admin_token=TOKEN,
    )
    path = write_config(tmp_path / "gate.yaml", raw)
    client = await start_gate(load_config(path, {}), env={})
    assert client.app[GATE].prices.loaded  # the start-up refresh, from the old upstream
    raw["cost_routing"]["openrouter"].update(
        base_url=str(servers["new"].make_url("/api/v1")), api_key="sk-or-v1-new-key"
    )
    write_config(path, raw)
    await reload(client)
    new_auth = "Bearer sk-or-v1-new-key"
    wanted = {("/api/v1/models", new_auth), ("/api/v1/key", new_auth)}
    async with asyncio.timeout(10):
        while not wanted <= set(seen["new"]):
            arrived.clear()
            await arrived.wait()
    assert {auth for _, auth in seen["new"]} == {new_auth}
    old_after = len(seen["old"])
    assert (await client.post(CHAT, json=chat(), headers={"X-Agent-ID": "agent-1"})).status == 200
    assert len(seen["old"]) == old_after  # nothing more goes to the old upstream


def dead_sink(password: str) -> list[dict[str, Any]]:
    return [
        {
            "type": "postgres",
            "dsn": f"postgresql://gate:{password}@127.0.0.1:1/none",
            "retry_max_seconds": 0.2,
            "connect_timeout_seconds": 1,
        }
    ]


async def test_after_a_reload_the_running_sinks_secrets_are_still_scrubbed(
    start_gate, mock, tmp_path: Path
) -> None:
    """A reload does not replace the running sinks (their change waits for a restart):
    the scrubber covers the running sinks' passwords and the new config's too."""
    running, configured = "Tq7wVzR4mK2pXs9L", "bN3hYe8cJu5dFa6G"
    raw = raw_config(tmp_path, mock.base_url, sinks=dead_sink(running), admin_token=TOKEN)
    path = write_config(tmp_path / "gate.yaml", raw)
    client = await start_gate(load_config(path, {}), env={})
    raw["cost_routing"]["sinks"] = dead_sink(configured)
    write_config(path, raw)
    notes = (await reload(client))["notes"]
    assert "sinks changes take effect at the next start" in notes
    mock.state.faults.append(
        Fault(status=400, message=f"bad password {running} (also tried {configured})")
    )
    resp = await client.post(CHAT, json=chat(), headers={"X-Agent-ID": "agent-1"})
    assert resp.status == 400
    text = await resp.text()
    assert "bad password" in text
    assert running not in text and configured not in text
