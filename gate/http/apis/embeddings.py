"""Embeddings (`POST /embeddings`): a prompt and no output, never streamed.

The hold is the input's price alone (no output tokens); usage is `prompt_tokens` and,
with usage accounting on, `cost`.
"""

from __future__ import annotations

from typing import Any

from gate.http.apis.base import ApiRequest, InferenceApi, Watch
from gate.http.errors import INVALID_REQUEST, GateError


class EmbeddingsApi(InferenceApi):
    name = "embeddings"
    path = "/embeddings"
    generates = False
    watches_loops = False  # a batch job embeds the same text again by design

    def read(self, body: dict[str, Any], size: int, max_tokens_ceiling: int) -> ApiRequest:
        value = body.get("input")
        if not (isinstance(value, str) and value) and not (isinstance(value, list) and value):
            raise GateError(400, INVALID_REQUEST, "'input' must be a string or a non-empty list")
        if body.get("stream") not in (None, False):
            raise GateError(400, INVALID_REQUEST, "embeddings are not streamed")
        return self._common(body, size, max_tokens_ceiling)

    def rewrite(self, body: dict[str, Any], request: ApiRequest) -> None:
        body["usage"] = {"include": True}

    def watch(self) -> Watch:  # never streamed: `read` refuses it
        raise GateError(400, INVALID_REQUEST, "embeddings are not streamed")


EMBEDDINGS = EmbeddingsApi()
