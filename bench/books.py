"""The mock's control endpoints and the books: the gate's spend log against the mock's bill.

After every gate run, the cost of the request lines the gate wrote since the mock was
reset must equal what the mock charged, exactly, as Decimals.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import aiohttp


class Mock:
    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url

    async def reset(self) -> None:
        async with self.session.post(self.url + "/_mock/reset") as resp:
            resp.raise_for_status()

    async def faults(self, faults: list[dict[str, Any]]) -> None:
        async with self.session.post(self.url + "/_mock/faults", json=faults) as resp:
            resp.raise_for_status()

    async def stats(self) -> dict[str, Any]:
        async with self.session.get(self.url + "/_mock/stats") as resp:
            resp.raise_for_status()
            found: dict[str, Any] = await resp.json()
            return found


@dataclass(slots=True)
class Tally:
    """What a stretch of the spend log says: request lines (all, and those of requests
    that went upstream, i.e. had a hold), their cost, unsettled holds."""

    requests: int
    admitted: int
    cost: Decimal
    open_holds: int
    statuses: dict[int, int]


def tally(lines: list[bytes]) -> Tally:
    held: set[str] = set()
    settled: set[str] = set()
    cost = Decimal(0)
    statuses: dict[int, int] = {}
    count = 0
    for raw in lines:
        if not raw.strip():
            continue
        record = json.loads(raw, parse_float=Decimal)
        event = record.get("event")
        if event == "hold":
            held.add(record["request_id"])
        elif event == "request":
            count += 1
            settled.add(record["request_id"])
            cost += Decimal(str(record.get("cost") or 0))
            status = int(record.get("status") or 0)
            statuses[status] = statuses.get(status, 0) + 1
    return Tally(count, len(held & settled), cost, len(held - settled), statuses)


class SpendCursor:
    """Reads the spend log from a mark onwards (whole lines only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def lines(self) -> list[bytes]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n")
        return data[: end + 1].split(b"\n") if end >= 0 else []


class LogReader(Protocol):
    def mark(self) -> None: ...

    def lines(self) -> list[bytes]: ...


class SpendCursors:
    """Several instances' spend logs read as one, each from its own mark."""

    def __init__(self, *cursors: SpendCursor) -> None:
        self.cursors = cursors

    def mark(self) -> None:
        for cursor in self.cursors:
            cursor.mark()

    def lines(self) -> list[bytes]:
        return [line for cursor in self.cursors for line in cursor.lines()]


@dataclass(slots=True)
class BooksResult:
    ok: bool
    requests: int
    gate_cost: Decimal
    mock_cost: Decimal
    mock_requests: int
    detail: str
    statuses: dict[int, int]

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "requests": self.requests,
            "gate_cost": str(self.gate_cost),
            "mock_cost": str(self.mock_cost),
            "mock_requests": self.mock_requests,
            "detail": self.detail,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
        }


def compare(found: Tally, mock_stats: dict[str, Any]) -> BooksResult:
    mock_cost = Decimal(mock_stats["total_charged_str"])
    mock_requests = int(mock_stats["chat_requests"])
    problems = []
    if found.cost != mock_cost:
        problems.append(f"spend log Σcost {found.cost} != mock total_charged {mock_cost}")
    if found.open_holds:
        problems.append(f"{found.open_holds} holds never settled")
    if found.admitted != mock_requests:
        problems.append(f"{found.admitted} admitted requests, {mock_requests} reached upstream")
    return BooksResult(
        not problems,
        found.requests,
        found.cost,
        mock_cost,
        mock_requests,
        "; ".join(problems),
        found.statuses,
    )


async def check_books(cursor: LogReader, mock: Mock, patience: float = 10.0) -> BooksResult:
    """Wait until the gate has settled every hold it wrote since the mark (and the line
    count matches the mock's), then compare the money."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    while True:
        found = tally(cursor.lines())
        stats = await mock.stats()
        result = compare(found, stats)
        if result.ok or loop.time() > deadline:
            return result
        await asyncio.sleep(0.05)
