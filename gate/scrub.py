"""Keep secrets out of anything the gate relays or logs."""

from __future__ import annotations

import re
from collections.abc import Iterable

FRAGMENT = 8  # no run of this many characters of a secret survives
REDACTED = "[redacted]"
_KEY_SHAPES = re.compile(r"(sk-or-[A-Za-z0-9_-]+|Bearer\s+[A-Za-z0-9._~+/=-]+)")


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Remove every secret, every 8-character piece of one, and anything shaped like
    an OpenRouter key or a bearer token. Runs only on error paths."""
    for secret in secrets:
        if len(secret) < FRAGMENT:
            text = text.replace(secret, REDACTED) if secret else text
            continue
        for start in range(len(secret) - FRAGMENT + 1):
            piece = secret[start : start + FRAGMENT]
            if piece in text:
                text = _erase_around(text, piece, secret)
    return _KEY_SHAPES.sub(REDACTED, text)


def _erase_around(text: str, piece: str, secret: str) -> str:
    """Replace the longest run of the secret that contains `piece` at each occurrence."""
    out: list[str] = []
    i = 0
    while (j := text.find(piece, i)) >= 0:
        start, end = j, j + len(piece)
        while start > i and end - start < len(secret) and text[start - 1 : end] in secret:
            start -= 1
        while end < len(text) and text[start : end + 1] in secret:
            end += 1
        out.append(text[i:start])
        out.append(REDACTED)
        i = end
    out.append(text[i:])
    return "".join(out)
