"""Closed-loop throughput with wrk (a C load generator, so the client is never the
bottleneck), or with the Python client when wrk is absent (smoke runs only)."""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .load import Target

LUA = Path(__file__).resolve().parent / "wrk_post.lua"


def wrk_path() -> str | None:
    return shutil.which("wrk")


@dataclass(slots=True)
class WrkResult:
    requests: int
    seconds: float
    errors: int  # socket errors and non-2xx answers
    p50_ms: float
    p99_ms: float
    client_cpu_seconds: float  # wrk's own CPU time


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(command: list[str], env: dict[str, str], timeout: float) -> tuple[str, float]:
    before = _children_cpu()
    done = subprocess.run(  # runs in a worker thread
        command, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()[:500]}")
    return done.stdout, _children_cpu() - before


async def run_wrk(target: Target, connections: int, seconds: float, threads: int = 1) -> WrkResult:
    """wrk -t{threads} -c{connections} -d{seconds}s against the target's chat URL."""
    binary = wrk_path()
    if binary is None:
        raise RuntimeError("wrk is not installed (apt-get install -y wrk)")
    headers = "\n".join(f"{k}: {v}" for k, v in target.headers.items())
    env = {**os.environ, "WRK_BODY": target.body.decode(), "WRK_HEADERS": headers}
    command = [
        binary,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        target.url,
    ]
    out, cpu = await asyncio.to_thread(_run, command, env, seconds + 30)
    return parse(out, cpu)


def parse(out: str, cpu: float) -> WrkResult:
    for line in out.splitlines():
        if line.startswith("WRK_SUMMARY "):
            fields = dict(part.split("=", 1) for part in line.split()[1:])
            values = {k: int(v) for k, v in fields.items()}
            errors = sum(values[k] for k in ("connect", "read", "write", "status", "timeout"))
            return WrkResult(
                requests=values["requests"],
                seconds=values["duration_us"] / 1e6,
                errors=errors,
                p50_ms=values["p50_us"] / 1000,
                p99_ms=values["p99_us"] / 1000,
                client_cpu_seconds=cpu,
            )
    raise RuntimeError(f"no summary in wrk's output:\n{out[-1000:]}")
