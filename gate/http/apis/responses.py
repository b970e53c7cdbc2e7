"""The Responses API (`POST /responses`, OpenRouter's beta, stateless).

Body: `input` (a string or a list of items), `instructions`, `max_output_tokens`,
`tools`, `stream`. Usage is always in the answer (`input_tokens`, `output_tokens` and,
at OpenRouter, `cost`); streamed, it arrives with the whole response in the last event,
`response.completed` (or `response.incomplete` when the limit cut the answer short, or
`response.failed`) — that event is the one that carries `_execwall`, as a member of its
own beside `response`. The stream has no `[DONE]`. The generation id is the response's
`id` (and upstream's `X-Generation-Id` header).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

from gate.core.loops import Fingerprint, digest
from gate.http.apis.base import Answer, ApiRequest, InferenceApi, Watch, count, sse_event
from gate.http.errors import INVALID_REQUEST, GateError

_ENDS = ("response.completed", "response.incomplete", "response.failed")
CODEX_USAGE_LIMIT = "usage_limit_reached"  # the error type Codex CLI stops at


def input_fingerprint(body: Mapping[str, Any]) -> Fingerprint:
    """The request is its `input` and `tools`; the turn is the last item with role
    `user` (a function call's output is no new turn)."""
    items = body.get("input")
    items = items if isinstance(items, list) else [items]
    turn: tuple[int, Any] = (-1, None)
    for index in range(len(items) - 1, -1, -1):
        item = items[index]
        if isinstance(item, str) or (isinstance(item, dict) and item.get("role") == "user"):
            turn = (index, item)
            break
    return Fingerprint(digest(items, body.get("tools"), body.get("instructions")), digest(*turn))


def in_chat_terms(usage: Mapping[str, Any]) -> dict[str, Any]:
    return {
        **usage,
        "prompt_tokens": count(usage, "input_tokens"),
        "completion_tokens": count(usage, "output_tokens"),
    }


class ResponsesWatch(Watch):
    marks = re.compile(rb'"type": ?"(?:response\.(?:completed|incomplete|failed)|error)"')
    __slots__ = ()

    def first(self, chunk: dict[str, Any]) -> None:
        response = chunk.get("response")
        if isinstance(response, dict):
            self.generation_id = response.get("id")
            self.model = response.get("model")

    def see(self, chunk: dict[str, Any]) -> bool:
        kind = chunk.get("type")
        if kind == "error":  # an error event: the stream ends with it
            self.error = {"code": chunk.get("code"), "message": chunk.get("message")}
            self.final = True
            return False
        if kind not in _ENDS:
            return False
        response = chunk.get("response")
        if not isinstance(response, dict):
            return False
        usage = response.get("usage")
        if isinstance(usage, dict):
            self.usage = in_chat_terms(usage)
        if self.model is None:
            self.model = response.get("model")
        if kind == "response.failed":
            error = response.get("error")
            self.error = error if isinstance(error, dict) else {"message": "response failed"}
        self.final = True
        return True


class ResponsesApi(InferenceApi):
    name = "responses"
    path = "/responses"
    limit_fields: ClassVar[tuple[str, ...]] = ("max_output_tokens",)

    def fingerprint(self, body: Mapping[str, Any]) -> Fingerprint:
        return input_fingerprint(body)

    def read(self, body: dict[str, Any], size: int, max_tokens_ceiling: int) -> ApiRequest:
        value = body.get("input")
        if not (isinstance(value, str) and value) and not (isinstance(value, list) and value):
            raise GateError(
                400, INVALID_REQUEST, "'input' must be a string or a non-empty list of items"
            )
        return self._common(body, size, max_tokens_ceiling)

    def usage_in_chat_terms(self, usage: Mapping[str, Any]) -> dict[str, Any]:
        return in_chat_terms(usage)

    def answer(self, answer: dict[str, Any]) -> Answer:
        usage = answer.get("usage")
        error = answer.get("error")
        return Answer(
            answer.get("id"),
            answer.get("model"),
            in_chat_terms(usage) if isinstance(usage, dict) else None,
            502 if isinstance(error, dict) or answer.get("status") == "failed" else None,
        )

    def watch(self) -> Watch:
        return ResponsesWatch()

    def budget_refusal(self, headers: Mapping[str, str], refusal: GateError) -> GateError:
        """Codex CLI retries a 402 five times, like any status it has no name for; the
        one refusal it stops at is its own usage limit: a 429 of type
        `usage_limit_reached` (`code` a string too) with `resets_at` in epoch seconds. So
        a client that says it is Codex (`originator: codex_*`) is told that; the spend log
        still says 402."""
        if not headers.get("originator", "").startswith("codex"):
            return refusal
        resets_at = refusal.extra.get("resets_at")
        epoch = None
        if isinstance(resets_at, str):
            with contextlib.suppress(ValueError):
                epoch = int(datetime.fromisoformat(resets_at.replace("Z", "+00:00")).timestamp())
        told = GateError(
            429,
            CODEX_USAGE_LIMIT,
            refusal.message,
            refusal.headers,
            # Codex reads `code` as a string: the status number would hide the type
            {"code": CODEX_USAGE_LIMIT, "resets_at": epoch, "execwall_type": refusal.type},
        )
        told.logged_status = refusal.status
        return told

    def error_event(self, status: int, type_: str, message: str, generation_id: object) -> bytes:
        """`response.failed`, the event Responses clients end a failed stream on."""
        response = {
            "id": generation_id,
            "object": "response",
            "status": "failed",
            "error": {"code": type_, "message": message},
            "output": [],
        }
        return sse_event("response.failed", {"type": "response.failed", "response": response})


RESPONSES = ResponsesApi()
