"""The API's Lambda entry: Mangum around the one app (API Gateway REST proxy events)."""

from __future__ import annotations

from typing import Any

from mangum import Mangum

from middleware_api.app import STAGE, create_app

_adapter: Mangum | None = None


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """API Gateway → the FastAPI app; the app (and its AWS clients) is built on the first call.

    API Gateway passes the path without its stage (`/ping`); the app serves
    under `/prod/` everywhere, so the stage goes back in front.
    """
    global _adapter
    if _adapter is None:
        _adapter = Mangum(create_app(), lifespan="off")
    path = event.get("path") or "/"
    if not path.startswith(STAGE + "/"):
        event = {**event, "path": STAGE + path}
    return _adapter(event, context)
