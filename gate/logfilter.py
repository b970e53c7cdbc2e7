"""The log handlers' filter: no secret, and no request bytes, reach the log."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from aiohttp.http_exceptions import HttpProcessingError

from gate.core.scrub import scrub


class RedactingFilter(logging.Filter):
    """On the log handler: no secret, nothing shaped like a key or a bearer token, and no
    request bytes reach the log. (aiohttp logs a request it cannot parse with the
    offending header line quoted, Authorization included: only the reason is kept.)"""

    def __init__(self, secrets: Callable[[], Iterable[str]]) -> None:
        super().__init__()
        self._secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            reason = str(exc.message or "").strip().partition(":")[0].partition("\n")[0]
            record.msg = f"{record.getMessage()}: {exc.code} {reason}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        secrets = list(self._secrets())
        message = record.getMessage()
        cleaned = scrub(message, secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info), secrets)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info, secrets)
        return True
