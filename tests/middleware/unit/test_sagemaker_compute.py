"""`SageMakerCompute` on in-process moto: deploy, autoscaling, delete, invocations, and the event parsers."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import boto3
import pytest
import requests
from botocore.exceptions import ClientError, ReadTimeoutError
from botocore.stub import Stubber
from moto import mock_aws

from middleware_api.adapters.aws.blobs import S3Blobs, s3_client
from middleware_api.adapters.aws.compute import (
    AsyncResult,
    DeployError,
    SageMakerClients,
    SageMakerCompute,
    SageMakerSettings,
    backlog_alarm_name,
    parse_async_notification,
    parse_endpoint_state_event,
)
from middleware_api.ports.compute import ASYNC, REAL_TIME, EndpointSpec, InvocationError

REGION = "us-east-1"
ACCOUNT = "123456789012"
MOTO_API = "http://motoapi.amazonaws.com/moto-api/static/sagemaker"
SETTINGS = SageMakerSettings(
    execution_role_arn=f"arn:aws:iam::{ACCOUNT}:role/esd-sagemaker",
    inference_image_uri=f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/esd-inference:1.5.0",
    success_topic_arn=f"arn:aws:sns:{REGION}:{ACCOUNT}:esd-success",
    error_topic_arn=f"arn:aws:sns:{REGION}:{ACCOUNT}:esd-error",
)
# moto's SageMaker accepts only older instance types.
INSTANCE = "ml.g4dn.2xlarge"
RESOURCE_ID = "endpoint/{}/variant/prod"
TARGET = {"ServiceNamespace": "sagemaker", "ScalableDimension": "sagemaker:variant:DesiredInstanceCount"}


@pytest.fixture
def session(aws_credentials: None) -> Iterator[Any]:
    with mock_aws():
        yield boto3.session.Session(region_name=REGION)


@pytest.fixture
def blobs(session: Any) -> S3Blobs:
    client = s3_client(REGION, session=session)
    bucket = f"esd-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return S3Blobs(client, bucket)


@pytest.fixture
def clients(session: Any) -> SageMakerClients:
    return SageMakerClients.from_session(session)


@pytest.fixture
def compute(clients: SageMakerClients, blobs: S3Blobs) -> SageMakerCompute:
    return SageMakerCompute(clients, blobs, SETTINGS)


def spec(endpoint_type: str = ASYNC, **overrides: Any) -> EndpointSpec:
    kind = "async" if endpoint_type == ASYNC else "real-time"
    values: dict[str, Any] = {
        "name": f"esd-{kind}-{uuid.uuid4().hex[:7]}",
        "endpoint_type": endpoint_type,
        "instance_type": INSTANCE,
        "initial_instance_count": 1,
        "autoscaling": True,
        "min_instances": 0,
        "max_instances": 3,
        "environment": {"ESD_BUCKET": "esd-bucket", "ESD_REGION": REGION},
    }
    return EndpointSpec(**{**values, **overrides})


def policies(clients: SageMakerClients, name: str) -> dict[str, dict[str, Any]]:
    found = clients.autoscaling.describe_scaling_policies(**TARGET, ResourceId=RESOURCE_ID.format(name))
    return {policy["PolicyName"]: policy for policy in found["ScalingPolicies"]}


def targets(clients: SageMakerClients, name: str) -> list[dict[str, Any]]:
    found = clients.autoscaling.describe_scalable_targets(
        ServiceNamespace="sagemaker", ResourceIds=[RESOURCE_ID.format(name)]
    )
    return found["ScalableTargets"]


def alarms(clients: SageMakerClients, name: str) -> list[dict[str, Any]]:
    return clients.cloudwatch.describe_alarms(AlarmNames=[backlog_alarm_name(name)])["MetricAlarms"]


def sagemaker_exists(clients: SageMakerClients, name: str) -> dict[str, bool]:
    sagemaker = clients.sagemaker
    checks = {
        "model": lambda: sagemaker.describe_model(ModelName=name),
        "config": lambda: sagemaker.describe_endpoint_config(EndpointConfigName=name),
        "endpoint": lambda: sagemaker.describe_endpoint(EndpointName=name),
    }
    exists = {}
    for kind, describe in checks.items():
        try:
            describe()
            exists[kind] = True
        except ClientError:
            exists[kind] = False
    return exists


def queue_results(results: list[dict[str, Any]]) -> None:
    requests.post(f"{MOTO_API}/endpoint-results", json={"results": results}, timeout=10).raise_for_status()


def queue_async_results(results: list[dict[str, Any]]) -> None:
    requests.post(f"{MOTO_API}/async-endpoint-results", json={"results": results}, timeout=10).raise_for_status()


# -- deploy ----------------------------------------------------------------------


def test_deploy_async_creates_model_config_and_endpoint(compute: SageMakerCompute, clients: SageMakerClients) -> None:
    endpoint = spec()
    compute.deploy(endpoint)

    model = clients.sagemaker.describe_model(ModelName=endpoint.name)
    assert model["ExecutionRoleArn"] == SETTINGS.execution_role_arn
    assert model["PrimaryContainer"]["Image"] == SETTINGS.inference_image_uri
    assert model["PrimaryContainer"]["Environment"] == {**endpoint.environment, "ESD_ENDPOINT_NAME": endpoint.name}

    config = clients.sagemaker.describe_endpoint_config(EndpointConfigName=endpoint.name)
    [variant] = config["ProductionVariants"]
    assert variant["VariantName"] == "prod"
    assert variant["ModelName"] == endpoint.name
    assert variant["InstanceType"] == INSTANCE
    assert variant["InitialInstanceCount"] == 1
    async_config = config["AsyncInferenceConfig"]
    assert async_config["OutputConfig"]["S3OutputPath"] == f"s3://{compute.blobs.bucket}/sagemaker_output/"
    assert async_config["OutputConfig"]["NotificationConfig"] == {
        "SuccessTopic": SETTINGS.success_topic_arn,
        "ErrorTopic": SETTINGS.error_topic_arn,
    }
    assert async_config["ClientConfig"] == {"MaxConcurrentInvocationsPerInstance": 1}

    described = clients.sagemaker.describe_endpoint(EndpointName=endpoint.name)
    assert described["EndpointConfigName"] == endpoint.name


def test_deploy_real_time_has_no_async_config(compute: SageMakerCompute, clients: SageMakerClients) -> None:
    endpoint = spec(REAL_TIME, initial_instance_count=2)
    compute.deploy(endpoint)
    config = clients.sagemaker.describe_endpoint_config(EndpointConfigName=endpoint.name)
    assert "AsyncInferenceConfig" not in config
    assert config["ProductionVariants"][0]["InitialInstanceCount"] == 2
    assert sagemaker_exists(clients, endpoint.name) == {"model": True, "config": True, "endpoint": True}


def test_deploy_refused_instance_type_removes_the_model(compute: SageMakerCompute, clients: SageMakerClients) -> None:
    # moto refuses ml.g5.* at create_endpoint_config, as it would any type SageMaker does not offer.
    endpoint = spec(instance_type="ml.g5.2xlarge")
    with pytest.raises(DeployError) as raised:
        compute.deploy(endpoint)
    message = str(raised.value)
    assert endpoint.name in message
    assert "create_endpoint_config" in message
    assert "ml.g5.2xlarge" in message
    assert len(message) < 700
    assert sagemaker_exists(clients, endpoint.name) == {"model": False, "config": False, "endpoint": False}


class _FailingCreateEndpoint:
    """A `sagemaker` client whose create_endpoint is refused, everything else passed through."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def create_endpoint(self, **_: Any) -> None:
        raise ClientError(
            {"Error": {"Code": "ResourceLimitExceeded", "Message": "account-level service limit exceeded"}},
            "CreateEndpoint",
        )


