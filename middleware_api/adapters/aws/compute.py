"""`Compute` on SageMaker: endpoints of the worker image, Application Auto Scaling, CloudWatch alarms.

Everything goes through boto3 clients (`sagemaker`, `sagemaker-runtime`,
`application-autoscaling`, `cloudwatch`), not the SageMaker SDK. Names follow
ESD 1.5.0: model, endpoint config and endpoint share the endpoint's name, the
one production variant is `prod`. Also holds the pure parsers of what
SageMaker reports later (async-inference SNS notifications, EventBridge
endpoint state changes), which the events module calls.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from middleware_api.adapters.aws.blobs import S3Blobs
from middleware_api.ports.compute import ASYNC, EndpointSpec, InvocationError

VARIANT = "prod"
STARTUP_HEALTH_CHECK_S = 1800
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
TARGET_TRACKING_POLICY = "target-tracking"
SCALE_FROM_ZERO_POLICY = "scale-out-from-zero"
BACKLOG_TARGET = 3.0
INVOCATIONS_TARGET = 5.0
SCALE_IN_COOLDOWN_S = 600
SCALE_OUT_COOLDOWN_S = 300
_CONTENT_TYPE = "application/json"
_MAX_REASON_CHARS = 500
_NOT_FOUND_MESSAGE = re.compile(r"could not find|no .* found|does not exist", re.IGNORECASE)

# (ESD status) for each SageMaker endpoint status, keyed without separators in upper case, so that
# EventBridge's `IN_SERVICE` and DescribeEndpoint's `InService` both match.
_ENDPOINT_STATUSES = {
    "INSERVICE": "InService",
    "CREATING": "Creating",
    "UPDATING": "Updating",
    "SYSTEMUPDATING": "Updating",
    "FAILED": "Failed",
    "DELETING": "Deleting",
    "DELETED": "Deleted",
    "ROLLINGBACK": "RollingBack",
    "OUTOFSERVICE": "OutOfService",
}

_ENV_VARIABLES = {
    "execution_role_arn": "ESD_SAGEMAKER_ROLE_ARN",
    "inference_image_uri": "ESD_INFERENCE_IMAGE_URI",
    "success_topic_arn": "ESD_SNS_SUCCESS_TOPIC_ARN",
    "error_topic_arn": "ESD_SNS_ERROR_TOPIC_ARN",
}


class DeployError(Exception):
    """SageMaker refused to create the endpoint (an instance type it does not offer, a bad role, …)."""


class DeleteError(Exception):
    """SageMaker refused to delete part of an endpoint for a reason other than its absence."""


@dataclass(frozen=True)
class SageMakerSettings:
    """What the adapter needs beyond the clients: the role, the image and the async topics."""

    execution_role_arn: str
    """IAM role SageMaker assumes to run the model (reads the bucket, pulls the image, publishes to SNS)."""
    inference_image_uri: str
    """ECR URI of the endpoint-worker image every endpoint runs."""
    success_topic_arn: str
    """SNS topic SageMaker notifies when an async invocation completes."""
    error_topic_arn: str
    """SNS topic SageMaker notifies when an async invocation fails."""
    output_prefix: str = "sagemaker_output/"
    """Key prefix in the bucket where async endpoints write their results."""
    input_prefix: str = "sagemaker_input/"
    """Key prefix in the bucket where async requests are written before invoking."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SageMakerSettings:
        """Read `ESD_SAGEMAKER_ROLE_ARN`, `ESD_INFERENCE_IMAGE_URI`, `ESD_SNS_SUCCESS_TOPIC_ARN` and
        `ESD_SNS_ERROR_TOPIC_ARN`; ValueError naming every one that is missing or empty."""
        missing = [variable for variable in _ENV_VARIABLES.values() if not environ.get(variable, "").strip()]
        if missing:
            raise ValueError(f"SageMaker settings: environment variable(s) not set: {', '.join(missing)}")
        return cls(**{name: environ[variable].strip() for name, variable in _ENV_VARIABLES.items()})


