"""The Lambda entries, one per function of the stack, all on the same services:

- `handler`: the API (API Gateway REST proxy events → Mangum → the FastAPI app);
- `events_handler`: SageMaker's async inference results (SNS), endpoint and training job state changes
  (EventBridge);
- `task_handler`: background work sent by `LambdaBackground` (URL downloads, real-time jobs).
"""

from __future__ import annotations

import logging
from typing import Any

from mangum import Mangum

from middleware_api.app import STAGE, create_app
from middleware_api.container import Services, build_services
from middleware_api.settings import Settings

log = logging.getLogger("middleware_api.lambda")
ENDPOINT_STATE_CHANGE = "SageMaker Endpoint State Change"

_services: Services | None = None
_adapter: Mangum | None = None


def services() -> Services:
    """The services of this Lambda container, built on its first invocation."""
    global _services
    if _services is None:
        _services = build_services(Settings.from_env())
    return _services


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """API Gateway → the FastAPI app.

    API Gateway passes the path without its stage (`/ping`); the app serves
    under `/prod/` everywhere, so the stage goes back in front.
    """
    global _adapter
    if _adapter is None:
        _adapter = Mangum(create_app(services()), lifespan="off")
    path = event.get("path") or "/"
    if not path.startswith(STAGE + "/"):
        event = {**event, "path": STAGE + path}
    return _adapter(event, context)


def events_handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    """SNS records of async inference results, or one EventBridge SageMaker event."""
    from middleware_api.adapters.aws.compute import parse_async_notification, parse_endpoint_state_event
    from middleware_api.adapters.aws.training import TRAINING_STATE_CHANGE, parse_training_state_event

    events = services().events
    handled = 0
    for record in event.get("Records", []):
        message = record.get("Sns", {}).get("Message")
        if message is None:
            log.warning("ignored a record that is not an SNS message")
            continue
        result = parse_async_notification(message)
        events.async_result(result.inference_id, result.succeeded, result.output_location, result.error)
        handled += 1
    if event.get("detail-type") == ENDPOINT_STATE_CHANGE:
        events.endpoint_state(*parse_endpoint_state_event(event))
        handled += 1
    elif event.get("detail-type") == TRAINING_STATE_CHANGE:
        state = parse_training_state_event(event)
        if state is None:
            log.info("ignored the state of a training job this middleware did not start")
        else:
            events.training_state(state.job_id, state.status, state.secondary_status, state.reason)
            handled += 1
    elif "detail-type" in event:
        log.info("ignored EventBridge event %s", event["detail-type"])
    return {"handled": handled}


def task_handler(event: dict[str, Any], context: Any) -> dict[str, str]:
    """Run one background task: `{"task": name, "payload": {...}}`."""
    task = event.get("task")
    handlers = services().task_handlers
    if task not in handlers:
        raise ValueError(f"unknown background task {task!r}")
    handlers[task](event.get("payload") or {})
    return {"done": str(task)}
