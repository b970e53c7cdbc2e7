"""`POST /embeddings`: OpenAI's list of vectors; prompt tokens only, never streamed.

Faults apply as elsewhere: `status`/`retry_after`/`hang`/`first_delay` as for chat,
`cut_after` drops the connection (billed, cancelled), `error_after` answers a 502 in
OpenAI's error shape (billed: the provider did the work), `no_cost`/`no_usage` trim
the usage.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

from aiohttp import web

from . import wire
from .engine import Api, serve
from .plan import Ask, Done, Plan, PlanError
from .state import Fault

DIMENSIONS = 8


def vector(text: str, dimensions: int = DIMENSIONS) -> list[float]:
    """A deterministic unit-ish vector for `text`: equal inputs, equal embeddings."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    raw = struct.unpack(f">{dimensions}h", digest[: 2 * dimensions])
    return [round(value / 32768, 6) for value in raw]


def _inputs(body: dict[str, Any]) -> list[str]:
    value = body.get("input")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise PlanError("'input' must be a string or a non-empty array of strings")


class EmbeddingsApi(Api):
    name = "embeddings"

    def ask(self, body: dict[str, Any], fault: Fault) -> Ask:
        inputs = _inputs(body)
        return Ask(
            prompt=inputs,
            max_tokens=None,
            stream=False,
            cost_in_body=True,
            stream_usage=False,
            generates=False,
            extra={"inputs": inputs},
        )

    def body(self, plan: Plan, done: Done) -> tuple[int, dict[str, Any]]:
        if done.error is not None:
            return 502, wire.error_body(502, done.error)
        body: dict[str, Any] = {
            "id": plan.reply.gen_id,
            "object": "list",
            "data": [
                {"object": "embedding", "index": index, "embedding": vector(text)}
                for index, text in enumerate(plan.ask.extra["inputs"])
            ],
            "model": plan.reply.model,
            "provider": plan.reply.provider,
        }
        if done.usage is not None:
            usage: dict[str, Any] = {
                "prompt_tokens": done.usage.prompt,
                "total_tokens": done.usage.prompt,
            }
            if done.usage.cost is not None:
                usage["cost"] = float(done.usage.cost)
            body["usage"] = usage
        return 200, body


EMBEDDINGS = EmbeddingsApi()


async def embeddings(request: web.Request) -> web.StreamResponse:
    return await serve(request, EMBEDDINGS)
