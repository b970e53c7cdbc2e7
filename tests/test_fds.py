"""Issue 12 #9: idle connections must not run the gate out of file descriptors. The
soft RLIMIT_NOFILE is raised to the hard limit at start, client connections are capped
(in total and per client address) right when accepted, and asyncio's "accept() out of
system resource" is logged once per interval, not once per retry."""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from gate.http.conns import CappedRunner, ResourceErrorLog, connection_cap

from .procs import start_gate, start_mock
from .support import chat, raw_config, write_config

CHAT = "/v1/chat/completions"
FD_LIMIT = 128
IDLE = 200
RESOURCE_LINES = ("Too many open files", "out of system resource")


def _low_fd_limit() -> None:  # soft and hard: the gate cannot raise it back
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def _soft_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, 2 * FD_LIMIT))


def idle_connections(host: str, port: int, count: int, source: str) -> list[socket.socket]:
    """`count` connections that never send a byte, from `source` (another loopback
    address than the legitimate client's)."""
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind((source, 0))
        sock.setblocking(False)
        sock.connect_ex((host, port))
        socks.append(sock)
    return socks


def open_files_limit(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-files line")


async def test_idle_connections_leave_room_for_a_real_request(tmp_path: Path) -> None:
    mock = await start_mock(tmp_path)
    socks: list[socket.socket] = []
    try:
        raw = raw_config(tmp_path, mock.url + "/api/v1", limits={"max_connections_per_client": 16})
        gate = await start_gate(
            write_config(tmp_path / "gate.yaml", raw), tmp_path, preexec_fn=_low_fd_limit
        )
        try:
            url = urlsplit(gate.url)
            assert url.hostname is not None and url.port is not None
            socks = idle_connections(url.hostname, url.port, IDLE, "127.0.0.2")
            started = time.monotonic()
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
                async with http.post(
                    gate.url + CHAT, json=chat(), headers={"X-Agent-ID": "agent-1"}
                ) as resp:
                    assert resp.status == 200, await resp.text()
            assert time.monotonic() - started < 5
        finally:
            for sock in socks:
                sock.close()
            await gate.stop()
    finally:
        await mock.stop()
    errors = gate.stderr.read_text()
    assert sum(any(m in line for m in RESOURCE_LINES) for line in errors.splitlines()) <= 2


async def test_the_soft_open_files_limit_is_raised_to_the_hard_one(tmp_path: Path) -> None:
    mock = await start_mock(tmp_path)
    try:
        raw = raw_config(tmp_path, mock.url + "/api/v1")
        gate = await start_gate(
            write_config(tmp_path / "gate.yaml", raw), tmp_path, preexec_fn=_soft_fd_limit
        )
        try:
            assert open_files_limit(gate.proc.pid) == (2 * FD_LIMIT, 2 * FD_LIMIT)
        finally:
            await gate.stop()
    finally:
        await mock.stop()


async def _answer(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def served(host: str, port: int, source: str) -> bool:
    """One request from `source`: answered (True) or closed unanswered (False)."""
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
    except ConnectionResetError:
        answer = b""
    finally:
        writer.close()
    return answer.startswith(b"HTTP/1.1 200")


async def test_connections_over_the_caps_are_closed_when_accepted() -> None:
    app = web.Application()
    app.router.add_get("/", _answer)
    runner = CappedRunner(app, 6, 3)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        held = [
            await asyncio.open_connection(host, port, local_addr=("127.0.0.2", 0)) for _ in range(3)
        ]
        assert not await served(host, port, "127.0.0.2")  # that client's share is used
        assert await served(host, port, "127.0.0.3")  # another client is served
        held += [
            await asyncio.open_connection(host, port, local_addr=(f"127.0.0.{i}", 0))
            for i in (4, 5, 6)
        ]
        assert not await served(host, port, "127.0.0.7")  # the total is used
        for _, writer in held:
            writer.close()
        async with asyncio.timeout(5):  # closed ones free their places
            while not await served(host, port, "127.0.0.2"):
                await asyncio.sleep(0.02)
    finally:
        await runner.cleanup()


def test_the_connection_cap_fits_the_open_files_limit() -> None:
    assert connection_cap(4096, 65536) == 4096
    assert connection_cap(4096, 1024) == 480
    assert connection_cap(4096, 10) == 1


async def test_accept_out_of_resource_is_logged_once_per_interval(caplog) -> None:
    loop = asyncio.get_running_loop()
    handler = ResourceErrorLog(interval=60)
    context = {
        "message": "socket.accept() out of system resource",
        "exception": OSError(24, "Too many open files"),
        "socket": None,
    }
    with caplog.at_level(logging.DEBUG):
        for _ in range(1000):
            handler(loop, context)
        handler(loop, {"message": "something else went wrong"})
    resource_lines = [r for r in caplog.records if "out of system resource" in r.getMessage()]
    assert len(resource_lines) == 1
    assert handler.suppressed == 999
    assert any("something else went wrong" in r.getMessage() for r in caplog.records)
