"""`POST /completions`: legacy text completions, chat's rules with `choices[].text`."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import wire
from .chat import openai_ask, usage_dict
from .engine import Api, serve
from .plan import Ask, Done, Plan, PlanError
from .state import Fault


def _choice(text: str, finish: str | None) -> dict[str, Any]:
    return {
        "index": 0,
        "text": text,
        "finish_reason": finish,
        "native_finish_reason": finish,
        "logprobs": None,
    }


def _head(plan: Plan) -> dict[str, Any]:
    reply = plan.reply
    return {
        "id": reply.gen_id,
        "provider": reply.provider,
        "model": reply.model,
        "object": "text_completion",
        "created": reply.created,
    }


class CompletionsApi(Api):
    name = "completions"

    def ask(self, body: dict[str, Any], fault: Fault) -> Ask:
        prompt = body.get("prompt")
        if not isinstance(prompt, str | list):
            raise PlanError("'prompt' must be a string or an array of strings")
        return openai_ask(body, prompt)

    def delta(self, plan: Plan, index: int, text: str) -> bytes:
        return wire.sse({**_head(plan), "choices": [_choice(text, None)]})

    def closing(self, plan: Plan, done: Done) -> list[bytes]:
        last = {**_head(plan), "choices": [_choice("", done.finish)]}
        if done.error is not None:
            last["error"] = wire.stream_error(done.error)
        frames = [wire.sse(last)]
        usage = usage_dict(done.usage)
        if usage is not None:
            frames.append(wire.sse({**_head(plan), "choices": [], "usage": usage}))
        frames.append(wire.DONE)
        return frames

    def body(self, plan: Plan, done: Done) -> tuple[int, dict[str, Any]]:
        body = {**_head(plan), "choices": [_choice(done.text, done.finish)]}
        if done.error is not None:
            body["error"] = wire.stream_error(done.error)
        usage = usage_dict(done.usage)
        if usage is not None:
            body["usage"] = usage
        return 200, body


COMPLETIONS = CompletionsApi()


async def completions(request: web.Request) -> web.StreamResponse:
    return await serve(request, COMPLETIONS)
