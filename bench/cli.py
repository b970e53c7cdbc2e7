"""`python -m bench [--smoke] [--out PATH] [--keep] [--no-wrk]`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gate.ops import runtime

from .procs import ROOT, StartError
from .report import Row, build_rows, redis_rows, render
from .runner import SECTIONS, Bench, wrk_available
from .settings import FULL, SMOKE, Settings
from .stats import Summary

RESULTS = ROOT / "bench" / "results"
FOREIGN_WARN_PCT = 25.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="every code path, tiny numbers")
    parser.add_argument("--out", type=Path, help="JSON results (default bench/results/)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    parser.add_argument(
        "--no-wrk", action="store_true", help="use the Python client for (a) even if wrk is here"
    )
    parser.add_argument("--repeats", type=int, help="override the number of repeats")
    parser.add_argument(
        "--only", default=SECTIONS, help="run only these sections (e.g. 'ad'; default all)"
    )
    parser.add_argument(
        "--loop", choices=("asyncio", "uvloop"), help="event loop for gate and floor (GATE_LOOP)"
    )
    parser.add_argument("--gc", choices=("freeze", "python"), help="the gate's gc policy (GATE_GC)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="bench: %(message)s", stream=sys.stderr)
    settings: Settings = SMOKE if args.smoke else FULL
    if args.loop:
        os.environ["GATE_LOOP"] = args.loop  # the gate and the floor inherit it
    if args.gc:
        os.environ["GATE_GC"] = args.gc
    if args.repeats:
        settings = Settings(
            **{**asdict(settings), "repeats": args.repeats, "tail_repeats": args.repeats}
        )
    use_wrk = wrk_available() and not args.no_wrk
    if not use_wrk and not settings.smoke and not args.no_wrk:
        print(
            "bench: wrk is not installed (apt-get install -y wrk); a Python load generator"
            " would be the bottleneck in (a). Install wrk or pass --no-wrk.",
            file=sys.stderr,
        )
        return 2
    out = args.out or RESULTS / ("smoke.json" if settings.smoke else "latest.json")
    workdir = Path(tempfile.mkdtemp(prefix="gate-bench-"))
    only = "".join(c for c in SECTIONS if c in args.only)
    bench = Bench(settings, workdir, use_wrk, only)
    try:
        asyncio.run(bench.run())
    except (StartError, RuntimeError, OSError) as exc:
        print(f"bench: FAILED: {exc}", file=sys.stderr)
        print(f"bench: logs kept in {workdir}", file=sys.stderr)
        return 1
    finally:
        if not args.keep and not bench.failures:
            shutil.rmtree(workdir, ignore_errors=True)
    rows = rows_of(bench)
    print(heading(bench))
    print(render(rows))
    print()
    print(footnotes(bench))
    write_json(out, bench, rows)
    print(f"\nresults: {display(out)}")
    if bench.failures:
        print("\nBENCH FAILED:", file=sys.stderr)
        for failure in bench.failures:
            print(f"  - {failure}", file=sys.stderr)
        print(f"  logs kept in {workdir}", file=sys.stderr)
        return 1
    return 0


def display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def rows_of(bench: Bench) -> list[Row]:
    s = bench.s
    books_ok = all(b.ok for b in bench.books) and bool(bench.books)
    requests = sum(b.requests for b in bench.books)
    books = Row(
        "",
        "books: Σ cost == mock charges",
        "",
        "exact" if books_ok else "DIFFER",
        f"{len(bench.books)} runs, {requests} req",
        target="exact",
        ok=books_ok,
    )
    lost = [f for f in bench.failures if "lost or reordered" in f]
    chunks = Row(
        "c",
        "every chunk arrived, in order",
        "",
        f"{bench.meta['streams_checked']} streams",
        f"{len(lost)} broken runs",
        target="none lost",
        ok=not lost,
    )
    redis = bench.meta.get("redis")
    extra = redis_rows(bench.series, redis, s.connections) if redis and "r" in bench.only else []
    rows = build_rows(
        bench.series,
        [rate for rate, _ in s.rates],
        s.held,
        s.log_sizes,
        f"{s.streams}×{s.stream_chunks}",
        books,
        chunks,
        bool(bench.meta.get("spend_log_fsync_shipped")),
        s.connections,
        s.restart_tail,
        extra,
    )
    # ("" is in every string: the books row shows only when some run was booked)
    return [r for r in rows if r.section in bench.only if r.section or bench.books]


def heading(bench: Bench) -> str:
    s = bench.s
    mode = "SMOKE (numbers meaningless)" if s.smoke else f"{s.repeats} repeat(s)"
    return (
        f"Execwall OR Gate bench — {mode}; median (min–max); {os.cpu_count()} CPUs,"
        f" Python {platform.python_version()}, loop: {runtime.loop_of(os.environ)},"
        f" gc: {runtime.gc_mode_of(os.environ)}, load: {bench.meta.get('load_generator')},"
        f" {bench.meta.get('wall_seconds')} s\n"
    )


def footnotes(bench: Bench) -> str:
    s = bench.s
    by_section = [
        (
            "a",
            f"(a) {s.connections} keep-alive connections, closed loop, {s.throughput_seconds:g}"
            " s a run; CPU = gate utime+stime over the run ÷ requests served.",
        ),
        ("b", "(b) open loop: requests sent on a fixed schedule, latency from the scheduled time."),
        (
            "c",
            f"(c) {s.streams} streams at once, {s.stream_chunks} chunks"
            f" {s.chunk_delay * 1000:g} ms apart, {s.stream_waves} wave(s) a run;"
            " first chunk = first content chunk.",
        ),
        ("d", "(d) a fresh gate each time; peak = VmHWM; KiB/stream = (peak − idle) ÷ streams."),
        ("e", "(e) gate.books.spendlog.SpendLog in-process."),
        ("f", "(f) from spawn to the 'listening' line."),
    ]
    if "skipped" not in bench.meta.get("redis", {"skipped": 1}):
        by_section.append(
            (
                "r",
                "(r) direct column: the gate of (a)–(c), on the JSONL store; gate column: the"
                " Redis store (one gate, or two sharing one redis-server, the connections split"
                " between them); overhead: Redis against JSONL, same repeat; no noise floor of"
                f" its own. {s.connections} connections, {s.throughput_seconds:g} s a run; CPU ="
                " gate utime+stime ÷ requests served, summed over the gates. Budget edge: one"
                " small hard-capped agent's requests sent all at once, alternately to each"
                " gate; spent as Redis has it; peak = spent + held replayed from both logs.",
            )
        )
    notes = [
        "overhead: gate − direct in the same repeat (throughput: gate ÷ direct);"
        " noise floor: a second direct run against the first.",
        "floor: the thinnest aiohttp proxy (bench/floor.py) in the same repeats;"
        " gate ÷ floor: the gate's overhead over direct ÷ the floor's, then gate − floor in"
        " ms (throughput, CPU, RSS: the gate's figure ÷ the floor's); n/a where the floor"
        " added nothing over direct.",
        *(note for section, note in by_section if section in bench.only),
    ]
    client = [
        max(values)
        for key, values in bench.series.items()
        if key[0] in "bc" and key.endswith("client_cpu_pct") and values
    ]
    foreign = {
        key: values
        for key, values in bench.series.items()
        if key.endswith("foreign_cpu_pct") and values
    }
    if foreign:
        runs = [(v, key.split(".")[0]) for key, values in foreign.items() for v in values]
        worst, section = max(runs)
        busy = sum(1 for v, _ in runs if v > FOREIGN_WARN_PCT)
        notes.append(
            f"other processes on the machine: at most {worst:.0f} % of a core during a run"
            f" (worst in ({section})); {busy} of {len(runs)} runs above"
            f" {FOREIGN_WARN_PCT:.0f} %."
        )
        if busy > len(runs) // 10:
            bench.warnings.append(
                f"the machine was busy with other work in {busy} of {len(runs)} runs:"
                " the numbers are noisier than the noise floor shows; run again when it is idle"
            )
    if client:
        notes.append(
            f"(b), (c) load from the bench's Python client, at most {max(client):.0f} % of a"
            " core in any run."
        )
    for warning in bench.warnings:
        notes.append(f"warning: {warning}")
    return "\n".join(notes)


def write_json(path: Path, bench: Bench, rows: list[Row]) -> None:
    payload: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": asdict(bench.s),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "meta": bench.meta,
        "series": {k: Summary.of(v).as_json() for k, v in sorted(bench.series.items())},
        "rows": [
            {
                "section": r.section,
                "metric": r.metric,
                "direct": r.direct,
                "floor": r.floor,
                "gate": r.gate,
                "overhead": r.overhead,
                "noise": r.noise,
                "gate_per_floor": r.ratio,
                "target": r.target,
                "verdict": r.verdict,
                "floor_target": r.floor_target,
                "floor_verdict": r.floor_verdict,
            }
            for r in rows
        ],
        "targets_missed": [r.metric for r in rows if r.ok is False]
        + [f"{r.metric} (against the floor)" for r in rows if r.floor_ok is False],
        "books": [b.as_json() for b in bench.books],
        "failures": bench.failures,
        "warnings": bench.warnings,
        "ok": not bench.failures,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
