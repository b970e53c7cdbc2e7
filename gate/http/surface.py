"""The inference surface's route table: every API at `/v1/<api>` and at OpenRouter's own
`/api/v1/<api>`, so a client set up for OpenRouter changes only the host.

`/api/v1/*` is the inference surface, with the agent rules (agent id, agent key); it is
registered before the admin sub-app at `/api`, and a path under it that no API serves
answers a plain 404 here, so no spelling of a path under `/api/v1/` reaches the admin
surface and no admin path is answered with agent rules.
"""

from __future__ import annotations

from aiohttp import web

from gate.http.agentkey import agent_key
from gate.http.apis import APIS, PREFIXES
from gate.http.errors import NOT_FOUND, GateError
from gate.http.proxy import inference, list_models

# (method, path under a prefix, handler): the APIs the gate serves.
INFERENCE = (
    *(("POST", api.path, inference(api)) for api in APIS),
    ("GET", "/models", list_models),
    ("GET", "/key", agent_key),  # the calling agent's own budget, in OpenRouter's shape
    ("GET", "/auth/key", agent_key),  # OpenRouter's older spelling of /key
)


async def not_served(request: web.Request) -> web.StreamResponse:
    """An inference path the gate does not serve: said plainly, so an agent does not
    read it as "model not found"; nothing goes upstream."""
    tail = "/" + request.match_info["tail"]
    allowed = [method for method, path, _ in INFERENCE if path == tail]
    if allowed:  # a served path, asked with another method
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    served = ", ".join(f"{method} {PREFIXES[0]}{path}" for method, path, _ in INFERENCE)
    raise GateError(
        404,
        NOT_FOUND,
        f"{request.method} {request.path} is not an endpoint this gate serves "
        f"(it serves {served}, also under /api/v1); nothing was sent upstream",
    )


def add_inference_routes(app: web.Application) -> None:
    for prefix in PREFIXES:
        for method, path, handler in INFERENCE:
            app.router.add_route(method, prefix + path, handler)
        app.router.add_route("*", prefix + "/{tail:.*}", not_served)
