"""What the mock remembers: queued faults, received requests, billed generations."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

_INT = "int"
_FLOAT = "float"
_BOOL = "bool"
_STR = "str"


@dataclass
class Fault:
    """How to misbehave for ONE inference request (of any API); queued FIFO in
    `MockState.faults`.

    Streams: `first_delay` seconds of silence after the opening comment; `stall` seconds
    of silence after `stall_after` content chunks (or after all of them, if fewer): the
    upstream that goes quiet mid-way. Either silence sends a keep-alive comment every
    `keepalive` seconds when that is set. `hang` waits before answering anything at all.
    Like a real provider, the mock notices within a few milliseconds when its client
    leaves during any wait, stops, and bills what it generated (`cancelled: true`).
    `tool_call`: a Messages (Responses) request that offers tools, and holds no answer to
    a call yet, is answered with a `tool_use` block (`function_call` item) calling the
    first tool.
    """

    status: int | None = None
    retry_after: float | None = None
    message: str | None = None
    chunks: int | None = None
    chunk_delay: float = 0.0
    first_delay: float = 0.0
    keepalive: float | None = None
    cut_after: int | None = None
    error_after: int | None = None
    no_cost: bool = False
    no_usage: bool = False
    answer_model: str | None = None
    long_line: int | None = None
    hang: float | None = None
    stall_after: int | None = None
    stall: float = 0.0
    tool_call: bool = False

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Fault:
        """Build a fault from JSON, refusing unknown fields and wrong types (ValueError)."""
        checked = _checked(raw, _FAULT_KINDS, "fault")
        status = checked.get("status")
        if status is not None and not 400 <= status <= 599:
            raise ValueError("fault.status must be an error status, 400..599")
        return cls(**checked)


_FAULT_KINDS: dict[str, str] = {
    "status": _INT,
    "retry_after": _FLOAT,
    "message": _STR,
    "chunks": _INT,
    "chunk_delay": _FLOAT,
    "first_delay": _FLOAT,
    "keepalive": _FLOAT,
    "cut_after": _INT,
    "error_after": _INT,
    "no_cost": _BOOL,
    "no_usage": _BOOL,
    "answer_model": _STR,
    "long_line": _INT,
    "hang": _FLOAT,
    "stall_after": _INT,
    "stall": _FLOAT,
    "tool_call": _BOOL,
}

_CONFIG_KINDS: dict[str, str] = {
    "generation_404_seconds": _FLOAT,
    "expected_key": _STR,
    "default_chunks": _INT,
    "key_limit": _FLOAT,
}
# Settings that must stay numbers (expected_key may be reset to null).
_NOT_NULL = frozenset({"generation_404_seconds", "default_chunks", "key_limit"})


def _checked(raw: Mapping[str, Any], kinds: Mapping[str, str], what: str) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{what} must be a JSON object")
    unknown = sorted(set(raw) - set(kinds))
    if unknown:
        raise ValueError(f"unknown {what} field(s): {', '.join(unknown)}")
    out: dict[str, Any] = {}
    for name, value in raw.items():
        kind = kinds[name]
        if value is None:
            out[name] = None
        elif kind == _BOOL and isinstance(value, bool):
            out[name] = value
        elif kind == _STR and isinstance(value, str):
            out[name] = value
        elif kind == _INT and isinstance(value, int) and not isinstance(value, bool):
            if value < 0:
                raise ValueError(f"{what}.{name} must be >= 0")
            out[name] = value
        elif kind == _FLOAT and isinstance(value, int | float) and not isinstance(value, bool):
            if value < 0:
                raise ValueError(f"{what}.{name} must be >= 0")
            out[name] = float(value)
        else:
            raise ValueError(f"{what}.{name} must be {kind}")
    return out


@dataclass
class ConsoleState:
    """The JetPatch console look-alike (mock_upstream.console): budgets it hands out,
    snapshots it received, and faults (HTTP statuses) queued FIFO, one per console call."""

    budgets: dict[str, Any] = field(default_factory=dict)  # agent -> {"budget_total": n}
    snapshots: list[Any] = field(default_factory=list)  # POST /api/gate/spend bodies
    faults: list[int] = field(default_factory=list)
    expected_key: str | None = None  # set: both calls need `Authorization: Bearer <it>`
    spend_calls: int = 0
    budget_calls: int = 0

    def reset(self) -> None:
        self.budgets.clear()
        self.snapshots.clear()
        self.faults.clear()
        self.expected_key = None
        self.spend_calls = self.budget_calls = 0


@dataclass
class MockState:
    """Everything the mock knows; lives under `MOCK_STATE` in the app, never in a global.

    `generations` maps a generation id to its record; `total_cost` there is a `Decimal`.
    """

    faults: list[Fault] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    generations: dict[str, dict[str, Any]] = field(default_factory=dict)
    generation_404_seconds: float = 0.0
    expected_key: str | None = None
    default_chunks: int = 8
    key_limit: float = 100.0
    # generation id -> time.monotonic() when it finished (drives the 404 window)
    finished_at: dict[str, float] = field(default_factory=dict)
    console: ConsoleState = field(default_factory=ConsoleState)

    def total_charged(self) -> Decimal:
        return sum((g["total_cost"] for g in self.generations.values()), Decimal(0))

    def chat_count(self) -> int:
        return self.api_count("chat")

    def requests_by_api(self) -> dict[str, int]:
        counted: dict[str, int] = {}
        for r in self.requests:
            counted[r["api"]] = counted.get(r["api"], 0) + 1
        return counted

    def api_count(self, api: str) -> int:
        """How many requests `api` received (`chat`, `responses`, `messages`, ...)."""
        return sum(1 for r in self.requests if r.get("api") == api)

    def next_fault(self) -> Fault:
        return self.faults.pop(0) if self.faults else Fault()

    def record_generation(
        self,
        gen_id: str,
        *,
        model: str,
        cost: Decimal,
        tokens_prompt: int,
        tokens_completion: int,
        streamed: bool,
        cancelled: bool,
        finish_reason: str,
        provider: str,
        api: str = "chat",
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": gen_id,
            "model": model,
            "total_cost": cost,
            "tokens_prompt": tokens_prompt,
            "tokens_completion": tokens_completion,
            "streamed": streamed,
            "cancelled": cancelled,
            "created_at": datetime.now(UTC).isoformat(),
            "finish_reason": finish_reason,
            "provider_name": provider,
            "api": api,
        }
        self.generations[gen_id] = record
        self.finished_at[gen_id] = time.monotonic()
        return record

    def visible_generation(self, gen_id: str) -> dict[str, Any] | None:
        """The record, unless unknown or still inside the `generation_404_seconds` window."""
        record = self.generations.get(gen_id)
        if record is None:
            return None
        if time.monotonic() - self.finished_at[gen_id] < self.generation_404_seconds:
            return None
        return record

    def configure(self, raw: Mapping[str, Any]) -> None:
        """Apply `/_mock/config`; all checked before any is set (ValueError)."""
        checked = _checked(raw, _CONFIG_KINDS, "config")
        nulls = sorted(name for name in _NOT_NULL if name in checked and checked[name] is None)
        if nulls:
            raise ValueError(f"config field(s) may not be null: {', '.join(nulls)}")
        for name, value in checked.items():
            setattr(self, name, value)

    def config(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _CONFIG_KINDS}

    def reset(self) -> None:
        self.faults.clear()
        self.requests.clear()
        self.generations.clear()
        self.finished_at.clear()
        self.console.reset()
