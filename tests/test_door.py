"""Issue 12 #7: a web page the operator opens cannot spend the budget. Real requests on a
real socket: a cross-site "simple" POST (text/plain, a form, a typeless blob), a foreign
Origin and a DNS-rebinding Host are refused before any route runs — nothing upstream,
no budget moved — while agents, SDKs and the gate's own pages pass."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gate.app import create_app
from gate.config import ConfigError, load_config, parse_config
from gate.context import GATE

from .support import chat, make_config, raw_config

CHAT = "/v1/chat/completions"
ROOT = Path(__file__).resolve().parent.parent
BODY = json.dumps(chat())


def state_of(client: Any) -> dict[str, Any]:
    ledger = client.app[GATE].ledger
    return {a: ledger.view(a) for a in ledger.agent_ids()}


async def spend_log_lines(client: Any) -> list[str]:
    spend_log = client.app[GATE].ledger.spend_log
    await spend_log.flush()
    return spend_log.path.read_text().splitlines() if spend_log.path.exists() else []


async def assert_refused(client: Any, mock: Any, resp: Any, status: int) -> None:
    body = await resp.json()
    assert resp.status == status, body
    assert set(body["error"]) >= {"message", "type", "code"} and body["error"]["code"] == status


def own_host(client: Any) -> str:
    return f"127.0.0.1:{client.port}"


@pytest.mark.parametrize(
    ("kwargs", "what"),
    [
        ({"data": BODY, "headers": {"Content-Type": "text/plain"}}, "text/plain"),
        ({"data": BODY, "headers": {"Content-Type": "text/plain;charset=UTF-8"}}, "fetch string"),
        ({"data": {"messages": "hello"}}, "form"),  # application/x-www-form-urlencoded
        ({"data": BODY.encode(), "skip_auto_headers": ["Content-Type"]}, "typeless blob"),
    ],
)
async def test_a_cross_site_simple_post_is_refused(gate, mock, kwargs, what) -> None:
    before = state_of(gate)
    resp = await gate.post(CHAT, **kwargs)  # no X-Agent-ID: would bill `default`
    await assert_refused(gate, mock, resp, 415)
    assert mock.state.chat_count() == 0, what
    assert state_of(gate) == before
    assert await spend_log_lines(gate) == []


async def test_json_with_a_charset_passes(gate, mock) -> None:
    resp = await gate.post(
        CHAT, data=BODY, headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert resp.status == 200, await resp.text()
    assert mock.state.chat_count() == 1


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "http://127.0.0.1:1", "null", "http://localhost.evil"]
)
async def test_a_foreign_origin_is_refused(gate, mock, origin) -> None:
    before = state_of(gate)
    resp = await gate.post(CHAT, json=chat(), headers={"Origin": origin})
    await assert_refused(gate, mock, resp, 403)
    resp = await gate.get("/api/health", headers={"Origin": origin})
    await assert_refused(gate, mock, resp, 403)
    assert mock.state.chat_count() == 0
    assert state_of(gate) == before


async def test_the_gates_own_origin_passes(gate, mock) -> None:
    origin = f"http://{own_host(gate)}"
    resp = await gate.post(CHAT, json=chat(), headers={"Origin": origin})
    assert resp.status == 200, await resp.text()
    assert (await gate.get("/", headers={"Origin": origin})).status == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/health"),
        ("GET", "/v1/models"),
        ("GET", "/"),
        ("GET", "/metrics"),
        ("GET", "/api/spend"),
        ("POST", CHAT),
    ],
)
async def test_a_rebinding_host_is_refused(gate, mock, method, path) -> None:
    before = state_of(gate)
    resp = await gate.request(
        method,
        path,
        json=chat() if method == "POST" else None,
        headers={"Host": f"rebind.evil.example:{gate.port}"},
    )
    await assert_refused(gate, mock, resp, 403)
    assert mock.state.chat_count() == 0
    assert state_of(gate) == before
    assert await spend_log_lines(gate) == []


@pytest.mark.parametrize(
    "host",
    ["localhost", "LOCALHOST:{port}", "127.0.0.1", "[::1]:{port}", "[::1]", "127.0.0.1:{port}"],
)
async def test_loopback_hosts_pass(gate, mock, host) -> None:
    resp = await gate.get("/api/health", headers={"Host": host.format(port=gate.port)})
    assert resp.status == 200, await resp.text()


async def test_allowed_hosts_names_a_deployment(start_gate, mock, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, mock.base_url, allowed_hosts=["Gate.Internal", "gw.example:443"])
    assert cfg.allowed_hosts == ("gate.internal", "gw.example")
    client = await start_gate(cfg)
    for host in ("gate.internal", "gate.internal:8443", "gw.example"):
        assert (await client.get("/api/health", headers={"Host": host})).status == 200
    resp = await client.post(
        CHAT, json=chat(), headers={"Host": "gate.internal", "Origin": "http://gate.internal"}
    )
    assert resp.status == 200, await resp.text()
    assert (await client.get("/api/health", headers={"Host": "other.internal"})).status == 403


@pytest.mark.parametrize("bad", ["http://gate.internal", "a/b", "", 5, "x:port"])
def test_allowed_hosts_refuses_what_is_no_host(tmp_path: Path, bad: object) -> None:
    raw = raw_config(tmp_path, "http://127.0.0.1:9/api/v1", allowed_hosts=[bad])
    with pytest.raises(ConfigError) as excinfo:
        parse_config(raw, {}, tmp_path)
    assert [p.split(":")[0] for p in excinfo.value.problems] == ["cost_routing.allowed_hosts[0]"]


def test_the_shipped_config_requires_agent_keys_from_the_environment() -> None:
    path = ROOT / "configs" / "policy.yaml"
    env = {"OPENROUTER_API_KEY": "x"}
    with pytest.raises(ConfigError) as excinfo:
        load_config(path, env)
    assert len(excinfo.value.problems) == 3
    assert all("environment variable" in p for p in excinfo.value.problems)
    keys = {"AGENT_1_API_KEY": "k1", "AGENT_2_API_KEY": "k2", "DEFAULT_AGENT_API_KEY": "k3"}
    cfg = load_config(path, env | keys)
    assert cfg.require_agent_keys is True
    assert {a: p.api_key for a, p in cfg.agents.items()} == {
        "agent-1": "k1",
        "agent-2": "k2",
        "default": "k3",
    }


async def test_the_bound_address_passes(aiohttp_client, mock, tmp_path: Path) -> None:
    app = create_app(make_config(tmp_path, mock.base_url))
    client = await aiohttp_client(app, server_kwargs={"host": "127.0.0.5"})
    resp = await client.post(CHAT, json=chat())  # Host: 127.0.0.5:<port>, as bound
    assert resp.status == 200, await resp.text()
    other = {"Host": f"127.0.0.6:{client.port}"}  # loopback too, but not this gate's
    assert (await client.get("/api/health", headers=other)).status == 403
