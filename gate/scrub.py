"""Keep secrets out of anything the gate relays or logs."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable

from aiohttp.http_exceptions import HttpProcessingError

FRAGMENT = 8  # no run of this many characters of a secret survives
REDACTED = "[redacted]"
_KEY_SHAPES = re.compile(r"(sk-or-[A-Za-z0-9_-]+|Bearer\s+[A-Za-z0-9._~+/=-]+)", re.IGNORECASE)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Remove every secret, every 8-character piece of one, and anything shaped like
    an OpenRouter key or a bearer token. A secret is found in any letter case and with
    whitespace anywhere inside it (an upstream that echoes it upper-cased or spaced
    out). Runs on error paths and log lines only."""
    text = _KEY_SHAPES.sub(REDACTED, text)
    squeezed, where = _squeezed(text)
    spans: list[tuple[int, int]] = []
    for secret in secrets:
        wanted = "".join(secret.split()).lower()
        if not wanted:
            continue
        if len(wanted) < FRAGMENT:
            spans += _runs(squeezed, wanted, wanted)
            continue
        for start in range(len(wanted) - FRAGMENT + 1):
            spans += _runs(squeezed, wanted[start : start + FRAGMENT], wanted)
    if spans:
        text = _redact(text, [(where[a], where[b - 1] + 1) for a, b in spans])
    return text


def _squeezed(text: str) -> tuple[str, list[int]]:
    """`text` lower-cased without whitespace, and where each of its characters came from."""
    where = [i for i, c in enumerate(text) if not c.isspace()]
    return "".join(text[i] for i in where).lower(), where


def _runs(text: str, piece: str, secret: str) -> list[tuple[int, int]]:
    """The longest run of the secret around each occurrence of `piece`."""
    spans: list[tuple[int, int]] = []
    i = 0
    while (j := text.find(piece, i)) >= 0:
        start, end = j, j + len(piece)
        while start > i and end - start < len(secret) and text[start - 1 : end] in secret:
            start -= 1
        while end < len(text) and text[start : end + 1] in secret:
            end += 1
        spans.append((start, end))
        i = end
    return spans


def _redact(text: str, spans: list[tuple[int, int]]) -> str:
    out: list[str] = []
    i = 0
    for start, end in sorted(spans):
        if end <= i:
            continue
        out.append(text[i : max(i, start)])
        if start >= i:
            out.append(REDACTED)
        i = end
    out.append(text[i:])
    return "".join(out)


def scrub_bytes(data: bytes, secrets: Iterable[str]) -> bytes:
    """`scrub` for relayed bytes (an upstream error's JSON or SSE event); the same
    object back when nothing had to go."""
    text = data.decode("utf-8", "surrogateescape")
    cleaned = scrub(text, secrets)
    return data if cleaned == text else cleaned.encode("utf-8", "surrogateescape")


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
