"""Request ids: unique across processes, restarts and instances, cheap to make."""

from __future__ import annotations

import itertools
import secrets


class RequestIds:
    """`req-` and 24 hex digits, as before: a random 48-bit prefix drawn once per
    process and a counter. No read of the OS's random source per request (what
    `secrets.token_hex` costs on every call); nothing takes a request id as input, so
    that the ids of one process follow each other gives no one anything."""

    def __init__(self) -> None:
        self._prefix = "req-" + secrets.token_hex(6)
        self._count = itertools.count(1)

    def new(self) -> str:
        return f"{self._prefix}{next(self._count):012x}"
