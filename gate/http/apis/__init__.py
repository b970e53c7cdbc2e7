"""The inference APIs, one adapter each: what differs between them and nothing else.

An adapter (`base.InferenceApi`) says which body fields name the model and the output
limit, how the body is rewritten for the tier, where usage and the generation id are in
a JSON answer and in the event stream, and the error shape its clients expect. The
shared request path (`gate.http.proxy`, `relay`, `stream`) knows no particular API.
"""

from __future__ import annotations

from gate.http.apis.base import ApiRequest, InferenceApi, upstream_body
from gate.http.apis.chat import CHAT
from gate.http.apis.completions import COMPLETIONS
from gate.http.apis.embeddings import EMBEDDINGS
from gate.http.apis.messages import MESSAGES
from gate.http.apis.responses import RESPONSES

APIS: tuple[InferenceApi, ...] = (CHAT, RESPONSES, MESSAGES, COMPLETIONS, EMBEDDINGS)
PREFIXES = ("/v1", "/api/v1")


def for_path(path: str) -> InferenceApi:
    """The API whose clients call `path`: its errors are answered in that API's shape
    (OpenAI's, unless the path is Anthropic's Messages)."""
    for prefix in PREFIXES:
        if path.startswith(prefix + MESSAGES.path):
            return MESSAGES
    return CHAT


__all__ = ["APIS", "CHAT", "PREFIXES", "ApiRequest", "InferenceApi", "for_path", "upstream_body"]
