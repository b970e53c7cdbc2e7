"""The spend-log line, defined once: one typed record per kind of line (`event`), the
fields each carries and what they mean, the functions that build them, and
`event_of`, which every reader (replay, report, compaction, the Postgres sink,
`store-rebuild`) dispatches on. "What fields does a request line have?" is answered
here; mypy holds every writer to it.

The snapshot line is assembled by `gate.books.snapshots` (it walks the books) and the
refusals line by `gate.books.refusals` (it counts), both to the records below. Readers
meet lines from older versions and torn or hand-edited files, so they read fields with
`.get` and check types; a line without a known `event` is passed over.
"""

# No `from __future__ import annotations` here: TypedDict reads NotRequired[...] from
# evaluated annotations (`__required_keys__`, used by tests/test_lines.py).

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, NotRequired, TypedDict

from gate.books.holds import Hold
from gate.core.clock import iso
from gate.core.cost import ZERO

if TYPE_CHECKING:
    from gate.books.tasks import Task

Api = Literal["chat", "responses", "messages", "completions", "embeddings"]


class HoldLine(TypedDict):
    """On disk before the request goes upstream. A second `hold` line for the same
    request adds `generation_id` as soon as upstream names it (for crash recovery)."""

    ts: str
    event: Literal["hold"]
    request_id: str
    agent_id: str
    held: Decimal  # USD reserved for the request
    api: NotRequired[str]  # which inference API (an `Api`); lines before it: chat
    task_id: NotRequired[str]  # the task key the request came with
    tier: NotRequired[str]
    sent: NotRequired[bool]  # false: a send mark (`sent` line) must come first
    generation_id: NotRequired[str]


class SentLine(TypedDict):
    """The send mark: on disk after the connection to upstream is made and before the
    request is written on it. No mark after `sent: false`: it never left the gate."""

    ts: str
    event: Literal["sent"]
    request_id: str
    agent_id: str


class RequestLine(TypedDict):
    """One per request of a known agent, refused ones too (cost 0), and one per hold a
    crash left open (`recovered`). Fields in the order ops read them."""

    request_id: str
    api: str  # an `Api`
    generation_id: str | None  # upstream's id, for GET /api/v1/generation
    agent_id: str | None  # as authenticated (a refusal: as claimed)
    model: str | None  # the model that answered
    tier: str | None
    models_allowed: list[str]  # the tier's models, in the order sent upstream
    stream: bool
    status: int | None  # what upstream said, else the gate's answer
    prompt_tokens: int
    completion_tokens: int
    # Completed at settlement (`settled`, `refused`):
    ts: NotRequired[str]
    event: NotRequired[Literal["request"]]
    cost: NotRequired[Decimal]
    cost_source: NotRequired[str]  # usage | price_table | generation | hold | none
    budget_remaining: NotRequired[Decimal | None]
    latency_ms: NotRequired[float | None]  # None: not measured (settled after a crash)
    task_id: NotRequired[str]
    # Present when they apply:
    client_status: NotRequired[int]  # the status the client got, where it differs (Codex 429)
    client_disconnected: NotRequired[bool]  # the client left before the answer ended
    model_mismatch: NotRequired[bool]  # upstream answered with a model outside the tier
    loop: NotRequired[str]  # the runaway breaker's rule that refused it
    recovered: NotRequired[bool]  # settled after a crash, from its hold line
    recovery: NotRequired[str]  # not_sent: the request never left the gate


class BudgetLine(TypedDict):
    """A budget set through the admin API (`source`: jetpatch for the console sync)."""

    ts: str
    event: Literal["budget"]
    agent_id: str
    budget_total: NotRequired[Decimal]
    budget_spent: NotRequired[Decimal]
    source: NotRequired[str]


class ResetLine(TypedDict):
    ts: str
    event: Literal["reset"]
    agent_id: str
    reason: str  # admin | period
    period_start: NotRequired[str]  # the start a shared store's script rolled to


class TaskLine(TypedDict):
    """A task budget opened: its key is stored as a SHA-256 only."""

    ts: str
    event: Literal["task"]
    task_id: str
    agent_id: str
    name: str | None
    cap: Decimal
    expires_at: str
    key_sha256: str


class TaskEndLine(TypedDict):
    ts: str
    event: Literal["task_end"]
    task_id: str
    agent_id: str
    reason: str | None  # closed | expired
    spent: Decimal


class SnapshotLine(TypedDict):
    """The whole state (`gate.books.snapshots`); replay starts from the last one."""

    event: Literal["snapshot"]
    ts: str
    agents: dict[str, dict[str, Any]]  # budget_total, total_set_by_admin, spent, period_start
    holds: dict[str, dict[str, Any]]  # request_id -> agent_id, held, generation_id, sent, api
    tasks: NotRequired[dict[str, dict[str, Any]]]