def test_deploy_failure_on_create_endpoint_removes_config_and_model(clients: SageMakerClients, blobs: S3Blobs) -> None:
    real = clients.sagemaker
    clients.sagemaker = _FailingCreateEndpoint(real)
    compute = SageMakerCompute(clients, blobs, SETTINGS)
    endpoint = spec()
    with pytest.raises(DeployError, match="create_endpoint failed: ResourceLimitExceeded"):
        compute.deploy(endpoint)
    clients.sagemaker = real
    assert sagemaker_exists(clients, endpoint.name) == {"model": False, "config": False, "endpoint": False}


# -- autoscaling -------------------------------------------------------------------


def test_in_service_async_registers_target_policies_and_alarm(
    compute: SageMakerCompute, clients: SageMakerClients
) -> None:
    endpoint = spec(min_instances=0, max_instances=4)
    compute.deploy(endpoint)
    for _ in range(2):  # a second call (a repeated InService event) changes nothing
        compute.in_service(endpoint)

        [target] = targets(clients, endpoint.name)
        assert target["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
        assert (target["MinCapacity"], target["MaxCapacity"]) == (0, 4)

        found = policies(clients, endpoint.name)
        assert len(found) == 2
        by_type = {policy["PolicyType"]: policy for policy in found.values()}
        tracking = by_type["TargetTrackingScaling"]["TargetTrackingScalingPolicyConfiguration"]
        assert tracking["TargetValue"] == 3.0
        metric = tracking["CustomizedMetricSpecification"]
        assert metric["MetricName"] == "ApproximateBacklogSizePerInstance"
        assert metric["Namespace"] == "AWS/SageMaker"
        assert metric["Statistic"] == "Average"
        assert metric["Dimensions"] == [{"Name": "EndpointName", "Value": endpoint.name}]
        step_policy = by_type["StepScaling"]
        step = step_policy["StepScalingPolicyConfiguration"]
        assert step["AdjustmentType"] == "ChangeInCapacity"
        assert step["Cooldown"] == 300
        assert step["StepAdjustments"][0]["ScalingAdjustment"] == 1

        [alarm] = alarms(clients, endpoint.name)
        assert alarm["AlarmName"] == f"{endpoint.name}-has-backlog-without-capacity"
        assert alarm["MetricName"] == "HasBacklogWithoutCapacity"
        assert alarm["Namespace"] == "AWS/SageMaker"
        assert alarm["Statistic"] == "Average"
        assert alarm["Threshold"] == 1.0
        assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        assert (alarm["EvaluationPeriods"], alarm["Period"]) == (1, 60)
        assert alarm["Dimensions"] == [{"Name": "EndpointName", "Value": endpoint.name}]
        assert alarm["AlarmActions"] == [step_policy["PolicyARN"]]


def test_in_service_real_time_tracks_invocations_per_instance(
    compute: SageMakerCompute, clients: SageMakerClients
) -> None:
    endpoint = spec(REAL_TIME, min_instances=1, max_instances=2)
    compute.deploy(endpoint)
    compute.in_service(endpoint)
    compute.in_service(endpoint)

    [target] = targets(clients, endpoint.name)
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 2)
    [policy] = policies(clients, endpoint.name).values()
    assert policy["PolicyType"] == "TargetTrackingScaling"
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["TargetValue"] == 5.0
    assert tracking["PredefinedMetricSpecification"] == {
        "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
    }
    assert alarms(clients, endpoint.name) == []


