"""Inference jobs: from a generate request to images, on an endpoint of the `Compute` port.

`created` → (payload uploaded) start → `inprogress` → `succeed` | `failed`. A job
starts once; real-time jobs finish in the background when they outlast the
gateway's limit; every outcome, success or failure, is recorded on the job.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from middleware_api import schema
from middleware_api.ports.background import Background
from middleware_api.ports.blobs import BlobError, Blobs
from middleware_api.ports.compute import ASYNC, ENDPOINT_TYPES, Compute, InvocationError
from middleware_api.ports.tables import ConditionFailed, Item, Page, Table, query_all
from middleware_api.services.checkpoints import CHECKPOINT_TYPES, CheckpointService
from middleware_api.services.endpoints import EndpointService, now_text
from middleware_api.services.errors import BadRequest, Conflict, NotFound
from middleware_api.services.permissions import Actor

TASK_TYPES = ("txt2img", "img2img", "extra-single-image", "extra-batch-images", "rembg")
CREATED, IN_PROGRESS, SUCCEED, FAILED = "created", "inprogress", "succeed", "failed"
STATUSES = (CREATED, IN_PROGRESS, SUCCEED, FAILED)
PLACEHOLDER_MODELS = ("Automatic", "None", "")
REALTIME_TASK = "inferences.run_realtime"
GATEWAY_WAIT_S = 25.0  # API Gateway cuts a request at 29 s
MAX_WAIT_S = 25.0
MAX_ERROR_CHARS = 4000


@dataclass
class InferenceSettings:
    """Timing of real-time jobs: how long a request waits, how long the endpoint may take."""

    gateway_wait_s: float = GATEWAY_WAIT_S
    invocation_timeout_s: float = 900.0
    # how often a waiting request reads a job that another process finishes (aws: the events Lambda);
    # a job finished by this process wakes its waiters at once
    poll_interval_s: float = 0.2


class InferenceService:
    """Create, start, read, list and delete jobs; record their outcomes."""

    def __init__(
        self,
        table: Table,
        blobs: Blobs,
        compute: Compute,
        background: Background,
        endpoints: EndpointService,
        checkpoints: CheckpointService,
        settings: InferenceSettings | None = None,
    ) -> None:
        self.table = table
        self.blobs = blobs
        self.compute = compute
        self.background = background
        self.endpoints = endpoints
        self.checkpoints = checkpoints
        self.settings = settings or InferenceSettings()
        self._finished = threading.Condition()
        self._finished_count = 0  # jobs this process finished: a waiter sleeps only if none finished since it read

    def task_handlers(self) -> dict[str, Any]:
        return {REALTIME_TASK: lambda payload: self.run_realtime(payload["id"], payload["request"])}

    # -- create and start -------------------------------------------------------------

    def create(
        self,
        actor: Actor,
        *,
        inference_type: str,
        task_type: str,
        models: dict[str, list[str]],
        endpoint_name: str | None = None,
        payload_string: str | None = None,
    ) -> tuple[Item, int]:
        """A new job, with a presigned URL for its payload; with `payload_string` it starts at once.

        Returns (the response's `inference` object, the HTTP status: 201, or the start's status).
        """
        actor.require("inference", "create")
        if inference_type not in ENDPOINT_TYPES:
            raise BadRequest(f"inference_type must be one of {', '.join(ENDPOINT_TYPES)}")
        if task_type not in TASK_TYPES:
            raise BadRequest(f"task_type must be one of {', '.join(TASK_TYPES)}")
        payload: dict[str, Any] | None = None
        if payload_string is not None:
            try:
                payload = json.loads(payload_string)
            except ValueError:
                payload = None
            if not isinstance(payload, dict):
                raise BadRequest("payload_string must be valid json string")
        used_models = self._resolve_models(actor, models)
        endpoint = self.endpoints.pick_for(actor, inference_type, endpoint_name)
        job_id = str(uuid.uuid4())
        input_key = f"{task_type}/infer_v2/{job_id}/api_param.json"
        item: Item = {
            "InferenceJobId": job_id,
            "status": CREATED,
            "taskType": task_type,
            "inference_type": endpoint["endpoint_type"],
            "owner_group_or_role": [actor.username],
            "creator": actor.username,
            "createTime": now_text(),
            "created": time.time(),
            "listing": schema.LISTING,
            "image_names": [],
            "params": {
                "input_body_s3": self.blobs.uri(input_key),
                "used_models": used_models,
                "sagemaker_inference_endpoint_id": endpoint["EndpointDeploymentJobId"],
                "sagemaker_inference_endpoint_name": endpoint["endpoint_name"],
                "sagemaker_inference_instance_type": endpoint["instance_type"],
            },
        }
        self.table.put(item, must_not_exist=True)
        created = {
            "id": job_id,
            "type": task_type,
            "inference_type": item["inference_type"],
            "endpoint_name": endpoint["endpoint_name"],
            "api_params_s3_location": item["params"]["input_body_s3"],
            "api_params_s3_upload_url": self.blobs.presign_put(input_key),
            "models": [
                {"id": model["id"], "name": [model["model_name"]], "type": model_type}
                for model_type, entries in used_models.items()
                for model in entries
            ],
            "status": CREATED,
        }
        if payload is None:
            return created, 201
        self.blobs.put(input_key, json.dumps(payload).encode(), "application/json")
        started, status = self.start(actor, job_id)
        return {**created, **started}, status

    def _resolve_models(self, actor: Actor, models: dict[str, list[str]]) -> dict[str, list[Item]]:
        """Each named model through the checkpoints' name index; the actor must be able to see it."""
        used: dict[str, list[Item]] = {}
        for model_type, names in models.items():
            if model_type not in CHECKPOINT_TYPES:
                raise BadRequest(f"models: unknown type {model_type!r}; use one of {', '.join(CHECKPOINT_TYPES)}")
            entries = []
            for name in names:
                if name in PLACEHOLDER_MODELS:
                    entries.append({"id": model_type, "model_name": name or "None", "s3": "None", "type": model_type})
                    continue
                checkpoint = self.checkpoints.find_by_name(model_type, name, actor)
                if checkpoint is None:
                    raise BadRequest(f"checkpoint {name} of type {model_type} not found or not Active")
                entries.append(
                    {"id": checkpoint["id"], "model_name": name, "s3": checkpoint["s3_location"], "type": model_type}
                )
            used[model_type] = entries
        return used

    def start(self, actor: Actor, job_id: str) -> tuple[Item, int]:
        """Start a created job once: (the response's `inference` object, 202 or 200)."""
        actor.require("inference", "create")
        job = self._visible(actor, job_id)
        input_key = self.blobs.key_of(job["params"]["input_body_s3"])
        if job["status"] == CREATED and self.blobs.size(input_key) is None:
            raise BadRequest("the payload is not uploaded yet: PUT it to api_params_s3_upload_url first")
        try:
            job = self.table.update(
                _key(job_id), {"status": IN_PROGRESS, "startTime": now_text()}, expect={"status": CREATED}
            )
        except ConditionFailed:
            raise Conflict(f"inference {job_id} has already been started") from None
        endpoint_name = job["params"]["sagemaker_inference_endpoint_name"]
        if job["inference_type"] == ASYNC:
            try:
                output = self.compute.invoke_async(endpoint_name, self._invocation(job), job_id)
            except InvocationError as error:
                self.record_failure(job_id, str(error))
                raise BadRequest(f"endpoint {endpoint_name} refused the job: {error}") from error
            self.table.update(_key(job_id), {"params": {**job["params"], "output_path": output}})
            return {
                "inference_id": job_id,
                "status": IN_PROGRESS,
                "endpoint_name": endpoint_name,
                "output_path": output,
            }, 202
        # the worker's request is built here, where presigned URLs know the host the client used
        self.background.submit(REALTIME_TASK, {"id": job_id, "request": self._invocation(job)})
        finished = self.wait(job_id, self.settings.gateway_wait_s)
        summary = {"inference_id": job_id, "status": finished["status"], "endpoint_name": endpoint_name}
        if finished["status"] in (SUCCEED, FAILED):
            return {**summary, **self.view(finished)}, 200
        return summary, 202

    def _invocation(self, job: Item) -> Item:
        """The worker's request (the container contract), with presigned URLs so it needs no bucket rights."""
        models = {
            model_type: [
                {**model, "url": self.blobs.presign_get(self.blobs.key_of(model["s3"]) + "/" + model["model_name"])}
                if model["s3"] != "None"
                else model
                for model in entries
            ]
            for model_type, entries in job["params"]["used_models"].items()
        }
        input_key = self.blobs.key_of(job["params"]["input_body_s3"])
        return {
            "task": job["taskType"],
            "username": job["creator"],
            "inference_id": job["InferenceJobId"],
            "models": models,
            "param_s3": job["params"]["input_body_s3"],
            "param_url": self.blobs.presign_get(input_key),
        }

    def run_realtime(self, job_id: str, request: Item) -> None:
        """The background half of a real-time job: invoke, then record the outcome whatever it is."""
        job = self.table.get(_key(job_id))
        if job is None or job["status"] != IN_PROGRESS:
            return
        endpoint_name = job["params"]["sagemaker_inference_endpoint_name"]
        try:
            answer = self.compute.invoke(endpoint_name, request, self.settings.invocation_timeout_s)
        except InvocationError as error:
            self.record_failure(job_id, str(error))
            return
        except Exception as error:  # the job must never stay inprogress
            self.record_failure(job_id, f"invocation of {endpoint_name} failed: {error}")
            raise
        self.record_result(job_id, answer)

    # -- outcomes ---------------------------------------------------------------------

    def record_result(self, job_id: str, answer: Any) -> None:
        """Store the engine's images and parameters and mark the job `succeed` (or `failed` if unusable)."""
        if not isinstance(answer, dict):
            self.record_failure(job_id, f"the endpoint answered {json.dumps(answer)[:200]} instead of a result")
            return
        if answer.get("status") == FAILED or ("error" in answer and "images" not in answer and "image" not in answer):
            self.record_failure(job_id, str(answer.get("error") or answer))
            return
        images = answer.get("images")
        if images is None and "image" in answer:
            images = [answer["image"]]
        names = []
        try:
            for index, image in enumerate(images or []):
                data = base64.b64decode(image.split(",", 1)[-1] if image.startswith("data:") else image, validate=True)
                name = f"image_{index}.png"
                self.blobs.put(f"out/{job_id}/result/{name}", data, "image/png")
                names.append(name)
        except (binascii.Error, AttributeError, TypeError) as error:
            self.record_failure(job_id, f"the endpoint answered an image that is not base64: {error}")
            return
        parameters = {"parameters": answer.get("parameters"), "info": answer.get("info")}
        self.blobs.put(f"out/{job_id}/result/{job_id}_param.json", json.dumps(parameters).encode(), "application/json")
        self._finish(job_id, {"status": SUCCEED, "image_names": names})

    def record_failure(self, job_id: str, reason: str) -> None:
        """Mark the job `failed` with the reason."""
        self._finish(
            job_id, {"status": FAILED, "error": reason[:MAX_ERROR_CHARS], "sagemakerRaw": reason[:MAX_ERROR_CHARS]}
        )

    def fail_unfinished(self, reason: str) -> int:
        """Mark every `inprogress` job `failed` with `reason`; returns how many.

        For the embedded server at start: its jobs were queued or running in the previous
        server process, and died with it. `created` jobs are left as they are: the client
        may still upload their payload and start them.
        """
        unfinished = list(
            query_all(self.table, schema.LISTING, index="by_created", where=lambda job: job["status"] == IN_PROGRESS)
        )
        for job in unfinished:
            self.record_failure(job["InferenceJobId"], reason)
        return len(unfinished)

    def _finish(self, job_id: str, changes: Item) -> None:
        with contextlib.suppress(ConditionFailed):  # deleted meanwhile, or already finished: the first outcome stands
            self.table.update(_key(job_id), {**changes, "completeTime": now_text()}, expect={"status": IN_PROGRESS})
        with self._finished:
            self._finished_count += 1
            self._finished.notify_all()

    def wait(self, job_id: str, timeout_s: float) -> Item:
        """The job once it has finished, or as it is after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            seen = self._finished_count
            job = self.table.get(_key(job_id))
            if job is None:
                raise NotFound(f"inference with id {job_id} not found")
            left = deadline - time.monotonic()
            if job["status"] in (SUCCEED, FAILED) or left <= 0:
                return job
            with self._finished:
                if self._finished_count == seen:
                    self._finished.wait(min(self.settings.poll_interval_s, left))

    # -- read, list, delete -----------------------------------------------------------

    def get(self, actor: Actor, job_id: str, wait_s: float = 0) -> Item:
        """The job with presigned URLs of its images; with `wait_s`, returns as soon as it finishes."""
        actor.require("inference", "list")
        job = self._visible(actor, job_id)
        if wait_s > 0 and job["status"] not in (SUCCEED, FAILED):
            job = self.wait(job_id, min(wait_s, MAX_WAIT_S))
        return self.view(job)

    def view(self, job: Item) -> Item:
        """The GetInferenceJob shape: the summary plus presigned URLs of payload, images and parameters."""
        job_id = job["InferenceJobId"]
        params = dict(job["params"])
        params["input_body_presign_url"] = self.blobs.presign_get(self.blobs.key_of(params["input_body_s3"]))
        images = [self.blobs.presign_get(f"out/{job_id}/result/{name}") for name in job.get("image_names", [])]
        outputs = (
            [self.blobs.presign_get(f"out/{job_id}/result/{job_id}_param.json")] if job["status"] == SUCCEED else []
        )
        return {
            **_summary(job),
            "img_presigned_urls": images,
            "output_presigned_urls": outputs,
            "params": params,
            "sagemakerRaw": job.get("sagemakerRaw"),
        }

    def list(self, actor: Actor, limit: int, cursor: str | None, statuses: list[str], task_types: list[str]) -> Page:
        """The jobs the actor may see (ownership rule: its own), newest first, without presigned URLs."""
        actor.require("inference", "list")
        for status in statuses:
            if status not in STATUSES:
                raise BadRequest(f"status must be one of {', '.join(STATUSES)}")
        for task_type in task_types:
            if task_type not in TASK_TYPES:
                raise BadRequest(f"task_type must be one of {', '.join(TASK_TYPES)}")

        def where(job: Item) -> bool:
            return (
                actor.can_see(job.get("owner_group_or_role"))
                and (not statuses or job["status"] in statuses)
                and (not task_types or job["taskType"] in task_types)
            )

        page = self.table.query(
            actor.username, index="by_creator", limit=limit, cursor=cursor, where=where, descending=True
        )
        return Page([_summary(job) for job in page.items], page.cursor)

    def delete(self, actor: Actor, job_ids: list[str]) -> None:
        """Delete jobs with their payload, output and images; every id must exist and be visible."""
        actor.require("inference", "all")
        jobs = [self._visible(actor, job_id) for job_id in job_ids]
        for job in jobs:
            job_id = job["InferenceJobId"]
            self.blobs.delete_prefix(f"{job['taskType']}/infer_v2/{job_id}/")
            self.blobs.delete_prefix(f"out/{job_id}/")
            self.blobs.delete(f"sagemaker_input/{job_id}.json")
            output = job["params"].get("output_path")
            if output:
                with contextlib.suppress(BlobError):  # an output outside our bucket is not ours to delete
                    self.blobs.delete(self.blobs.key_of(output))
            self.table.delete(_key(job_id))

    def _visible(self, actor: Actor, job_id: str) -> Item:
        job = self.table.get(_key(job_id))
        if job is None or not actor.can_see(job.get("owner_group_or_role")):
            raise NotFound(f"inference with id {job_id} not found")
        return job


def _summary(job: Item) -> Item:
    return {
        "InferenceJobId": job["InferenceJobId"],
        "status": job["status"],
        "taskType": job["taskType"],
        "inference_type": job["inference_type"],
        "createTime": job["createTime"],
        "startTime": job.get("startTime"),
        "completeTime": job.get("completeTime"),
        "image_names": job.get("image_names", []),
        "owner_group_or_role": job.get("owner_group_or_role", []),
        "endpoint_name": job["params"]["sagemaker_inference_endpoint_name"],
        "error": job.get("error"),
    }


def _key(job_id: str) -> Item:
    return {"InferenceJobId": job_id}
