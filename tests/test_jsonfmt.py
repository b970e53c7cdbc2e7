"""gate.core.jsonfmt.dumps: one encoder made once, byte for byte what `json.dumps` with
the same options writes; a non-finite number still becomes null."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from gate.books.spendlog import encode_line
from gate.core.jsonfmt import _default, dumpb, dumps, loads

SAMPLES: list[Any] = [
    {"ts": "2026-12-03T12:27:25.123Z", "cost": Decimal("0.000123"), "n": 3, "ok": True},
    {"nested": {"list": [1, 2.5, None, "é✓"], "d": Decimal("1E+2")}, "empty": {}},
    ["a", Decimal("-0.5"), [], 1e300],
    'just a string "quoted"',
    12,
]


def reference(value: Any, **kwargs: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=_default, allow_nan=False, **kwargs)


@pytest.mark.parametrize("value", SAMPLES)
def test_dumps_writes_compact_json_that_reads_back_as_json_dumps_would(value: Any) -> None:
    assert json.loads(dumps(value)) == json.loads(reference(value))
    assert dumps(value, sort_keys=True) == reference(value, sort_keys=True, ensure_ascii=False)
    assert dumpb(value) == dumps(value).encode()  # UTF-8, not \\u escapes


def test_what_orjson_cannot_write_is_still_written() -> None:
    huge = {"n": 2**70, "cost": Decimal("0.5")}  # an integer past 64 bits
    assert dumps(huge) == '{"n":1180591620717411303424,"cost":0.5}'
    assert dumpb(huge, newline=True).endswith(b"0.5}\n")


def test_spend_line_is_the_compact_json_and_one_newline() -> None:
    record = {"event": "settle", "cost": Decimal("0.25"), "agent_id": "agent-1"}
    assert encode_line(record) == b'{"event":"settle","cost":0.25,"agent_id":"agent-1"}\n'


def test_non_finite_becomes_null_on_both_paths() -> None:
    value = {"a": float("inf"), "b": [Decimal("NaN"), 1], "c": Decimal("1E+400")}
    assert dumps(value) == '{"a":null,"b":[null,1],"c":null}'
    assert dumps(value, sort_keys=True) == '{"a":null,"b":[null,1],"c":null}'


def test_reading_refuses_what_is_not_json_and_reads_half_an_emoji() -> None:
    assert loads(b'{"a": "\\ud83d"}') == {"a": "\ud83d"}  # as json and JavaScript read it
    assert dumpb({"a": "\ud83d"}) == b'{"a":"\\ud83d"}'  # and written back as it came
    for raw in (b'{"a": NaN}', b'{"a": Infinity, "b": "\\ud83d"}', b"{"):
        with pytest.raises(ValueError):
            loads(raw)