@dataclass
class SageMakerClients:
    """The four boto3 clients the adapter uses.

    With `session` (set by `from_session`) real-time invocations get a client
    whose read timeout is the invocation's; without it `runtime` is used as
    given, with its own read timeout (botocore's default is 60 s).
    """

    sagemaker: Any
    runtime: Any
    autoscaling: Any
    cloudwatch: Any
    session: Any = None
    endpoint_url: str | None = None
    _timed_runtimes: dict[int, Any] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @classmethod
    def from_session(cls, session: Any, endpoint_url: str | None = None) -> SageMakerClients:
        """The clients of a `boto3.session.Session`, all at `endpoint_url` when given (moto)."""

        def client(service: str) -> Any:
            return session.client(service, endpoint_url=endpoint_url)

        return cls(
            sagemaker=client("sagemaker"),
            runtime=client("sagemaker-runtime"),
            autoscaling=client("application-autoscaling"),
            cloudwatch=client("cloudwatch"),
            session=session,
            endpoint_url=endpoint_url,
        )

    def runtime_for(self, timeout_s: float) -> Any:
        """A `sagemaker-runtime` client that waits at most `timeout_s` (rounded up) for an answer, made once.

        It never retries: a retried invocation would run the model again and
        multiply the wait. Without a session, the `runtime` client as given.
        """
        if self.session is None:
            return self.runtime
        seconds = max(1, math.ceil(timeout_s))
        with self._lock:
            if seconds not in self._timed_runtimes:
                config = Config(
                    read_timeout=seconds, connect_timeout=min(seconds, 10), retries={"total_max_attempts": 1}
                )
                self._timed_runtimes[seconds] = self.session.client(
                    "sagemaker-runtime", endpoint_url=self.endpoint_url, config=config
                )
            return self._timed_runtimes[seconds]


@dataclass(frozen=True)
class AsyncResult:
    """The outcome of one async invocation, as its SNS notification tells it."""

    inference_id: str
    succeeded: bool
    output_location: str | None
    failure_location: str | None = None
    error: str | None = None