def test_in_service_real_time_never_scales_to_zero(compute: SageMakerCompute, clients: SageMakerClients) -> None:
    endpoint = spec(REAL_TIME, min_instances=0, max_instances=2)
    compute.deploy(endpoint)
    compute.in_service(endpoint)
    assert targets(clients, endpoint.name)[0]["MinCapacity"] == 1


def test_in_service_without_autoscaling_registers_nothing(compute: SageMakerCompute, clients: SageMakerClients) -> None:
    endpoint = spec(autoscaling=False)
    compute.deploy(endpoint)
    compute.in_service(endpoint)
    assert targets(clients, endpoint.name) == []
    assert policies(clients, endpoint.name) == {}
    assert alarms(clients, endpoint.name) == []


# -- delete ------------------------------------------------------------------------


def test_delete_removes_everything_and_again_is_fine(compute: SageMakerCompute, clients: SageMakerClients) -> None:
    endpoint = spec()
    other = spec()
    for each in (endpoint, other):
        compute.deploy(each)
        compute.in_service(each)

    compute.delete(endpoint.name)
    assert policies(clients, endpoint.name) == {}
    assert targets(clients, endpoint.name) == []
    assert alarms(clients, endpoint.name) == []
    assert sagemaker_exists(clients, endpoint.name) == {"model": False, "config": False, "endpoint": False}
    compute.delete(endpoint.name)

    # the other endpoint is untouched
    assert len(policies(clients, other.name)) == 2
    assert len(targets(clients, other.name)) == 1
    assert len(alarms(clients, other.name)) == 1
    assert sagemaker_exists(clients, other.name) == {"model": True, "config": True, "endpoint": True}


