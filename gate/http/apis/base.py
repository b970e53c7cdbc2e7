"""What an inference API adapter is: `InferenceApi`, the request it reads (`ApiRequest`)
and the per-stream watcher (`Watch`) that reads its events as they go by.

The shared core (admission, holds, retries, the byte-for-byte relay, settlement, books,
metrics) calls only what is defined here. Usage is handed to the core in OpenRouter's
chat terms (`prompt_tokens`, `completion_tokens`, `cost`) whatever the API calls it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from aiohttp import web

from gate.core.jsonfmt import dumpb
from gate.core.loops import Fingerprint
from gate.http.demand import Demand, read_demand
from gate.http.errors import INVALID_REQUEST, GateError, error_object

# Fields that would let a client widen the choice of models beyond its tier.
WIDENING_FIELDS = ("models", "route", "preset")


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """One request body, checked by its API's adapter."""

    api: InferenceApi
    body: dict[str, Any]
    size: int
    stream: bool
    model: str | None
    wants_usage: bool  # the client is shown the usage event (chat: only when it asked)
    demand: Demand
    uses_plugins: bool = False  # plugins / web search: a per-request charge on top of tokens

    @property
    def max_tokens(self) -> int | None:
        return self.demand.max_tokens


@dataclass(frozen=True, slots=True)
class Answer:
    """What a non-streamed answer says, in the core's terms."""

    generation_id: object
    model: object
    usage: dict[str, Any] | None  # chat terms (`usage_in_chat_terms`)
    error_status: int | None  # set when the answer is an error carried with a 200


class Watch:
    """One stream's side reader: told each event that `marks` flags (parsed), it keeps
    the generation id, the model, the usage, an error and whether the stream has
    properly ended. Subclasses read their API's events."""

    marks: ClassVar[re.Pattern[bytes]]  # bytes an event must contain to be parsed at all

    __slots__ = ("error", "error_status", "final", "generation_id", "model", "usage")

    def __init__(self) -> None:
        self.generation_id: object = None
        self.model: object = None
        self.usage: dict[str, Any] | None = None  # chat terms
        self.error: dict[str, Any] | None = None
        self.error_status: int = 502
        self.final = False  # the event that ends the answer (with its usage) was seen

    def wants(self, raw: bytes) -> bool:
        """Whether an event may matter (`see`); most events are relayed unparsed."""
        return self.marks.search(raw) is not None

    def first(self, chunk: dict[str, Any]) -> None:
        """The first data event: where the generation id and model usually are."""
        self.generation_id = chunk.get("id")
        self.model = chunk.get("model")

    def see(self, chunk: dict[str, Any]) -> bool:
        """Read an event; True when it is the one that may carry `_execwall`."""
        raise NotImplementedError


def marks(*needles: bytes) -> re.Pattern[bytes]:
    return re.compile(b"|".join(re.escape(n) for n in needles))