class SageMakerCompute:
    """A `Compute` on SageMaker real-time and async endpoints."""

    def __init__(self, clients: SageMakerClients, blobs: S3Blobs, settings: SageMakerSettings) -> None:
        """`blobs` is the deployment's bucket: async requests are written there and results land there."""
        self.clients = clients
        self.blobs = blobs
        self.settings = settings

    @property
    def max_instances(self) -> None:
        """No limit of ours: SageMaker's own quotas apply."""
        return None

    # -- lifecycle --------------------------------------------------------------

    def deploy(self, spec: EndpointSpec) -> None:
        """Create the model, the endpoint config and the endpoint; DeployError, after removing what this call
        created, if SageMaker refuses one of them."""
        sagemaker = self.clients.sagemaker
        variant = {
            "VariantName": VARIANT,
            "ModelName": spec.name,
            "InstanceType": spec.instance_type,
            "InitialInstanceCount": spec.initial_instance_count,
            # the WebUI inside the image takes minutes to load before /ping turns healthy
            "ContainerStartupHealthCheckTimeoutInSeconds": STARTUP_HEALTH_CHECK_S,
        }
        config: dict[str, Any] = {"EndpointConfigName": spec.name, "ProductionVariants": [variant]}
        if spec.endpoint_type == ASYNC:
            config["AsyncInferenceConfig"] = {
                "OutputConfig": {
                    "S3OutputPath": self.blobs.uri(self.settings.output_prefix),
                    "NotificationConfig": {
                        "SuccessTopic": self.settings.success_topic_arn,
                        "ErrorTopic": self.settings.error_topic_arn,
                    },
                },
                "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 1},
            }
        steps: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = [
            (
                "create_model",
                lambda: sagemaker.create_model(
                    ModelName=spec.name,
                    PrimaryContainer={
                        "Image": self.settings.inference_image_uri,
                        "Environment": {**spec.environment, "ESD_ENDPOINT_NAME": spec.name},
                    },
                    ExecutionRoleArn=self.settings.execution_role_arn,
                ),
                lambda: sagemaker.delete_model(ModelName=spec.name),
            ),
            (
                "create_endpoint_config",
                lambda: sagemaker.create_endpoint_config(**config),
                lambda: sagemaker.delete_endpoint_config(EndpointConfigName=spec.name),
            ),
            (
                "create_endpoint",
                lambda: sagemaker.create_endpoint(EndpointName=spec.name, EndpointConfigName=spec.name),
                lambda: sagemaker.delete_endpoint(EndpointName=spec.name),
            ),
        ]
        undo: list[Callable[[], Any]] = []
        for step, create, delete in steps:
            try:
                create()
            except (ClientError, BotoCoreError) as error:
                for delete_created in reversed(undo):
                    _ignore_not_found(delete_created)
                raise DeployError(f"cannot deploy endpoint {spec.name}: {step} failed: {_describe(error)}") from error
            undo.append(delete)

    def in_service(self, spec: EndpointSpec) -> None:
        """Register autoscaling when `spec.autoscaling` (safe to call again: every call overwrites);
        DeployError if Application Auto Scaling or CloudWatch refuses."""
        if not spec.autoscaling:
            return
        try:
            self._register_autoscaling(spec)
        except (ClientError, BotoCoreError) as error:
            raise DeployError(f"cannot register autoscaling of endpoint {spec.name}: {_describe(error)}") from error

    def _register_autoscaling(self, spec: EndpointSpec) -> None:
        autoscaling = self.clients.autoscaling
        target = _scalable_target(spec.name)
        min_instances = spec.min_instances
        if spec.endpoint_type != ASYNC:
            # Only async endpoints may scale to zero; SageMaker refuses a real-time variant with MinCapacity 0.
            min_instances = max(1, min_instances)
        autoscaling.register_scalable_target(
            **target, MinCapacity=min_instances, MaxCapacity=max(min_instances, spec.max_instances)
        )
        if spec.endpoint_type == ASYNC:
            autoscaling.put_scaling_policy(
                **target,
                PolicyName=TARGET_TRACKING_POLICY,
                PolicyType="TargetTrackingScaling",
                TargetTrackingScalingPolicyConfiguration={
                    "TargetValue": BACKLOG_TARGET,
                    "CustomizedMetricSpecification": {
                        "MetricName": "ApproximateBacklogSizePerInstance",
                        "Namespace": "AWS/SageMaker",
                        "Dimensions": [{"Name": "EndpointName", "Value": spec.name}],
                        "Statistic": "Average",
                    },
                    "ScaleInCooldown": SCALE_IN_COOLDOWN_S,
                    "ScaleOutCooldown": SCALE_OUT_COOLDOWN_S,
                },
            )
            # Target tracking cannot leave zero instances (backlog per instance is undefined there):
            # this alarm-driven step adds the first instance.
            step = autoscaling.put_scaling_policy(
                **target,
                PolicyName=SCALE_FROM_ZERO_POLICY,
                PolicyType="StepScaling",
                StepScalingPolicyConfiguration={
                    "AdjustmentType": "ChangeInCapacity",
                    "MetricAggregationType": "Average",
                    "Cooldown": SCALE_OUT_COOLDOWN_S,
                    "StepAdjustments": [{"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}],
                },
            )
            self.clients.cloudwatch.put_metric_alarm(
                AlarmName=backlog_alarm_name(spec.name),
                AlarmDescription=f"Adds an instance to {spec.name} when requests wait and no instance runs",
                MetricName="HasBacklogWithoutCapacity",
                Namespace="AWS/SageMaker",
                Dimensions=[{"Name": "EndpointName", "Value": spec.name}],
                Statistic="Average",
                Period=60,
                EvaluationPeriods=1,
                DatapointsToAlarm=1,
                Threshold=1.0,
                ComparisonOperator="GreaterThanOrEqualToThreshold",
                TreatMissingData="missing",
                AlarmActions=[step["PolicyARN"]],
            )
        else:
            autoscaling.put_scaling_policy(
                **target,
                PolicyName=TARGET_TRACKING_POLICY,
                PolicyType="TargetTrackingScaling",
                TargetTrackingScalingPolicyConfiguration={
                    "TargetValue": INVOCATIONS_TARGET,
                    "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
                    "ScaleInCooldown": SCALE_IN_COOLDOWN_S,
                    "ScaleOutCooldown": SCALE_OUT_COOLDOWN_S,
                },
            )

    def delete(self, endpoint_name: str) -> None:
        """Remove the alarm, scaling policies, scalable target, endpoint, config and model; absent parts are
        skipped, so a half-created or already deleted endpoint deletes cleanly. DeleteError otherwise."""
        autoscaling = self.clients.autoscaling
        target = _scalable_target(endpoint_name)
        sagemaker = self.clients.sagemaker
        steps: list[tuple[str, Callable[[], Any]]] = [
            (
                "delete_alarms",
                lambda: self.clients.cloudwatch.delete_alarms(AlarmNames=[backlog_alarm_name(endpoint_name)]),
            ),
        ]
        try:
            policies = self._scaling_policies(endpoint_name)
        except ClientError as error:
            raise DeleteError(f"cannot list the scaling policies of {endpoint_name}: {_describe(error)}") from error
        for policy in policies:
            steps.append(
                (
                    f"delete_scaling_policy {policy}",
                    lambda policy=policy: autoscaling.delete_scaling_policy(**target, PolicyName=policy),
                )
            )
        steps += [
            ("deregister_scalable_target", lambda: autoscaling.deregister_scalable_target(**target)),
            ("delete_endpoint", lambda: sagemaker.delete_endpoint(EndpointName=endpoint_name)),
            ("delete_endpoint_config", lambda: sagemaker.delete_endpoint_config(EndpointConfigName=endpoint_name)),
            ("delete_model", lambda: sagemaker.delete_model(ModelName=endpoint_name)),
        ]
        for step, call in steps:
            try:
                _ignore_not_found(call, reraise=True)
            except (ClientError, BotoCoreError) as error:
                raise DeleteError(
                    f"cannot delete endpoint {endpoint_name}: {step} failed: {_describe(error)}"
                ) from error

    # -- invocations ------------------------------------------------------------

    def invoke(self, endpoint_name: str, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """The worker's JSON answer; InvocationError when the call, the container or its answer fails."""
        runtime = self.clients.runtime_for(timeout_s)
        try:
            response = runtime.invoke_endpoint(
                EndpointName=endpoint_name,
                ContentType=_CONTENT_TYPE,
                Accept=_CONTENT_TYPE,
                Body=json.dumps(request).encode("utf-8"),
            )
            body = response["Body"].read()
        except ClientError as error:
            raise InvocationError(_invocation_reason(error)) from error
        except BotoCoreError as error:
            # ReadTimeoutError and connection errors: the endpoint did not answer in time or at all.
            raise InvocationError(f"endpoint {endpoint_name} did not answer within {timeout_s:g} s: {error}") from error
        return _parse_answer(endpoint_name, body)

    def invoke_async(self, endpoint_name: str, request: dict[str, Any], inference_id: str) -> str:
        """Write the request to `{input_prefix}{inference_id}.json` and queue it; the `s3://` URI SageMaker
        says the output will have (its own choice: never derive it from the prefix)."""
        key = f"{self.settings.input_prefix}{inference_id}.json"
        self.blobs.put(key, json.dumps(request).encode("utf-8"), content_type=_CONTENT_TYPE)
        try:
            response = self.clients.runtime.invoke_endpoint_async(
                EndpointName=endpoint_name,
                InputLocation=self.blobs.uri(key),
                InferenceId=inference_id,
                ContentType=_CONTENT_TYPE,
            )
        except ClientError as error:
            raise InvocationError(_invocation_reason(error)) from error
        except BotoCoreError as error:
            raise InvocationError(f"endpoint {endpoint_name} could not be reached: {error}") from error
        return str(response["OutputLocation"])

    def close(self) -> None:
        """Nothing to stop: SageMaker endpoints outlive this process."""

    # -- helpers ----------------------------------------------------------------

    def _scaling_policies(self, endpoint_name: str) -> list[str]:
        target = _scalable_target(endpoint_name)
        names: list[str] = []
        paginator = self.clients.autoscaling.get_paginator("describe_scaling_policies")
        for page in paginator.paginate(**target):
            names += [
                policy["PolicyName"]
                for policy in page.get("ScalingPolicies", [])
                # moto matches ResourceId by substring; keep only this endpoint's policies.
                if policy.get("ResourceId") == target["ResourceId"]
            ]
        return names


def backlog_alarm_name(endpoint_name: str) -> str:
    """The CloudWatch alarm that scales an async endpoint out from zero instances."""
    return f"{endpoint_name}-has-backlog-without-capacity"


def parse_async_notification(message: Mapping[str, Any] | str) -> AsyncResult:
    """An `AsyncResult` from the SNS message SageMaker publishes when an async invocation ends.

    `message` is the notification (the SNS record's `Message`, as a dict or
    its JSON text): `invocationStatus` `Completed` or `Failed`, `inferenceId`,
    `responseParameters.outputLocation` (and `failureLocation` on failure
    since 2023), and `failureReason` on failure. ValueError if it is not such
    a notification (no `inferenceId`).
    """
    if isinstance(message, str):
        try:
            message = json.loads(message)
        except json.JSONDecodeError as error:
            raise ValueError(f"not a SageMaker async notification: {error}") from error
    if not isinstance(message, Mapping) or not message.get("inferenceId"):
        raise ValueError("not a SageMaker async notification: no inferenceId")
    response = message.get("responseParameters") or {}
    status = str(message.get("invocationStatus", ""))
    succeeded = status == "Completed"
    error = None
    if not succeeded:
        error = str(message.get("failureReason") or "") or f"async inference ended with status {status or 'unknown'!r}"
    return AsyncResult(
        inference_id=str(message["inferenceId"]),
        succeeded=succeeded,
        output_location=response.get("outputLocation") or None,
        failure_location=response.get("failureLocation") or None,
        error=error,
    )


def parse_endpoint_state_event(event: Mapping[str, Any]) -> tuple[str, str, str | None]:
    """`(endpoint name, ESD status, failure reason)` from an EventBridge "SageMaker Endpoint State Change".

    `detail.EndpointStatus` (`IN_SERVICE`, `CREATING`, …; `InService` also
    accepted) becomes ESD's `InService`, `Creating`, `Updating`, `Failed`,
    `Deleting`, `RollingBack`, `OutOfService`; an unknown status becomes its
    words in title case joined (`UPDATE_ROLLBACK_FAILED` → `UpdateRollbackFailed`).
    ValueError only when the event names no endpoint.
    """
    detail = event.get("detail") or {}
    name = detail.get("EndpointName")
    if not name:
        raise ValueError("not a SageMaker endpoint state change: no detail.EndpointName")
    reason = detail.get("FailureReason") or None
    return str(name), endpoint_status(str(detail.get("EndpointStatus") or "")), reason


def endpoint_status(status: str) -> str:
    """ESD's name of a SageMaker endpoint status, in either spelling; unknown ones in joined title case."""
    known = _ENDPOINT_STATUSES.get(re.sub(r"[\s_-]+", "", status).upper())
    if known:
        return known
    words = [word for word in re.split(r"[\s_-]+", status) if word]
    if not words:
        return "Unknown"
    if len(words) == 1 and not words[0].isupper():
        return words[0][0].upper() + words[0][1:]  # already CamelCase: keep its inner capitals
    return "".join(word.capitalize() for word in words)


def _scalable_target(endpoint_name: str) -> dict[str, str]:
    return {
        "ServiceNamespace": "sagemaker",
        "ResourceId": f"endpoint/{endpoint_name}/variant/{VARIANT}",
        "ScalableDimension": SCALABLE_DIMENSION,
    }


def _is_not_found(error: ClientError) -> bool:
    code = str(error.response.get("Error", {}).get("Code", ""))
    message = str(error.response.get("Error", {}).get("Message", ""))
    if code in {"ResourceNotFound", "ResourceNotFoundException", "ObjectNotFoundException", "NotFound"}:
        return True
    # SageMaker reports a missing model/config/endpoint as ValidationException "Could not find …";
    # moto's Application Auto Scaling reports a missing policy or target as "No … found".
    return code == "ValidationException" and bool(_NOT_FOUND_MESSAGE.search(message))


def _ignore_not_found(call: Callable[[], Any], reraise: bool = False) -> None:
    """Run `call`; a not-found error is success. Other ClientErrors propagate when `reraise`, else are dropped
    (best-effort cleanup after a failed deploy must not hide the deploy's own error)."""
    try:
        call()
    except ClientError as error:
        if not _is_not_found(error) and reraise:
            raise
    except BotoCoreError:
        if reraise:
            raise


def _describe(error: Exception) -> str:
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        text = f"{details.get('Code', 'Error')}: {details.get('Message', '')}".strip()
    else:
        text = str(error)
    return _shorten(text)


def _shorten(text: str) -> str:
    return text if len(text) <= _MAX_REASON_CHARS else text[: _MAX_REASON_CHARS - 1] + "…"


def _invocation_reason(error: ClientError) -> str:
    """The container's own message for a ModelError, else the service's error."""
    details = error.response.get("Error", {})
    original = error.response.get("OriginalMessage") or details.get("OriginalMessage")
    if original:
        return _shorten(_reason_from_text(str(original)))
    return _describe(error)


def _reason_from_text(text: str) -> str:
    """The `error`/`message`/`detail` field of a JSON error body, else the text itself."""
    try:
        body = json.loads(text)
    except ValueError:
        return text
    if isinstance(body, dict):
        for key in ("error", "message", "detail"):
            if body.get(key):
                value = body[key]
                return value if isinstance(value, str) else json.dumps(value)
    return text


def _parse_answer(endpoint_name: str, body: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(body)
    except ValueError as error:
        snippet = body[:200].decode("utf-8", errors="replace")
        raise InvocationError(f"endpoint {endpoint_name} answered with a body that is not JSON: {snippet!r}") from error
    if answer is None:
        raise InvocationError(f"endpoint {endpoint_name} answered null (the worker failed without a reason)")
    if not isinstance(answer, dict):
        raise InvocationError(f"endpoint {endpoint_name} answered a JSON {type(answer).__name__}, not an object")
    if str(answer.get("status", "")).lower() == "failed":
        reason = answer.get("error") or answer.get("message") or "the worker reported a failure without a reason"
        raise InvocationError(reason if isinstance(reason, str) else json.dumps(reason))
    return answer
