"""A body shorter than its Content-Length, then a half-close: 400 and its line (finding
16 of issue 12), never a 500 with a traceback. A real gate process: its server keeps
the handler running when the client half-closes, as in production."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

from .procs import start_gate as spawn_gate
from .support import raw_config, request_lines, write_config


async def _half_closed(host: str, port: int, data: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    try:
        async with asyncio.timeout(10):
            await loop.sock_connect(sock, (host, port))
            await loop.sock_sendall(sock, data)
            sock.shutdown(socket.SHUT_WR)  # the half-close: no more body will come
            answer = b""
            while chunk := await loop.sock_recv(sock, 65536):
                answer += chunk
            return answer
    finally:
        sock.close()


async def test_a_body_cut_short_by_a_half_close_answers_400_with_its_line(
    mock, tmp_path: Path
) -> None:
    path = write_config(tmp_path / "gate.yaml", raw_config(tmp_path, mock.base_url))
    gate = await spawn_gate(path, tmp_path)
    try:
        host, port = gate.url.removeprefix("http://").rsplit(":", 1)
        body = b'{"messages": [{"role": "user", "content": "hi"}]}'
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Content-Type: application/json\r\nX-Agent-ID: agent-1\r\n"
            f"Content-Length: {len(body) + 100}\r\n\r\n"
        ).encode()
        answer = await _half_closed(host, int(port), head + body)
    finally:
        assert await gate.stop() == 0
    # aiohttp closes a half-closed connection at once, so the 400 may find no one to read
    # it; when it does arrive it is the 400 in OpenAI's shape.
    if answer:
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line.split()[1:2] == [b"400"], answer
        error = json.loads(rest.partition(b"\r\n\r\n")[2])["error"]
        assert error["type"] == "invalid_request_error" and error["code"] == 400
    assert "Traceback" not in gate.errors()
    lines = [r for r in request_lines(tmp_path / "spend.jsonl") if r["status"] is not None]
    assert [(r["agent_id"], r["status"]) for r in lines] == [("agent-1", 400)]
    assert mock.state.chat_count() == 0
