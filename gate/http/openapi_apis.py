"""The OpenAPI description of the inference APIs beside chat completions: Responses,
Anthropic Messages, completions and embeddings (`gate.http.openapi` merges them in)."""

from __future__ import annotations

from typing import Any

ANTHROPIC_ERRORS = (400, 401, 402, 403, 408, 413, 415, 429, 500, 502, 503, 504)
OPENAI_ERRORS = (400, 401, 402, 403, 408, 413, 415, 429, 500, 502, 503, 504)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _body(required: list[str], description: str, **properties: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "required": required,
        "description": description,
        "properties": {
            "model": {
                "type": "string",
                "description": "A wish: used first when the agent's current tier lists "
                "this exact id, else the tier's own order is used.",
            },
            **properties,
        },
    }


_TEXTS = {"oneOf": [{"type": "string", "minLength": 1}, {"type": "array", "minItems": 1}]}
_LIMIT = {"type": "integer", "minimum": 1}

SCHEMAS: dict[str, Any] = {
    "AnthropicError": {
        "type": "object",
        "required": ["type", "error"],
        "properties": {
            "type": {"type": "string", "enum": ["error"]},
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
    "ResponsesRequest": _body(
        ["input"],
        "The Responses API's request; fields that could widen the choice of models are "
        "replaced or dropped, as for chat.",
        input=_TEXTS,
        instructions={"type": "string"},
        stream={"type": "boolean"},
        max_output_tokens=_LIMIT,
    ),
    "MessagesRequest": _body(
        ["messages"],
        "Anthropic's Messages request (the key as `x-api-key` or a bearer token).",
        messages={"type": "array", "minItems": 1, "items": {"type": "object"}},
        system={"oneOf": [{"type": "string"}, {"type": "array"}]},
        stream={"type": "boolean"},
        max_tokens=_LIMIT,
    ),
    "CompletionsRequest": _body(
        ["prompt"],
        "A legacy text completion.",
        prompt={
            "oneOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "minItems": 1, "items": {"type": "string"}},
            ]
        },
        stream={"type": "boolean"},
        max_tokens=_LIMIT,
    ),
    "EmbeddingsRequest": _body(["input"], "Embeddings; never streamed.", input=_TEXTS),
    "Answer": {
        "type": "object",
        "description": "Upstream's answer in the API's own shape, plus `_execwall`.",
        "properties": {"_execwall": _ref("Execwall")},
    },
}


def _operation(
    summary: str, request: str, errors: str, headers: dict[str, Any], streams: bool = True
) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": _ref("Answer")}}
    if streams:
        content["text/event-stream"] = {"schema": _ref("StreamEvent")}
    codes = ANTHROPIC_ERRORS if errors == "A" else OPENAI_ERRORS
    error = _ref("AnthropicError" if errors == "A" else "Error")
    return {
        "post": {
            "summary": summary,
            "parameters": [
                {
                    "name": "X-Agent-ID",
                    "in": "header",
                    "required": False,
                    "description": "The calling agent; missing means `default`.",
                    "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
                }
            ],
            "security": [{}, {"agentKey": []}],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref(request)}},
            },
            "responses": {
                "200": {"description": "The answer", "headers": headers, "content": content},
                **{str(c): {"$ref": f"#/components/responses/{errors}{c}"} for c in codes},
                "default": {
                    "description": "Another upstream error status, relayed in this shape",
                    "content": {"application/json": {"schema": error}},
                },
            },
        }
    }


def api_paths(headers: dict[str, Any]) -> dict[str, Any]:
    """The path items under `/v1` (`/api/v1` is added for every `/v1` path)."""
    return {
        "/v1/responses": _operation(
            "A response (the Responses API), routed to the agent's current tier",
            "ResponsesRequest",
            "E",
            headers,
        ),
        "/v1/messages": _operation(
            "An Anthropic message, routed to the agent's current tier; errors in Anthropic's shape",
            "MessagesRequest",
            "A",
            headers,
        ),
        "/v1/completions": _operation(
            "A legacy text completion, routed to the agent's current tier",
            "CompletionsRequest",
            "E",
            headers,
        ),
        "/v1/embeddings": _operation(
            "Embeddings, held and billed at the input's price",
            "EmbeddingsRequest",
            "E",
            headers,
            streams=False,
        ),
    }


def anthropic_responses(meanings: dict[int, str]) -> dict[str, Any]:
    return {
        f"A{code}": {
            "description": text,
            "content": {"application/json": {"schema": _ref("AnthropicError")}},
        }
        for code, text in meanings.items()
    }


TASK: dict[str, Any] = {
    "type": "object",
    "required": ["task_id", "agent_id", "cap", "spent", "remaining", "expires_at", "open"],
    "properties": {
        "task_id": {"type": "string"},
        "agent_id": {"type": "string"},
        "name": {"type": "string", "nullable": True},
        "cap": {"type": "number"},
        "spent": {"type": "number"},
        "held": {"type": "number"},
        "remaining": {"type": "number"},
        "expires_at": {"type": "string"},
        "open": {"type": "boolean"},
        "ended": {"type": "string", "nullable": True},
    },
}
TASK_SCHEMAS: dict[str, Any] = {
    "Task": TASK,
    "TaskCreated": {
        **TASK,
        "required": [*TASK["required"], "key"],
        "properties": {
            **TASK["properties"],
            "key": {"type": "string", "description": "The task key: shown this once"},
        },
    },
    "TaskList": {
        "type": "object",
        "required": ["tasks"],
        "properties": {"tasks": {"type": "array", "items": _ref("Task")}},
    },
    "TaskRequest": {
        "type": "object",
        "required": ["agent_id", "cap"],
        "additionalProperties": False,
        "properties": {
            "agent_id": {"type": "string"},
            "cap": {"type": "number", "exclusiveMinimum": True, "minimum": 0},
            "ttl_seconds": {"type": "integer", "minimum": 1, "maximum": 604800},
            "name": {"type": "string", "maxLength": 200},
        },
    },
}


def task_paths(admin: list[dict[str, list[str]]], note: str) -> dict[str, Any]:
    """`/api/tasks`: task budgets (admin)."""

    def errors(*codes: int) -> dict[str, Any]:
        return {str(c): {"$ref": f"#/components/responses/E{c}"} for c in codes}

    def answer(schema: str, text: str) -> dict[str, Any]:
        return {"description": text, "content": {"application/json": {"schema": _ref(schema)}}}

    task_id = {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "/api/tasks": {
            "post": {
                "summary": "Mint a task key with its own cap, reserved from the agent's budget",
                "description": "The key is in the answer only." + note,
                "security": admin,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("TaskRequest")}},
                },
                "responses": {
                    "201": answer("TaskCreated", "The task and its key"),
                    **errors(400, 401, 403, 404, 409, 415, 503),
                },
            },
            "get": {
                "summary": "Every task (never their keys)",
                "description": "Every task." + note,
                "security": admin,
                "responses": {"200": answer("TaskList", "The tasks"), **errors(401)},
            },
        },
        "/api/tasks/{task_id}": {
            "parameters": [task_id],
            "get": {
                "summary": "One task",
                "description": "One task." + note,
                "security": admin,
                "responses": {"200": answer("Task", "The task"), **errors(401, 404)},
            },
        },
        "/api/tasks/{task_id}/close": {
            "parameters": [task_id],
            "post": {
                "summary": "End a task now: its key stops, its unspent cap is released",
                "description": "End a task." + note,
                "security": admin,
                "responses": {"200": answer("Task", "The ended task"), **errors(401, 403, 404)},
            },
        },
    }
