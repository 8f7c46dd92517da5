"""Personal access tokens of the acting user: create (shown once), list, revoke."""

from fastapi import APIRouter, Response

from middleware_api.models.responses import answers, paged
from middleware_api.models.users import CreateToken, DeleteTokens
from middleware_api.routes.deps import ActorDep, PageDep, ServicesDep
from middleware_api.routes.envelope import respond

router = APIRouter(tags=["tokens"])


@router.post(
    "/tokens",
    operation_id="CreateToken",
    summary="Create a personal access token (shown once)",
    status_code=201,
    responses=answers(201),
)
def create_token(body: CreateToken, services: ServicesDep, actor: ActorDep) -> Response:
    secret, token = services.tokens.create(actor, body.name, body.expires_in_days)
    return respond(201, "Created", {"token": {**token, "token": secret}})


@router.get(
    "/tokens",
    operation_id="ListTokens",
    summary="List the acting user's tokens (never their secrets)",
    responses=answers(200, model=paged("tokens")),
)
def list_tokens(services: ServicesDep, actor: ActorDep, page: PageDep) -> Response:
    result = services.tokens.list(actor, page.limit, page.cursor)
    return respond(200, "OK", {"tokens": result.items, "last_evaluated_key": result.cursor})


@router.delete("/tokens", operation_id="DeleteTokens", status_code=204, summary="Revoke the acting user's tokens")
def delete_tokens(body: DeleteTokens, services: ServicesDep, actor: ActorDep) -> Response:
    services.tokens.revoke(actor, body.token_id_list)
    return respond(204, "")
