"""The `Trainer` port: LoRA training jobs (kohya sd-scripts), SageMaker's training-job model.

Adapters: SageMaker training jobs (aws) and a local runner of kohya's scripts in a
child process (embedded). An adapter starts a job and returns; what happens later
reaches the services through `TrainingEvents`, in SageMaker's vocabulary: a job
status (`InProgress`, `Completed`, `Failed`, `Stopping`, `Stopped`) and a
secondary status (`Starting`, `Downloading`, `Training`, `Uploading`, …).
SageMaker delivers them by EventBridge; the local runner calls them directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

SD_1_5 = "sd_1_5"
SD_XL = "sd_xl"
FM_TYPES = (SD_1_5, SD_XL)

# job statuses
IN_PROGRESS = "InProgress"
COMPLETED = "Completed"
FAILED = "Failed"
STOPPING = "Stopping"
STOPPED = "Stopped"
JOB_STATUSES = (IN_PROGRESS, COMPLETED, FAILED, STOPPING, STOPPED)

# secondary statuses the local runner reports too
STARTING = "Starting"
DOWNLOADING = "Downloading"
TRAINING = "Training"
UPLOADING = "Uploading"

LOG_NAME = "train.log"
"""The full log of a job, written beside its outputs (`{output_location}/train.log`)."""


@dataclass(frozen=True)
class TrainingSpec:
    """What to train: kohya's `config.toml`, a base model file and a dataset folder, all `s3://` URIs of the
    deployment's store; outputs (`{output_name}*.safetensors`, the log) go under `output_location`."""

    job_id: str
    instance_type: str
    fm_type: str
    config_location: str
    model_location: str
    dataset_location: str
    output_location: str
    output_name: str


class TrainingError(Exception):
    """The trainer refused (kohya not installed, SageMaker said no); the message says why and what to do."""


class TrainingEvents(Protocol):
    """Where a trainer reports what happened after it returned."""

    def training_state(
        self, job_id: str, status: str, secondary_status: str | None = None, reason: str | None = None
    ) -> None:
        """The job is now `status` (one of JOB_STATUSES, or a status this code does not know yet),
        in the phase `secondary_status`, with the reason on failure."""

    def training_log(self, job_id: str, lines: list[str]) -> None:
        """The last lines the job's trainer printed (only the local runner sends them)."""


class Trainer(Protocol):
    """Starts and stops training jobs."""

    def start(self, spec: TrainingSpec) -> None:
        """Start the job; its states arrive later through `TrainingEvents`. TrainingError if it cannot start."""

    def stop(self, job_id: str) -> None:
        """Stop the job if it still runs (a job already over is no error); TrainingError if the stop is refused."""

    def close(self) -> None:
        """Stop what this process started (local jobs); nothing for SageMaker."""
