"""Training jobs: a LoRA trained with kohya on a base checkpoint and a dataset, through the `Trainer` port.

A job is one item of the trainings table; its own files live under `kohya/train/{id}/`:
`input/config.toml` (the template of its `fm_type` merged with `config_params`) and
`output/` (kohya's `.safetensors` and `train.log`). Creating a job registers an
`Initial` `Lora` checkpoint named `{output_name}.safetensors`, which holds the name.
The job goes `Initial` → `Training` (started) → SageMaker's secondary statuses
(`Starting`, `Downloading`, `Training`, `Uploading`, …) → `Completed` (the outputs
are copied into the checkpoint, now `Active`) | `Failed` (with the reason) |
`Stopped`; the states arrive through the events module (EventBridge or the local
runner). A job that is over never changes again, whatever events come late.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from middleware_api import schema
from middleware_api.ports.blobs import BlobError, Blobs
from middleware_api.ports.tables import ConditionFailed, Item, Page, Table, query_all
from middleware_api.ports.training import (
    COMPLETED,
    FAILED,
    FM_TYPES,
    IN_PROGRESS,
    LOG_NAME,
    STOPPED,
    STOPPING,
    Trainer,
    TrainingError,
    TrainingSpec,
)
from middleware_api.services import checkpoints as checkpoint_rules
from middleware_api.services.checkpoints import CheckpointService, check_file_name
from middleware_api.services.datasets import ENABLED, DatasetService
from middleware_api.services.endpoints import DEFAULT_INSTANCE_TYPE, INSTANCE_TYPE
from middleware_api.services.errors import BadRequest, NotFound
from middleware_api.services.kohya_config import build_config, dump_toml
from middleware_api.services.permissions import Actor

log = logging.getLogger("middleware_api.trainings")

KOHYA = "kohya"
INITIAL = "Initial"
TRAINING = "Training"
FINAL = (COMPLETED, FAILED, STOPPED)
BASE_TYPE = "Stable-diffusion"
LORA = "Lora"
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin")
MAX_ID_LENGTH = 128
MAX_KEY_BYTES = 1024  # S3's limit
MAX_OUTPUT_NAME_CHARS = 200
MAX_ERROR_CHARS = 4000
LOG_LINES = 50
MAX_LOG_LINE_CHARS = 1000
_RETRIES = 5


class TrainingService:
    """Create, list, get, stop and delete training jobs; apply the states their trainer reports."""

    def __init__(
        self,
        table: Table,
        blobs: Blobs,
        trainer: Trainer,
        checkpoints: CheckpointService,
        datasets: DatasetService,
    ) -> None:
        self.table = table
        self.blobs = blobs
        self.trainer = trainer
        self.checkpoints = checkpoints
        self.datasets = datasets

    # -- create ---------------------------------------------------------------------------

    def create(
        self,
        actor: Actor,
        *,
        lora_train_type: str,
        training_params: Mapping[str, Any],
        config_params: Mapping[str, Any] | None,
    ) -> Item:
        """Validate, write the config, register the output checkpoint, record the job and start it.

        The model is `training_params.model` (a Stable-diffusion checkpoint's name) or
        `s3_model_path`; the dataset `training_params.dataset` (an Enabled dataset's name) or
        `s3_data_path`. Returns the create response's data.
        """
        actor.require("train", "create")
        if lora_train_type != KOHYA:
            raise BadRequest(f"lora_train_type must be {KOHYA}, not {lora_train_type!r}")
        fm_type = training_params.get("fm_type")
        if fm_type not in FM_TYPES:
            raise BadRequest(f"training_params.fm_type must be one of {', '.join(FM_TYPES)}, not {fm_type!r}")
        instance_type = training_params.get("training_instance_type") or DEFAULT_INSTANCE_TYPE
        if not INSTANCE_TYPE.match(instance_type):
            raise BadRequest(
                f"training_params.training_instance_type {instance_type!r} is not a SageMaker instance type "
                "such as ml.g5.2xlarge"
            )
        model_location = self._model(actor, training_params)
        dataset_location = self._dataset(actor, training_params)
        config = build_config(fm_type, config_params)
        job_id = str(uuid.uuid4())
        if not _gives_output_name(config_params):
            config["training"]["output_name"] = f"lora-{job_id[:8]}"
        output_name = _check_output_name(config["training"]["output_name"])
        file_name = f"{output_name}.safetensors"
        toml_text = dump_toml(config)

        prefix = _prefix(job_id)
        input_location = self.blobs.uri(f"{prefix}input")
        output_location = self.blobs.uri(f"{prefix}output")
        config_key = f"{prefix}input/config.toml"
        checkpoint = self._new_checkpoint(actor, job_id, file_name)
        self.checkpoints.claim_name(LORA, file_name, checkpoint["id"])
        created = time.time()
        job: Item = {
            "id": job_id,
            "job_status": INITIAL,
            "created": created,
            "timestamp": str(created),
            "listing": schema.LISTING,
            "allowed_roles_or_users": list(actor.roles) or [actor.username],
            "creator": actor.username,
            "checkpoint_id": checkpoint["id"],
            "output_name": output_name,
            "input_location": input_location,
            "output_location": output_location,
            "params": {
                "training_type": KOHYA,
                "training_params": {
                    **{name: value for name, value in training_params.items() if value is not None},
                    "fm_type": fm_type,
                    "training_instance_type": instance_type,
                    "s3_model_path": model_location,
                    "s3_data_path": dataset_location,
                },
                "config_params": config,
            },
        }
        try:
            self.blobs.put(config_key, toml_text.encode("utf-8"), "application/toml")
            self.checkpoints.table.put(checkpoint, must_not_exist=True)
        except Exception:
            self.checkpoints.release_name(checkpoint)
            raise
        self.table.put(job, must_not_exist=True)
        spec = TrainingSpec(
            job_id=job_id,
            instance_type=instance_type,
            fm_type=fm_type,
            config_location=self.blobs.uri(config_key),
            model_location=model_location,
            dataset_location=dataset_location,
            output_location=output_location,
            output_name=output_name,
        )
        try:
            self.trainer.start(spec)
        except TrainingError as error:
            self._end(job_id, FAILED, f"the training could not start: {error}")
            raise BadRequest(f"training job {job_id} could not start: {error}") from error
        except Exception:  # a bug: the job must still not stay Initial
            self._end(job_id, FAILED, "the training could not start: internal error")
            raise
        started = self._transition(job_id, lambda current: {"job_status": TRAINING} if current == INITIAL else None)
        job = started or self.table.get(_key(job_id)) or job
        return {
            "id": job_id,
            "status": job["job_status"],
            "created": job["timestamp"],
            "params": job["params"],
            "input_location": input_location,
            "output_location": output_location,
            "checkpoint_id": checkpoint["id"],
            "output_name": output_name,
            "error": job.get("error"),
        }

    def _model(self, actor: Actor, params: Mapping[str, Any]) -> str:
        """The `s3://` location of the base model file."""
        name, path = params.get("model"), params.get("s3_model_path")
        if name and path:
            raise BadRequest("training_params: give model (a checkpoint name) or s3_model_path, not both")
        if name:
            checkpoint = self.checkpoints.find_by_name(BASE_TYPE, name, actor)
            if checkpoint is None:
                raise BadRequest(
                    f"training_params.model: checkpoint {name} of type {BASE_TYPE} not found or not Active"
                )
            return f"{checkpoint['s3_location'].rstrip('/')}/{name}"
        if not path:
            raise BadRequest(
                'object has missing required properties (["s3_model_path"]) at /params/training_params: '
                "give s3_model_path or model (a checkpoint name)"
            )
        field = "training_params.s3_model_path"
        key = self._key_in_store(field, path)
        try:
            if self.blobs.size(key) is not None:
                return self.blobs.uri(key)
            # a checkpoint's folder (its s3Location): the model file in it
            files = [found for found in self.blobs.list(key.rstrip("/") + "/") if found.endswith(MODEL_SUFFIXES)]
        except BlobError as error:
            raise BadRequest(f"{field} {path!r} is not a valid location: {error}") from None
        if not files:
            raise BadRequest(f"{field} {path!r} is neither a model file nor a folder holding one")
        return self.blobs.uri(files[0])

    def _dataset(self, actor: Actor, params: Mapping[str, Any]) -> str:
        """The `s3://` folder of the dataset (kohya's `train_data_dir`)."""
        name, path = params.get("dataset"), params.get("s3_data_path")
        if name and path:
            raise BadRequest("training_params: give dataset (a dataset name) or s3_data_path, not both")
        if name:
            try:
                info = self.datasets.visible(actor, name)
            except NotFound as error:
                raise BadRequest(f"training_params.dataset: {error.message}") from None
            if info["dataset_status"] != ENABLED:
                status = info["dataset_status"]
                raise BadRequest(f"training_params.dataset: dataset {name} is {status}, not {ENABLED}")
            return self.datasets.location(name)
        if not path:
            raise BadRequest(
                'object has missing required properties (["s3_data_path"]) at /params/training_params: '
                "give s3_data_path or dataset (a dataset name)"
            )
        field = "training_params.s3_data_path"
        key = self._key_in_store(field, path).rstrip("/")
        try:
            files = self.blobs.list(key + "/") if key else []
        except BlobError as error:
            raise BadRequest(f"{field} {path!r} is not a valid location: {error}") from None
        if not files:
            raise BadRequest(f"{field} {path!r} holds no files")
        return self.blobs.uri(key)

    def _key_in_store(self, field: str, location: Any) -> str:
        where = f"{field} {str(location)[:200]!r} is not a valid location in this deployment's store"
        try:
            key = self.blobs.key_of(str(location))
        except BlobError as error:
            raise BadRequest(f"{where} (s3://{self.blobs.bucket}/...): {error}") from None
        if len(key.encode("utf-8", "replace")) > MAX_KEY_BYTES:
            raise BadRequest(f"{where}: the key is longer than {MAX_KEY_BYTES} bytes")
        if any(ord(char) < 0x20 for char in key):
            raise BadRequest(f"{where}: the key has a control character")
        return key

    def _new_checkpoint(self, actor: Actor, job_id: str, file_name: str) -> Item:
        """An `Initial` Lora checkpoint item, in the shape `CheckpointService` keeps them."""
        checkpoint_id = str(uuid.uuid4())
        created = time.time()
        return {
            "id": checkpoint_id,
            "checkpoint_type": LORA,
            "checkpoint_status": checkpoint_rules.INITIAL,
            "checkpoint_names": [file_name],
            "name_key": _name_key(file_name),
            "s3_location": self.blobs.uri(_checkpoint_prefix(checkpoint_id).rstrip("/")),
            "created": created,
            "listing": schema.LISTING,
            "allowed_roles_or_users": list(actor.roles) or [actor.username],
            "params": {
                "message": f"LoRA of training job {job_id}",
                "creator": actor.username,
                "created": datetime.fromtimestamp(created, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f"),
                "training_id": job_id,
            },
        }

    # -- states -----------------------------------------------------------------------------

    def record_state(
        self, job_id: str, status: str, secondary_status: str | None = None, reason: str | None = None
    ) -> None:
        """Apply a state its trainer reported; a job that is over, or unknown, ignores it."""
        job = self._get(job_id)
        if job is None:
            log.info("state %s of unknown training job %s ignored", status, job_id)
            return
        if job["job_status"] in FINAL:
            return  # a late or repeated event: the first outcome stands
        if status == COMPLETED:
            self._complete(job)
        elif status == FAILED:
            phase = f" while {secondary_status}" if secondary_status and secondary_status != FAILED else ""
            self._end(job_id, FAILED, reason or f"the training failed{phase} without a reason")
        elif status == STOPPED:
            if not reason and secondary_status and secondary_status != STOPPED:
                reason = f"the training was stopped: {secondary_status}"
            self._end(job_id, STOPPED, reason, secondary_status)
        else:
            candidates = [STOPPING if status == STOPPING else None, secondary_status]
            candidates += [None if status == IN_PROGRESS else status, TRAINING]
            phase = next(name for name in candidates if name and name not in FINAL and name != INITIAL)
            changes = {"job_status": phase, "sagemaker_status": status, "secondary_status": secondary_status}
            self._transition(job_id, lambda current: changes)

    def record_log(self, job_id: str, lines: list[str]) -> None:
        """Keep the last lines a job printed on its record."""
        tail = [str(line)[:MAX_LOG_LINE_CHARS] for line in lines[-LOG_LINES:]]
        if self._get(job_id) is None:
            return
        with contextlib.suppress(ConditionFailed):  # deleted meanwhile
            self.table.update(_key(job_id), {"logs": tail})

    def fail_unfinished(self, reason: str) -> int:
        """Mark every job that is not over Failed (the embedded server restarted: its local jobs are gone)."""
        count = 0
        for job in list(query_all(self.table, schema.LISTING, index="by_created")):
            if job["job_status"] not in FINAL:
                self._end(job["id"], FAILED, reason)
                count += 1
        return count

    def _complete(self, job: Item) -> None:
        """The outputs become the files of the job's checkpoint, which turns Active; the job Completed."""
        job_id = job["id"]
        output = self.blobs.key_of(job["output_location"]).rstrip("/") + "/"
        try:
            keys = [key for key in self.blobs.list(output) if _is_output(key, output)]
        except BlobError as error:
            self._end(job_id, FAILED, f"the outputs under {job['output_location']} cannot be listed: {error}")
            return
        if not keys:
            self._end(job_id, FAILED, f"the training ended without writing a .safetensors file into {output}")
            return
        final = f"{job['output_name']}.safetensors"
        names = sorted((key.removeprefix(output) for key in keys), key=lambda name: (name != final, name))
        checkpoint_id = job["checkpoint_id"]
        checkpoint = self.checkpoints.table.get({"id": checkpoint_id})
        if checkpoint is None or checkpoint.get("checkpoint_status") != checkpoint_rules.INITIAL:
            state = "deleted" if checkpoint is None else checkpoint.get("checkpoint_status")
            self._finish(job_id, {"job_status": COMPLETED, "error": f"its checkpoint {checkpoint_id} is {state}"})
            return
        reserved = (checkpoint.get("checkpoint_names") or [None])[0]
        renamed = {**checkpoint, "name_key": _name_key(names[0])}  # as it holds the name of its first output
        if names[0] != reserved:
            try:
                self.checkpoints.claim_name(LORA, names[0], checkpoint_id)
            except BadRequest as error:
                self._end(job_id, FAILED, error.message)
                return
        prefix = _checkpoint_prefix(checkpoint_id)
        try:
            for name in names:
                self.blobs.copy(output + name, prefix + name)
        except BlobError as error:
            self.checkpoints.release_name(renamed)
            self._end(job_id, FAILED, f"the outputs could not be copied into checkpoint {checkpoint_id}: {error}")
            return
        try:
            self.checkpoints.table.update(
                {"id": checkpoint_id},
                {
                    "checkpoint_status": checkpoint_rules.ACTIVE,
                    "checkpoint_names": names,
                    "name_key": _name_key(names[0]),
                },
                expect={"checkpoint_status": checkpoint_rules.INITIAL},
            )
        except ConditionFailed:  # deleted while copying
            self.checkpoints.release_name(renamed)
            with contextlib.suppress(BlobError):
                self.blobs.delete_prefix(prefix)
            self._finish(job_id, {"job_status": COMPLETED, "error": f"its checkpoint {checkpoint_id} was deleted"})
            return
        if names[0] != reserved:
            self.checkpoints.release_name(checkpoint)
        self._finish(job_id, {"job_status": COMPLETED, "checkpoint_names": names, "error": None})

    def _end(self, job_id: str, status: str, reason: str | None, secondary_status: str | None = None) -> None:
        """End the job `Failed` or `Stopped`, and its unfinished checkpoint with it."""
        changes: Item = {"job_status": status, "error": reason[:MAX_ERROR_CHARS] if reason else None}
        if secondary_status:
            changes["secondary_status"] = secondary_status
        ended = self._finish(job_id, changes)
        if ended is None:
            return
        verb = "failed" if status == FAILED else "was stopped"
        try:
            checkpoint = self.checkpoints.table.update(
                {"id": ended["checkpoint_id"]},
                {"checkpoint_status": checkpoint_rules.FAILED, "error": f"training job {job_id} {verb}"},
                expect={"checkpoint_status": checkpoint_rules.INITIAL},
            )
        except ConditionFailed:  # deleted, or already ended
            return
        self.checkpoints.release_name(checkpoint)

    def _finish(self, job_id: str, changes: Item) -> Item | None:
        finished = {**changes, "completed": str(time.time())}
        return self._transition(job_id, lambda current: finished)

    def _transition(self, job_id: str, changes_for: Callable[[str], Item | None]) -> Item | None:
        """Apply `changes_for(current status)` to a job that is not over; None if it is over, gone or unchanged."""
        for _ in range(_RETRIES):
            job = self.table.get(_key(job_id))
            if job is None or job["job_status"] in FINAL:
                return None
            changes = changes_for(job["job_status"])
            if changes is None:
                return None
            try:
                return self.table.update(_key(job_id), changes, expect={"job_status": job["job_status"]})
            except ConditionFailed:
                continue  # another state came in between: decide again on the new one
        return None

    # -- read ---------------------------------------------------------------------------------

    def list(self, actor: Actor, limit: int, cursor: str | None) -> Page:
        """The jobs the actor may see, newest first."""
        actor.require("train", "list")
        page = self.table.query(
            schema.LISTING,
            index="by_created",
            limit=limit,
            cursor=cursor,
            where=lambda job: actor.can_see(job.get("allowed_roles_or_users")),
            descending=True,
        )
        return Page([_summary(job) for job in page.items], page.cursor)

    def get(self, actor: Actor, job_id: str) -> Item:
        """One job with its last log lines and, once written, a URL of its full log."""
        actor.require("train", "list")
        job = self._visible(actor, job_id)
        log_key = f"{self.blobs.key_of(job['output_location'])}/{LOG_NAME}"
        log_url = self.blobs.presign_get(log_key) if self.blobs.size(log_key) is not None else None
        return {**_summary(job), "logs": list(job.get("logs") or []), "log_url": log_url}

    # -- stop and delete -----------------------------------------------------------------------

    def stop(self, actor: Actor, job_id: str) -> Item:
        """Ask the trainer to stop a job that is not over; it then reports `Stopped`."""
        actor.require("train", "all")
        job = self._visible(actor, job_id)
        if job["job_status"] in FINAL:
            raise BadRequest(f"training job {job_id} is already {job['job_status']}")
        try:
            self.trainer.stop(job_id)
        except TrainingError as error:
            raise BadRequest(f"cannot stop training job {job_id}: {error}") from error
        self._transition(job_id, lambda current: {"job_status": STOPPING})
        job = self.table.get(_key(job_id)) or job
        return _summary(job)

    def delete(self, actor: Actor, job_ids: list[str]) -> None:
        """Stop and delete jobs with their own files and unfinished checkpoints (never the model or the dataset).

        NotFound (and nothing deleted) if any is absent or hidden.
        """
        actor.require("train", "all")
        jobs = [self._visible(actor, job_id) for job_id in dict.fromkeys(job_ids)]
        for job in jobs:
            if job["job_status"] not in FINAL:
                try:
                    self.trainer.stop(job["id"])
                except TrainingError as error:
                    raise BadRequest(f"cannot stop training job {job['id']}, so it was not deleted: {error}") from error
        for job in jobs:
            self.blobs.delete_prefix(_prefix(job["id"]))
            checkpoint_id = job.get("checkpoint_id")
            checkpoint = self.checkpoints.table.get({"id": checkpoint_id}) if checkpoint_id else None
            if checkpoint is not None and checkpoint.get("checkpoint_status") != checkpoint_rules.ACTIVE:
                self.blobs.delete_prefix(_checkpoint_prefix(checkpoint_id))
                self.checkpoints.delete_record(checkpoint)
            self.table.delete(_key(job["id"]))

    # -- helpers ---------------------------------------------------------------------------------

    def _get(self, job_id: str) -> Item | None:
        if not isinstance(job_id, str) or not 0 < len(job_id) <= MAX_ID_LENGTH:
            return None
        return self.table.get(_key(job_id))

    def _visible(self, actor: Actor, job_id: str) -> Item:
        job = self._get(job_id)
        if job is None or not actor.can_see(job.get("allowed_roles_or_users")):
            raise NotFound(f"Job with id {job_id} not found")
        return job


def _summary(job: Item) -> Item:
    """A job as the list and get routes show it (the API page's GetTrainingJobStatus fields and more)."""
    return {
        "id": job["id"],
        "status": job["job_status"],
        "job_status": job["job_status"],
        "secondary_status": job.get("secondary_status"),
        "checkpoint_id": job.get("checkpoint_id"),
        "checkpoint_names": list(job.get("checkpoint_names") or []),
        "output_name": job.get("output_name"),
        "model_id": KOHYA,
        "train_type": BASE_TYPE,
        "params": job.get("params") or {},
        "input_location": job.get("input_location"),
        "output_location": job.get("output_location"),
        "created": job.get("timestamp"),
        "timestamp": job.get("timestamp"),
        "completed": job.get("completed"),
        "creator": job.get("creator"),
        "allowed_roles_or_users": list(job.get("allowed_roles_or_users") or []),
        "error": job.get("error"),
    }


def _gives_output_name(config_params: Mapping[str, Any] | None) -> bool:
    return any(isinstance(values, Mapping) and "output_name" in values for values in (config_params or {}).values())


def _check_output_name(name: str) -> str:
    if len(name) > MAX_OUTPUT_NAME_CHARS:
        raise BadRequest(f"config_params.training.output_name is longer than {MAX_OUTPUT_NAME_CHARS} characters")
    try:
        check_file_name(f"{name}.safetensors")
    except BadRequest as error:
        raise BadRequest(f"config_params.training.output_name: {error.message}") from None
    return name


def _is_output(key: str, output: str) -> bool:
    """A `.safetensors` right in the output folder (not SageMaker's own `{job}/output/model.tar.gz` and such)."""
    name = key.removeprefix(output)
    return "/" not in name and name.endswith(".safetensors") and not name.startswith(".")


def _prefix(job_id: str) -> str:
    return f"kohya/train/{job_id}/"


def _checkpoint_prefix(checkpoint_id: str) -> str:
    return f"{LORA}/checkpoint/custom/{checkpoint_id}/"


def _name_key(file_name: str) -> str:
    """The checkpoints' `name_key` of a Lora file (see `services/checkpoints.py`)."""
    return f"{LORA}/{file_name}"


def _key(job_id: str) -> Item:
    return {"id": job_id}
