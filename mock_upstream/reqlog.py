"""`openrouter_requests.log`: one JSON line per request received, Authorization redacted."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

REDACTED = "Bearer ***redacted***"
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A copy of the headers that is safe to keep: credentials replaced, never stored."""
    return {
        name: (REDACTED if name.lower() == "authorization" else "***redacted***")
        if name.lower() in _SECRET_HEADERS
        else value
        for name, value in headers.items()
    }


class RequestLog:
    """An append-only JSONL file, opened once for the app's lifetime.

    Writes are small and synchronous on the event loop on purpose: each line goes out
    whole, so lines of concurrent requests never interleave.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def open(self) -> None:
        if self.path is not None:
            self._file = self.path.open("a", encoding="utf-8")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def write(
        self, method: str, path: str, api: str | None, headers: Mapping[str, str], body: Any
    ) -> None:
        """One line: `api` names the API (`chat`, `responses`, `messages`, ...); the
        credentials (`Authorization`, `x-api-key`) are only said to be there."""
        if self._file is None:
            return
        entry = {
            "ts": datetime.now(UTC).isoformat(),
            "method": method,
            "path": path,
            "api": api,
            "authorization": REDACTED if "Authorization" in headers else None,
            "x_api_key": "***redacted***" if "x-api-key" in headers else None,
            "body": body,
        }
        text = json.dumps(entry, ensure_ascii=False)
        if not text.isascii() and any("\ud800" <= c <= "\udfff" for c in text):
            text = json.dumps(entry)  # a lone surrogate is no UTF-8: written as its escape
        self._file.write(text + "\n")
        self._file.flush()