def test_delete_half_created_endpoint(compute: SageMakerCompute, clients: SageMakerClients) -> None:
    name = spec().name
    clients.sagemaker.create_model(
        ModelName=name,
        PrimaryContainer={"Image": SETTINGS.inference_image_uri},
        ExecutionRoleArn=SETTINGS.execution_role_arn,
    )
    compute.delete(name)
    assert sagemaker_exists(clients, name) == {"model": False, "config": False, "endpoint": False}
    compute.delete(f"never-{name}")


# -- invocations ---------------------------------------------------------------------


def test_invoke_async_writes_input_and_returns_motos_output_location(
    compute: SageMakerCompute, clients: SageMakerClients, session: Any
) -> None:
    endpoint = spec()
    compute.deploy(endpoint)
    queue_async_results([{"data": json.dumps({"images": ["aGk="], "info": "{}"})}])
    request = {"task": "txt2img", "username": "admin", "param_s3": "s3://b/k"}

    location = compute.invoke_async(endpoint.name, request, "inference-1")

    assert json.loads(compute.blobs.get("sagemaker_input/inference-1.json")) == request
    parsed = urlparse(location)
    assert parsed.scheme == "s3"
    assert parsed.netloc != compute.blobs.bucket  # moto writes results to a bucket of its own
    s3 = session.client("s3")
    output = s3.get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))["Body"].read()
    assert json.loads(output) == {"images": ["aGk="], "info": "{}"}


def test_invoke_async_queued_failure_lands_beside_the_output(compute: SageMakerCompute, session: Any) -> None:
    endpoint = spec()
    compute.deploy(endpoint)
    queue_async_results([{"is_failure": True, "data": "worker crashed"}])
    location = compute.invoke_async(endpoint.name, {"task": "txt2img"}, "inference-2")
    parsed = urlparse(location)
    keys = [item["Key"] for item in session.client("s3").list_objects_v2(Bucket=parsed.netloc)["Contents"]]
    assert parsed.path.lstrip("/") not in keys  # only the failure object was written
    assert len(keys) == 1


def test_invoke_returns_the_parsed_json(compute: SageMakerCompute) -> None:
    queue_results([{"Body": json.dumps({"images": ["aGk="], "parameters": {}}), "ContentType": "application/json"}])
    assert compute.invoke("esd-real-time-a", {"task": "txt2img", "n": 1}, timeout_s=30) == {
        "images": ["aGk="],
        "parameters": {},
    }


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (json.dumps({"status": "failed", "error": "x"}), "^x$"),
        (json.dumps({"status": "failed"}), "without a reason"),
        ("<html>502 Bad Gateway</html>", "not JSON"),
        ("null", "null"),
        ("[1, 2]", "not an object"),
    ],
)
def test_invoke_bad_answers_raise(compute: SageMakerCompute, body: str, reason: str) -> None:
    queue_results([{"Body": body, "ContentType": "application/json"}])
    with pytest.raises(InvocationError, match=reason):
        compute.invoke("esd-real-time-b", {"task": "txt2img", "body": body}, timeout_s=30)


