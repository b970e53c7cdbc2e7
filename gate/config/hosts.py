"""Host names as `allowed_hosts` and the `Host` header spell them: pure parsing, shared by
the config reader and the door (`gate.http.origin`)."""

from __future__ import annotations


def host_name(value: str) -> str | None:
    """The host of a `Host` value (`name`, `name:port`, `[v6]:port`), lower-cased and
    without a trailing dot; None when it is no host at all."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or (value[end + 1 :] and not _is_port(value[end + 1 :])):
            return None
        name = value[1:end]
    else:
        name, colon, port = value.partition(":")
        if colon and not _is_port(":" + port):
            return None
    name = name.rstrip(".")
    if not name or any(c in name for c in "/\\@?# \t"):
        return None
    return name


def _is_port(text: str) -> bool:
    return text.startswith(":") and text[1:].isdigit() and len(text) <= 6
