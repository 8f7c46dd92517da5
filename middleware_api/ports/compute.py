"""The `Compute` port: GPU endpoints that run the endpoint worker, SageMaker's model.

Adapters: SageMaker (aws) and local worker processes (embedded). An adapter
starts work and returns; what happens later (an endpoint in service or failed,
an async result) reaches the services through `ComputeEvents`, which the
events module implements: SageMaker delivers it by EventBridge and SNS, the
local adapter calls it directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

ASYNC = "Async"
REAL_TIME = "Real-time"
ENDPOINT_TYPES = (ASYNC, REAL_TIME)


@dataclass(frozen=True)
class EndpointSpec:
    """What to deploy: an endpoint running the worker image on `initial_instance_count` instances."""

    name: str
    endpoint_type: str
    instance_type: str
    initial_instance_count: int
    autoscaling: bool = False
    min_instances: int = 0
    max_instances: int = 1
    environment: dict[str, str] = field(default_factory=dict)


class InvocationError(Exception):
    """The endpoint answered with an error, or not at all; the message says why."""


class ComputeEvents(Protocol):
    """Where an adapter reports what happened after it returned."""

    def endpoint_state(self, endpoint_name: str, status: str, reason: str | None = None) -> None:
        """The endpoint is now `status` (`InService`, `Failed`, `Deleted`, …), with a reason on failure."""

    def async_result(
        self, inference_id: str, succeeded: bool, output_location: str | None, error: str | None = None
    ) -> None:
        """An async invocation ended: its output at `output_location` (an `s3://` URI), or an error."""


class Compute(Protocol):
    """Deploys endpoints and invokes them."""

    @property
    def max_instances(self) -> int | None:
        """The most instances one endpoint may have here (local worker processes); None: no limit of ours."""

    def deploy(self, spec: EndpointSpec) -> None:
        """Start creating the endpoint; its state arrives later through `ComputeEvents.endpoint_state`."""

    def in_service(self, spec: EndpointSpec) -> None:
        """Called once when the endpoint first reaches InService (SageMaker registers autoscaling here)."""

    def delete(self, endpoint_name: str) -> None:
        """Delete the endpoint and everything made for it (config, model, scaling policies, alarms)."""

    def invoke(self, endpoint_name: str, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """A real-time invocation: the worker's JSON answer; InvocationError on failure or timeout."""

    def invoke_async(self, endpoint_name: str, request: dict[str, Any], inference_id: str) -> str:
        """Queue an async invocation; returns where its output will be (`s3://…`).

        The outcome arrives through `ComputeEvents.async_result`.
        """

    def close(self) -> None:
        """Stop what this process started (local workers); nothing for SageMaker."""
