"""Instructions per request, counted by valgrind's callgrind: the figure to compare two
versions of the gate by on a machine whose CPU time is noisy (a VM sharing its host).

`python -m bench.instructions [--floor] [--tree DIR] [--low N] [--high N]` starts the
mock, then the gate (or the floor proxy, `--floor`) under callgrind twice, sends `--low`
and then `--high` JSON requests (32 at a time), and prints (high − low) ÷ the difference
in requests: start-up and shutdown cancel out. `--tree DIR` runs the `gate` package of
another checkout (a worktree of an older commit) for an A/B. Counts repeat to about
0.5 %; the CPU time of `make bench` swings 10–30 % on the same machine within an hour.
Needs valgrind; about 75 s a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
from pathlib import Path

import aiohttp

from .procs import ROOT, start_mock
from .world import direct_target, gate_target, write_gate_config

CONCURRENCY = 32
COLLECTED = re.compile(rb"Collected : (\d+)")


def collected(stderr: bytes) -> int:
    """The instruction count callgrind reports when its process ends."""
    found = COLLECTED.search(stderr)
    if found is None:
        raise RuntimeError(
            "callgrind reported no count:\n" + stderr[-2000:].decode(errors="replace")
        )
    return int(found.group(1))


async def count(tree: Path, floor: bool, requests: int, mock_url: str, work: Path) -> int:
    """Run one process under callgrind through `requests` requests; its whole count."""
    if floor:
        command = ["-m", "bench.floor", "--upstream", mock_url]
    else:
        config = write_gate_config(work / "gate.json", work / f"spend-{requests}.jsonl", mock_url)
        command = ["-m", "gate", "--config", str(config), "--port", "0", "--log-level", "WARNING"]
    proc = await asyncio.create_subprocess_exec(
        "valgrind", "--tool=callgrind", f"--callgrind-out-file={work / 'callgrind.out'}",
        sys.executable, *command,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONHASHSEED": "0"},
        cwd=tree,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 600)
    if b"listening on " not in line:
        raise RuntimeError(f"did not start: {(await proc.stderr.read())[-2000:]!r}")
    url = line.decode().rsplit(" ", 1)[1].strip()
    target = direct_target(url) if floor else gate_target(url)
    limit = asyncio.Semaphore(CONCURRENCY)
    async with aiohttp.ClientSession() as session:

        async def one() -> None:
            async with (
                limit,
                session.post(target.url, data=target.body, headers=target.headers) as r,
            ):
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"answered {r.status}")

        await asyncio.gather(*(one() for _ in range(requests)))
    proc.terminate()
    _, stderr = await proc.communicate()
    return collected(stderr)


async def run(tree: Path, floor: bool, low: int, high: int) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-instr-") as folder:
        work = Path(folder)
        mock = await start_mock(work)
        try:
            few = await count(tree, floor, low, mock.url, work)
            many = await count(tree, floor, high, mock.url, work)
        finally:
            await mock.stop()
    return (many - few) / (high - low)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument("--floor", action="store_true", help="the floor proxy, not the gate")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout to run")
    parser.add_argument("--low", type=int, default=200)
    parser.add_argument("--high", type=int, default=1200)
    args = parser.parse_args(argv)
    per_request = asyncio.run(run(args.tree.resolve(), args.floor, args.low, args.high))
    what = "floor" if args.floor else f"gate ({args.tree})"
    print(f"{what}: {per_request / 1000:.1f} k instructions per request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
