"""What arrives: who is calling, and the request body, checked before anything is spent."""

from __future__ import annotations

import asyncio
import hmac
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from gate.books.tasks import KEY_PREFIX as TASK_KEY_PREFIX
from gate.books.tasks import Task
from gate.config import AgentPolicy, GateConfig
from gate.core.jsonfmt import decode_problem, loads
from gate.http.errors import AUTHENTICATION, INVALID_REQUEST, PERMISSION, GateError

AGENT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
DEFAULT_AGENT = "default"


class TaskKeys(Protocol):
    def for_key(self, key: str) -> Task | None: ...


@dataclass(frozen=True, slots=True)
class Caller:
    policy: AgentPolicy
    authorization: str  # what goes upstream: the gate's key, or the client's own
    forwarded: Mapping[str, str] | None = None  # the API's own headers that go upstream


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
    return token if _credential(token) else None


def _credential(value: str) -> bool:
    return value.isascii() and value.isprintable()


def presented_key(request: web.Request) -> str | None:
    """The key a client presents: `Authorization: Bearer`, or `x-api-key` as Anthropic
    clients send it."""
    token = bearer(request)
    if token is not None:
        return token
    value = request.headers.get("x-api-key", "").strip()
    return value if value and _credential(value) else None


def forwarded_headers(request: web.Request, names: tuple[str, ...]) -> dict[str, str] | None:
    """The client headers an API passes upstream (`anthropic-version`), when printable."""
    found = {
        name: value
        for name in names
        if (value := request.headers.get(name)) is not None and _credential(value)
    }
    return found or None


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


def task_of(request: web.Request, tasks: TaskKeys) -> Task | None:
    """The open task whose key the client presents (`gate.books.tasks`), or None when
    the key is no task key; 401 for a task key that is unknown or has ended, 403 when
    `X-Agent-ID` names another agent than the task's."""
    key = presented_key(request)
    if key is None or not key.startswith(TASK_KEY_PREFIX):
        return None
    task = tasks.for_key(key)
    if task is None:
        raise GateError(401, AUTHENTICATION, "unknown task key, or its task has ended")
    claimed = request.headers.get("X-Agent-ID")
    if claimed is not None and claimed != task.agent_id:
        raise GateError(403, PERMISSION, "this task key belongs to another agent")
    return task


def identify(
    request: web.Request,
    cfg: GateConfig,
    agent_id: str | None = None,
    forwarded: tuple[str, ...] = (),
    *,
    by_task: bool = False,
) -> Caller:
    """The calling agent and the Authorization to send upstream (400/401/403). The key
    comes as `Authorization: Bearer` or `x-api-key`; `forwarded` names the API's own
    headers that go upstream with it. `by_task`: the key was a task's, already checked
    (`task_of`); it is never passed upstream."""
    if agent_id is None:
        agent_id = agent_id_of(request)
    policy = cfg.agents.get(agent_id)
    if policy is None:
        raise GateError(403, PERMISSION, f"agent '{agent_id}' is not configured on this gate")
    token = presented_key(request)
    extra = forwarded_headers(request, forwarded) if forwarded else None
    if by_task:
        if cfg.openrouter.api_key is None:
            raise GateError(401, AUTHENTICATION, "the gate has no upstream key for task keys")
        return Caller(policy, "Bearer " + cfg.openrouter.api_key, extra)
    if policy.api_key is not None:
        if not same_secret(token, policy.api_key):
            raise GateError(401, AUTHENTICATION, "invalid or missing agent key")
        if cfg.openrouter.api_key is None:
            raise GateError(401, AUTHENTICATION, "the gate has no upstream key for keyed agents")
        return Caller(policy, "Bearer " + cfg.openrouter.api_key, extra)
    if cfg.openrouter.api_key is not None:
        return Caller(policy, "Bearer " + cfg.openrouter.api_key, extra)
    if token is None:
        raise GateError(401, AUTHENTICATION, "missing Authorization: Bearer <OpenRouter key>")
    return Caller(policy, "Bearer " + token, extra)


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
    if request.content.is_eof():  # it came whole with the headers: nothing to wait for
        raw = request.content.read_nowait()
        if len(raw) > limit:
            raise GateError(413, INVALID_REQUEST, f"request body larger than {limit} bytes")
    else:
        raw = await _arriving(request, limit, deadline)
    size = len(raw)
    if check is not None:
        await check(raw)  # a large body's cost, decided before the loop parses it
    try:
        body = loads(raw)
    except ValueError as exc:
        raise GateError(400, INVALID_REQUEST, decode_problem(exc)) from None
    if not isinstance(body, dict):
        raise GateError(400, INVALID_REQUEST, "request body must be a JSON object")
    return body, size


async def _arriving(request: web.Request, limit: int, deadline: float) -> bytes:
    """A body still arriving: read as it comes, cut past `limit`, 408 past `deadline`."""
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
    return b"".join(chunks)
