"""How the process runs Python: the event loop and the garbage collector, chosen by the
environment. The gate runs on uvloop when it is installed (the `fast` extra, which
`make` installs), else on asyncio's own loop; `GATE_LOOP=asyncio` or `uvloop` chooses.
`GATE_GC=freeze` (the default) moves everything alive after start-up out of the
collector's sight (`gc.freeze()`) and raises the young-generation threshold so that
per-request objects are collected in fewer, larger passes; `GATE_GC=python` keeps
Python's own settings. The bench decided both (README, bench section). The gate, the
bench's floor and the test suite read the same variables, so all run on one loop."""

from __future__ import annotations

import asyncio
import gc
import importlib.util
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

T = TypeVar("T")

LOOPS = ("asyncio", "uvloop")
GC_MODES = ("freeze", "python")
GC_THRESHOLD = (50_000, 20, 100)  # young generation: every 50k allocations, not 2k


class RuntimeChoiceError(ValueError):
    pass


def default_loop() -> str:
    """uvloop where it is installed, else asyncio's own loop."""
    return "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"


def loop_of(env: Mapping[str, str]) -> str:
    loop = env.get("GATE_LOOP") or default_loop()
    if loop not in LOOPS:
        raise RuntimeChoiceError(f"GATE_LOOP must be one of {', '.join(LOOPS)}, not {loop!r}")
    if loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise RuntimeChoiceError("GATE_LOOP=uvloop needs uvloop: pip install -e '.[fast]'")
    return loop


def gc_mode_of(env: Mapping[str, str]) -> str:
    mode = env.get("GATE_GC") or "freeze"
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
