"""`SageMakerTrainer` on moto (the job request as moto records it), its stop, the EventBridge parser of every
training status, and the aws backend's flow from "SageMaker Training Job State Change" events to the job."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws
from support import Api

import middleware_api.lambda_handler as lambda_module
from middleware_api.adapters.aws.training import (
    SageMakerTrainer,
    SageMakerTrainingSettings,
    TrainingState,
    parse_training_state_event,
    training_job_name,
)
from middleware_api.ports.training import TrainingError, TrainingSpec

REGION = "us-east-1"
ACCOUNT = "123456789012"
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/esd-training:1.5.0"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/esd-sagemaker"
SETTINGS = SageMakerTrainingSettings(role_arn=ROLE, image_uri=IMAGE)
SECONDARY_STATUSES = [
    "Starting",
    "Pending",
    "LaunchingMLInstances",
    "PreparingTrainingStack",
    "Downloading",
    "DownloadingTrainingImage",
    "Training",
    "Uploading",
    "Restarting",
    "Updating",
    "Interrupted",
    "Stopping",
    "Stopped",
    "MaxRuntimeExceeded",
    "MaxWaitTimeExceeded",
    "Completed",
    "Failed",
]


@pytest.fixture
def sagemaker(aws_credentials: None) -> Iterator[Any]:
    with mock_aws():
        yield boto3.session.Session(region_name=REGION).client("sagemaker")


def spec(job_id: str | None = None) -> TrainingSpec:
    job_id = job_id or str(uuid.uuid4())
    root = f"s3://esd-bucket/kohya/train/{job_id}"
    return TrainingSpec(
        job_id=job_id,
        instance_type="ml.g5.2xlarge",
        fm_type="sd_xl",
        config_location=f"{root}/input/config.toml",
        model_location="s3://esd-bucket/Stable-diffusion/checkpoint/custom/m1/sd_xl_base_1.0.safetensors",
        dataset_location="s3://esd-bucket/dataset/lego",
        output_location=f"{root}/output",
        output_name="lego-xl",
    )


def event(name: str, status: str | None, secondary: str | None = None, reason: str | None = None) -> dict:
    detail: dict[str, Any] = {"TrainingJobName": name, "TrainingJobArn": f"arn:aws:sagemaker:::training-job/{name}"}
    if status is not None:
        detail["TrainingJobStatus"] = status
    if secondary is not None:
        detail["SecondaryStatus"] = secondary
    if reason is not None:
        detail["FailureReason"] = reason
    return {"source": "aws.sagemaker", "detail-type": "SageMaker Training Job State Change", "detail": detail}


# -- the adapter -----------------------------------------------------------------------------------


def test_start_creates_the_training_job_moto_records(sagemaker: Any) -> None:
    job = spec()
    SageMakerTrainer(sagemaker, SETTINGS, REGION).start(job)
    described = sagemaker.describe_training_job(TrainingJobName=f"esd-kohya-{job.job_id}")
    assert described["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert described["AlgorithmSpecification"]["TrainingInputMode"] == "File"
    assert described["RoleArn"] == ROLE
    assert described["ResourceConfig"] == {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 100}
    assert described["StoppingCondition"] == {"MaxRuntimeInSeconds": 2 * 24 * 3600}
    assert described["OutputDataConfig"] == {"S3OutputPath": job.output_location}
    assert described["HyperParameters"] == {
        "job_id": job.job_id,
        "fm_type": "sd_xl",
        "config_s3": job.config_location,
        "model_s3": job.model_location,
        "dataset_s3": job.dataset_location,
        "output_s3": job.output_location,
        "output_name": "lego-xl",
        "region": REGION,
    }
    assert len(training_job_name(job.job_id)) <= 63


@pytest.mark.parametrize(
    ("settings", "missing"),
    [
        (SageMakerTrainingSettings(role_arn=ROLE, image_uri=None), "ESD_TRAINING_IMAGE_URI"),
        (SageMakerTrainingSettings(role_arn=None, image_uri=IMAGE), "ESD_SAGEMAKER_ROLE_ARN"),
    ],
)
def test_start_without_settings_says_which(sagemaker: Any, settings: SageMakerTrainingSettings, missing: str) -> None:
    with pytest.raises(TrainingError, match=missing):
        SageMakerTrainer(sagemaker, settings).start(spec())


def test_settings_from_env() -> None:
    settings = SageMakerTrainingSettings.from_env({"ESD_SAGEMAKER_ROLE_ARN": ROLE, "ESD_TRAINING_IMAGE_URI": " "})
    assert settings.role_arn == ROLE and settings.image_uri is None


def test_a_refused_job_is_a_training_error(sagemaker: Any) -> None:
    trainer = SageMakerTrainer(sagemaker, SETTINGS)
    with Stubber(sagemaker) as stub:
        stub.add_client_error("create_training_job", "ResourceLimitExceeded", "no ml.g5.2xlarge for training left")
        with pytest.raises(TrainingError, match="ResourceLimitExceeded: no ml.g5.2xlarge"):
            trainer.start(spec())


def test_stop_sends_the_jobs_name_and_tolerates_a_job_that_ended(sagemaker: Any) -> None:
    trainer = SageMakerTrainer(sagemaker, SETTINGS)
    name = training_job_name("j1")
    with Stubber(sagemaker) as stub:  # moto has no StopTrainingJob
        stub.add_response("stop_training_job", {}, {"TrainingJobName": name})
        stub.add_client_error(
            "stop_training_job",
            "ValidationException",
            "The request was rejected because the training job is in status Completed.",
        )
        stub.add_client_error("stop_training_job", "ResourceNotFound", "Requested resource not found.")
        stub.add_client_error("stop_training_job", "ThrottlingException", "Rate exceeded")
        trainer.stop("j1")
        trainer.stop("j1")
        trainer.stop("j1")
        with pytest.raises(TrainingError, match="Rate exceeded"):
            trainer.stop("j1")


# -- the EventBridge parser ------------------------------------------------------------------------------


@pytest.mark.parametrize("secondary", SECONDARY_STATUSES)
@pytest.mark.parametrize("status", ["InProgress", "Completed", "Failed", "Stopping", "Stopped"])
def test_every_documented_status_is_parsed(status: str, secondary: str) -> None:
    state = parse_training_state_event(event("esd-kohya-j1", status, secondary))
    assert state == TrainingState("j1", status, secondary, None)


@pytest.mark.parametrize(
    ("status", "secondary", "expected"),
    [
        ("IN_PROGRESS", "LAUNCHING_ML_INSTANCES", ("InProgress", "LaunchingMLInstances")),
        ("completed", "max-runtime-exceeded", ("Completed", "MaxRuntimeExceeded")),
        ("PAUSED_FOR_MAINTENANCE", "WaitingForCapacity", ("PausedForMaintenance", "WaitingForCapacity")),
        ("hibernating", "SOME_NEW_PHASE", ("Hibernating", "SomeNewPhase")),
        (None, None, ("Unknown", None)),
        ("", "", ("Unknown", None)),
    ],
)
def test_other_spellings_and_unknown_statuses_never_fail(
    status: str | None, secondary: str | None, expected: tuple[str, str | None]
) -> None:
    state = parse_training_state_event(event("esd-kohya-j2", status, secondary))
    assert state is not None and (state.status, state.secondary_status) == expected


def test_the_failure_reason_and_foreign_jobs() -> None:
    state = parse_training_state_event(event("esd-kohya-j3", "Failed", "Failed", "AlgorithmError: exit code 1"))
    assert state == TrainingState("j3", "Failed", "Failed", "AlgorithmError: exit code 1")
    assert parse_training_state_event(event("someone-elses-job", "Completed")) is None
    with pytest.raises(ValueError, match="TrainingJobName"):
        parse_training_state_event({"detail-type": "SageMaker Training Job State Change", "detail": {}})


# -- the aws backend: events through the Lambda entry ---------------------------------------------------------


@pytest.fixture
def aws_api(api: Api, monkeypatch: pytest.MonkeyPatch) -> Api:
    """The aws backend with a base model and a dataset, its Lambda entries on the same services."""
    if api.services.settings.backend != "aws":
        pytest.skip("EventBridge events reach the aws backend")
    monkeypatch.setattr(lambda_module, "_services", api.services)
    api.services.trainer.settings = SETTINGS  # type: ignore[attr-defined]
    blobs = api.services.blobs
    files = [{"filename": "base.safetensors", "parts_number": 1}]
    created = api.post("/checkpoints", {"checkpoint_type": "Stable-diffusion", "params": {}, "filenames": files})
    created = created.json()["data"]
    etag = api.put_url(created["s3PresignUrl"]["base.safetensors"][0], b"weights").headers["ETag"]
    tags = {"base.safetensors": [{"ETag": etag, "PartNumber": 1}]}
    api.put(f"/checkpoints/{created['checkpoint']['id']}", {"status": "Active", "multi_parts_tags": tags})
    blobs.put("dataset/cats/10_cat/a.png", b"png")
    return api


def start_job(api: Api, output_name: str) -> str:
    body = {
        "lora_train_type": "kohya",
        "params": {
            "training_params": {
                "training_instance_type": "ml.g5.2xlarge",
                "fm_type": "sd_1_5",
                "model": "base.safetensors",
                "s3_data_path": api.services.blobs.uri("dataset/cats"),
            },
            "config_params": {"training": {"output_name": output_name}},
        },
    }
    response = api.post("/trainings", body)
    assert response.status_code == 200, response.text
    return response.json()["data"]["id"]


def status_of(api: Api, job_id: str) -> dict[str, Any]:
    return api.get(f"/trainings/{job_id}").json()["data"]


def test_every_status_event_moves_the_job(aws_api: Api, moto_url: str) -> None:
    api = aws_api
    job_id = start_job(api, "cat-lora")
    name = f"esd-kohya-{job_id}"
    described = boto3.client("sagemaker", endpoint_url=moto_url, region_name=REGION).describe_training_job(
        TrainingJobName=name
    )
    assert described["HyperParameters"]["output_name"] == "cat-lora"
    assert described["AlgorithmSpecification"]["TrainingImage"] == IMAGE

    for secondary in SECONDARY_STATUSES:
        assert lambda_module.events_handler(event(name, "InProgress", secondary), None) == {"handled": 1}
        expected = "Training" if secondary in ("Completed", "Failed", "Stopped") else secondary
        assert status_of(api, job_id)["job_status"] == expected, secondary
    lambda_module.events_handler(event(name, "SomethingNew", "EvenNewer"), None)
    assert status_of(api, job_id)["job_status"] == "EvenNewer"
    lambda_module.events_handler(event(name, "Stopping", "Stopping"), None)
    assert status_of(api, job_id)["job_status"] == "Stopping"
    assert lambda_module.events_handler(event("not-ours", "Completed", "Completed"), None) == {"handled": 0}

    api.services.blobs.put(f"kohya/train/{job_id}/output/cat-lora.safetensors", b"lora")
    lambda_module.events_handler(event(name, "Completed", "Completed"), None)
    finished = status_of(api, job_id)
    assert finished["job_status"] == "Completed" and finished["checkpoint_names"] == ["cat-lora.safetensors"]
    lora = api.get(f"/checkpoints/{finished['checkpoint_id']}").json()["data"]["checkpoint"]
    assert lora["status"] == "Active"
    assert api.services.blobs.get(f"Lora/checkpoint/custom/{lora['id']}/cat-lora.safetensors") == b"lora"


def test_a_failure_event_shows_its_reason(aws_api: Api) -> None:
    job_id = start_job(aws_api, "failing")
    name = f"esd-kohya-{job_id}"
    lambda_module.events_handler(event(name, "InProgress", "Training"), None)
    lambda_module.events_handler(event(name, "Failed", "Failed", "AlgorithmError: kohya exited with code 1"), None)
    failed = status_of(aws_api, job_id)
    assert failed["job_status"] == "Failed" and failed["error"] == "AlgorithmError: kohya exited with code 1"
    assert aws_api.get("/trainings").json()["data"]["trainings"][0]["error"] == failed["error"]


def test_a_job_sagemaker_refuses_fails_with_the_reason(aws_api: Api) -> None:
    aws_api.services.trainer.settings = SageMakerTrainingSettings(role_arn=ROLE, image_uri=None)  # type: ignore[attr-defined]
    body = {
        "lora_train_type": "kohya",
        "params": {
            "training_params": {
                "fm_type": "sd_1_5",
                "model": "base.safetensors",
                "s3_data_path": aws_api.services.blobs.uri("dataset/cats"),
            }
        },
    }
    refused = aws_api.post("/trainings", body)
    assert refused.status_code == 400 and "ESD_TRAINING_IMAGE_URI" in refused.json()["message"]
    [job] = aws_api.get("/trainings").json()["data"]["trainings"]
    assert job["job_status"] == "Failed" and "ESD_TRAINING_IMAGE_URI" in job["error"]
