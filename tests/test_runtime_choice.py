"""gate.ops.runtime: the loop and gc switches read from the environment."""

from __future__ import annotations

import asyncio
import gc
import importlib.util

import pytest

from gate.ops import runtime


async def _loop_class() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_the_default_loop_is_uvloop_where_installed_and_asyncio_can_be_chosen() -> None:
    expected = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    assert runtime.run(_loop_class(), {}).startswith(expected)
    assert runtime.run(_loop_class(), {"GATE_LOOP": "asyncio"}).startswith("asyncio")


def test_uvloop_runs_the_coroutine_on_uvloop() -> None:
    pytest.importorskip("uvloop")
    assert runtime.run(_loop_class(), {"GATE_LOOP": "uvloop"}).startswith("uvloop")


def test_unknown_choices_are_refused() -> None:
    with pytest.raises(runtime.RuntimeChoiceError):
        runtime.loop_of({"GATE_LOOP": "trio"})
    with pytest.raises(runtime.RuntimeChoiceError):
        runtime.gc_mode_of({"GATE_GC": "off"})


def test_freeze_by_default_sets_threshold_and_python_leaves_gc_alone() -> None:
    before = gc.get_threshold()
    try:
        runtime.after_startup({"GATE_GC": "python"})
        assert gc.get_threshold() == before
        runtime.after_startup({})
        assert gc.get_threshold() == runtime.GC_THRESHOLD
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
