"""The aws backend on moto, from endpoint to images: create → EventBridge InService (autoscaling
registered) → async job → moto's queued result → SNS notification → GET shows the images."""

from __future__ import annotations

import base64
import json

import boto3
import pytest
import requests
from support import Api

import middleware_api.lambda_handler as lambda_module

PNG = b"\x89PNG\r\n\x1a\n" + b"sagemaker-image"


@pytest.fixture
def aws_api(api: Api, monkeypatch: pytest.MonkeyPatch) -> Api:
    """The aws backend, with the Lambda entries using the same services."""
    if api.services.settings.backend != "aws":
        pytest.skip("SageMaker flow runs on the aws backend")
    monkeypatch.setattr(lambda_module, "_services", api.services)
    return api


def _state_event(name: str, status: str, reason: str | None = None) -> dict:
    detail = {"EndpointName": name, "EndpointStatus": status} | ({"FailureReason": reason} if reason else {})
    return {"source": "aws.sagemaker", "detail-type": "SageMaker Endpoint State Change", "detail": detail}


def _sns_message(inference_id: str, output_location: str) -> str:
    return json.dumps(
        {
            "awsRegion": "us-east-1",
            "eventTime": "2026-11-27T12:00:00.000Z",
            "receivedTime": "2026-11-27T11:59:58.000Z",
            "invocationStatus": "Completed",
            "requestParameters": {"endpointName": "x", "inputLocation": "s3://b/in.json"},
            "responseParameters": {"contentType": "application/json", "outputLocation": output_location},
            "inferenceId": inference_id,
            "eventVersion": "1.0",
            "eventSource": "aws:sagemaker",
        }
    )


def test_endpoint_to_images_on_moto(aws_api: Api, moto_url: str) -> None:
    api = aws_api
    body = {
        "endpoint_name": "flow",
        "endpoint_type": "Async",
        "instance_type": "ml.g4dn.xlarge",
        "initial_instance_count": 1,
        "autoscaling_enabled": True,
        "min_instance_number": 0,
        "max_instance_number": 2,
        "assign_to_roles": ["IT Operator"],
    }
    created = api.post("/endpoints", body)
    assert created.status_code == 200, created.text
    name = created.json()["data"]["endpoint_name"]
    sagemaker = boto3.client("sagemaker", endpoint_url=moto_url)
    config = sagemaker.describe_endpoint_config(EndpointConfigName=name)
    assert config["AsyncInferenceConfig"]["OutputConfig"]["S3OutputPath"].startswith("s3://esd-test-bucket/")

    assert lambda_module.events_handler(_state_event(name, "IN_SERVICE"), None) == {"handled": 1}
    assert api.get("/endpoints").json()["data"]["endpoints"][0]["endpoint_status"] == "InService"
    scaling = boto3.client("application-autoscaling", endpoint_url=moto_url)
    targets = scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert [(target["MinCapacity"], target["MaxCapacity"]) for target in targets] == [(0, 2)]

    job = api.post("/inferences", {"inference_type": "Async", "task_type": "txt2img", "models": {}})
    inference = job.json()["data"]["inference"]
    assert api.put_url(inference["api_params_s3_upload_url"], json.dumps({"prompt": "p"}).encode()).status_code == 200
    engine_answer = {"images": [base64.b64encode(PNG).decode()], "parameters": {"prompt": "p"}, "info": "{}"}
    requests.post(
        f"{moto_url}/moto-api/static/sagemaker/async-endpoint-results",
        json={"results": [{"data": json.dumps(engine_answer), "is_failure": False}]},
        timeout=10,
    ).raise_for_status()
    started = api.put(f"/inferences/{inference['id']}/start")
    assert started.status_code == 202, started.text
    output = started.json()["data"]["inference"]["output_path"]

    sns_event = {"Records": [{"EventSource": "aws:sns", "Sns": {"Message": _sns_message(inference["id"], output)}}]}
    assert lambda_module.events_handler(sns_event, None) == {"handled": 1}
    finished = api.get(f"/inferences/{inference['id']}").json()["data"]
    assert finished["status"] == "succeed", finished
    assert api.get_url(finished["img_presigned_urls"][0]).content == PNG

    assert api.delete("/endpoints", {"endpoint_name_list": [name]}).status_code == 204
    assert scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    assert sagemaker.list_endpoints()["Endpoints"] == []


def test_failed_endpoint_event_and_failed_async_result(aws_api: Api) -> None:
    api = aws_api
    body = {"endpoint_name": "broken", "instance_type": "ml.g4dn.xlarge", "assign_to_roles": ["IT Operator"]}
    name = api.post("/endpoints", body).json()["data"]["endpoint_name"]
    lambda_module.events_handler(_state_event(name, "FAILED", "CapacityError: no capacity"), None)
    endpoint = api.get("/endpoints").json()["data"]["endpoints"][0]
    assert endpoint["endpoint_status"] == "Failed" and "CapacityError" in endpoint["error"]

    lambda_module.events_handler(_state_event(name, "IN_SERVICE"), None)
    job_id = api.post("/inferences", {"inference_type": "Async", "task_type": "txt2img", "models": {}}).json()
    job_id = job_id["data"]["inference"]["id"]
    api.services.inferences.table.update({"InferenceJobId": job_id}, {"status": "inprogress"})
    failure = json.dumps(
        {
            "invocationStatus": "Failed",
            "failureReason": "ClientError: engine answered 500: CUDA out of memory",
            "inferenceId": job_id,
            "responseParameters": {},
        }
    )
    lambda_module.events_handler({"Records": [{"Sns": {"Message": failure}}]}, None)
    job = api.get(f"/inferences/{job_id}").json()["data"]
    assert job["status"] == "failed" and "CUDA out of memory" in job["error"]


def test_task_handler_runs_a_background_task(aws_api: Api) -> None:
    calls = []
    aws_api.services.task_handlers["test.echo"] = calls.append
    assert lambda_module.task_handler({"task": "test.echo", "payload": {"x": 1}}, None) == {"done": "test.echo"}
    assert calls == [{"x": 1}]
    with pytest.raises(ValueError, match="unknown background task"):
        lambda_module.task_handler({"task": "nope"}, None)


def test_lambda_background_invokes_the_task_function_asynchronously() -> None:
    from botocore.stub import Stubber

    from middleware_api.adapters.aws.background import LambdaBackground

    client = boto3.client("lambda", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:
        expected = {
            "FunctionName": "esd-tasks",
            "InvocationType": "Event",
            "Payload": json.dumps({"task": "inferences.run_realtime", "payload": {"id": "j"}}).encode(),
        }
        stub.add_response("invoke", {"StatusCode": 202}, expected)
        LambdaBackground(client, "esd-tasks").submit("inferences.run_realtime", {"id": "j"})
        stub.assert_no_pending_responses()
