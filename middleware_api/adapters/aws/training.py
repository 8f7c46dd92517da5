"""`Trainer` on SageMaker training jobs running the training image (`middleware_api/training/Dockerfile`).

Through the boto3 `sagemaker` client, not the SageMaker SDK. A job is named
`esd-kohya-{job id}`; its hyperparameters carry the `s3://` locations of the
config, the base model, the dataset and the output folder, which the image's
entry (`middleware_api/training/entry.py`) reads. Also holds the pure parser of
the EventBridge "SageMaker Training Job State Change" events the events module
receives: every status SageMaker documents maps to its name, and an unknown one
passes through in the same spelling, never failing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from middleware_api.ports.training import TrainingError, TrainingSpec

JOB_NAME_PREFIX = "esd-kohya-"
TRAINING_STATE_CHANGE = "SageMaker Training Job State Change"
DEFAULT_VOLUME_GB = 100
DEFAULT_MAX_RUNTIME_S = 2 * 24 * 3600
_MAX_REASON_CHARS = 1000
_ENDED = re.compile(r"in status (Completed|Failed|Stopped|Stopping)", re.IGNORECASE)
_NOT_FOUND = re.compile(r"could not find|not found|does not exist", re.IGNORECASE)

# Keyed without separators in upper case, so `InProgress`, `IN_PROGRESS` and `in-progress` all match.
_JOB_STATUSES = {
    "INPROGRESS": "InProgress",
    "COMPLETED": "Completed",
    "FAILED": "Failed",
    "STOPPING": "Stopping",
    "STOPPED": "Stopped",
}
_SECONDARY_STATUSES = {
    name.upper(): name
    for name in (
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
    )
}


@dataclass(frozen=True)
class SageMakerTrainingSettings:
    """The role SageMaker assumes for a job and the image it runs."""

    role_arn: str | None
    """IAM role of the job: reads the bucket's models and datasets, writes the job's outputs, pulls the image."""
    image_uri: str | None
    """ECR URI of the training image; without it no job can start (the error says so)."""
    volume_size_gb: int = DEFAULT_VOLUME_GB
    max_runtime_s: int = DEFAULT_MAX_RUNTIME_S

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SageMakerTrainingSettings:
        """`ESD_SAGEMAKER_ROLE_ARN` and `ESD_TRAINING_IMAGE_URI` (both may be missing until a job starts)."""
        return cls(
            role_arn=environ.get("ESD_SAGEMAKER_ROLE_ARN", "").strip() or None,
            image_uri=environ.get("ESD_TRAINING_IMAGE_URI", "").strip() or None,
        )


@dataclass(frozen=True)
class TrainingState:
    """One training job's state, as its EventBridge event tells it."""

    job_id: str
    status: str
    secondary_status: str | None
    reason: str | None


