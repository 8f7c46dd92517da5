"""Roles routes: list, create (or update permissions), delete."""

from fastapi import APIRouter, Response

from middleware_api.models.responses import Message, answers, paged
from middleware_api.models.roles import CreateRole, DeleteRoles
from middleware_api.routes.deps import ActorDep, PageDep, ServicesDep
from middleware_api.routes.envelope import respond

router = APIRouter(tags=["roles"])


@router.get(
    "/roles",
    operation_id="ListRoles",
    summary="List the roles the acting user may see",
    responses=answers(200, model=paged("roles")),
)
def list_roles(services: ServicesDep, actor: ActorDep, page: PageDep) -> Response:
    result = services.roles.list(actor, page.limit, page.cursor)
    return respond(200, "OK", {"roles": result.items, "last_evaluated_key": result.cursor})


@router.post(
    "/roles",
    operation_id="CreateRole",
    summary="Create a role, or set an existing role's permissions",
    status_code=201,
    responses=answers(201, 200, model=Message),
)
def create_role(body: CreateRole, services: ServicesDep, actor: ActorDep) -> Response:
    created = services.roles.create(actor, body.role_name, body.permissions)
    return respond(201, "role created") if created else respond(200, "role updated")


@router.delete("/roles", operation_id="DeleteRoles", status_code=204, summary="Delete roles")
def delete_roles(body: DeleteRoles, services: ServicesDep, actor: ActorDep) -> Response:
    services.roles.delete(actor, body.role_name_list)
    return respond(204, "")
