"""What a large request body may cost the event loop, decided before the loop parses it.

`json.loads` holds the GIL, so a thread does not help: a 10 MiB body of many small
values stalls every agent's request for hundreds of milliseconds. The loop's cost is
the number of JSON values, not the bytes (a long prompt is one string, parsed at memcpy
speed). So a body above `LARGE_BODY_BYTES` is first parsed in a worker process, which
hands back only how many values it holds; one above `limits.max_json_values` is
refused (413) without the loop ever parsing it, and the others are parsed on the loop
at a bounded cost.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from gate.core.jsonfmt import decode_problem, loads
from gate.http.errors import INVALID_REQUEST, OVERLOADED, GateError

LARGE_BODY_BYTES = 256 * 1024  # smaller bodies are parsed on the loop at once
WORKERS = 1  # the machine's other core(s) are the relays'; large bodies wait their turn
_NOT_UTF8, _TOO_DEEP, _NOT_JSON = -1, -2, -3


def count_values(raw: bytes) -> int:
    """In the worker: how many JSON values `raw` holds, or a negative reason it is not
    JSON at all."""
    try:
        body = loads(raw)
    except ValueError as exc:
        problem = decode_problem(exc)
        return _NOT_UTF8 if "UTF-8" in problem else _TOO_DEEP if "deeply" in problem else _NOT_JSON
    count = 0
    stack: list[Any] = [body]
    while stack:
        value = stack.pop()
        count += 1
        if isinstance(value, dict):
            count += len(value)  # the keys
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return count


class BodyChecker:
    """The worker process (started on first use) and the check of one large body."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    async def check(self, raw: bytes, max_values: int) -> None:
        """Raise the 400/413 for `raw` when it is not JSON or holds too many values."""
        if len(raw) <= LARGE_BODY_BYTES:
            return
        if self._pool is None:
            context = multiprocessing.get_context("spawn")  # no fork of a running loop
            self._pool = ProcessPoolExecutor(WORKERS, mp_context=context)
        loop = asyncio.get_running_loop()
        try:
            count = await loop.run_in_executor(self._pool, count_values, raw)
        except BrokenProcessPool:  # the worker died (OOM killer?): a new one next time
            self.close()
            raise GateError(
                503, OVERLOADED, "large request bodies cannot be checked now", {"Retry-After": "1"}
            ) from None
        if count == _NOT_UTF8:
            raise GateError(400, INVALID_REQUEST, "request body is not UTF-8")
        if count == _TOO_DEEP:
            raise GateError(400, INVALID_REQUEST, "request body is nested too deeply")
        if count < 0:
            raise GateError(400, INVALID_REQUEST, "request body is not valid JSON")
        if count > max_values:
            raise GateError(
                413, INVALID_REQUEST, f"request body holds more than {max_values} JSON values"
            )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
