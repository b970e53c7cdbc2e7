"""The mock and the gate as real subprocesses, and what /proc says about them."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import sys
import time
from contextlib import suppress
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
FD_WANTED = 65536


class Proc:
    """A child that announced `... listening on URL`; `spawn_seconds` is how long that took."""

    def __init__(
        self, name: str, proc: asyncio.subprocess.Process, url: str, stderr: Path, spawn: float
    ) -> None:
        self.name = name
        self.proc = proc
        self.url = url
        self.stderr = stderr
        self.spawn_seconds = spawn

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def rss_kib(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) in KiB."""
        return rss_kib(self.pid)

    def errors(self, last: int = 4000) -> str:
        return _tail(self.stderr, last)

    async def stop(self, grace: float = 40.0) -> int:
        if self.proc.returncode is None:
            with suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), grace)
        except TimeoutError:
            with suppress(ProcessLookupError):
                self.proc.kill()
            return await self.proc.wait()


class StartError(RuntimeError):
    pass


async def spawn(
    name: str, module: str, args: list[str], stderr: Path, ready_timeout: float = 60.0
) -> Proc:
    """Start `python -m module args` and wait for its `listening on URL` line."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with stderr.open("ab") as err:
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            env=env,
            cwd=ROOT,
        )
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), ready_timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise StartError(f"{name} did not start in {ready_timeout:.0f}s") from None
    elapsed = time.perf_counter() - started
    if b"listening on " not in line:
        await proc.wait()
        raise StartError(f"{name} exited before listening: {line!r}\n{_tail(stderr)}")
    return Proc(name, proc, line.decode().rsplit(" ", 1)[1].strip(), stderr, elapsed)


async def start_mock(workdir: Path) -> Proc:
    return await spawn(
        "mock",
        "mock_upstream",
        ["--port", "0", "--log", str(workdir / "openrouter_requests.log")],
        workdir / "mock.stderr",
    )


async def start_gate(config: Path, workdir: Path, label: str = "gate") -> Proc:
    return await spawn(
        label,
        "gate",
        ["--config", str(config), "--port", "0", "--log-level", "WARNING"],
        workdir / f"{label}.stderr",
        ready_timeout=300.0,
    )


async def start_floor(mock_url: str, workdir: Path, label: str = "floor") -> Proc:
    """The thinnest aiohttp proxy (bench/floor.py) in front of the mock."""
    return await spawn(
        label, "bench.floor", ["--upstream", mock_url, "--port", "0"], workdir / f"{label}.stderr"
    )


def _tail(path: Path, size: int = 2000) -> str:
    return path.read_text(errors="replace")[-size:] if path.exists() else ""


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw.rsplit(")", 1)[1].split()
    # after the command: state is field 3 of the man page, utime 14 and stime 15
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_kib(pid: int) -> tuple[int, int]:
    found = {"VmRSS": 0, "VmHWM": 0}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in found:
            found[key] = int(value.split()[0])
    return found["VmRSS"], found["VmHWM"]


def machine_busy_seconds() -> float:
    """CPU time all processes on the machine spent busy so far (all CPUs), /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICKS


class Foreign:
    """How much CPU processes other than the bench's own used during a window: the
    machine's busy time less the gate's, the mock's, the bench's and its reaped
    children's (wrk). A busy neighbour makes every number noisier."""

    def __init__(self, *procs: Proc) -> None:
        self.pids = [p.pid for p in procs]
        self.start = self._own()
        self.busy = machine_busy_seconds()
        self.wall = time.perf_counter()

    def _own(self) -> float:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        total = time.process_time() + children.ru_utime + children.ru_stime
        for pid in self.pids:
            with suppress(OSError):
                total += cpu_seconds(pid)
        return total

    def percent(self) -> float:
        """Other processes' CPU over the window, in % of one core."""
        busy = machine_busy_seconds() - self.busy
        own = self._own() - self.start
        return max(0.0, 100 * (busy - own) / (time.perf_counter() - self.wall))


def raise_fd_limit(wanted: int = FD_WANTED) -> int:
    """Raise RLIMIT_NOFILE towards `wanted` (up to the hard limit); children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft
