"""Keep secrets out of anything the gate relays or logs."""

from __future__ import annotations

import re
from collections.abc import Iterable

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
