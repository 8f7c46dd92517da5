"""What routes depend on: the services, the acting user, pagination parameters."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Query, Request
from fastapi.security import APIKeyHeader

from middleware_api.container import Services
from middleware_api.services.errors import Forbidden
from middleware_api.services.permissions import Actor

MAX_PAGE = 1000
# Documents the key in the OpenAPI document; the check itself runs in ApiKeyGate before any parsing.
api_key_scheme = APIKeyHeader(
    name="x-api-key", auto_error=False, description="the deployment's API key or a personal access token"
)


def get_services(request: Request) -> Services:
    return request.app.state.services


def get_actor(
    request: Request,
    username: Annotated[
        str | None, Header(description="the acting user (ignored with a personal access token)")
    ] = None,
) -> Actor:
    """The acting user: a personal token's owner, else the user the `username` header names."""
    token_actor: Actor | None = request.scope.get("esd.token_actor")
    if token_actor is not None:
        return token_actor
    return get_services(request).users.actor(username)


def require_deployment_key(request: Request) -> None:
    """For routes only a trusted WebUI server may call (a personal token is refused)."""
    if request.scope.get("esd.token_actor") is not None:
        raise Forbidden("this route needs the deployment's API key, not a personal access token")


class PageParams:
    """`limit` and `exclusive_start_key` of a list route."""

    def __init__(
        self,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="items per page, counted after filtering")] = 50,
        exclusive_start_key: Annotated[
            str | None, Query(max_length=2048, description="the previous page's last_evaluated_key")
        ] = None,
    ) -> None:
        self.limit = limit
        self.cursor = exclusive_start_key or None


ServicesDep = Annotated[Services, Depends(get_services)]
ActorDep = Annotated[Actor, Depends(get_actor)]
PageDep = Annotated[PageParams, Depends(PageParams)]
