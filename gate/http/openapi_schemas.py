"""The OpenAPI document's schemas for chat completions, the admin API and the gate's
own answers (`gate.http.openapi` assembles the document)."""

from __future__ import annotations

from typing import Any


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


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
