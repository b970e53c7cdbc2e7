"""`POST /chat/completions`: OpenRouter's chat shapes over the shared engine."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import wire
from .engine import Api, serve
from .plan import Ask, Counts, Done, Plan, flag, token_limit
from .state import Fault


def usage_dict(usage: Counts | None) -> dict[str, Any] | None:
    """OpenRouter's chat-style usage (chat and legacy completions)."""
    if usage is None:
        return None
    return wire.usage(usage.price, usage.prompt, usage.completion, with_cost=usage.cost is not None)


def openai_ask(body: dict[str, Any], prompt: Any) -> Ask:
    """Chat's rules, shared with legacy completions: cost in a body only with
    `usage: {include: true}`, a usage chunk only when asked for."""
    usage_include = flag(body.get("usage"), "include")
    return Ask(
        prompt=prompt,
        max_tokens=token_limit(body, "max_tokens", "max_completion_tokens"),
        stream=body.get("stream") is True,
        cost_in_body=usage_include,
        stream_usage=usage_include or flag(body.get("stream_options"), "include_usage"),
    )


class ChatApi(Api):
    name = "chat"

    def ask(self, body: dict[str, Any], fault: Fault) -> Ask:
        messages, tools = body.get("messages", []), body.get("tools")
        return openai_ask(body, [messages, tools] if tools else messages)

    def delta(self, plan: Plan, index: int, text: str) -> bytes:
        return wire.sse(wire.chunk(plan.reply, text))

    def closing(self, plan: Plan, done: Done) -> list[bytes]:
        if done.error is not None:
            last = wire.error_chunk(plan.reply, done.error)
        else:
            last = wire.chunk(plan.reply, "", done.finish)
        frames = [wire.sse(last)]
        usage = usage_dict(done.usage)
        if usage is not None:
            frames.append(wire.sse(wire.usage_chunk(plan.reply, usage)))
        frames.append(wire.DONE)
        return frames

    def body(self, plan: Plan, done: Done) -> tuple[int, dict[str, Any]]:
        return 200, wire.completion(
            plan.reply, done.text, done.finish, usage_dict(done.usage), done.error
        )


CHAT = ChatApi()


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await serve(request, CHAT)
