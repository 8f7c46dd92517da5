"""What happens after a request returned: endpoint state changes, async inference results, training states.

`EventService` implements the `ComputeEvents` and `TrainingEvents` ports: the local
compute and the local trainer call it directly; in AWS, the Lambda handlers for
EventBridge ("SageMaker Endpoint State Change", "SageMaker Training Job State
Change") and SNS (async inference success/error topics) parse their events and
call the same methods.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from middleware_api.ports.blobs import BlobError, Blobs
from middleware_api.services.endpoints import FAILED, IN_SERVICE, EndpointService, now_text, spec_of
from middleware_api.services.inferences import InferenceService
from middleware_api.services.trainings import TrainingService

log = logging.getLogger("middleware_api.events")


class EventService:
    """Applies compute events to the endpoint and inference records."""

    def __init__(
        self, endpoints: EndpointService, inferences: InferenceService, blobs: Blobs, trainings: TrainingService
    ) -> None:
        self.endpoints = endpoints
        self.inferences = inferences
        self.blobs = blobs
        self.trainings = trainings

    def endpoint_state(self, endpoint_name: str, status: str, reason: str | None = None) -> None:
        """Record an endpoint's new status; on its first InService, let the compute finish setting it up."""
        item = self.endpoints.find_by_name(endpoint_name)
        if item is None:
            log.info("state %s for unknown endpoint %s ignored", status, endpoint_name)
            return
        changes: dict[str, Any] = {"endpoint_status": status}
        if status == IN_SERVICE:
            changes["current_instance_count"] = int(item["initial_instance_count"])
            changes["endTime"] = now_text()
            changes["error"] = None
            if not item.get("was_in_service"):
                try:
                    self.endpoints.compute.in_service(spec_of(item))
                except Exception as error:  # autoscaling refused: the endpoint still serves, say why
                    changes["error"] = f"autoscaling could not be set up: {error}"
                changes["was_in_service"] = True
        elif status == FAILED:
            changes["error"] = reason or "the endpoint failed without a reason"
            changes["endTime"] = now_text()
            changes["current_instance_count"] = 0
        self.endpoints.table.update({"EndpointDeploymentJobId": item["EndpointDeploymentJobId"]}, changes)

    def async_result(
        self, inference_id: str, succeeded: bool, output_location: str | None, error: str | None = None
    ) -> None:
        """Record the outcome of an async invocation from its output (or error)."""
        if not succeeded or not output_location:
            self.inferences.record_failure(inference_id, error or "the endpoint reported a failure without a reason")
            return
        try:
            answer = json.loads(self.blobs.read_location(output_location))
        except (BlobError, ValueError) as problem:
            self.inferences.record_failure(inference_id, f"the result at {output_location} is unreadable: {problem}")
            return
        self.inferences.record_result(inference_id, answer)

    def training_state(
        self, job_id: str, status: str, secondary_status: str | None = None, reason: str | None = None
    ) -> None:
        """A training job's new status (SageMaker's words), applied by the training service."""
        self.trainings.record_state(job_id, status, secondary_status, reason)

    def training_log(self, job_id: str, lines: list[str]) -> None:
        """The last lines a training job printed."""
        self.trainings.record_log(job_id, lines)
