"""Legacy text completions (`POST /completions`): chat's rules, with a `prompt` (a
string or a list of strings) instead of `messages` and `choices[].text` in the answer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from gate.core.loops import Fingerprint, digest
from gate.http.apis.base import ApiRequest, InferenceApi, Watch
from gate.http.apis.chat import ChatApi, ChatWatch
from gate.http.errors import INVALID_REQUEST, GateError


def prompt_fingerprint(body: Mapping[str, Any]) -> Fingerprint:
    """A completion is its prompt; each prompt is a turn of its own."""
    prompt = body.get("prompt")
    return Fingerprint(digest(prompt), digest(prompt))


class CompletionsApi(ChatApi):
    name = "completions"
    path = "/completions"
    limit_fields: ClassVar[tuple[str, ...]] = ("max_tokens",)

    def fingerprint(self, body: Mapping[str, Any]) -> Fingerprint:
        return prompt_fingerprint(body)

    def read(self, body: dict[str, Any], size: int, max_tokens_ceiling: int) -> ApiRequest:
        prompt = body.get("prompt")
        if not (isinstance(prompt, str) and prompt) and not (
            isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt)
        ):
            raise GateError(
                400, INVALID_REQUEST, "'prompt' must be a string or a non-empty list of strings"
            )
        options = body.get("stream_options")
        wants_usage = isinstance(options, Mapping) and options.get("include_usage") is True
        return InferenceApi._common(self, body, size, max_tokens_ceiling, wants_usage=wants_usage)

    def watch(self) -> Watch:
        return ChatWatch()


COMPLETIONS = CompletionsApi()
