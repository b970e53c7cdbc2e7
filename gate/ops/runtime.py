"""How the process runs Python: the event loop and the garbage collector, chosen by the
environment. `GATE_LOOP=uvloop` runs on uvloop (the `fast` extra) instead of asyncio's
default loop; `GATE_GC=freeze` moves everything alive after start-up out of the
collector's sight (`gc.freeze()`) and raises the young-generation threshold so that
per-request objects are collected in fewer, larger passes. Both are off by default: the
bench decides (README, bench section). The gate and the bench's floor read the same
variables, so both can be measured on the same loop."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

T = TypeVar("T")

LOOPS = ("asyncio", "uvloop")
GC_MODES = ("default", "freeze")
GC_THRESHOLD = (50_000, 20, 100)  # young generation: every 50k allocations, not 2k


class RuntimeChoiceError(ValueError):
    pass


def loop_of(env: Mapping[str, str]) -> str:
    loop = env.get("GATE_LOOP", "asyncio") or "asyncio"
    if loop not in LOOPS:
        raise RuntimeChoiceError(f"GATE_LOOP must be one of {', '.join(LOOPS)}, not {loop!r}")
    return loop


def gc_mode_of(env: Mapping[str, str]) -> str:
    mode = env.get("GATE_GC", "default") or "default"
    if mode not in GC_MODES:
        raise RuntimeChoiceError(f"GATE_GC must be one of {', '.join(GC_MODES)}, not {mode!r}")
    return mode


def after_startup(env: Mapping[str, str]) -> None:
    """Call once, when the app is built and about to serve."""
    if gc_mode_of(env) == "freeze":
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLD)


def run(main: Coroutine[Any, Any, T], env: Mapping[str, str]) -> T:
    """`asyncio.run(main)` on the loop the environment names."""
    runner: Callable[[Coroutine[Any, Any, T]], T] = asyncio.run
    if loop_of(env) == "uvloop":
        import uvloop  # optional: the `fast` extra

        runner = uvloop.run
    return runner(main)
