"""Endpoints routes: list, create (deploy), delete."""

from fastapi import APIRouter, Response

from middleware_api.models.endpoints import CreateEndpoint, DeleteEndpoints
from middleware_api.models.responses import answers, paged
from middleware_api.routes.deps import ActorDep, PageDep, ServicesDep
from middleware_api.routes.envelope import respond

router = APIRouter(tags=["endpoints"])


@router.get(
    "/endpoints",
    operation_id="ListEndpoints",
    summary="List the endpoints the acting user's roles may use",
    responses=answers(200, model=paged("endpoints")),
)
def list_endpoints(services: ServicesDep, actor: ActorDep, page: PageDep) -> Response:
    result = services.endpoints.list(actor, page.limit, page.cursor)
    return respond(200, "OK", {"endpoints": result.items, "last_evaluated_key": result.cursor})


@router.post("/endpoints", operation_id="CreateEndpoint", summary="Deploy an endpoint", responses=answers(200))
def create_endpoint(body: CreateEndpoint, services: ServicesDep, actor: ActorDep) -> Response:
    endpoint = services.endpoints.create(
        actor,
        endpoint_name=body.endpoint_name,
        endpoint_type=body.endpoint_type,
        instance_type=body.instance_type,
        initial_instance_count=body.initial_instance_count,
        autoscaling=body.autoscaling_enabled,
        min_instances=body.min_instance_number,
        max_instances=body.max_instance_number,
        roles=body.assign_to_roles,
    )
    return respond(200, f"Endpoint deployment started: {endpoint['endpoint_name']}", endpoint)


@router.delete("/endpoints", operation_id="DeleteEndpoints", status_code=204, summary="Delete endpoints")
def delete_endpoints(body: DeleteEndpoints, services: ServicesDep, actor: ActorDep) -> Response:
    services.endpoints.delete(actor, body.endpoint_name_list)
    return respond(204, "")
