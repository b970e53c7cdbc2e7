"""`POST /responses`: OpenRouter's Responses API (beta, stateless) over the shared engine.

A streamed answer is `event:`/`data:` pairs: `response.created`, `response.in_progress`,
`response.output_item.added`, `response.content_part.added`, one
`response.output_text.delta` a token, `response.output_text.done`,
`response.content_part.done`, `response.output_item.done`, then `response.completed`
(or `response.incomplete` when `max_output_tokens` cut the answer short) carrying the
whole response with its usage and cost. A mid-stream error is `response.failed` with
`response.error` and the usage so far. No `data: [DONE]` follows (see the package doc).
With a `tool_call` fault, a request offering function tools (and whose input answers no
call yet) also gets a `function_call` output item calling the first one.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .engine import Api, serve
from .plan import Ask, Counts, Done, Plan, PlanError, token_limit
from .state import Fault


def usage_dict(usage: Counts | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    out: dict[str, Any] = {
        "input_tokens": usage.prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": usage.completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.prompt + usage.completion,
    }
    if usage.cost is not None:
        out["cost"] = float(usage.cost)
        out["is_byok"] = False
        out["cost_details"] = {
            "upstream_inference_cost": None,
            "upstream_inference_input_cost": float(usage.price.prompt * usage.prompt),
            "upstream_inference_output_cost": float(usage.price.completion * usage.completion),
        }
    return out


def _event(payload: dict[str, Any]) -> bytes:
    data = json.dumps(payload, separators=(",", ":"))
    return f"event: {payload['type']}\ndata: {data}\n\n".encode()


def _item_id(plan: Plan) -> str:
    return "msg_" + plan.reply.gen_id.removeprefix(ResponsesApi.id_prefix)


def _part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _item(plan: Plan, text: str | None) -> dict[str, Any]:
    """The message output item; `text=None` while it is still being written."""
    return {
        "type": "message",
        "id": _item_id(plan),
        "role": "assistant",
        "status": "in_progress" if text is None else "completed",
        "content": [] if text is None else [_part(text)],
    }


def _status(done: Done | None) -> str:
    if done is None:
        return "in_progress"
    return {"error": "failed", "length": "incomplete"}.get(done.finish, "completed")


def _output(plan: Plan, done: Done) -> list[dict[str, Any]]:
    items = [_item(plan, done.text)]
    call = _call(plan, _arguments(plan)) if done.error is None else None
    return items if call is None else [*items, call]


def response(plan: Plan, done: Done | None) -> dict[str, Any]:
    """The Response object; `done=None` is the in-progress one that opens a stream."""
    status = _status(done)
    return {
        "id": plan.reply.gen_id,
        "object": "response",
        "created_at": plan.reply.created,
        "model": plan.reply.model,
        "provider": plan.reply.provider,
        "status": status,
        "output": [] if done is None else _output(plan, done),
        "error": None
        if done is None or done.error is None
        else {"code": "server_error", "message": done.error},
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": plan.ask.extra.get("instructions"),
        "max_output_tokens": plan.ask.max_tokens,
        "metadata": {},
        "parallel_tool_calls": True,
        "temperature": None,
        "tool_choice": "auto",
        "tools": plan.ask.extra.get("tools", []),
        "top_p": None,
        "usage": None if done is None else usage_dict(done.usage),
    }


def _input(body: dict[str, Any]) -> Any:
    value = body.get("input")
    if isinstance(value, str) or (isinstance(value, list) and value):
        return value
    raise PlanError("'input' must be a string or a non-empty array of input items")


_OPENING = 4  # created, in_progress, output_item.added, content_part.added


def _function_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The first function tool offered, unless the input already answers a call."""
    tools = body.get("tools")
    if not isinstance(tools, list):
        return None
    items = body.get("input")
    if isinstance(items, list) and any(
        isinstance(item, dict) and item.get("type") == "function_call_output" for item in items
    ):
        return None
    return next(
        (
            tool
            for tool in tools
            if isinstance(tool, dict)
            and tool.get("type") == "function"
            and isinstance(tool.get("name"), str)
        ),
        None,
    )


