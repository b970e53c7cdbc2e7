"""A real `POST /api/reload` with the config file rewritten in between: what it does to
requests still arriving, to the background tasks, and to what the scrubber covers."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiohttp import web

import gate.http.proxy
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
    real_read = gate.http.proxy.read_json_object

    async def probed_read(*args: Any) -> Any:
        reading.set()  # identify() has passed: the handler waits for the body now
        return await real_read(*args)

    monkeypatch.setattr(gate.http.proxy, "read_json_object", probed_read)
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


async def test_reload_swaps_one_bundle_whole_and_keeps_the_upstream_hooks(
    start_gate, mock, tmp_path: Path
) -> None:
    """A reload builds a new `Live` (config, upstream client, secrets) and swaps it in
    one assignment: the old bundle is left as it was (whoever copied it still holds a
    consistent whole), the new upstream client runs on the new settings but keeps the
    session and the answer hook that feeds metrics and alerts, and the new key is among
    the secrets scrubbed at once."""
    raw = raw_config(
        tmp_path, mock.base_url, openrouter={"api_key": "sk-or-v1-first"}, admin_token=TOKEN
    )
    path = write_config(tmp_path / "gate.yaml", raw)
    client = await start_gate(load_config(path, {}), env={})
    gate = client.app[GATE]
    old = gate.live
    assert old.upstream.on_answer is not None  # wired at start-up (metrics, alerts)
    raw["cost_routing"]["openrouter"]["api_key"] = "sk-or-v1-second"
    raw["cost_routing"]["retry"] = {"max_retries": 1}
    write_config(path, raw)
    await reload(client)
    new = gate.live
    assert new is not old
    assert old.config.openrouter.api_key == "sk-or-v1-first"  # the old whole, untouched
    assert "sk-or-v1-first" in old.secrets and "sk-or-v1-second" not in old.secrets
    assert new.config.openrouter.api_key == "sk-or-v1-second"
    assert new.upstream.config is new.config.openrouter
    assert new.upstream.retry is new.config.retry and new.upstream.retry.max_retries == 1
    assert new.upstream.on_answer is old.upstream.on_answer
    assert new.upstream.session is old.upstream.session
    assert "sk-or-v1-second" in gate.secrets()
    resp = await client.post(CHAT, json=chat(), headers={"X-Agent-ID": "agent-1"})
    assert resp.status == 200


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


# --- finding 2: a removed agent's books are dormant, not forgotten ------------------------


def cost_of(path: Path, agent_id: str) -> Decimal:
    return sum(
        (Decimal(str(r["cost"])) for r in request_lines(path) if r["agent_id"] == agent_id),
        Decimal(0),
    )


async def test_removed_agent_is_dormant_its_stream_settles_and_it_resumes_when_added_back(
    start_gate, mock, tmp_path: Path
) -> None:
    raw = raw_config(
        tmp_path,
        mock.base_url,
        agents={"agent-1": agent(), "agent-2": agent(10, budget_spent=1)},
        admin_token=TOKEN,
    )
    path = write_config(tmp_path / "gate.yaml", raw)
    client = await start_gate(load_config(path, {}), env={})
    log = tmp_path / "spend.jsonl"
    agent_2 = {"X-Agent-ID": "agent-2"}
    assert (await client.post(CHAT, json=chat(), headers=agent_2)).status == 200
    mock.state.faults.append(Fault(chunks=20, chunk_delay=0.05))
    stream = await client.post(
        CHAT, json=chat(stream=True, stream_options={"include_usage": True}), headers=agent_2
    )
    assert stream.status == 200
    assert await stream.content.readany()  # the stream runs: its hold is open

    removed = copy.deepcopy(raw)
    del removed["cost_routing"]["agents"]["agent-2"]
    write_config(path, removed)
    await reload(client)
    assert len(client.app[GATE].ledger.open_holds()) == 1  # the reload landed mid-stream
    refused = await client.post(CHAT, json=chat(), headers=agent_2)
    assert refused.status == 403  # refused like an unknown agent
    assert (await client.get("/api/spend/agent-2", headers=ADMIN)).status == 404
    await stream.read()
    await client.app[GATE].ledger.all_settled()
    settled = [r for r in request_lines(log) if r["agent_id"] == "agent-2" and r["stream"]]
    assert len(settled) == 1 and settled[0]["status"] == 200 and settled[0]["cost"] > 0
    assert settled[0]["budget_remaining"] is not None  # charged to agent-2's dormant account
    spent = Decimal(1) + cost_of(log, "agent-2")  # the config's budget_spent, then the lines
    assert Decimal(str(settled[0]["budget_remaining"])) == Decimal(10) - spent

    write_config(path, raw)  # agent-2 is back, config unchanged: its spend resumes
    await reload(client)
    view = await (await client.get("/api/spend/agent-2", headers=ADMIN)).json()
    assert Decimal(str(view["budget_spent"])) == spent
    assert (await client.post(CHAT, json=chat(), headers=agent_2)).status == 200
