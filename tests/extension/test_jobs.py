"""Cloud jobs end to end on a real middleware and local endpoints (engine double): PNGs, failures, interrupts."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from ext_support import Endpoints, Engine, png_size

from aws_extension.client import ApiError, MiddlewareClient
from aws_extension.jobs import JobFailed, JobInterrupted, run_job


@pytest.fixture
def engine_ok(engine: Engine) -> Iterator[Engine]:
    """The engine double back to normal after the test, hanging requests released."""
    yield engine
    engine.reset()


def _gone(client: MiddlewareClient, job_id: str) -> bool:
    try:
        client.get_inference(job_id)
    except ApiError as exc:
        return exc.status == 404
    return False


@pytest.mark.parametrize("inference_type", ["Real-time", "Async"])
def test_txt2img_returns_the_pngs_and_the_engine_info(
    client: MiddlewareClient, endpoints: Endpoints, inference_type: str
) -> None:
    statuses: list[str] = []
    payload = {"prompt": "a lighthouse at dusk", "seed": 1234, "width": 96, "height": 64, "batch_size": 2}
    result = run_job(
        client,
        task_type="txt2img",
        payload=payload,
        models=endpoints.models,
        inference_type=inference_type,
        on_status=statuses.append,
        poll_s=0.5,
    )
    assert len(result.images) == 2
    assert [png_size(image) for image in result.images] == [(96, 64), (96, 64)]
    assert json.loads(result.info or "")["all_seeds"] == [1234, 1235]
    assert result.parameters is not None and result.parameters["prompt"] == "a lighthouse at dusk"
    assert result.job["status"] == "succeed" and result.job["InferenceJobId"] == result.job_id
    assert result.job["inference_type"] == inference_type
    assert statuses[0] == "created" and statuses[-1] == "succeed"
    assert len(statuses) == len(set(statuses))  # each change once


def test_named_endpoint(client: MiddlewareClient, endpoints: Endpoints) -> None:
    result = run_job(
        client,
        task_type="txt2img",
        payload={"prompt": "named", "width": 64, "height": 64},
        models=endpoints.models,
        inference_type="Async",
        endpoint_name=endpoints.names["Async"],
        poll_s=0.5,
    )
    assert result.job["params"]["sagemaker_inference_endpoint_name"] == endpoints.names["Async"]
    assert [png_size(image) for image in result.images] == [(64, 64)]


@pytest.mark.parametrize("inference_type", ["Real-time", "Async"])
def test_engine_failure_raises_the_middleware_reason(
    client: MiddlewareClient, endpoints: Endpoints, inference_type: str
) -> None:
    with pytest.raises(JobFailed) as caught:
        run_job(
            client,
            task_type="txt2img",
            payload={"prompt": "boom [[fail]]", "width": 64, "height": 64},
            models=endpoints.models,
            inference_type=inference_type,
            poll_s=0.5,
        )
    assert "CUDA out of memory" in caught.value.reason
    assert caught.value.job_id and caught.value.job_id in str(caught.value)


def test_interrupt_while_running_deletes_the_job(
    client: MiddlewareClient, endpoints: Endpoints, engine_ok: Engine
) -> None:
    statuses: list[str] = []
    started = time.monotonic()
    with pytest.raises(JobInterrupted) as caught:
        run_job(
            client,
            task_type="txt2img",
            payload={"prompt": "wait [[hang]]", "width": 64, "height": 64},
            models=endpoints.models,
            inference_type="Async",
            on_status=statuses.append,
            should_stop=lambda: "inprogress" in statuses,
            poll_s=0.5,
        )
    assert statuses == ["created", "inprogress"]
    assert time.monotonic() - started < 5
    assert caught.value.job_id and _gone(client, caught.value.job_id)


def test_interrupt_while_a_realtime_start_blocks(
    client: MiddlewareClient, endpoints: Endpoints, engine_ok: Engine
) -> None:
    asked: list[float] = []

    def should_stop() -> bool:
        asked.append(time.monotonic())
        return len(asked) > 3  # after the start request has begun to wait

    started = time.monotonic()
    with pytest.raises(JobInterrupted) as caught:
        run_job(
            client,
            task_type="txt2img",
            payload={"prompt": "wait [[hang]]", "width": 64, "height": 64},
            models=endpoints.models,
            inference_type="Real-time",
            should_stop=should_stop,
        )
    assert time.monotonic() - started < 5  # not the 25 s the start request may wait
    assert caught.value.job_id and _gone(client, caught.value.job_id)


def test_timeout_leaves_the_job_and_says_so(client: MiddlewareClient, endpoints: Endpoints, engine_ok: Engine) -> None:
    with pytest.raises(JobFailed) as caught:
        run_job(
            client,
            task_type="txt2img",
            payload={"prompt": "wait [[hang]]", "width": 64, "height": 64},
            models=endpoints.models,
            inference_type="Async",
            poll_s=0.3,
            timeout_s=1,
        )
    assert "no result within 1 s" in caught.value.reason
    job = client.get_inference(caught.value.job_id or "")
    assert job["status"] == "inprogress"
    client.delete_inferences([job["InferenceJobId"]])


def test_refused_job_raises_job_failed(client: MiddlewareClient, endpoints: Endpoints) -> None:
    with pytest.raises(JobFailed) as caught:
        run_job(client, task_type="txt2img", payload={}, models={"Lora": ["ghost.safetensors"]}, poll_s=0.5)
    assert "ghost.safetensors" in caught.value.reason and caught.value.job_id is None
    with pytest.raises(JobInterrupted):
        run_job(client, task_type="txt2img", payload={}, models={}, should_stop=lambda: True)