class RefusalsLine(TypedDict):
    """Requests refused before a known agent was authenticated, counted
    (`gate.books.refusals`)."""

    ts: str
    event: Literal["refusals"]
    since: str
    count: int
    reasons: list[dict[str, Any]]  # {status, reason, count}
    agent_ids: dict[str, int]  # claimed id -> count (at most 32 named)
    agent_ids_omitted: int


Line = (
    HoldLine
    | SentLine
    | RequestLine
    | BudgetLine
    | ResetLine
    | TaskLine
    | TaskEndLine
    | SnapshotLine
    | RefusalsLine
)


RECORDS: dict[str, type] = {
    "hold": HoldLine,
    "sent": SentLine,
    "request": RequestLine,
    "budget": BudgetLine,
    "reset": ResetLine,
    "task": TaskLine,
    "task_end": TaskEndLine,
    "snapshot": SnapshotLine,
    "refusals": RefusalsLine,
}  # event -> its record


def event_of(record: object) -> str | None:
    """The kind of a line read back (a key of RECORDS), None for anything else."""
    if not isinstance(record, Mapping):
        return None
    event = record.get("event")
    return event if isinstance(event, str) and event in RECORDS else None


# -- building -------------------------------------------------------------------------


def request_line(request_id: str, api: str = "chat") -> RequestLine:
    """A request line's fields before anything is known: filled in as the request goes."""
    return {
        "request_id": request_id,
        "api": api,
        "generation_id": None,
        "agent_id": None,
        "model": None,
        "tier": None,
        "models_allowed": [],
        "stream": False,
        "status": None,
        "prompt_tokens": 0,
        "completion_tokens": 0,
    }


def hold_line(hold: Hold, tier: str, now: datetime) -> HoldLine:
    line: HoldLine = {
        "ts": iso(now),
        "event": "hold",
        "request_id": hold.request_id,
        "agent_id": hold.agent_id,
        "api": hold.api,  # a crash's recovered line names it too
        "held": hold.amount,
        "tier": tier,
    }
    if hold.task_id is not None:
        line["task_id"] = hold.task_id
    if hold.sent is False:
        line["sent"] = False
    return line


def generation_line(hold: Hold, generation_id: str, now: datetime) -> HoldLine:
    return {
        "ts": iso(now),
        "event": "hold",
        "request_id": hold.request_id,
        "agent_id": hold.agent_id,
        "held": hold.amount,
        "generation_id": generation_id,
    }


def sent_line(hold: Hold, now: datetime) -> SentLine:
    return {
        "ts": iso(now),
        "event": "sent",
        "request_id": hold.request_id,
        "agent_id": hold.agent_id,
    }


def budget_line(
    ts: str,
    agent_id: str,
    budget_total: Decimal | None,
    budget_spent: Decimal | None,
    source: str | None,
) -> BudgetLine:
    line: BudgetLine = {"ts": ts, "event": "budget", "agent_id": agent_id}
    if budget_total is not None:
        line["budget_total"] = budget_total
    if budget_spent is not None:
        line["budget_spent"] = budget_spent
    if source is not None:
        line["source"] = source
    return line


def reset_line(ts: str, agent_id: str, reason: str) -> ResetLine:
    return {"ts": ts, "event": "reset", "agent_id": agent_id, "reason": reason}


def task_line(task: "Task", now: datetime) -> TaskLine:
    return {
        "ts": iso(now),
        "event": "task",
        "task_id": task.task_id,
        "agent_id": task.agent_id,
        "name": task.name,
        "cap": task.cap,
        "expires_at": iso(task.expires_at),
        "key_sha256": task.key_sha256,
    }


def task_end_line(task: "Task", now: datetime) -> TaskEndLine:
    return {
        "ts": iso(now),
        "event": "task_end",
        "task_id": task.task_id,
        "agent_id": task.agent_id,
        "reason": task.ended,
        "spent": task.spent,
    }


def settled(
    line: RequestLine, ts: str, hold: Hold, cost: Decimal, remaining: Decimal | None
) -> None:
    """Complete a settled request's line (in place)."""
    line["ts"] = ts
    line["event"] = "request"
    line["request_id"] = hold.request_id
    line["agent_id"] = hold.agent_id
    line["cost"] = cost
    line["budget_remaining"] = remaining
    line.setdefault("latency_ms", None)  # on every request line (SPEC), even a recovered one
    if hold.task_id is not None:
        line["task_id"] = hold.task_id


def refused(line: RequestLine, ts: str, remaining: Decimal | None) -> None:
    """Complete the line of a request that never went upstream (in place): cost 0."""
    line["ts"] = ts
    line["event"] = "request"
    line["cost"] = ZERO
    line["cost_source"] = "none"
    line["budget_remaining"] = remaining
