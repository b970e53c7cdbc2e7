"""`POST /messages`: OpenRouter's Anthropic-compatible Messages API over the shared engine.

Anthropic clients use `https://openrouter.ai/api` as base URL, so the path is
`/api/v1/messages` (Claude Code adds `?beta=true`); the key comes as `x-api-key` or
`Authorization: Bearer`. A streamed answer: `message_start` (usage with input_tokens),
`content_block_start`, `ping`, one `content_block_delta` (`text_delta`) a token,
`content_block_stop`, `message_delta` (stop_reason, cumulative usage with the cost),
`message_stop`. A mid-stream error is `event: error` and ends the stream. Errors are
`{"type": "error", "error": {"type", "message"}}` with Anthropic's type for the status.
Usage is part of Anthropic's protocol (its SDK needs it), so a `no_usage` fault only
withholds the cost here. With a `tool_call` fault the answer ends in a `tool_use` block
(its tokens are not counted) and `stop_reason: "tool_use"`.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from . import wire
from .engine import Api, serve
from .plan import Ask, Done, Plan, PlanError, token_limit
from .state import Fault

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_body(status: int, message: str) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def error_response(
    status: int, message: str | None = None, retry_after: float | None = None
) -> web.Response:
    headers = {} if retry_after is None else {"Retry-After": wire.retry_after_value(retry_after)}
    text = message if message is not None else wire.default_message(status)
    return web.json_response(error_body(status, text), status=status, headers=headers)


def _frame(payload: dict[str, Any]) -> bytes:
    data = json.dumps(payload, separators=(",", ":"))
    return f"event: {payload['type']}\ndata: {data}\n\n".encode()


def _tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The first tool offered, unless the last message already answers a tool call."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools or not isinstance(tools[0], dict):
        return None
    messages = body.get("messages")
    last = messages[-1] if isinstance(messages, list) and messages else {}
    content = last.get("content") if isinstance(last, dict) else None
    if isinstance(content, list) and any(
        isinstance(block, dict) and block.get("type") == "tool_result" for block in content
    ):
        return None
    return tools[0]


def _tool_input(tool: dict[str, Any]) -> dict[str, Any]:
    schema = tool.get("input_schema")
    required = schema.get("required", []) if isinstance(schema, dict) else []
    return {str(name): "mock" for name in required if isinstance(name, str)}


def _usage(plan: Plan, done: Done | None) -> dict[str, Any]:
    tokens = 0 if done is None else done.tokens
    usage: dict[str, Any] = {
        "input_tokens": plan.prompt_tokens,
        "output_tokens": tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    if done is not None and done.usage is not None and done.usage.cost is not None:
        usage["cost"] = float(done.usage.cost)
    return usage


def _tool_block(plan: Plan) -> dict[str, Any] | None:
    tool = plan.ask.extra.get("tool")
    if tool is None:
        return None
    suffix = plan.reply.gen_id.removeprefix(MessagesApi.id_prefix)
    return {"type": "tool_use", "id": f"toolu_{suffix}", "name": tool["name"], "input": {}}


def _stop_reason(plan: Plan, done: Done) -> str:
    if done.finish == "length":
        return "max_tokens"
    return "tool_use" if plan.ask.extra.get("tool") is not None else "end_turn"


def _message(plan: Plan, content: list[dict[str, Any]], done: Done | None) -> dict[str, Any]:
    return {
        "id": plan.reply.gen_id,
        "type": "message",
        "role": "assistant",
        "model": plan.reply.model,
        "provider": plan.reply.provider,
        "content": content,
        "stop_reason": None if done is None else _stop_reason(plan, done),
        "stop_sequence": None,
        "usage": _usage(plan, done),
    }


class MessagesApi(Api):
    name = "messages"
    id_prefix = "msg_"
    accepts_x_api_key = True

    def ask(self, body: dict[str, Any], fault: Fault) -> Ask:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise PlanError("messages: at least one message is required")
        tool = _tool(body) if fault.tool_call else None
        if tool is not None and not isinstance(tool.get("name"), str):
            raise PlanError("tools.0.name: Field required")
        return Ask(
            prompt=[body.get("system"), messages],
            max_tokens=token_limit(body, "max_tokens"),
            stream=body.get("stream") is True,
            cost_in_body=True,
            stream_usage=True,
            extra={"tool": tool},
        )

    def error(
        self, status: int, message: str | None = None, retry_after: float | None = None
    ) -> web.Response:
        return error_response(status, message, retry_after)

    def opening(self, plan: Plan) -> list[bytes]:
        return [
            _frame({"type": "message_start", "message": _message(plan, [], None)}),
            _frame(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                }
            ),
            _frame({"type": "ping"}),
        ]

    def delta(self, plan: Plan, index: int, text: str) -> bytes:
        return _frame(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": text},
            }
        )

    def closing(self, plan: Plan, done: Done) -> list[bytes]:
        if done.error is not None:
            return [_frame(error_body(500, done.error))]
        frames = [_frame({"type": "content_block_stop", "index": 0})]
        tool = _tool_block(plan)
        if tool is not None:
            frames += [
                _frame({"type": "content_block_start", "index": 1, "content_block": tool}),
                _frame(
                    {
                        "type": "content_block_delta",
                        "index": 1,
                        "delta": {
                            "type": "input_json_delta",
                            "partial_json": json.dumps(_tool_input(plan.ask.extra["tool"])),
                        },
                    }
                ),
                _frame({"type": "content_block_stop", "index": 1}),
            ]
        frames += [
            _frame(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": _stop_reason(plan, done), "stop_sequence": None},
                    "usage": _usage(plan, done),
                }
            ),
            _frame({"type": "message_stop"}),
        ]
        return frames

    def body(self, plan: Plan, done: Done) -> tuple[int, dict[str, Any]]:
        if done.error is not None:
            return 502, error_body(502, done.error)
        content: list[dict[str, Any]] = [{"type": "text", "text": done.text}]
        tool = _tool_block(plan)
        if tool is not None:
            content.append({**tool, "input": _tool_input(plan.ask.extra["tool"])})
        return 200, _message(plan, content, done)


MESSAGES = MessagesApi()


async def messages(request: web.Request) -> web.StreamResponse:
    return await serve(request, MESSAGES)
