"""The gate's errors (`GateError`), their types, and OpenAI's error shape.

Every error the gate answers itself is `{"error": {"message", "type", "code"}}` for
OpenAI's APIs; each API's adapter (`gate.http.apis`) renders it in its own shape
(Anthropic's for Messages) and as its own event once a stream has started.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web


class GateError(Exception):
    """An error the gate answers itself, before any byte of an answer was sent."""

    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})  # more fields of the error object
        # the status the spend log records when the client is answered another one (a
        # budget refusal told to Codex as its usage limit, `gate.http.apis.responses`)
        self.logged_status: int | None = None


def error_object(
    status: int, type_: str, message: str, extra: Mapping[str, object] | None = None
) -> dict[str, object]:
    return {"error": {"message": message, "type": type_, "code": status, **(extra or {})}}


def error_response(
    status: int,
    type_: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, object] | None = None,
) -> web.Response:
    body = error_object(status, type_, message, extra)
    return web.json_response(body, status=status, headers=headers)


def type_for_status(status: int) -> str:
    """The error type of a status the gate answers without a more specific one."""
    return {
        400: INVALID_REQUEST,
        401: AUTHENTICATION,
        403: PERMISSION,
        404: NOT_FOUND,
        405: INVALID_REQUEST,
        413: INVALID_REQUEST,
    }.get(status, SERVER_ERROR if status >= 500 else INVALID_REQUEST)


# The gate's own error types, named once.
INVALID_REQUEST = "invalid_request_error"
AUTHENTICATION = "authentication_error"
PERMISSION = "permission_error"
NOT_FOUND = "not_found_error"
BUDGET_EXHAUSTED = "budget_exhausted"
SPEND_LOG_UNAVAILABLE = "spend_log_unavailable"
SPEND_STORE_UNAVAILABLE = "spend_store_unavailable"
OVERLOADED = "overloaded"
RATE_LIMITED = "rate_limit_exceeded"
LOOP_DETECTED = "loop_detected"
UPSTREAM_ERROR = "upstream_error"
UPSTREAM_CREDITS = "upstream_credits_exhausted"
SERVER_ERROR = "server_error"


def budget_refusal(agent_id: str, why: str, resets_at: str | None) -> GateError:
    """A budget refusal a client can act on: 402, never worth retrying before the
    budget resets (`x-should-retry: false`, which the OpenAI SDKs honour; no
    `Retry-After`), and when that is (`resets_at`: the period's end, or null for a
    budget that never resets). The words "budget" and "credits" are what agents' billing
    classifiers look for, so a refusal is not taken for a context overflow."""
    when = f"it resets at {resets_at}" if resets_at else "it does not reset by itself"
    headers = {"x-should-retry": "false"}
    if resets_at:
        headers["X-Execwall-Budget-Resets-At"] = resets_at
    return GateError(
        402,
        BUDGET_EXHAUSTED,
        f"budget exhausted for agent '{agent_id}' ({why}): insufficient credits "
        f"left in this period's budget; {when}. Do not retry before then.",
        headers,
        {"resets_at": resets_at},
    )


def log_unavailable(reason: str) -> GateError:
    """The spend log cannot be written: no paid request goes upstream unrecorded."""
    return GateError(
        503,
        SPEND_LOG_UNAVAILABLE,
        f"the spend log cannot be written ({reason}); no paid request is admitted",
        {"Retry-After": "5"},
    )


def store_unavailable(reason: str) -> GateError:
    """The shared spend store (Redis) cannot be used: paid requests and admin changes wait."""
    return GateError(
        503,
        SPEND_STORE_UNAVAILABLE,
        f"the spend store cannot be used ({reason}); no paid request is admitted",
        {"Retry-After": "5"},
    )
