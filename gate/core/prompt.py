"""The prompt a body is billed for, estimated from what a provider tokenizes.

Pure (no I/O): `estimate_prompt` walks the parsed body once and counts the UTF-8 bytes
of what is billed — message text (string content and `text` parts), tool calls' names
and arguments, tool results, `system` / `instructions`, the Responses API's `input`
items, a completion's `prompt`, the tool definitions (their
JSON) and a `response_format` schema — not the envelope's keys, punctuation and
whitespace, and not image data (images are priced apart, see `gate.http.demand`). The
result is in estimate units (`BYTES_PER_UNIT` bytes each, plus a few units for each
message's and tool's template); `gate.core.calibrate` turns units into the tokens a hold
assumes, per model, from settled usage.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gate.core.jsonfmt import dumpb

BYTES_PER_UNIT = 4  # about one token of prose in current tokenizers
MESSAGE_UNITS = 8  # a message's role and the chat template around it
TOOL_UNITS = 8  # a tool definition's framing in the prompt
REQUEST_UNITS = 8  # the reply's priming, a default system header
# Parts that are not text: priced apart (images) or not counted here as text.
BINARY_PARTS = frozenset({"image_url", "input_image", "image"})
# A message's own fields that are no billed text.
NOT_TEXT = frozenset({"role", "content", "tool_calls", "tool_call_id", "cache_control"})


def estimate_prompt(body: Mapping[str, Any]) -> int:
    """The prompt's size in estimate units (about four bytes of billed text each)."""
    size = units = 0
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        units += MESSAGE_UNITS
        if isinstance(message, Mapping):
            size += _message_bytes(message)
        else:
            size += _json_bytes(message)
    for key in ("system", "instructions", "prompt"):  # `prompt`: legacy completions
        size += _content_bytes(body.get(key))
    items = body.get("input")  # the Responses API's items (or embeddings' strings)
    if isinstance(items, list):
        for item in items:
            if isinstance(item, Mapping):
                units += MESSAGE_UNITS
                size += _message_bytes(item)
            else:
                size += _content_bytes(item)
    else:
        size += _content_bytes(items)
    for key in ("tools", "functions"):
        tools = body.get(key)
        if isinstance(tools, list) and tools:
            units += TOOL_UNITS * len(tools)
            size += _json_bytes(tools)
    response_format = body.get("response_format")
    if isinstance(response_format, Mapping) and response_format.get("type") != "text":
        size += _json_bytes(response_format)
    return REQUEST_UNITS + units + -(-size // BYTES_PER_UNIT)


def _message_bytes(message: Mapping[str, Any]) -> int:
    size = _content_bytes(message.get("content"))
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(function, Mapping):
            size += _text_bytes(function.get("name")) + _text_bytes(function.get("arguments"))
        else:
            size += _json_bytes(call)
    for key, value in message.items():
        if key not in NOT_TEXT and value is not None:
            # `name`, `refusal`, reasoning a client passes back: counted as sent
            size += _text_bytes(value) if isinstance(value, str) else _json_bytes(value)
    return size


def _content_bytes(content: object) -> int:
    """String content, or a list of parts: `text` parts' text; image parts nothing; any
    other part (audio, files) as its JSON, as high as the old whole-body estimate."""
    if content is None:
        return 0
    if isinstance(content, str):
        return _text_bytes(content)
    if not isinstance(content, list):
        return _json_bytes(content)
    size = 0
    for part in content:
        if isinstance(part, str):
            size += _text_bytes(part)
            continue
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind in BINARY_PARTS:
            continue
        text = part.get("text") if isinstance(part, Mapping) else None
        if isinstance(text, str):
            size += _text_bytes(text)
        elif kind == "tool_result" and isinstance(part, Mapping):
            size += _content_bytes(part.get("content"))
        else:
            size += _json_bytes(part)
    return size


def _text_bytes(value: object) -> int:
    if not isinstance(value, str):
        return 0 if value is None else _json_bytes(value)
    return len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))


def _json_bytes(value: object) -> int:
    return len(dumpb(value))
