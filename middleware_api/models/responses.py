"""The answers, as the OpenAPI document declares them: the envelope `{statusCode, data?, message}` and the
error body. Routes build the answers with `routes.envelope.respond`; these models only document them.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from pydantic import BaseModel, Field, create_model


class Message(BaseModel):
    """An answer without data (`{"statusCode": 201, "message": "Created"}`)."""

    statusCode: int = Field(description="the HTTP status again")
    message: str


class Envelope(Message):
    """An answer with data."""

    data: dict[str, Any]


def paged(items: str) -> type[Envelope]:
    """The envelope of a list route: `data.{items}` (one page) and `data.last_evaluated_key` (null on the last)."""
    name = items.title()
    data = create_model(
        f"{name}Page",
        **{items: (list[dict[str, Any]], ...)},
        last_evaluated_key=(str | None, Field(description="pass as `exclusive_start_key` for the next page")),
    )
    return create_model(f"{name}List", __base__=Envelope, data=(data, ...))


class ErrorBody(BaseModel):
    """A refusal. API Gateway's own answers (wrong or missing key, unknown route) carry only `message`."""

    statusCode: int | None = Field(default=None, description="the HTTP status again (absent on the gateway's 403s)")
    message: str = Field(description="why, e.g. `Forbidden`, `Unauthorized`, `User u has no permissions: [...]`")


# every route: API Gateway's answers and the services' refusals (the status says which, the message why)
ERRORS: dict[int | str, dict[str, Any]] = {
    "4XX": {
        "model": ErrorBody,
        "description": "400 invalid request, 401 missing or unknown user, 403 wrong API key (`Forbidden`) or "
        "missing permission, 404 not found, 409 conflict",
    }
}


def answers(*statuses: int, model: type[BaseModel] = Envelope) -> dict[int | str, dict[str, Any]]:
    """`responses=` of a route that answers with `model` in each of these statuses."""
    return {status: {"model": model, "description": HTTPStatus(status).phrase} for status in statuses}
