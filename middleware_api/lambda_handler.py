"""The API's Lambda entry: Mangum around the one app (API Gateway REST proxy events)."""

from __future__ import annotations

from typing import Any

from mangum import Mangum

from middleware_api.app import create_app

_handler: Mangum | None = None


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """API Gateway → the FastAPI app; the app (and its AWS clients) is built on the first call."""
    global _handler
    if _handler is None:
        _handler = Mangum(create_app(), lifespan="off")
    return _handler(event, context)