def test_invoke_model_error_carries_the_containers_message(session: Any, blobs: S3Blobs) -> None:
    runtime = session.client("sagemaker-runtime")
    clients = SageMakerClients(sagemaker=None, runtime=runtime, autoscaling=None, cloudwatch=None)
    compute = SageMakerCompute(clients, blobs, SETTINGS)
    with Stubber(runtime) as stubber:
        stubber.add_client_error(
            "invoke_endpoint",
            service_error_code="ModelError",
            service_message="Received server error (500) from primary with message ...",
            http_status_code=424,
            modeled_fields={"OriginalStatusCode": 500, "OriginalMessage": '{"detail": "CUDA out of memory"}'},
        )
        stubber.add_client_error(
            "invoke_endpoint",
            service_error_code="ValidationError",
            service_message="Endpoint esd-x of account 123456789012 not found.",
            http_status_code=400,
        )
        with pytest.raises(InvocationError, match="^CUDA out of memory$"):
            compute.invoke("esd-x", {"task": "txt2img"}, timeout_s=5)
        with pytest.raises(InvocationError, match="ValidationError: Endpoint esd-x .* not found"):
            compute.invoke("esd-x", {"task": "txt2img"}, timeout_s=5)


def test_invoke_timeout_raises_invocation_error(clients: SageMakerClients, blobs: S3Blobs) -> None:
    class SlowRuntime:
        def invoke_endpoint(self, **_: Any) -> None:
            raise ReadTimeoutError(endpoint_url="https://runtime.sagemaker/endpoints/esd-x/invocations")

    clients.session = None
    clients.runtime = SlowRuntime()
    compute = SageMakerCompute(clients, blobs, SETTINGS)
    with pytest.raises(InvocationError, match="did not answer within 2.5 s"):
        compute.invoke("esd-x", {}, timeout_s=2.5)


def test_runtime_client_per_timeout(clients: SageMakerClients) -> None:
    first = clients.runtime_for(29.2)
    assert first is clients.runtime_for(30)
    assert first.meta.config.read_timeout == 30
    assert first.meta.config.retries["total_max_attempts"] == 1
    assert clients.runtime_for(120).meta.config.read_timeout == 120
    assert clients.runtime_for(0.1).meta.config.read_timeout == 1


# -- settings ------------------------------------------------------------------------


def test_settings_from_env() -> None:
    environ = {
        "ESD_SAGEMAKER_ROLE_ARN": SETTINGS.execution_role_arn,
        "ESD_INFERENCE_IMAGE_URI": SETTINGS.inference_image_uri,
        "ESD_SNS_SUCCESS_TOPIC_ARN": SETTINGS.success_topic_arn,
        "ESD_SNS_ERROR_TOPIC_ARN": SETTINGS.error_topic_arn,
    }
    assert SageMakerSettings.from_env(environ) == SETTINGS
    with pytest.raises(ValueError, match="ESD_SNS_ERROR_TOPIC_ARN"):
        SageMakerSettings.from_env({**environ, "ESD_SNS_ERROR_TOPIC_ARN": " "})
    with pytest.raises(ValueError, match="ESD_SAGEMAKER_ROLE_ARN, ESD_INFERENCE_IMAGE_URI"):
        SageMakerSettings.from_env({})


# -- event parsers ---------------------------------------------------------------------