def _call(plan: Plan, arguments: str | None) -> dict[str, Any] | None:
    """The function_call output item (`arguments=None` while it is being written)."""
    tool = plan.ask.extra.get("tool")
    if tool is None:
        return None
    suffix = plan.reply.gen_id.removeprefix(ResponsesApi.id_prefix)
    return {
        "type": "function_call",
        "id": f"fc_{suffix}",
        "call_id": f"call_{suffix}",
        "name": tool["name"],
        "arguments": "" if arguments is None else arguments,
        "status": "in_progress" if arguments is None else "completed",
    }


def _arguments(plan: Plan) -> str:
    tool = plan.ask.extra.get("tool") or {}
    schema = tool.get("parameters")
    required = schema.get("required", []) if isinstance(schema, dict) else []
    return json.dumps({str(name): "mock" for name in required if isinstance(name, str)})


def _message_done(plan: Plan, text: str) -> list[dict[str, Any]]:
    where = {"item_id": _item_id(plan), "output_index": 0, "content_index": 0}
    return [
        {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": _part(text)},
        {"type": "response.output_item.done", "output_index": 0, "item": _item(plan, text)},
    ]


def _call_events(plan: Plan) -> list[dict[str, Any]]:
    opened = _call(plan, None)
    if opened is None:
        return []
    arguments = _arguments(plan)
    where = {"item_id": opened["id"], "output_index": 1}
    return [
        {"type": "response.output_item.added", "output_index": 1, "item": opened},
        {"type": "response.function_call_arguments.delta", **where, "delta": arguments},
        {"type": "response.function_call_arguments.done", **where, "arguments": arguments},
        {"type": "response.output_item.done", "output_index": 1, "item": _call(plan, arguments)},
    ]


class ResponsesApi(Api):
    name = "responses"

    def ask(self, body: dict[str, Any], fault: Fault) -> Ask:
        tools = body.get("tools")
        return Ask(
            prompt=[body.get("instructions"), _input(body)],
            max_tokens=token_limit(body, "max_output_tokens"),
            stream=body.get("stream") is True,
            cost_in_body=True,
            stream_usage=True,
            extra={
                "instructions": body.get("instructions"),
                "tools": tools if isinstance(tools, list) else [],
                "tool": _function_tool(body) if fault.tool_call else None,
            },
        )

    def opening(self, plan: Plan) -> list[bytes]:
        head = response(plan, None)
        where = {"item_id": _item_id(plan), "output_index": 0, "content_index": 0}
        return [
            _event({"type": "response.created", "sequence_number": 0, "response": head}),
            _event({"type": "response.in_progress", "sequence_number": 1, "response": head}),
            _event(
                {
                    "type": "response.output_item.added",
                    "sequence_number": 2,
                    "output_index": 0,
                    "item": _item(plan, None),
                }
            ),
            _event(
                {
                    "type": "response.content_part.added",
                    "sequence_number": 3,
                    **where,
                    "part": _part(""),
                }
            ),
        ]

    def delta(self, plan: Plan, index: int, text: str) -> bytes:
        return _event(
            {
                "type": "response.output_text.delta",
                "sequence_number": _OPENING + index,
                "item_id": _item_id(plan),
                "output_index": 0,
                "content_index": 0,
                "delta": text,
                "logprobs": [],
            }
        )

    def closing(self, plan: Plan, done: Done) -> list[bytes]:
        final = response(plan, done)
        if done.error is not None:
            events: list[dict[str, Any]] = [{"type": "response.failed", "response": final}]
        else:
            events = [*_message_done(plan, done.text), *_call_events(plan)]
            last = (
                "response.incomplete" if final["status"] == "incomplete" else "response.completed"
            )
            events.append({"type": last, "response": final})
        first = _OPENING + done.tokens
        return [
            _event({"type": e["type"], "sequence_number": first + n, **e})
            for n, e in enumerate(events)
        ]

    def body(self, plan: Plan, done: Done) -> tuple[int, dict[str, Any]]:
        return 200, response(plan, done)


RESPONSES = ResponsesApi()


async def responses(request: web.Request) -> web.StreamResponse:
    return await serve(request, RESPONSES)
