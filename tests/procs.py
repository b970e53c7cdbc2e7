"""Real subprocesses for start-up, restart and crash tests."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable, Mapping
from contextlib import suppress
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 20.0


class Proc:
    def __init__(self, proc: asyncio.subprocess.Process, url: str, stderr: Path) -> None:
        self.proc = proc
        self.url = url
        self.stderr = stderr

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int:
        if self.proc.returncode is None:
            with suppress(ProcessLookupError):
                self.proc.send_signal(sig)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            return await self.proc.wait()

    def errors(self) -> str:
        return self.stderr.read_text() if self.stderr.exists() else ""


async def spawn(
    module: str,
    args: list[str],
    stderr: Path,
    env: Mapping[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> Proc:
    """Start `python -m module args`; wait for its 'listening on URL' line."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with stderr.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            env=full_env,
            cwd=ROOT,
            preexec_fn=preexec_fn,
        )
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"{module} did not start:\n{stderr.read_text()}") from None
    if b"listening on " not in line:
        await proc.wait()
        raise AssertionError(f"{module} exited: {line!r}\n{stderr.read_text()}")
    return Proc(proc, line.decode().rsplit(" ", 1)[1].strip(), stderr)


async def start_mock(tmp_path: Path) -> Proc:
    return await spawn(
        "mock_upstream",
        ["--port", "0", "--log", str(tmp_path / "openrouter_requests.log")],
        tmp_path / "mock.stderr",
    )


async def start_gate(
    config: Path,
    tmp_path: Path,
    env: Mapping[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> Proc:
    return await spawn(
        "gate", ["--config", str(config), "--port", "0"], tmp_path / "gate.stderr", env, preexec_fn
    )
