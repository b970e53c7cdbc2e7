"""`python -m gate report`: the spend log summarised, streaming through any number of
(rotated) files in bounded memory — one running total per group, nothing else kept."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from gate.books.lines import event_of
from gate.books.logscan import read_records

GROUPS = ("agent", "model", "day", "tier", "api", "task")
FORMATS = ("table", "json", "csv")
_FIELD = {"agent": "agent_id", "model": "model", "tier": "tier", "api": "api", "task": "task_id"}
_DEFAULT = {"api": "chat"}  # lines written before the field existed were all chat


@dataclass(slots=True)
class Totals:
    requests: int = 0
    refused: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: Decimal = field(default_factory=Decimal)

    def add(self, line: dict[str, Any]) -> None:
        self.requests += 1
        cost = line.get("cost") or 0
        status = line.get("status")
        if isinstance(status, int) and status >= 400 and not cost:
            self.refused += 1
        self.prompt_tokens += _int(line.get("prompt_tokens"))
        self.completion_tokens += _int(line.get("completion_tokens"))
        self.usd += Decimal(str(cost))


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def request_lines(
    paths: Iterable[Path], since: str | None, agent: str | None
) -> Iterator[dict[str, Any]]:
    for path in paths:
        for record in read_records(path):
            if event_of(record) != "request":
                continue
            if since is not None and str(record.get("ts", "")) < since:
                continue
            if agent is not None and record.get("agent_id") != agent:
                continue
            yield record


def summarise(lines: Iterable[dict[str, Any]], by: str) -> dict[str, Totals]:
    groups: dict[str, Totals] = {}
    for line in lines:
        if by == "day":
            key = str(line.get("ts", ""))[:10]
        else:
            key = str(line.get(_FIELD[by]) or _DEFAULT.get(by, "-"))
        totals = groups.get(key)
        if totals is None:
            totals = groups[key] = Totals()
        totals.add(line)
    return dict(sorted(groups.items()))


def render(groups: dict[str, Totals], by: str, fmt: str) -> str:
    total = Totals()
    for t in groups.values():
        total.requests += t.requests
        total.refused += t.refused
        total.prompt_tokens += t.prompt_tokens
        total.completion_tokens += t.completion_tokens
        total.usd += t.usd
    rows = [(k, t) for k, t in groups.items()]
    if fmt == "json":
        return json.dumps(
            {"by": by, "groups": {k: _row(t) for k, t in rows}, "total": _row(total)}, indent=2
        )
    header: list[object] = [by, "requests", "refused", "prompt_tokens", "completion_tokens", "usd"]
    table: list[list[object]] = [[k, *_cells(t)] for k, t in rows] + [["TOTAL", *_cells(total)]]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(table)
        return out.getvalue().rstrip("\n")
    cells = [[str(c) for c in row] for row in [header, *table]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    rule = "  ".join("-" * w for w in widths)
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in cells
    ]
    lines.insert(1, rule)
    lines.insert(len(lines) - 1, rule)
    return "\n".join(lines)


def _row(t: Totals) -> dict[str, Any]:
    return {
        "requests": t.requests,
        "refused": t.refused,
        "prompt_tokens": t.prompt_tokens,
        "completion_tokens": t.completion_tokens,
        "usd": str(t.usd),
    }


def _cells(t: Totals) -> list[object]:
    return [t.requests, t.refused, t.prompt_tokens, t.completion_tokens, f"{t.usd:.6f}"]
