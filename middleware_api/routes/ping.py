"""GET /ping: the client reaches the API and its key is right."""

from fastapi import APIRouter, Response

from middleware_api.models.responses import Message, answers
from middleware_api.routes.envelope import respond

router = APIRouter(tags=["ping"])


@router.get(
    "/ping",
    operation_id="Ping",
    summary="Test the connection and the API key",
    responses=answers(200, model=Message),
)
def ping() -> Response:
    return respond(200, "pong")
