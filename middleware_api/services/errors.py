"""Errors a service raises for the caller to see; routes turn them into the envelope."""

from __future__ import annotations


class ApiError(Exception):
    """A refusal with an HTTP status and a message meant for the client."""

    status = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409
