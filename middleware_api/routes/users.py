"""Users routes: list, create or update, delete, and the credential check for the WebUI's login."""

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response

from middleware_api.models.responses import Message, answers, paged
from middleware_api.models.users import CreateUser, DeleteUsers, Login
from middleware_api.routes.deps import ActorDep, PageDep, ServicesDep, get_actor, require_deployment_key
from middleware_api.routes.envelope import respond

router = APIRouter(tags=["users"])


@router.get(
    "/users",
    operation_id="ListUsers",
    summary="List the users the acting user may see",
    responses=answers(200, model=paged("users")),
)
def list_users(services: ServicesDep, actor: ActorDep, page: PageDep) -> Response:
    result = services.users.list(actor, page.limit, page.cursor)
    return respond(200, "OK", {"users": result.items, "last_evaluated_key": result.cursor})


@router.post(
    "/users",
    operation_id="CreateUser",
    summary="Create a user, or update one's roles and password",
    status_code=201,
    responses=answers(201, 200, model=Message),
)
def create_user(
    body: CreateUser, services: ServicesDep, request: Request, username: Annotated[str | None, Header()] = None
) -> Response:
    if body.initial and not services.users.has_users():
        require_deployment_key(request)
        services.users.bootstrap(body.username, body.password or "", body.roles)
        return respond(201, "Created")
    actor = get_actor(request, username)
    created = services.users.create_or_update(actor, body.username, body.password, body.roles)
    return respond(201, "Created") if created else respond(200, "Updated")


@router.delete("/users", operation_id="DeleteUsers", status_code=204, summary="Delete users")
def delete_users(body: DeleteUsers, services: ServicesDep, actor: ActorDep) -> Response:
    services.users.delete(actor, body.user_name_list)
    return respond(204, "")


@router.post(
    "/login",
    operation_id="Login",
    summary="Check a username and password (for the WebUI's login); the password never comes back",
    dependencies=[Depends(require_deployment_key)],
    responses=answers(200),
)
def login(body: Login, services: ServicesDep) -> Response:
    actor = services.users.check_credentials(body.username, body.password)
    user = {"username": actor.username, "roles": list(actor.roles), "permissions": sorted(actor.permissions)}
    return respond(200, "OK", {"user": user})
