"""The response envelope `{statusCode, data?, message}` and the error answers, in API Gateway's words."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from middleware_api.ports.blobs import BlobError, BlobNotFound
from middleware_api.ports.tables import BadCursor
from middleware_api.services.errors import ApiError

log = logging.getLogger("middleware_api")

FORBIDDEN = {"message": "Forbidden"}
MISSING_TOKEN = {"message": "Missing Authentication Token"}


def respond(status: int, message: str, data: Any = None, **top_level: Any) -> Response:
    """The envelope every route answers with; 204 has no body."""
    if status == 204:
        return Response(status_code=204)
    body: dict[str, Any] = {"statusCode": status}
    if data is not None:
        body["data"] = data
    body["message"] = message
    body.update(top_level)
    return JSONResponse(body, status_code=status)


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"statusCode": status, "message": message}, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    """Map every failure to a clear 4xx in the envelope; only a bug gives a 500."""

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error(exc.status, exc.message)

    @app.exception_handler(BadCursor)
    async def bad_cursor(_: Request, exc: BadCursor) -> JSONResponse:
        return error(400, str(exc))

    @app.exception_handler(BlobNotFound)
    async def blob_not_found(_: Request, exc: BlobNotFound) -> JSONResponse:
        return error(404, str(exc))

    @app.exception_handler(BlobError)
    async def blob_error(_: Request, exc: BlobError) -> JSONResponse:
        return error(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error(400, validation_message(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code in (404, 405):  # API Gateway's answer for a path or method it does not know
            return JSONResponse(MISSING_TOKEN, status_code=403)
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error(500, "Internal server error")


# pydantic error type -> API Gateway validator wording (formatted with the error's context and input)
_WORDING = {
    "greater_than_equal": "numeric instance is lower than the required minimum: {ge} (found: {input})",
    "greater_than": "numeric instance is not above the exclusive minimum: {gt} (found: {input})",
    "less_than_equal": "numeric instance is greater than the required maximum: {le} (found: {input})",
    "less_than": "numeric instance is not below the exclusive maximum: {lt} (found: {input})",
    "too_short": "array is too short: required minimum: {min_length} elements",
    "too_long": "array is too long: allowed maximum: {max_length} elements",
    "string_too_short": "string is too short: required minimum: {min_length} characters",
    "string_too_long": "string is too long: allowed maximum: {max_length} characters",
}
_WHOLE_BODY = ("missing", "json_invalid", "model_attributes_type", "model_type", "dict_type")


def validation_message(errors: Iterable[dict[str, Any]]) -> str:
    """pydantic's errors in the wording of API Gateway's request validator."""
    missing: dict[str, list[str]] = {}
    messages: list[str] = []
    for item in errors:
        location = [str(part) for part in item.get("loc", ()) if part not in ("body", "query", "path", "header")]
        kind = item.get("type", "")
        if kind == "missing" and location:
            where = "/" + "/".join(location[:-1]) if len(location) > 1 else ""
            missing.setdefault(where, []).append(location[-1])
        elif kind in _WHOLE_BODY and not location:
            messages.append("Invalid request body")
        elif kind in _WORDING:
            values = {**(item.get("ctx") or {}), "input": item.get("input")}
            messages.append(f"{_path(location)}: {_WORDING[kind].format_map(values)}")
        else:
            messages.append(f"{_path(location)}: {item.get('msg', 'invalid value')}")
    for where, fields in missing.items():
        suffix = f" at {where}" if where else ""
        messages.insert(0, f"object has missing required properties ({json.dumps(fields)}){suffix}")
    return "; ".join(dict.fromkeys(messages)) or "Invalid request body"


def _path(location: list[str]) -> str:
    return "/" + "/".join(location) if location else "body"