def count(usage: Mapping[str, Any], key: str) -> int:
    value = usage.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class InferenceApi:
    """One inference API's shapes. The defaults are OpenAI's error shape; every adapter
    says how it reads a body, rewrites it for the tier, and where usage is."""

    name: ClassVar[str]  # as written on spend-log lines and metrics (`api`)
    path: ClassVar[str]  # the path under `/v1` and `/api/v1`, here and upstream
    limit_fields: ClassVar[tuple[str, ...]] = ()  # the output-token limit(s) it names
    generates: ClassVar[bool] = True  # False: no output tokens (embeddings)
    forwarded_headers: ClassVar[tuple[str, ...]] = ()  # client headers passed upstream
    watches_loops: ClassVar[bool] = True  # the loop breaker counts its requests

    def fingerprint(self, body: Mapping[str, Any]) -> Fingerprint:
        """What the loop breaker compares (`gate.core.loops`): the request and its turn."""
        raise NotImplementedError

    def read(self, body: dict[str, Any], size: int, max_tokens_ceiling: int) -> ApiRequest:
        raise NotImplementedError

    def rewrite(self, body: dict[str, Any], request: ApiRequest) -> None:
        """API-specific changes to the upstream body (`upstream_body` did the shared ones)."""

    def usage_in_chat_terms(self, usage: Mapping[str, Any]) -> dict[str, Any]:
        return dict(usage)

    def answer(self, answer: dict[str, Any]) -> Answer:
        """A non-streamed answer's generation id, model, usage and error."""
        error = answer.get("error")
        status = None
        if isinstance(error, dict):
            code = error.get("code")
            status = code if isinstance(code, int) and 400 <= code < 600 else 502
        usage = answer.get("usage")
        return Answer(
            answer.get("id"),
            answer.get("model"),
            self.usage_in_chat_terms(usage) if isinstance(usage, dict) else None,
            status,
        )

    def watch(self) -> Watch:
        raise NotImplementedError

    def budget_refusal(self, headers: Mapping[str, str], refusal: GateError) -> GateError:
        """The budget's 402 as this API's client must get it to stop at once."""
        return refusal

    def error_body(
        self, status: int, type_: str, message: str, extra: Mapping[str, object] | None = None
    ) -> dict[str, object]:
        return error_object(status, type_, message, extra)

    def error_response(
        self,
        status: int,
        type_: str,
        message: str,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> web.Response:
        body = self.error_body(status, type_, message, extra)
        return web.json_response(body, status=status, headers=headers)

    def error_event(self, status: int, type_: str, message: str, generation_id: object) -> bytes:
        """An error the gate adds after the stream has started, as this API's event."""
        return sse_data(self.error_body(status, type_, message))

    # -- shared helpers for `read` --------------------------------------------------

    def _common(
        self,
        body: dict[str, Any],
        size: int,
        max_tokens_ceiling: int,
        *,
        wants_usage: bool = True,
    ) -> ApiRequest:
        model = body.get("model")
        if model is not None and not isinstance(model, str):
            raise GateError(400, INVALID_REQUEST, "'model' must be a string")
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise GateError(400, INVALID_REQUEST, "'stream' must be true or false")
        demand = read_demand(body, size, max_tokens_ceiling, self.limit_fields, self.generates)
        plugins = body.get("plugins")
        uses_plugins = bool(plugins) or body.get("web_search_options") is not None
        return ApiRequest(self, body, size, stream, model, wants_usage, demand, uses_plugins)


def sse_data(payload: object) -> bytes:
    return b"data: " + dumpb(payload) + b"\n\n"


def sse_event(name: str, payload: object) -> bytes:
    data = dumpb(payload)
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


def upstream_body(request: ApiRequest, models: tuple[str, ...], max_tokens: int | None) -> bytes:
    """The client's body with the tier's models, nothing that could widen the choice of
    models, the output limit the hold assumed, and what the API itself changes."""
    body = {k: v for k, v in request.body.items() if k not in WIDENING_FIELDS}
    body["model"] = models[0]
    body["models"] = list(models)
    provider = body.get("provider")
    if isinstance(provider, dict):
        body["provider"] = safe_provider(provider)
    elif provider is not None:
        body.pop("provider")
    if max_tokens is not None and request.api.limit_fields:
        named = [f for f in request.api.limit_fields if f in body] or request.api.limit_fields[:1]
        for field_name in named:
            body[field_name] = max_tokens
    request.api.rewrite(body, request)
    return dumpb(body)


def safe_provider(provider: dict[str, Any]) -> dict[str, Any]:
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


def splice_event(raw: bytes, extra_object: bytes) -> bytes | None:
    """Add the members of `extra_object` to the JSON object of an event whose data is one
    line, without re-serialising it; None when the event is not of that shape."""
    body = raw.rstrip(b"\r\n")
    line_start = max(body.rfind(b"\n"), body.rfind(b"\r")) + 1
    line = body[line_start:]
    if not line.startswith(b"data:") or not line.endswith(b"}") or line.endswith(b"{}"):
        return None
    if b"\ndata:" in body[:line_start] or (body.startswith(b"data:") and line_start):
        return None  # more than one data line
    return body[:-1] + b"," + extra_object[1:] + raw[len(body) :]
