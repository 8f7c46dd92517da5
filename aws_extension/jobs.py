"""Run one generation job on a cloud endpoint: create it, upload its payload, start it, wait, fetch the images.

Waiting long-polls `GET /inferences/{id}?wait_s=…`, so a finished job is seen at once and
an idle wait costs one request every `poll_s` seconds. `on_status` hears every change of
the job's status (`created`, `inprogress`, `succeed`, `failed`) for the WebUI's progress
bar; `should_stop` is checked between polls (and about ten times a second while a
Real-time start is waiting): it deletes the job and raises `JobInterrupted`. A job that
fails raises `JobFailed` with the middleware's reason.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aws_extension.client import ApiError, MiddlewareClient

log = logging.getLogger("aws_extension.jobs")

SUCCEED, FAILED = "succeed", "failed"
TERMINAL = (SUCCEED, FAILED)
MAX_WAIT_S = 25.0  # the middleware's longest long-poll
MAX_POLL_ERRORS = 5  # consecutive network errors or 5xx tolerated while waiting
STOP_CHECK_S = 0.1

T = TypeVar("T")


@dataclass
class JobResult:
    """A finished job: its PNGs in order, the engine's request echo and info, and the job as last read."""

    job_id: str
    images: list[bytes] = field(repr=False)
    parameters: dict[str, Any] | None
    info: str | None
    job: dict[str, Any] = field(repr=False)


class JobFailed(Exception):
    """The job ended `failed` (or could not be run or waited for); `reason` is the middleware's."""

    def __init__(self, job_id: str | None, reason: str) -> None:
        super().__init__(f"job {job_id} failed: {reason}" if job_id else reason)
        self.job_id = job_id
        self.reason = reason


class JobInterrupted(Exception):
    """`should_stop` asked to stop: waiting ended and the job was deleted."""

    def __init__(self, job_id: str | None) -> None:
        message = f"job {job_id} interrupted and deleted" if job_id else "interrupted before the job was created"
        super().__init__(message)
        self.job_id = job_id


class _Stop(Exception):
    pass


def run_job(
    client: MiddlewareClient,
    *,
    task_type: str,
    payload: dict[str, Any],
    models: dict[str, list[str]],
    inference_type: str = "Async",
    endpoint_name: str | None = None,
    on_status: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    poll_s: float = 2.0,
    timeout_s: float = 3600.0,
) -> JobResult:
    """Run a `task_type` job (`txt2img`, `img2img`, …) with `payload` (the engine's API request) and `models`.

    `models` maps checkpoint types to names, e.g. `{"Stable-diffusion": ["v1-5.safetensors"]}`.
    Raises JobFailed with the middleware's reason (also on a refused create or start, and
    after `timeout_s`, when the job is left to finish on its own), JobInterrupted when
    `should_stop()` turns true, ApiError when the middleware cannot be asked at all.
    """
    if poll_s <= 0:
        raise ValueError("poll_s must be positive")
    stopped = should_stop or (lambda: False)
    last_status: list[str] = []

    def status(value: Any) -> None:
        if isinstance(value, str) and value and (not last_status or last_status[-1] != value):
            last_status.append(value)
            if on_status is not None:
                try:
                    on_status(value)
                except Exception:  # a UI callback must not break the job
                    log.exception("job status callback failed")

    if stopped():
        raise JobInterrupted(None)
    deadline = time.monotonic() + timeout_s
    try:
        created = client.create_inference(task_type, models, inference_type=inference_type, endpoint_name=endpoint_name)
    except ApiError as exc:
        raise JobFailed(None, exc.message) from exc
    job_id = str(created.get("id", ""))
    status(created.get("status") or "created")
    started = False
    try:
        try:
            client.upload_payload(str(created.get("api_params_s3_upload_url", "")), payload)
        except ApiError as exc:
            raise JobFailed(job_id, f"the payload could not be uploaded: {exc}") from exc
        if stopped():
            raise _Stop
        try:
            answer = _interruptible(lambda: client.start_inference(job_id), stopped)
        except ApiError as exc:
            raise JobFailed(job_id, exc.message) from exc
        started = True
        status(answer.get("status") or "inprogress")
        # a Real-time job that finished within the start request comes back whole
        job = answer if answer.get("status") in TERMINAL and "img_presigned_urls" in answer else None
        job = job or _wait(client, job_id, deadline, timeout_s, poll_s, stopped, status)
    except _Stop:
        _delete_quietly(client, job_id)
        raise JobInterrupted(job_id) from None
    except BaseException:
        if not started:  # a job never started would stay `created` for good
            _delete_quietly(client, job_id)
        raise
    if job.get("status") == FAILED:
        raise JobFailed(job_id, str(job.get("error") or job.get("sagemakerRaw") or "the job failed without a reason"))
    return _fetch(client, job_id, job)


def _wait(
    client: MiddlewareClient,
    job_id: str,
    deadline: float,
    timeout_s: float,
    poll_s: float,
    stopped: Callable[[], bool],
    status: Callable[[Any], None],
) -> dict[str, Any]:
    """Long-poll the job until it ends; raises _Stop when asked to, JobFailed on timeout or deletion."""
    errors = 0
    while True:
        if stopped():
            raise _Stop
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise JobFailed(job_id, f"no result within {timeout_s:g} s; the job was left to finish on its own")
        try:
            job = client.get_inference(job_id, wait_s=min(poll_s, remaining, MAX_WAIT_S))
        except ApiError as exc:
            if exc.status == 404:
                raise JobFailed(job_id, "the job was deleted while it ran") from exc
            if (exc.status == 0 or exc.status >= 500) and errors < MAX_POLL_ERRORS:
                errors += 1
                log.warning("job %s: %s; asking again", job_id, exc)
                time.sleep(min(poll_s, 1.0 * errors))
                continue
            raise
        errors = 0
        status(job.get("status"))
        if job.get("status") in TERMINAL:
            return job


def _fetch(client: MiddlewareClient, job_id: str, job: dict[str, Any]) -> JobResult:
    """Download a succeeded job's images and its `{parameters, info}` file."""
    images = [client.get_presigned(url) for url in job.get("img_presigned_urls") or []]
    parameters: dict[str, Any] | None = None
    info: str | None = None
    outputs = job.get("output_presigned_urls") or []
    if outputs:
        try:
            output = json.loads(client.get_presigned(outputs[0]))
        except ValueError as exc:
            raise JobFailed(job_id, f"the job's parameters file is not JSON: {exc}") from exc
        if isinstance(output, dict):
            parameters = output.get("parameters") if isinstance(output.get("parameters"), dict) else None
            info = output.get("info") if isinstance(output.get("info"), str) else None
    return JobResult(job_id=job_id, images=images, parameters=parameters, info=info, job=job)


def _interruptible(call: Callable[[], T], stopped: Callable[[], bool]) -> T:
    """`call()` in a helper thread, so `stopped()` is still heard while it blocks (raises _Stop)."""
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name="esd-job-start", daemon=True).start()
    while not done.wait(STOP_CHECK_S):
        if stopped():
            raise _Stop  # the request ends on its own; the job is deleted under it
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _delete_quietly(client: MiddlewareClient, job_id: str) -> None:
    if not job_id:
        return
    try:
        client.delete_inferences([job_id])
    except ApiError as exc:
        log.warning("could not delete job %s: %s", job_id, exc)


__all__ = ["JobFailed", "JobInterrupted", "JobResult", "run_job"]
