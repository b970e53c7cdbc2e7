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
from gate.http.openapi_schemas import SCHEMAS

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
            'gate answers is `{"error": {"message", "type", "code"}}`, but on the Messages '
            'API, whose clients get Anthropic\'s `{"type": "error", "error": {"type", '
            '"message"}}`.',
        },
        "paths": {**_inference_paths(), **_admin_paths(), **_page_paths()},
        "components": _components(),
    }


def _inference_paths() -> dict[str, Any]:
    """Chat completions, the other inference APIs (gate.http.openapi_apis), the models
    list and the agent's key view."""
    return {
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
    }


def _admin_paths() -> dict[str, Any]:
    return {
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
        "/api/upstream": _admin_get("The upstream key's limit, usage and credit", "UpstreamKey"),
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
    }


def _page_paths() -> dict[str, Any]:
    """Metrics, the dashboard page and this document."""
    return {
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
    }


def _components() -> dict[str, Any]:
    return {
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
