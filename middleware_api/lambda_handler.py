"""The Lambda entries, one per function of the stack, all on the same services:

- `handler`: the API (API Gateway REST proxy events → Mangum → the FastAPI app);
- `events_handler`: SageMaker's async inference results (SNS), endpoint and training job state changes
  (EventBridge);
- `task_handler`: background work sent by `LambdaBackground` (URL downloads, real-time jobs);
- `authorizer_handler`: API Gateway's REQUEST authorizer, which admits the deployment key and
  personal access tokens (reads only).
"""

from __future__ import annotations

import logging
from typing import Any

from mangum import Mangum

from middleware_api.app import STAGE, create_app
from middleware_api.container import Services, build_services
from middleware_api.services.passwords import secret_matches
from middleware_api.settings import Settings

log = logging.getLogger("middleware_api.lambda")
ENDPOINT_STATE_CHANGE = "SageMaker Endpoint State Change"

DEPLOYMENT_PRINCIPAL = "deployment"
API_KEY_HEADER = "x-api-key"

_services: Services | None = None
_authorizer_services: Services | None = None
_adapter: Mangum | None = None


def services() -> Services:
    """The services of this Lambda container, built on its first invocation."""
    global _services
    if _services is None:
        _services = build_services(Settings.from_env())
    return _services


def authorizer_services() -> Services:
    """The services of the authorizer's container: built without the start's writes (the default
    roles), since the authorizer's role may only read the users table."""
    global _authorizer_services
    if _authorizer_services is None:
        _authorizer_services = build_services(Settings.from_env(), start=False)
    return _authorizer_services


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


def authorizer_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """API Gateway's REQUEST authorizer: Allow the deployment key and valid personal access tokens.

    An Allow carries the deployment key's value as `usageIdentifierKey` (the RestApi's API key
    source is AUTHORIZER), so the usage plan meters and throttles every caller, whichever key it
    sent; its policy covers the whole stage, since API Gateway caches it for the key across paths.
    A Deny makes API Gateway answer 403. A failed read of the users table raises instead (a 500
    that API Gateway does not cache), so a passing fault does not shut a valid token out for the
    cache's lifetime. The key itself is never logged.
    """
    gate = authorizer_services()
    key = _header(event, API_KEY_HEADER)
    principal: str | None = None
    if key:
        if gate.api_key_sha256 and secret_matches(key, gate.api_key_sha256):
            principal = DEPLOYMENT_PRINCIPAL
        elif gate.tokens.looks_like_token(key):
            actor = gate.tokens.actor_for(key)
            if actor is not None:
                principal = actor.username
    resource = _stage_wildcard(str(event.get("methodArn") or ""))
    usage_key = gate.settings.api_key
    if principal is not None and resource and not usage_key:
        log.error("ESD_API_KEY is not set: the usage plan cannot meter the request, so it is denied")
        principal = None
    if principal is None or not resource:
        log.info("denied a request (%s)", "no key" if not key else "unknown key")
        return _policy("denied", "Deny", resource or "*")
    return {**_policy(principal, "Allow", resource), "usageIdentifierKey": usage_key}


def _header(event: dict[str, Any], name: str) -> str | None:
    """A header of a REQUEST authorizer event, whatever its case."""
    for header, value in (event.get("headers") or {}).items():
        if header.lower() == name and value:
            return str(value)
    for header, values in (event.get("multiValueHeaders") or {}).items():
        if header.lower() == name and values:
            return str(values[0])
    return None


def _stage_wildcard(method_arn: str) -> str | None:
    """`arn:…:execute-api:region:account:api/stage/*/*` of a method ARN
    (`arn:…:execute-api:region:account:api/stage/VERB/path…`), or None if it is not one."""
    arn, _, rest = method_arn.partition("/")
    api_stage = rest.split("/", 1)[0]
    if not arn.startswith("arn:") or ":execute-api:" not in arn or not api_stage:
        return None
    return f"{arn}/{api_stage}/*/*"


def _policy(principal: str, effect: str, resource: str) -> dict[str, Any]:
    return {
        "principalId": principal,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": resource}],
        },
    }
