"""Over real HTTP, embedded backend: jobs that meet a fault (the engine hangs past `ESD_ENGINE_TIMEOUT_S`, the
worker is killed mid-job, the engine is down) end `failed` with a reason, never stuck `inprogress`, and the
endpoint serves normal jobs again afterwards."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from support import API_KEY, EngineDouble, ServerProcess, free_port, served_env, wait_until

ENGINE_TIMEOUT_S = 2
ENDPOINTS = {"Async": "esd-async-faults", "Real-time": "esd-real-time-faults"}
SMALL = {"width": 64, "height": 64, "seed": 5}


class Client:
    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()
        self.session.headers.update({"x-api-key": API_KEY, "username": "admin"})

    def __call__(self, method: str, path: str, **options: Any) -> requests.Response:
        return self.session.request(method, self.url + path, timeout=60, **options)


@dataclass
class Stack:
    client: Client
    server: ServerProcess
    data_dir: Path
    engine: EngineDouble


def _create_endpoint(client: Client, short_name: str, kind: str) -> None:
    body = {
        "endpoint_name": short_name,
        "endpoint_type": kind,
        "initial_instance_count": 1,
        "autoscaling_enabled": False,
        "assign_to_roles": ["IT Operator"],
    }
    created = client("POST", "/endpoints", json=body)
    assert created.status_code == 200, created.text


def _endpoint(client: Client, name: str) -> dict[str, Any]:
    listed = client("GET", "/endpoints").json()["data"]["endpoints"]
    return next(item for item in listed if item["endpoint_name"] == name)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, engine: EngineDouble) -> Iterator[Stack]:
    data_dir: Path = tmp_path_factory.mktemp("inference-faults")
    server = ServerProcess(data_dir, free_port(), env=served_env(engine.url, ENGINE_TIMEOUT_S=str(ENGINE_TIMEOUT_S)))
    try:
        client = Client(server.url)
        for kind in ENDPOINTS:
            _create_endpoint(client, "faults", kind)
        wait_until(
            lambda: all(_endpoint(client, name)["endpoint_status"] == "InService" for name in ENDPOINTS.values()),
            timeout_s=60,
        )
        yield Stack(client, server, data_dir, engine)
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def engine_reset(engine: EngineDouble) -> Iterator[None]:
    """The shared engine double in "ok" mode before and after each test (which also releases hung requests)."""
    engine.set_mode("ok")
    yield
    engine.set_mode("ok")


def _start_job(client: Client, inference_type: str, prompt: str) -> str:
    body = {
        "inference_type": inference_type,
        "task_type": "txt2img",
        "models": {},
        "endpoint_name": ENDPOINTS[inference_type],
    }
    created = client("POST", "/inferences", json=body)
    assert created.status_code == 201, created.text
    inference = created.json()["data"]["inference"]
    payload = json.dumps({"prompt": prompt, **SMALL})
    assert requests.put(inference["api_params_s3_upload_url"], data=payload, timeout=30).status_code == 200
    started = client("PUT", f"/inferences/{inference['id']}/start")
    assert started.status_code in (200, 202), started.text
    return inference["id"]


def _finished(client: Client, job_id: str) -> dict[str, Any]:
    """The job once it has ended (never left `inprogress` past the wait)."""
    job = client("GET", f"/inferences/{job_id}", params={"wait_s": 20}).json()["data"]
    assert job["status"] in ("succeed", "failed"), f"job still {job['status']} after 20 s: {job}"
    return job


def _assert_serves_a_normal_job(client: Client, inference_type: str) -> None:
    job = _finished(client, _start_job(client, inference_type, "a calm sea"))
    assert job["status"] == "succeed", job
    assert job["image_names"] == ["image_0.png"]
    assert requests.get(job["img_presigned_urls"][0], timeout=30).content.startswith(b"\x89PNG")


def _engine_calls(engine: EngineDouble) -> int:
    return requests.get(f"{engine.url}/double/calls", timeout=5).json()["count"]


def _worker_pids(server: ServerProcess, data_dir: Path, endpoint_name: str) -> list[int]:
    """The live worker processes of an endpoint, found in /proc (the server is another process).

    LocalCompute starts each worker as `python -c "...serve_worker()" --port N` with the server as its
    parent and the endpoint's folder (`<data dir>/endpoints/<endpoint name>`) as its working directory.
    """
    folder = (data_dir / "endpoints" / endpoint_name).resolve()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text()
            cwd = (entry / "cwd").resolve()
        except OSError:  # gone meanwhile, or not ours
            continue
        parent = int(state.rsplit(")", 1)[1].split()[1])
        zombie = state.rsplit(")", 1)[1].split()[0] == "Z"
        if parent == server.process.pid and not zombie and cwd == folder and b"serve_worker" in b" ".join(command):
            pids.append(int(entry.name))
    return pids


@pytest.mark.parametrize("inference_type", ["Async", "Real-time"])
def test_engine_hanging_past_the_timeout_fails_the_job_then_the_endpoint_serves_again(
    stack: Stack, inference_type: str
) -> None:
    began = time.monotonic()
    job = _finished(stack.client, _start_job(stack.client, inference_type, "a slow one [[hang]]"))
    assert job["status"] == "failed", job
    # the worker's "engine did not answer within 2 s", or LocalCompute's "endpoint … did not answer within 2 s"
    # for Async, whose call to the worker has the same timeout as the worker's call to the engine
    assert f"did not answer within {ENGINE_TIMEOUT_S} s" in job["error"], job["error"]
    assert job["completeTime"]
    assert time.monotonic() - began < ENGINE_TIMEOUT_S + 8
    _assert_serves_a_normal_job(stack.client, inference_type)


@pytest.mark.parametrize("inference_type", ["Async", "Real-time"])
def test_engine_failure_then_the_endpoint_serves_again(stack: Stack, inference_type: str) -> None:
    job = _finished(stack.client, _start_job(stack.client, inference_type, "boom [[fail]]"))
    assert job["status"] == "failed" and "CUDA out of memory" in job["error"], job
    _assert_serves_a_normal_job(stack.client, inference_type)


# kept last: it restarts (or, should that go wrong, fails) the module's endpoints
@pytest.mark.parametrize("inference_type", ["Async", "Real-time"])
def test_worker_killed_mid_job_fails_the_job_with_the_reason(stack: Stack, inference_type: str) -> None:
    name = ENDPOINTS[inference_type]
    [pid] = _worker_pids(stack.server, stack.data_dir, name)
    calls = _engine_calls(stack.engine)
    # the engine hangs, and the job times out ENGINE_TIMEOUT_S after the worker called it: kill the worker as
    # soon as the engine has the request (mid-job). Started from a thread: a Real-time start waits for the outcome.
    with ThreadPoolExecutor(1) as pool:
        starting = pool.submit(_start_job, stack.client, inference_type, "never finishes [[hang]]")
        wait_until(lambda: _engine_calls(stack.engine) > calls, timeout_s=ENGINE_TIMEOUT_S)
        os.kill(pid, signal.SIGKILL)
        job_id = starting.result(timeout=30)

    job = _finished(stack.client, job_id)
    assert job["status"] == "failed", job
    assert "worker 0 exited with code -9 during the invocation" in job["error"], job["error"]

    # the endpoint either says why it failed, or restarts the worker and serves again
    def settled() -> dict[str, Any] | None:
        endpoint = _endpoint(stack.client, name)
        if endpoint["endpoint_status"] == "Failed":
            return endpoint
        new = _worker_pids(stack.server, stack.data_dir, name)
        return endpoint if new and new != [pid] and endpoint["endpoint_status"] == "InService" else None

    endpoint = wait_until(settled, timeout_s=30)
    if endpoint["endpoint_status"] == "Failed":
        assert endpoint["error"], endpoint
    else:
        _assert_serves_a_normal_job(stack.client, inference_type)


def test_engine_down_fails_the_endpoint_naming_the_engine(tmp_path: Path) -> None:
    engine_url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = served_env(engine_url, ENGINE_TIMEOUT_S=str(ENGINE_TIMEOUT_S), ENDPOINT_HEALTH_TIMEOUT_S="3")
    server = ServerProcess(tmp_path / "data", free_port(), env=env)
    try:
        client = Client(server.url)
        _create_endpoint(client, "no-engine", "Async")
        endpoint = wait_until(
            lambda: (item := _endpoint(client, "esd-async-no-engine"))["endpoint_status"] == "Failed" and item,
            timeout_s=90,
            interval_s=0.5,
        )
        assert f"engine at {engine_url} not reachable" in endpoint["error"], endpoint
    finally:
        server.stop()
