"""The aws backend on moto, from endpoint to images: create → EventBridge InService (autoscaling
registered) → async job → moto's queued result → SNS notification → GET shows the images."""

from __future__ import annotations

import base64
import json

import boto3
import pytest
import requests
from support import Api

from middleware_api.adapters.aws.compute import parse_async_notification, parse_endpoint_state_event

PNG = b"\x89PNG\r\n\x1a\n" + b"sagemaker-image"


@pytest.fixture
def aws_api(api: Api) -> Api:
    if api.services.settings.backend != "aws":
        pytest.skip("SageMaker flow runs on the aws backend")
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

    api.services.events.endpoint_state(*parse_endpoint_state_event(_state_event(name, "IN_SERVICE")))
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

    result = parse_async_notification(_sns_message(inference["id"], output))
    api.services.events.async_result(result.inference_id, result.succeeded, result.output_location, result.error)
    finished = api.get(f"/inferences/{inference['id']}").json()["data"]
    assert finished["status"] == "succeed", finished
    assert api.get_url(finished["img_presigned_urls"][0]).content == PNG

    assert api.delete("/endpoints", {"endpoint_name_list": [name]}).status_code == 204
    assert scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    assert sagemaker.list_endpoints()["Endpoints"] == []