SUCCESS_NOTIFICATION = {
    "awsRegion": REGION,
    "eventTime": "2024-01-25T22:46:00.608Z",
    "receivedTime": "2024-01-25T22:46:00.455Z",
    "invocationStatus": "Completed",
    "requestParameters": {
        "contentType": "application/json",
        "endpointName": "esd-async-abc",
        "inputLocation": "s3://esd-bucket/sagemaker_input/job-1.json",
    },
    "responseParameters": {
        "contentType": "application/json",
        "outputLocation": "s3://esd-bucket/sagemaker_output/5f1c.out",
    },
    "inferenceId": "job-1",
    "eventVersion": "1.0",
    "eventSource": "aws:sagemaker",
    "eventName": "InferenceResult",
}
FAILURE_NOTIFICATION = {
    **SUCCESS_NOTIFICATION,
    "invocationStatus": "Failed",
    "failureReason": "ClientError: Received server error (500) from model. See the SageMaker Endpoint logs.",
    "responseParameters": {
        "contentType": "text/plain; charset=utf-8",
        "failureLocation": "s3://esd-bucket/sagemaker_output/5f1c-error.out",
    },
    "inferenceId": "job-2",
}


def test_parse_async_notification_success() -> None:
    expected = AsyncResult("job-1", True, "s3://esd-bucket/sagemaker_output/5f1c.out", None, None)
    assert parse_async_notification(SUCCESS_NOTIFICATION) == expected
    assert parse_async_notification(json.dumps(SUCCESS_NOTIFICATION)) == expected


def test_parse_async_notification_failure() -> None:
    result = parse_async_notification(FAILURE_NOTIFICATION)
    assert result.inference_id == "job-2"
    assert result.succeeded is False
    assert result.output_location is None
    assert result.failure_location == "s3://esd-bucket/sagemaker_output/5f1c-error.out"
    assert result.error is not None and result.error.startswith("ClientError: Received server error (500)")

    bare = parse_async_notification({"inferenceId": "job-3", "invocationStatus": "Expired"})
    assert (bare.succeeded, bare.error) == (False, "async inference ended with status 'Expired'")


@pytest.mark.parametrize("message", [{}, {"invocationStatus": "Completed"}, "not json", "[]"])
def test_parse_async_notification_rejects_other_messages(message: Any) -> None:
    with pytest.raises(ValueError, match="not a SageMaker async notification"):
        parse_async_notification(message)


def endpoint_event(status: str | None, reason: str | None = None) -> dict[str, Any]:
    detail: dict[str, Any] = {
        "EndpointName": "esd-async-abc",
        "EndpointArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/esd-async-abc",
        "EndpointConfigName": "esd-async-abc",
        "CreationTime": 1700000000000,
        "LastModifiedTime": 1700000100000,
    }
    if status is not None:
        detail["EndpointStatus"] = status
    if reason is not None:
        detail["FailureReason"] = reason
    return {
        "version": "0",
        "detail-type": "SageMaker Endpoint State Change",
        "source": "aws.sagemaker",
        "region": REGION,
        "detail": detail,
    }


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("IN_SERVICE", "InService"),
        ("CREATING", "Creating"),
        ("UPDATING", "Updating"),
        ("SYSTEM_UPDATING", "Updating"),
        ("FAILED", "Failed"),
        ("DELETING", "Deleting"),
        ("ROLLING_BACK", "RollingBack"),
        ("OUT_OF_SERVICE", "OutOfService"),
        ("InService", "InService"),
        ("UPDATE_ROLLBACK_FAILED", "UpdateRollbackFailed"),
        ("SOMETHING_NEW", "SomethingNew"),
        ("hibernating", "Hibernating"),
        (None, "Unknown"),
    ],
)
def test_parse_endpoint_state_event(status: str | None, expected: str) -> None:
    assert parse_endpoint_state_event(endpoint_event(status)) == ("esd-async-abc", expected, None)


def test_parse_endpoint_state_event_failure_reason() -> None:
    event = endpoint_event("FAILED", "The primary container for production variant prod did not pass the ping check")
    assert parse_endpoint_state_event(event) == (
        "esd-async-abc",
        "Failed",
        "The primary container for production variant prod did not pass the ping check",
    )
    with pytest.raises(ValueError, match="EndpointName"):
        parse_endpoint_state_event({"detail": {"EndpointStatus": "FAILED"}})
