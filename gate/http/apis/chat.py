"""OpenAI chat completions (`POST /chat/completions`), the founding document's API.

Usage accounting is switched on with `usage: {include: true}` (and, for streams,
`stream_options.include_usage`); the usage arrives in the answer's `usage` or, streamed,
in a final chunk with `choices: []`, which the client sees (with `_execwall`) only if it
asked for it, as OpenAI does. `[DONE]` ends the stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from gate.core.loops import Fingerprint, chat_fingerprint
from gate.http.apis.base import ApiRequest, InferenceApi, Watch, marks
from gate.http.demand import CHAT_LIMITS
from gate.http.errors import INVALID_REQUEST, GateError


class ChatWatch(Watch):
    """Chat chunks: usage in a final chunk (or riding on a content chunk), an `error`
    object in a data event."""

    marks = marks(b'"usage"', b'"error"')
    __slots__ = ()

    def wants(self, raw: bytes) -> bool:  # every chunk of every chat stream: two memchr scans
        return b'"usage"' in raw or b'"error"' in raw

    def see(self, chunk: dict[str, Any]) -> bool:
        error = chunk.get("error")
        if isinstance(error, dict):
            self.error = error
            code = error.get("code")
            self.error_status = code if isinstance(code, int) and 400 <= code < 600 else 502
        usage = chunk.get("usage")
        if not isinstance(usage, dict):
            return False
        self.usage = usage
        self.final = True
        if self.model is None:
            self.model = chunk.get("model")
        return not chunk.get("choices")  # usage riding on content is never held back


class ChatApi(InferenceApi):
    name = "chat"
    path = "/chat/completions"
    limit_fields: ClassVar[tuple[str, ...]] = CHAT_LIMITS

    def fingerprint(self, body: Mapping[str, Any]) -> Fingerprint:
        return chat_fingerprint(body)

    def read(self, body: dict[str, Any], size: int, max_tokens_ceiling: int) -> ApiRequest:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise GateError(400, INVALID_REQUEST, "'messages' must be a non-empty list")
        options = body.get("stream_options")
        wants_usage = isinstance(options, Mapping) and options.get("include_usage") is True
        return self._common(body, size, max_tokens_ceiling, wants_usage=wants_usage)

    def rewrite(self, body: dict[str, Any], request: ApiRequest) -> None:
        body["usage"] = {"include": True}
        if request.stream:
            options = body.get("stream_options")
            body["stream_options"] = {
                **(options if isinstance(options, dict) else {}),
                "include_usage": True,
            }

    def watch(self) -> Watch:
        return ChatWatch()


CHAT = ChatApi()
