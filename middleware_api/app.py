"""The FastAPI app: every route under `/prod/`, the API key gate, the envelope and its errors.

Served by uvicorn locally (`python -m middleware_api serve`) and by Mangum in
Lambda (`middleware_api.lambda_handler.handler`).
"""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import FastAPI, Security
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from middleware_api import API_VERSION
from middleware_api.container import Services, build_services
from middleware_api.models.responses import ERRORS
from middleware_api.routes import (
    checkpoints,
    datasets,
    endpoints,
    inferences,
    ping,
    roles,
    tokens,
    trainings,
    users,
)
from middleware_api.routes.deps import api_key_scheme
from middleware_api.routes.envelope import FORBIDDEN, error, install_error_handlers
from middleware_api.services.passwords import secret_matches
from middleware_api.settings import Settings

STAGE = "/prod"
OPENAPI_PATH = f"{STAGE}/api"
DOCS_PATH = f"{STAGE}/docs"
BLOBS_PREFIX = f"{STAGE}/blobs/"
PUBLIC_PATHS = frozenset({OPENAPI_PATH, DOCS_PATH, f"{DOCS_PATH}/oauth2-redirect"})


def create_app(services: Services | None = None) -> FastAPI:
    """The API on `services` (built from the environment's settings when not given)."""
    services = services or build_services(Settings.from_env())
    app = FastAPI(
        title="ESD middleware API",
        version=API_VERSION,
        description="Cloud checkpoints, endpoints, inference and training for Stable Diffusion WebUI.",
        openapi_url=OPENAPI_PATH,
        docs_url=DOCS_PATH,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=f"{DOCS_PATH}/oauth2-redirect",
    )
    app.state.services = services
    install_error_handlers(app)
    for module in (ping, users, roles, tokens, checkpoints, endpoints, inferences, datasets, trainings):
        app.include_router(module.router, prefix=STAGE, dependencies=[Security(api_key_scheme)], responses=ERRORS)
    if services.settings.backend == "embedded":
        from middleware_api.routes import blobs

        app.include_router(blobs.router, prefix=STAGE)
    app.add_middleware(ApiKeyGate)
    return app


class ApiKeyGate:
    """Checks `x-api-key` before anything else reads the request, as API Gateway does.

    The deployment key (compared by digest, in constant time) lets the request
    name its user in the `username` header; a personal access token makes the
    request act as the token's user. Every response carries `x-api-version`.

    It also reads the body before any route does: one larger than `max_body_bytes`
    gets 413 unparsed. The blob routes stream their bodies and check their own limit.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_version(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["x-api-version"] = API_VERSION
            await send(message)

        path: str = scope["path"]
        if not path.startswith(BLOBS_PREFIX):
            services: Services = scope["app"].state.services
            if path not in PUBLIC_PATHS and not await _admit(scope, services, Headers(scope=scope).get("x-api-key")):
                await JSONResponse(FORBIDDEN, status_code=403)(scope, receive, send_with_version)
                return
            limit = services.settings.max_body_bytes
            replay = await _read_body(scope, receive, limit)
            if replay is None:
                too_long = error(413, f"Request Too Long: the body is larger than {limit} bytes")
                await too_long(scope, receive, send_with_version)
                return
            receive = replay
        _remember_base_url(scope)
        await self.app(scope, receive, send_with_version)


async def _read_body(scope: Scope, receive: Receive, limit: int) -> Receive | None:
    """A `receive` that replays the whole body, or None (the rest unread) if it is over `limit` bytes.

    A declared `content-length` is trusted for the refusal only; the bytes are counted
    as they come, so a chunked body or a wrong length cannot slip past.
    """
    declared = Headers(scope=scope).get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        return None
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break  # the client went away: the route sees the disconnect
        size += len(message.get("body", b""))
        if size > limit:
            return None
        if not message.get("more_body", False):
            break

    async def replay() -> Message:
        return messages.pop(0) if messages else await receive()

    return replay


async def _admit(scope: Scope, services: Services, key: str | None) -> bool:
    if not key:
        return False
    if services.api_key_sha256 and secret_matches(key, services.api_key_sha256):
        return True
    if services.tokens.looks_like_token(key):
        actor = await anyio.to_thread.run_sync(services.tokens.actor_for, key)
        if actor is not None:
            scope["esd.token_actor"] = actor
            return True
    return False


def _remember_base_url(scope: Scope) -> None:
    """The embedded blob store signs URLs on the host the client used."""
    if scope["app"].state.services.settings.backend != "embedded":
        return
    from middleware_api.adapters.embedded.blobs import BASE_URL

    host = Headers(scope=scope).get("host")
    if host:
        BASE_URL.set(f"{scope.get('scheme', 'http')}://{host}")


def app_factory() -> Any:
    """For `uvicorn --factory middleware_api.app:app_factory`."""
    return create_app()
