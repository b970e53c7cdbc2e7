"""What arrives: who is calling, and the request body, checked before anything is spent."""

from __future__ import annotations

import asyncio
import hmac
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from gate.config import AgentPolicy, GateConfig
from gate.config.types import MAX_TOKENS_CEILING
from gate.http.demand import Demand, read_demand
from gate.http.errors import AUTHENTICATION, INVALID_REQUEST, PERMISSION, GateError

AGENT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
DEFAULT_AGENT = "default"
# Fields that would let a client widen the choice of models beyond its tier.
WIDENING_FIELDS = ("models", "route", "preset")


@dataclass(frozen=True, slots=True)
class Caller:
    policy: AgentPolicy
    authorization: str  # what goes upstream: the gate's key, or the client's own


def bearer(request: web.Request) -> str | None:
    value = request.headers.get("Authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    # Keys and tokens are printable ASCII; anything else is no credential (and is never
    # passed upstream, where it could not even be encoded).
    return token if token.isascii() and token.isprintable() else None


def same_secret(given: str | None, secret: str) -> bool:
    """Compare in constant time. Header bytes that are not UTF-8 arrive as surrogates:
    they simply do not match (never a 500)."""
    if given is None:
        return False
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), secret.encode("utf-8", "surrogatepass")
    )


def agent_id_of(request: web.Request) -> str:
    raw = request.headers.get("X-Agent-ID")
    if raw is None:
        return DEFAULT_AGENT
    if not AGENT_ID.fullmatch(raw):
        raise GateError(400, INVALID_REQUEST, "X-Agent-ID must match [A-Za-z0-9._-]{1,64}")
    return raw


def identify(request: web.Request, cfg: GateConfig, agent_id: str | None = None) -> Caller:
    """The calling agent and the Authorization to send upstream (400/401/403)."""
    if agent_id is None:
        agent_id = agent_id_of(request)
    policy = cfg.agents.get(agent_id)
    if policy is None:
        raise GateError(403, PERMISSION, f"agent '{agent_id}' is not configured on this gate")
    token = bearer(request)
    if policy.api_key is not None:
        if not same_secret(token, policy.api_key):
            raise GateError(401, AUTHENTICATION, "invalid or missing agent key")
        if cfg.openrouter.api_key is None:
            raise GateError(401, AUTHENTICATION, "the gate has no upstream key for keyed agents")
        return Caller(policy, "Bearer " + cfg.openrouter.api_key)
    if cfg.openrouter.api_key is not None:
        return Caller(policy, "Bearer " + cfg.openrouter.api_key)
    if token is None:
        raise GateError(401, AUTHENTICATION, "missing Authorization: Bearer <OpenRouter key>")
    return Caller(policy, "Bearer " + token)


async def read_json_object(
    request: web.Request,
    limit: int,
    deadline: float,
    check: Callable[[bytes], Awaitable[None]] | None = None,
) -> tuple[dict[str, Any], int]:
    """The body as a JSON object and its size; 413 before reading when it is too
    large (a chunked body is cut as soon as it passes the limit), 408 when it takes
    longer than `deadline` seconds to arrive, 400 when it is not an object."""
    length = request.content_length
    if length is not None and length > limit:
        raise GateError(413, INVALID_REQUEST, f"request body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(deadline):
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise GateError(413, INVALID_REQUEST, f"request body larger than {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise GateError(408, INVALID_REQUEST, "request body arrived too slowly") from None
    except (ConnectionResetError, HttpProcessingError):  # cut short of its Content-Length
        raise GateError(400, INVALID_REQUEST, "request body ended before it was whole") from None
    raw = b"".join(chunks)
    if check is not None:
        await check(raw)  # a large body's cost, decided before the loop parses it
    try:
        body = json.loads(raw)
    except UnicodeDecodeError:
        raise GateError(400, INVALID_REQUEST, "request body is not UTF-8") from None
    except RecursionError:
        raise GateError(400, INVALID_REQUEST, "request body is nested too deeply") from None
    except ValueError:
        raise GateError(400, INVALID_REQUEST, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise GateError(400, INVALID_REQUEST, "request body must be a JSON object")
    return body, size


@dataclass(frozen=True, slots=True)
class ChatRequest:
    body: dict[str, Any]
    size: int
    stream: bool
    model: str | None
    max_tokens: int | None
    wants_usage: bool
    uses_plugins: bool = False  # plugins / web search: a per-request charge on top of tokens
    demand: Demand | None = None  # what the body can cost (`gate.http.demand`)


def chat_request(
    body: dict[str, Any], size: int, max_tokens_ceiling: int = MAX_TOKENS_CEILING
) -> ChatRequest:
    """Check the fields the gate relies on; anything else passes to upstream as sent."""
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise GateError(400, INVALID_REQUEST, "'model' must be a string")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise GateError(400, INVALID_REQUEST, "'stream' must be true or false")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise GateError(400, INVALID_REQUEST, "'messages' must be a non-empty list")
    demand = read_demand(body, size, max_tokens_ceiling)
    options = body.get("stream_options")
    wants_usage = isinstance(options, Mapping) and options.get("include_usage") is True
    plugins = body.get("plugins")
    uses_plugins = bool(plugins) or body.get("web_search_options") is not None
    return ChatRequest(
        body, size, stream, model, demand.max_tokens, wants_usage, uses_plugins, demand
    )


def upstream_body(request: ChatRequest, models: tuple[str, ...], max_tokens: int | None) -> bytes:
    """The client's body with the tier's models, usage accounting on, and nothing that
    could widen the choice of models."""
    body = {k: v for k, v in request.body.items() if k not in WIDENING_FIELDS}
    body["model"] = models[0]
    body["models"] = list(models)
    body["usage"] = {"include": True}
    if request.stream:
        options = body.get("stream_options")
        body["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }
    provider = body.get("provider")
    if isinstance(provider, dict):
        body["provider"] = _safe_provider(provider)
    elif provider is not None:
        body.pop("provider")
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
        if "max_completion_tokens" in body:
            body["max_completion_tokens"] = max_tokens
    return json.dumps(body, separators=(",", ":")).encode()


def _safe_provider(provider: dict[str, Any]) -> dict[str, Any]:
    """Provider preferences pick among providers of the chosen model; `order`/`only`
    lists that name models (a '/' in an entry) are dropped."""
    safe = dict(provider)
    for key in ("order", "only"):
        value = safe.get(key)
        if value is not None and (
            not isinstance(value, list) or any(not isinstance(v, str) or "/" in v for v in value)
        ):
            del safe[key]
    return safe
