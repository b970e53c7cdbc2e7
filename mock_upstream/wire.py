"""Every body and SSE frame the mock sends, in OpenRouter's shapes. Pure functions."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from http import HTTPStatus
from typing import Any

from aiohttp import web

from .prices import CONTEXT_LENGTH, PRICES, ModelPrice, display_name, price_string

COMMENT = b": OPENROUTER PROCESSING\n\n"
DONE = b"data: [DONE]\n\n"
SSE_HEADERS: Mapping[str, str] = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}

_WORDS = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit")

_DEFAULT_MESSAGES: Mapping[int, str] = {
    400: "Bad Request",
    401: "No auth credentials found",
    402: "Insufficient credits. Add more using https://openrouter.ai/credits",
    408: "Request timed out",
    429: "Rate limit exceeded: too many requests",
    502: "Provider returned error",
    503: "No available providers for the requested model",
}


@dataclass(frozen=True)
class Reply:
    """What every chunk of one answer repeats."""

    gen_id: str
    model: str
    provider: str
    created: int


def default_message(status: int) -> str:
    if status in _DEFAULT_MESSAGES:
        return _DEFAULT_MESSAGES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"Upstream error {status}"


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"error": {"code": status, "message": message}}


def error_response(
    status: int, message: str | None = None, retry_after: float | None = None
) -> web.Response:
    """The one builder of OpenRouter error answers: `{"error": {"code", "message"}}`."""
    headers = {"Retry-After": retry_after_value(retry_after)} if retry_after is not None else None
    body = error_body(status, message if message is not None else default_message(status))
    return web.json_response(body, status=status, headers=headers)


def retry_after_value(value: float) -> str:
    """A `Retry-After` header value: whole seconds without a fraction."""
    return str(int(value)) if float(value).is_integer() else str(value)


def sse(payload: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def token_text(index: int, long_line: int | None = None) -> str:
    """The content of completion token `index` (0-based); the first may be `long_line` long."""
    if index == 0 and long_line is not None:
        return ("x" * long_line) if long_line else ""
    return _WORDS[index % len(_WORDS)] + " "


def usage(
    price: ModelPrice, prompt_tokens: int, completion_tokens: int, *, with_cost: bool
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if with_cost:
        prompt_cost = price.prompt * prompt_tokens
        completion_cost = price.completion * completion_tokens
        out["cost"] = float(prompt_cost + completion_cost)
    out["is_byok"] = False
    out["prompt_tokens_details"] = {"cached_tokens": 0, "audio_tokens": 0}
    out["completion_tokens_details"] = {"reasoning_tokens": 0, "image_tokens": 0}
    if with_cost:
        out["cost_details"] = {
            "upstream_inference_cost": None,
            "upstream_inference_prompt_cost": float(prompt_cost),
            "upstream_inference_completions_cost": float(completion_cost),
        }
    return out


def _head(reply: Reply, object_: str) -> dict[str, Any]:
    return {
        "id": reply.gen_id,
        "provider": reply.provider,
        "model": reply.model,
        "object": object_,
        "created": reply.created,
    }


def chunk(reply: Reply, content: str, finish_reason: str | None = None) -> dict[str, Any]:
    body = _head(reply, "chat.completion.chunk")
    body["choices"] = [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": content},
            "finish_reason": finish_reason,
            "native_finish_reason": finish_reason,
            "logprobs": None,
        }
    ]
    return body


def usage_chunk(reply: Reply, usage_: Mapping[str, Any]) -> dict[str, Any]:
    body = _head(reply, "chat.completion.chunk")
    body["choices"] = []
    body["usage"] = dict(usage_)
    return body


def stream_error(message: str) -> dict[str, Any]:
    return {"code": "server_error", "message": message}


def error_chunk(reply: Reply, message: str) -> dict[str, Any]:
    """OpenRouter's mid-stream error: a data event with `error` and finish_reason "error"."""
    body = _head(reply, "chat.completion.chunk")
    body["error"] = stream_error(message)
    body["choices"] = [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "finish_reason": "error",
            "native_finish_reason": "error",
            "logprobs": None,
        }
    ]
    return body


def completion(
    reply: Reply,
    content: str,
    finish_reason: str,
    usage_: Mapping[str, Any] | None,
    error_message: str | None = None,
) -> dict[str, Any]:
    body = _head(reply, "chat.completion")
    body["choices"] = [
        {
            "index": 0,
            "logprobs": None,
            "finish_reason": finish_reason,
            "native_finish_reason": finish_reason,
            "message": {"role": "assistant", "content": content, "refusal": None},
        }
    ]
    if error_message is not None:
        body["error"] = stream_error(error_message)
    if usage_ is not None:
        body["usage"] = dict(usage_)
    return body


def models_list() -> dict[str, Any]:
    return {
        "data": [
            {
                "id": model,
                "name": display_name(model),
                "context_length": CONTEXT_LENGTH,
                "pricing": {
                    "prompt": price_string(price.prompt),
                    "completion": price_string(price.completion),
                    "request": "0",
                    "image": "0",
                },
                "top_provider": {"context_length": CONTEXT_LENGTH, "is_moderated": False},
            }
            for model, price in PRICES.items()
        ]
    }


def generation(record: Mapping[str, Any]) -> dict[str, Any]:
    """`GET /generation` data: the stored record with its Decimal cost as a JSON number."""
    data = dict(record)
    cost: Decimal = record["total_cost"]
    data["total_cost"] = float(cost)
    data["usage"] = float(cost)
    data["is_byok"] = False
    return {"data": data}
