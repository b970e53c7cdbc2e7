"""Fixtures: the mock upstream and the gate, each a real aiohttp server on port 0."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gate.app import create_app
from gate.config import GateConfig
from gate.ops import runtime
from mock_upstream import MOCK_STATE, MockState
from mock_upstream import create_app as create_mock_app

from .redis_server import RedisServer, free_port, redis_binary
from .support import make_config


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Any:
    """The in-process tests on the loop the gate runs on (`gate.ops.runtime`: uvloop
    where installed; `GATE_LOOP=asyncio make test` for asyncio's own); the gate's
    subprocesses read the same variable."""
    if runtime.loop_of(os.environ) != "uvloop":
        return {"asyncio": asyncio.new_event_loop}
    import uvloop

    return {"uvloop": uvloop.new_event_loop}


class Mock:
    def __init__(self, server: TestServer) -> None:
        self.server = server
        self.state: MockState = server.app[MOCK_STATE]
        self.base_url = str(server.make_url("/api/v1"))


@pytest.fixture
async def mock(aiohttp_server: Callable[..., Awaitable[TestServer]], tmp_path: Path) -> Mock:
    app = create_mock_app(request_log=tmp_path / "openrouter_requests.log")
    return Mock(await aiohttp_server(app))


GateFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def start_gate(aiohttp_client: Callable[..., Awaitable[TestClient]]) -> GateFactory:
    async def start(cfg: GateConfig, **kwargs: Any) -> TestClient:
        app: web.Application = create_app(cfg, **kwargs)
        return await aiohttp_client(app)

    return start


@pytest.fixture
async def gate(start_gate: GateFactory, mock: Mock, tmp_path: Path) -> TestClient:
    return await start_gate(make_config(tmp_path, mock.base_url))


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A redis-server of the test's own on a free port, stopped after it."""
    server = RedisServer(redis_binary(), free_port(), tmp_path / "redis.log")
    await server.start()
    yield server
    await server.stop()