class SageMakerTrainer:
    """A `Trainer` on SageMaker training jobs."""

    def __init__(self, sagemaker: Any, settings: SageMakerTrainingSettings, region: str | None = None) -> None:
        """`sagemaker` is a boto3 `sagemaker` client; `region` is passed to the job for its S3 client."""
        self.sagemaker = sagemaker
        self.settings = settings
        self.region = region

    def start(self, spec: TrainingSpec) -> None:
        """Create the training job; TrainingError if a setting is missing or SageMaker refuses."""
        missing = [
            variable
            for variable, value in (
                ("ESD_TRAINING_IMAGE_URI", self.settings.image_uri),
                ("ESD_SAGEMAKER_ROLE_ARN", self.settings.role_arn),
            )
            if not value
        ]
        if missing:
            raise TrainingError(
                f"training on SageMaker needs {' and '.join(missing)} (the training image built from "
                "middleware_api/training/Dockerfile, and the role the job runs as)"
            )
        hyperparameters = {
            "job_id": spec.job_id,
            "fm_type": spec.fm_type,
            "config_s3": spec.config_location,
            "model_s3": spec.model_location,
            "dataset_s3": spec.dataset_location,
            "output_s3": spec.output_location,
            "output_name": spec.output_name,
        }
        if self.region:
            hyperparameters["region"] = self.region
        try:
            self.sagemaker.create_training_job(
                TrainingJobName=training_job_name(spec.job_id),
                AlgorithmSpecification={"TrainingImage": self.settings.image_uri, "TrainingInputMode": "File"},
                RoleArn=self.settings.role_arn,
                HyperParameters=hyperparameters,
                # SageMaker's own model.tar.gz lands below the job's outputs ({output}/{job name}/output/),
                # apart from the .safetensors the entry writes right into the folder
                OutputDataConfig={"S3OutputPath": spec.output_location},
                ResourceConfig={
                    "InstanceType": spec.instance_type,
                    "InstanceCount": 1,
                    "VolumeSizeInGB": self.settings.volume_size_gb,
                },
                StoppingCondition={"MaxRuntimeInSeconds": self.settings.max_runtime_s},
                Tags=[{"Key": "esd:training-id", "Value": spec.job_id}],
            )
        except (ClientError, BotoCoreError) as error:
            raise TrainingError(f"SageMaker refused the training job: {_describe(error)}") from error

    def stop(self, job_id: str) -> None:
        """Stop the job; one that already ended (or never started) is no error."""
        try:
            self.sagemaker.stop_training_job(TrainingJobName=training_job_name(job_id))
        except ClientError as error:
            details = error.response.get("Error", {})
            code, message = str(details.get("Code", "")), str(details.get("Message", ""))
            if code in ("ValidationException", "ResourceNotFound") and (
                _ENDED.search(message) or _NOT_FOUND.search(message)
            ):
                return
            raise TrainingError(f"SageMaker refused to stop the job: {_describe(error)}") from error
        except BotoCoreError as error:
            raise TrainingError(f"SageMaker could not be reached: {error}") from error

    def close(self) -> None:
        """Nothing to stop: SageMaker jobs outlive this process."""


def training_job_name(job_id: str) -> str:
    """The SageMaker name of a job (at most 63 characters for an id of 36)."""
    return f"{JOB_NAME_PREFIX}{job_id}"


def parse_training_state_event(event: Mapping[str, Any]) -> TrainingState | None:
    """The state of an EventBridge "SageMaker Training Job State Change"; None for a job this middleware did
    not start. ValueError only when the event names no job."""
    detail = event.get("detail") or {}
    name = detail.get("TrainingJobName")
    if not name:
        raise ValueError("not a SageMaker training job state change: no detail.TrainingJobName")
    name = str(name)
    if not name.startswith(JOB_NAME_PREFIX):
        return None
    secondary = str(detail.get("SecondaryStatus") or "")
    reason = str(detail.get("FailureReason") or "")[:_MAX_REASON_CHARS] or None
    return TrainingState(
        job_id=name[len(JOB_NAME_PREFIX) :],
        status=training_status(str(detail.get("TrainingJobStatus") or "")),
        secondary_status=secondary_status(secondary) if secondary else None,
        reason=reason,
    )


def training_status(status: str) -> str:
    """SageMaker's name of a training job status in either spelling; unknown ones in joined title case."""
    return _JOB_STATUSES.get(_squeeze(status)) or _camel(status)


def secondary_status(status: str) -> str:
    """SageMaker's name of a secondary status in either spelling; unknown ones in joined title case."""
    return _SECONDARY_STATUSES.get(_squeeze(status)) or _camel(status)


def _squeeze(status: str) -> str:
    return re.sub(r"[\s_-]+", "", status).upper()


def _camel(status: str) -> str:
    words = [word for word in re.split(r"[\s_-]+", status) if word]
    if not words:
        return "Unknown"
    if len(words) == 1 and not words[0].isupper():
        return words[0][0].upper() + words[0][1:]  # already CamelCase: keep its inner capitals
    return "".join(word.capitalize() for word in words)


def _describe(error: Exception) -> str:
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        text = f"{details.get('Code', 'Error')}: {details.get('Message', '')}".strip()
    else:
        text = str(error)
    return text if len(text) <= _MAX_REASON_CHARS else text[: _MAX_REASON_CHARS - 1] + "…"
