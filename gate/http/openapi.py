"""`GET /openapi.json`: an OpenAPI 3.0 description of the gate's own endpoints.

Kept beside the code it describes; tests/test_security.py checks that it names every
route the app serves, and tests/test_fuzz.py fuzzes the running gate against it.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from aiohttp import web

from gate.http.openapi_apis import SCHEMAS as API_SCHEMAS
from gate.http.openapi_apis import TASK_SCHEMAS, anthropic_responses, api_paths, task_paths

AGENT_ID_PATTERN = "^[A-Za-z0-9._-]{1,64}$"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): {"$ref": f"#/components/responses/E{code}"} for code in codes}


ERROR_MEANINGS = {
    400: "The request is unsound (body, X-Agent-ID, an admin field), or upstream refused it",
    401: "Missing or wrong agent key or admin token, or upstream refused the key",
    402: "Budget exhausted (type budget_exhausted) or upstream credits gone",
    403: "Agent not configured, admin changes disabled (no admin token set), or a foreign "
    "Origin or Host (a web page's request)",
    404: "No such agent",
    408: "The request body arrived too slowly (limits.client_timeout_seconds)",
    409: "A task's cap that the agent's budget cannot cover (or a store without tasks)",
    413: "The body is larger than limits.max_body_bytes",
    415: "A POST body that is not application/json",
    429: "A rate limit: the agent's requests or tokens per minute, the :free models' "
    "(Retry-After, retry-after-ms), its in-flight share, or upstream's, relayed",
    500: "Upstream server error, relayed after the retries",
    502: "Upstream unreachable, cut off, not JSON, or answered with a redirect",
    503: "Too many requests in flight (Retry-After), the spend log cannot be written, "
    "or upstream unavailable",
    504: "Upstream timed out",
}

CHAT_ERRORS = (400, 401, 402, 403, 408, 413, 415, 429, 500, 502, 503, 504)

AGENT_HEADER = {
    "name": "X-Agent-ID",
    "in": "header",
    "required": False,
    "description": "The calling agent; missing means `default`.",
    "schema": {"type": "string", "pattern": AGENT_ID_PATTERN},
}
AGENT_PATH = {
    "name": "agent_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1},
}
EXECWALL_HEADERS = {
    name: {"description": meaning, "schema": {"type": "string"}}
    for name, meaning in (
        ("X-Execwall-Agent", "The agent charged"),
        ("X-Execwall-Tier", "The tier used"),
        ("X-Execwall-Models-Allowed", "The tier's models, comma-separated"),
        ("X-Request-ID", "The spend log's request_id"),
        ("X-Execwall-Budget-Remaining", "USD left of the agent's budget (never below 0)"),
        ("X-Execwall-Budget-Total", "The agent's budget for its period, USD"),
        ("X-Execwall-Budget-Resets-At", "The period's end, UTC (absent for `never`)"),
        ("x-ratelimit-remaining-requests", "Requests left in the minute (when limited)"),
        ("x-ratelimit-remaining-tokens", "Tokens left in the minute (when limited)"),
    )
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "code"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "code": {"type": "integer", "description": "The HTTP status"},
                },
            }
        },
    },
    "Message": {
        "type": "object",
        "required": ["role", "content"],
        "properties": {
            "role": {
                "type": "string",
                "enum": ["system", "developer", "user", "assistant", "tool"],
            },
            "content": {
                "oneOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"type": "object"}},
                ]
            },
        },
    },
    "ChatRequest": {
        "type": "object",
        "required": ["messages"],
        "description": "OpenAI's chat completion request. Other fields pass to upstream, "
        "except those that could widen the choice of models (`models`, `route`, "
        "`preset`, provider `order`/`only` naming models), which are replaced or dropped.",
        "properties": {
            "model": {
                "type": "string",
                "description": "A wish: used first when the agent's current tier lists "
                "this exact id, else the tier's own order is used.",
            },
            "messages": {"type": "array", "minItems": 1, "items": _ref("Message")},
            "stream": {"type": "boolean"},
            "stream_options": {
                "type": "object",
                "properties": {"include_usage": {"type": "boolean"}},
            },
            "max_tokens": {"type": "integer", "minimum": 1},
            "max_completion_tokens": {"type": "integer", "minimum": 1},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        },
    },
    "Execwall": {
        "type": "object",
        "required": [
            "agent_id",
            "request_id",
            "cost",
            "budget_remaining",
            "models_allowed",
            "tier",
        ],
        "properties": {
            "agent_id": {"type": "string"},
            "request_id": {"type": "string"},
            "cost": {"type": "number", "description": "USD charged for this request"},
            "budget_remaining": {"type": "number", "nullable": True},
            "models_allowed": {"type": "array", "items": {"type": "string"}},
            "tier": {"type": "string"},
            "max_tokens": {"type": "integer"},
            "max_tokens_clamped": {"type": "boolean"},
        },
    },
    "ChatCompletion": {
        "type": "object",
        "required": ["_execwall"],
        "description": "Upstream's answer, unchanged, plus `_execwall`.",
        "properties": {
            "id": {"type": "string"},
            "model": {"type": "string"},
            "choices": {"type": "array", "items": {"type": "object"}},
            "usage": {"type": "object"},
            "_execwall": _ref("Execwall"),
        },
    },
    "StreamEvent": {
        "type": "object",
        "description": "One SSE event: upstream's `chat.completion.chunk` as JSON, "
        "unchanged (the usage chunk carries `_execwall`), an error object, or `[DONE]`.",
        "required": ["data"],
        "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
    },
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "object", "created", "owned_by"],
                    "properties": {
                        "id": {"type": "string"},
                        "object": {"type": "string", "enum": ["model"]},
                        "created": {"type": "integer"},
                        "owned_by": {"type": "string"},
                    },
                },
            },
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "agents", "open_holds", "prices_loaded"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "degraded"]},
            "agents": {"type": "integer"},
            "open_holds": {"type": "integer"},
            "prices_loaded": {"type": "boolean"},
            "spend_log_error": {"type": "string"},
        },
    },
    "Spend": {
        "type": "object",
        "required": [
            "agent_id",
            "budget_total",
            "budget_spent",
            "budget_held",
            "budget_remaining",
            "remaining_fraction",
            "period",
            "hard_cap",
            "tier",
            "models_allowed",
        ],
        "properties": {
            "agent_id": {"type": "string"},
            "budget_total": {"type": "number"},
            "budget_spent": {"type": "number"},
            "budget_held": {"type": "number"},
            "budget_remaining": {"type": "number"},
            "remaining_fraction": {"type": "number"},
            "period": {"type": "string", "enum": ["daily", "weekly", "monthly", "never"]},
            "period_start": {"type": "string", "nullable": True},
            "hard_cap": {"type": "boolean"},
            "budget_source": {"type": "string"},
            "tier": {"type": "string", "nullable": True},
            "models_allowed": {"type": "array", "items": {"type": "string"}},
            "tier_thresholds": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "threshold": {"type": "number"}},
                },
            },
            "rate_limits": {"type": "object"},
            "forecast": {
                "type": "object",
                "description": "When the budget runs out at the agent's recent pace.",
                "properties": {
                    "rate_usd_per_hour": {"type": "number"},
                    "runs_out_at": {"type": "string", "nullable": True},
                    "before_reset": {"type": "boolean"},
                    "resets_at": {"type": "string", "nullable": True},
                },
            },
        },
    },
    "SpendAll": {
        "type": "object",
        "required": ["agents"],
        "properties": {"agents": {"type": "object", "additionalProperties": _ref("Spend")}},
    },
    "BudgetChange": {
        "type": "object",
        "minProperties": 1,
        "additionalProperties": False,
        "properties": {
            "budget_total": {"type": "number", "minimum": 0},
            "budget_spent": {"type": "number", "minimum": 0},
        },
    },
    "Prices": {
        "type": "object",
        "description": "The price table in use (per million tokens, and per token as "
        "upstream gave it); a tier model upstream does not price is null.",
        "required": ["loaded", "tier_models", "models"],
        "properties": {
            "loaded": {"type": "boolean"},
            "refresh_seconds": {"type": "number"},
            "unknown_model": {"type": "object"},
            "tier_models": {
                "type": "object",
                "additionalProperties": {"type": "object", "nullable": True},
            },
            "models": {"type": "object", "additionalProperties": {"type": "object"}},
            "prompt_calibration": {
                "type": "object",
                "description": "Per model that answered since the start: prompt tokens "
                "per estimate unit a hold assumes, and the requests it rests on.",
                "additionalProperties": {"type": "object"},
            },
        },
    },
    "Alerts": {
        "type": "object",
        "required": ["alerts"],
        "properties": {
            "webhook": {"type": "object"},
            "queued": {"type": "integer"},
            "alerts": {"type": "array", "items": {"type": "object"}},
        },
    },
    "DayCounts": {
        "type": "object",
        "required": [
            "spent_today",
            "requests_today",
            "refused_today",
            "refused_by_budget_today",
        ],
        "properties": {
            "spent_today": {"type": "number"},
            "requests_today": {"type": "integer"},
            "refused_today": {"type": "integer"},
            "refused_by_budget_today": {"type": "integer"},
        },
    },
    "Dashboard": {
        "type": "object",
        "description": "Each agent's spend and refusals today (UTC), counted in memory "
        "since `since`: midnight, or the gate's start when that was later.",
        "required": ["day", "since", "whole_day", "agents", "unknown_agents"],
        "properties": {
            "day": {"type": "string"},
            "since": {"type": "string"},
            "whole_day": {"type": "boolean"},
            "refresh_seconds": {"type": "number"},
            "agents": {"type": "object", "additionalProperties": _ref("DayCounts")},
            "unknown_agents": _ref("DayCounts"),
            "history": {
                "type": "object",
                "description": "Per agent, [ts, budget left] after each settled request.",
                "additionalProperties": {"type": "array", "items": {"type": "array"}},
            },
        },
    },
    "UpstreamKey": {
        "type": "object",
        "description": "OpenRouter's view of the gate's key (GET /key: limit, usage, "
        "remaining; never its label), cached.",
        "required": ["key", "error"],
        "properties": {
            "key": {"type": "object", "nullable": True},
            "checked_at": {"type": "string", "nullable": True},
            "error": {"type": "string", "nullable": True},
        },
    },
    "Reloaded": {
        "type": "object",
        "required": ["status", "agents", "notes"],
        "properties": {
            "status": {"type": "string", "enum": ["reloaded"]},
            "agents": {"type": "array", "items": {"type": "string"}},
            "notes": {"type": "array", "items": {"type": "string"}},
        },
    },
}

ADMIN: list[dict[str, list[str]]] = [{"adminToken": []}]
ADMIN_NOTE = (
    " Needs the admin token when one is set; without one, GETs are open and changes answer 403."
)


def _admin_get(summary: str, schema: str, *errors: int) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "description": summary + "." + ADMIN_NOTE,
            "security": ADMIN,
            "responses": {"200": _json(_ref(schema), summary), **_errors(401, *errors)},
        }
    }


def _admin_post(summary: str, schema: str, body: bool, *errors: int) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "description": summary + "." + ADMIN_NOTE,
        "security": ADMIN,
        "responses": {"200": _json(_ref(schema), summary), **_errors(401, 403, *errors)},
    }
    if body:
        operation["responses"] |= _errors(415)
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref("BudgetChange")}},
        }
    return {"post": operation}


KEY_INFO: dict[str, Any] = {
    "get": {
        "summary": "The calling agent's own budget, in the shape of OpenRouter's GET /key",
        "description": "`limit` is the period's budget_total, `usage` the spend, "
        "`limit_remaining` what is left after open holds, `limit_reset` the period. Never "
        "the numbers of the gate's upstream key.",
        "parameters": [AGENT_HEADER],
        "security": [{}, {"agentKey": []}],
        "responses": {
            "200": _json({"type": "object", "required": ["data"]}, "OpenRouter's key shape"),
            **_errors(400, 401, 403),
        },
    }
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Execwall OR Gate",
            "version": "0.1.0",
            "description": "A budget-aware gateway in front of OpenRouter. Every error the "
            'gate answers is `{"error": {"message", "type", "code"}}`.',
        },
        "paths": {
            "/v1/chat/completions": {
                "post": {
                    "summary": "A chat completion, routed to the agent's current tier",
                    "description": "An agent with an `api_key` must send it as a bearer "
                    "token. With `stream: true` the answer is upstream's SSE stream, relayed "
                    "event by event.",
                    "parameters": [AGENT_HEADER],
                    "security": [{}, {"agentKey": []}],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("ChatRequest")}},
                    },
                    "responses": {
                        "200": {
                            "description": "The answer (JSON), or its SSE stream",
                            "headers": EXECWALL_HEADERS,
                            "content": {
                                "application/json": {"schema": _ref("ChatCompletion")},
                                "text/event-stream": {"schema": _ref("StreamEvent")},
                            },
                        },
                        **_errors(*CHAT_ERRORS),
                        "default": _json(
                            _ref("Error"), "Another upstream error status, relayed in this shape"
                        ),
                    },
                }
            },
            **api_paths(EXECWALL_HEADERS),
            "/v1/models": {
                "get": {
                    "summary": "The models the calling agent may use now",
                    "parameters": [AGENT_HEADER],
                    "security": [{}, {"agentKey": []}],
                    "responses": {
                        "200": _json(_ref("ModelList"), "OpenAI's list shape"),
                        **_errors(400, 401, 403),
                    },
                }
            },
            "/v1/key": KEY_INFO,
            "/v1/auth/key": KEY_INFO,
            "/api/health": {
                "get": {
                    "summary": "Health; never needs a token",
                    "security": [],
                    "responses": {
                        "200": _json(_ref("Health"), "Serving"),
                        "503": _json(_ref("Health"), "Degraded: the spend log cannot be written"),
                    },
                }
            },
            "/api/spend": _admin_get("Every agent's spend", "SpendAll"),
            "/api/prices": _admin_get("The price table holds and costs use", "Prices"),
            "/api/alerts": _admin_get("The most recent alerts, newest first", "Alerts"),
            "/api/dashboard": _admin_get("Each agent's spend and refusals today", "Dashboard"),
            "/api/upstream": _admin_get(
                "The upstream key's limit, usage and credit", "UpstreamKey"
            ),
            "/api/spend/{agent_id}": {
                "parameters": [AGENT_PATH],
                **_admin_get("One agent's spend", "Spend", 404),
            },
            "/api/budget/{agent_id}": {
                "parameters": [AGENT_PATH],
                **_admin_post("Set budget_total and/or budget_spent", "Spend", True, 400, 404),
            },
            **task_paths(ADMIN, ADMIN_NOTE),
            "/api/reset/{agent_id}": {
                "parameters": [AGENT_PATH],
                **_admin_post("Set budget_spent back to 0", "Spend", False, 404),
            },
            "/api/reload": _admin_post(
                "Re-read the config; an invalid one is refused and the old one stays",
                "Reloaded",
                False,
                400,
            ),
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "description": "Prometheus text." + ADMIN_NOTE,
                    "security": ADMIN,
                    "responses": {
                        "200": {
                            "description": "Prometheus text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        **_errors(401),
                    },
                }
            },
            "/": {
                "get": {
                    "summary": "The dashboard page",
                    "description": "A static page without data: its script reads the admin "
                    "API with the admin token the user gives it.",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "HTML",
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        },
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {
                        "200": _json({"type": "object"}, "OpenAPI 3.0 description"),
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "GATE_ADMIN_TOKEN (or cost_routing.admin_token)",
                },
                "agentKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The agent's own gate key (agents.<id>.api_key); in "
                    "pass-through mode, the client's OpenRouter key",
                },
            },
            "schemas": {**SCHEMAS, **API_SCHEMAS, **TASK_SCHEMAS},
            "responses": {
                **{f"E{code}": _json(_ref("Error"), text) for code, text in ERROR_MEANINGS.items()},
                **anthropic_responses(ERROR_MEANINGS),
            },
        },
    }


def with_openrouter_paths(doc: dict[str, Any]) -> dict[str, Any]:
    """Every `/v1/...` inference path also under OpenRouter's own `/api/v1/...`."""
    paths = doc["paths"]
    for path in [p for p in paths if p.startswith("/v1/")]:
        paths["/api" + path] = paths[path]
    return doc


@functools.cache
def _rendered() -> bytes:
    return json.dumps(with_openrouter_paths(document()), indent=1).encode()


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=_rendered(), content_type="application/json")
