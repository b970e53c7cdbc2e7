"""Anthropic's Messages API (`POST /messages`), as OpenRouter serves it.

Anthropic clients use the gate's root or `/api` as their base URL, so the path is
`/v1/messages` or `/api/v1/messages` (Claude Code adds `?beta=true`), with the key in
`x-api-key` or `Authorization: Bearer`; `anthropic-version` and `anthropic-beta` go
upstream as sent. Usage is part of the protocol: `message_start` carries the input
tokens, `message_delta` the cumulative output tokens (and, at OpenRouter, `cost`) —
`message_delta` is the event that carries `_execwall`, beside `usage`. `ping` events and
everything else pass unchanged. Errors are `{"type": "error", "error": {"type",
"message"}}` with the type Anthropic uses for the status.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from gate.core.loops import Fingerprint, digest, last_turn
from gate.http.apis.base import (
    Answer,
    ApiRequest,
    InferenceApi,
    Watch,
    count,
    marks,
    sse_event,
)
from gate.http.errors import INVALID_REQUEST, GateError

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
STATUS_OF = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def messages_fingerprint(body: Mapping[str, Any]) -> Fingerprint:
    """The request is its `messages`, `system` and `tools`; the turn is the last user
    message that is not only tool results (Anthropic sends those with role `user`)."""
    messages = body.get("messages")
    messages = messages if isinstance(messages, list) else []
    turn = last_turn(messages, _not_only_tool_results)
    return Fingerprint(digest(messages, body.get("tools"), body.get("system")), digest(*turn))


def _not_only_tool_results(message: Mapping[str, Any]) -> bool:
    content = message.get("content")
    return not (
        isinstance(content, list)
        and content
        and all(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)
    )


def in_chat_terms(usage: Mapping[str, Any]) -> dict[str, Any]:
    """Cache reads and writes are input tokens too (priced apart by the provider; the
    price table's fallback counts them at the input price)."""
    prompt = sum(
        count(usage, key)
        for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    return {**usage, "prompt_tokens": prompt, "completion_tokens": count(usage, "output_tokens")}


class MessagesWatch(Watch):
    marks = marks(b'"message_start"', b'"message_delta"', b'"type":"error"', b'"type": "error"')
    __slots__ = ("_start",)

    def __init__(self) -> None:
        super().__init__()
        self._start: dict[str, Any] = {}  # message_start's usage: the input tokens

    def first(self, chunk: dict[str, Any]) -> None:
        message = chunk.get("message")
        if isinstance(message, dict):
            self.generation_id = message.get("id")
            self.model = message.get("model")

    def see(self, chunk: dict[str, Any]) -> bool:
        kind = chunk.get("type")
        if kind == "message_start":
            message = chunk.get("message")
            usage = message.get("usage") if isinstance(message, dict) else None
            if isinstance(usage, dict):
                self._start = usage
            return False
        if kind == "message_delta":
            usage = chunk.get("usage")
            if isinstance(usage, dict):  # cumulative: what it names wins over the start's
                self.usage = in_chat_terms({**self._start, **usage})
            self.final = True
            return True
        if kind == "error":
            error = chunk.get("error")
            self.error = error if isinstance(error, dict) else {"message": "error event"}
            self.error_status = STATUS_OF.get(str(self.error.get("type")), 502)
            self.final = True
        return False


class MessagesApi(InferenceApi):
    name = "messages"
    path = "/messages"
    limit_fields: ClassVar[tuple[str, ...]] = ("max_tokens",)
    forwarded_headers: ClassVar[tuple[str, ...]] = ("anthropic-version", "anthropic-beta")

    def fingerprint(self, body: Mapping[str, Any]) -> Fingerprint:
        return messages_fingerprint(body)

    def read(self, body: dict[str, Any], size: int, max_tokens_ceiling: int) -> ApiRequest:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise GateError(400, INVALID_REQUEST, "messages: at least one message is required")
        return self._common(body, size, max_tokens_ceiling)

    def usage_in_chat_terms(self, usage: Mapping[str, Any]) -> dict[str, Any]:
        return in_chat_terms(usage)

    def answer(self, answer: dict[str, Any]) -> Answer:
        usage = answer.get("usage")
        status = None
        if answer.get("type") == "error":
            error = answer.get("error")
            kind = error.get("type") if isinstance(error, dict) else None
            status = STATUS_OF.get(str(kind), 502)
        return Answer(
            answer.get("id"),
            answer.get("model"),
            in_chat_terms(usage) if isinstance(usage, dict) else None,
            status,
        )

    def watch(self) -> Watch:
        return MessagesWatch()

    def error_body(
        self, status: int, type_: str, message: str, extra: Mapping[str, object] | None = None
    ) -> dict[str, object]:
        """Anthropic's shape; the gate's own type stays readable as `execwall_type`."""
        error: dict[str, object] = {"type": error_type(status), "message": message}
        if type_ != error["type"]:
            error["execwall_type"] = type_
        return {"type": "error", "error": {**error, **(extra or {})}}

    def error_event(self, status: int, type_: str, message: str, generation_id: object) -> bytes:
        return sse_event("error", self.error_body(status, type_, message))


MESSAGES = MessagesApi()
