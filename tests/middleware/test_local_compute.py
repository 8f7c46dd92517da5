"""`LocalCompute` (the embedded `Compute`) with real worker processes in front of the engine double."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from support import free_port

from middleware_api.adapters.embedded.blobs import LocalBlobs, UrlSigner
from middleware_api.adapters.embedded.compute import LocalCompute, LocalComputeSettings
from middleware_api.ports.compute import ASYNC, EndpointSpec, InvocationError

REPO = Path(__file__).resolve().parents[2]
TXT2IMG = {
    "task": "txt2img",
    "username": "u",
    "models": {},
    "payload_string": json.dumps({"prompt": "a cat", "width": 64, "height": 64}),
}
WAIT_S = 15.0


class Recorder:
    """A `ComputeEvents` that records every call and lets a test wait for one."""

    def __init__(self) -> None:
        self.states: list[tuple[str, str, str | None]] = []
        self.results: dict[str, tuple[bool, str | None, str | None]] = {}
        self.result_order: list[str] = []
        self._cond = threading.Condition()

    def endpoint_state(self, endpoint_name: str, status: str, reason: str | None = None) -> None:
        with self._cond:
            self.states.append((endpoint_name, status, reason))
            self._cond.notify_all()

    def async_result(
        self, inference_id: str, succeeded: bool, output_location: str | None, error: str | None = None
    ) -> None:
        with self._cond:
            self.results[inference_id] = (succeeded, output_location, error)
            self.result_order.append(inference_id)
            self._cond.notify_all()

    def wait_state(self, name: str, status: str, timeout: float = WAIT_S) -> str | None:
        """The reason of the first `status` reported for `name`; fails the test if none comes in time."""
        with self._cond:
            found = self._cond.wait_for(lambda: self._state(name, status), timeout)
        assert found, f"{name} not reported {status} within {timeout} s; reported: {self.states}"
        return found[2]

    def _state(self, name: str, status: str) -> tuple[str, str, str | None] | None:
        return next((state for state in self.states if state[:2] == (name, status)), None)

    def wait_result(self, inference_id: str, timeout: float = WAIT_S) -> tuple[bool, str | None, str | None]:
        with self._cond:
            done = self._cond.wait_for(lambda: inference_id in self.results, timeout)
        assert done, f"no result for {inference_id} within {timeout} s"
        return self.results[inference_id]


@pytest.fixture(scope="module")
def engine() -> Iterator[str]:
    """One engine double process for the module; its URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "middleware_api.worker.engine_double", "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                if requests.get(f"{url}/internal/ping", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "the engine double did not start"
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def engine_url(engine: str) -> Iterator[str]:
    """The engine double, back to answering normally."""
    requests.post(f"{engine}/double/reset", timeout=5).raise_for_status()
    yield engine
    requests.post(f"{engine}/double/reset", timeout=5).raise_for_status()  # releases hanging calls


def set_mode(engine: str, mode: str, delay_s: float = 0) -> None:
    requests.post(f"{engine}/double/mode", json={"mode": mode, "delay_s": delay_s}, timeout=5).raise_for_status()


@pytest.fixture
def events() -> Recorder:
    return Recorder()


@pytest.fixture
def blobs(tmp_path: Path) -> LocalBlobs:
    return LocalBlobs(tmp_path / "blobs", UrlSigner(b"test-secret"), public_url="http://testserver")


Factory = Callable[..., LocalCompute]


@pytest.fixture
def make_compute(tmp_path: Path, events: Recorder, blobs: LocalBlobs, engine_url: str) -> Iterator[Factory]:
    """LocalComputes on the engine double (settings overridable); all closed, and no worker left, at the end."""
    made: list[LocalCompute] = []
    pids: set[int] = set()

    def make(**overrides: Any) -> LocalCompute:
        values: dict[str, Any] = {
            "work_dir": tmp_path / "work",
            "engine_url": engine_url,
            "health_timeout_s": 15.0,
            "health_interval_s": 0.05,
            "engine_timeout_s": 30.0,
            "stop_timeout_s": 2.0,
        }
        values.update(overrides)
        compute = LocalCompute(events, blobs, LocalComputeSettings(**values))
        made.append(compute)
        original = compute.workers

        def workers(name: str) -> Any:  # remember every pid a test sees, to check none outlives the test
            found = original(name)
            pids.update(worker.pid for worker in found)
            return found

        compute.workers = workers  # type: ignore[method-assign]
        return compute

    yield make
    for compute in made:
        compute.close()
    assert not [pid for pid in pids if alive(pid)], "worker processes outlived close()"


def spec(name: str = "esd-async-test", count: int = 1) -> EndpointSpec:
    return EndpointSpec(name=name, endpoint_type=ASYNC, instance_type="ml.g5.2xlarge", initial_instance_count=count)


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie left for a non-reaping init to collect counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return True


def wait_until(check: Callable[[], Any], timeout: float = WAIT_S, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"{what} not met within {timeout} s"
        time.sleep(0.05)
    return value


def engine_calls(engine: str) -> int:
    return int(requests.get(f"{engine}/double/calls", timeout=5).json()["count"])


def test_deploy_reports_in_service_and_invokes(make_compute: Factory, events: Recorder, blobs: LocalBlobs) -> None:
    compute = make_compute()
    compute.deploy(spec(count=2))
    assert compute.endpoint_status("esd-async-test") == "Creating"
    started = time.monotonic()
    events.wait_state("esd-async-test", "InService")
    assert time.monotonic() - started < 10
    workers = compute.workers("esd-async-test")
    assert [w.state for w in workers] == ["ready", "ready"]
    assert len({w.pid for w in workers}) == 2 and len({w.port for w in workers}) == 2
    for worker in workers:
        assert requests.get(f"http://127.0.0.1:{worker.port}/ping", timeout=5).json() == {"status": "Healthy"}
        assert worker.log_path.name == f"worker-{worker.index}.log" and worker.log_path.is_file()

    answer = compute.invoke("esd-async-test", TXT2IMG, timeout_s=20)
    assert len(answer["images"]) == 1

    location = compute.invoke_async("esd-async-test", TXT2IMG, "job-1")
    assert location.startswith("s3://esd-local/sagemaker_output/") and location.endswith(".out")
    assert events.wait_result("job-1") == (True, location, None)
    stored = json.loads(blobs.get(blobs.key_of(location)))
    assert len(stored["images"]) == 1


def test_one_invocation_per_instance_in_fifo_order(
    make_compute: Factory, events: Recorder, engine_url: str, blobs: LocalBlobs
) -> None:
    compute = make_compute()
    compute.deploy(spec())
    events.wait_state("esd-async-test", "InService")
    set_mode(engine_url, "ok", delay_s=0.3)
    ids = [f"job-{n}" for n in range(4)]
    for inference_id in ids:
        compute.invoke_async("esd-async-test", TXT2IMG, inference_id)
    # a real-time call queues behind the async ones, and waits no longer than its timeout
    with pytest.raises(InvocationError, match="no free instance within 0.2 s"):
        compute.invoke("esd-async-test", TXT2IMG, timeout_s=0.2)
    for inference_id in ids:
        assert events.wait_result(inference_id)[0] is True
    assert events.result_order == ids
    assert engine_calls(engine_url) == 4


def test_async_failures_report_the_reason(make_compute: Factory, events: Recorder, engine_url: str) -> None:
    compute = make_compute(engine_timeout_s=1.0)
    compute.deploy(spec())
    events.wait_state("esd-async-test", "InService")

    set_mode(engine_url, "fail")
    compute.invoke_async("esd-async-test", TXT2IMG, "failing")
    succeeded, location, error = events.wait_result("failing")
    assert (succeeded, location) == (False, None)
    assert "CUDA out of memory (engine double)" in str(error)
    with pytest.raises(InvocationError, match="CUDA out of memory"):
        compute.invoke("esd-async-test", TXT2IMG, timeout_s=10)

    set_mode(engine_url, "hang")
    started = time.monotonic()
    compute.invoke_async("esd-async-test", TXT2IMG, "hanging")
    succeeded, location, error = events.wait_result("hanging", timeout=10)
    assert (succeeded, location) == (False, None)
    assert "within 1 s" in str(error)
    assert time.monotonic() - started < 5
    with pytest.raises(InvocationError, match="did not answer within 0.5 s"):
        compute.invoke("esd-async-test", TXT2IMG, timeout_s=0.5)

    set_mode(engine_url, "ok")
    assert compute.invoke("esd-async-test", TXT2IMG, timeout_s=10)["images"]


def test_engine_down_fails_the_deploy(make_compute: Factory, events: Recorder) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    compute = make_compute(engine_url=closed, health_timeout_s=3.0)
    started = time.monotonic()
    compute.deploy(spec(count=2))
    reason = events.wait_state("esd-async-test", "Failed", timeout=10)
    assert 3.0 <= time.monotonic() - started < 8
    assert reason is not None and "not healthy within 3 s" in reason
    assert f"engine at {closed} not reachable" in reason
    assert compute.endpoint_status("esd-async-test") == "Failed"
    workers = compute.workers("esd-async-test")
    assert workers and not any(alive(w.pid) for w in workers)
    with pytest.raises(InvocationError, match="not in service"):
        compute.invoke("esd-async-test", TXT2IMG, timeout_s=1)
    with pytest.raises(InvocationError, match="not in service"):
        compute.invoke_async("esd-async-test", TXT2IMG, "never")


def test_a_worker_that_cannot_start_fails_the_deploy_with_its_log(
    make_compute: Factory, events: Recorder, tmp_path: Path
) -> None:
    broken = tmp_path / "broken-python"
    broken.write_text('#!/bin/sh\necho "starting $*"\necho "RuntimeError: no GPU here" >&2\nexit 3\n')
    broken.chmod(0o755)
    compute = make_compute(python=str(broken))
    compute.deploy(spec())
    reason = events.wait_state("esd-async-test", "Failed")
    assert reason is not None and reason.startswith("endpoint esd-async-test: worker 0 exited with code 3")
    assert "serve_worker() --host 127.0.0.1 --port" in reason
    assert reason.endswith("RuntimeError: no GPU here")  # the worker's own last words, from its log


def test_worker_killed_mid_invocation(make_compute: Factory, events: Recorder, engine_url: str) -> None:
    compute = make_compute()
    compute.deploy(spec())
    events.wait_state("esd-async-test", "InService")
    [worker] = compute.workers("esd-async-test")

    set_mode(engine_url, "hang")
    compute.invoke_async("esd-async-test", TXT2IMG, "doomed")
    wait_until(lambda: engine_calls(engine_url) == 1, what="the engine receiving the call")
    os.kill(worker.pid, signal.SIGKILL)
    succeeded, location, error = events.wait_result("doomed")
    assert (succeeded, location) == (False, None)
    assert "worker 0" in str(error)

    set_mode(engine_url, "ok")
    wait_until(lambda: compute.restart_count("esd-async-test") == 1, what="a restart")
    [restarted] = wait_until(
        lambda: [w for w in compute.workers("esd-async-test") if w.state == "ready"], what="the restarted worker"
    )
    assert restarted.pid != worker.pid
    assert compute.endpoint_status("esd-async-test") == "InService"
    assert compute.invoke("esd-async-test", TXT2IMG, timeout_s=10)["images"]
    assert [state for state in events.states if state[1] == "Failed"] == []


def test_quick_deaths_fail_the_endpoint(make_compute: Factory, events: Recorder) -> None:
    compute = make_compute(max_quick_deaths=2)
    compute.deploy(spec())
    events.wait_state("esd-async-test", "InService")
    [first] = compute.workers("esd-async-test")
    os.kill(first.pid, signal.SIGKILL)
    [second] = wait_until(
        lambda: [w for w in compute.workers("esd-async-test") if w.state == "ready" and w.pid != first.pid],
        what="the restarted worker",
    )
    os.kill(second.pid, signal.SIGKILL)
    reason = events.wait_state("esd-async-test", "Failed")
    assert reason is not None and "workers failed 2 times within 60 s" in reason and "code -9" in reason
    with pytest.raises(InvocationError, match="not in service"):
        compute.invoke("esd-async-test", TXT2IMG, timeout_s=1)


def test_delete_stops_workers_and_fails_queued_jobs(make_compute: Factory, events: Recorder, engine_url: str) -> None:
    compute = make_compute(stop_timeout_s=1.0)
    compute.deploy(spec())
    compute.deploy(spec("esd-async-other"))
    events.wait_state("esd-async-test", "InService")
    events.wait_state("esd-async-other", "InService")
    pids = [w.pid for w in compute.workers("esd-async-test")]
    with pytest.raises(ValueError, match="already exists"):
        compute.deploy(spec())

    set_mode(engine_url, "hang")
    compute.invoke_async("esd-async-test", TXT2IMG, "running")
    compute.invoke_async("esd-async-test", TXT2IMG, "queued")
    wait_until(lambda: engine_calls(engine_url) == 1, what="the engine receiving the call")
    reported = len(events.states)
    compute.delete("esd-async-test")
    assert not any(alive(pid) for pid in pids)
    assert compute.endpoint_status("esd-async-test") is None
    assert events.wait_result("queued") == (False, None, "endpoint esd-async-test was deleted")
    assert events.wait_result("running")[0] is False
    assert len(events.states) == reported  # delete reports no state
    with pytest.raises(InvocationError, match="not in service"):
        compute.invoke("esd-async-test", TXT2IMG, timeout_s=1)
    compute.delete("esd-async-test")
    compute.delete("never-deployed")

    set_mode(engine_url, "ok")
    assert compute.invoke("esd-async-other", TXT2IMG, timeout_s=10)["images"]


def test_close_stops_everything_and_restore_brings_workers_back(make_compute: Factory, events: Recorder) -> None:
    compute = make_compute()
    compute.deploy(spec(count=2))
    events.wait_state("esd-async-test", "InService")
    pids = [w.pid for w in compute.workers("esd-async-test")]
    compute.close()
    assert not any(alive(pid) for pid in pids)
    compute.close()
    with pytest.raises(InvocationError, match="not in service"):
        compute.invoke("esd-async-test", TXT2IMG, timeout_s=1)

    events.states.clear()
    again = make_compute()
    again.restore([spec(count=2)])
    again.restore([spec(count=2)])  # already known: not deployed twice
    events.wait_state("esd-async-test", "InService")
    workers = again.workers("esd-async-test")
    assert len(workers) == 2 and not {w.pid for w in workers} & set(pids)
    assert again.invoke("esd-async-test", TXT2IMG, timeout_s=10)["images"]
    again.close()
    assert not any(alive(w.pid) for w in workers)


KILLED_SERVER = """
import sys, threading
from pathlib import Path
from middleware_api.adapters.embedded.blobs import LocalBlobs, UrlSigner
from middleware_api.adapters.embedded.compute import LocalCompute, LocalComputeSettings
from middleware_api.ports.compute import EndpointSpec

ready = threading.Event()

class Events:
    def endpoint_state(self, name, status, reason=None):
        if status == "InService":
            ready.set()

    def async_result(self, *args):
        pass

work = Path(sys.argv[2])
compute = LocalCompute(
    Events(), LocalBlobs(work / "blobs", UrlSigner(b"k")), LocalComputeSettings(work_dir=work, engine_url=sys.argv[1])
)
compute.deploy(EndpointSpec("esd-async-orphans", "Async", "ml.g5.2xlarge", 2))
assert ready.wait(30)
print(" ".join(str(w.pid) for w in compute.workers("esd-async-orphans")), flush=True)
threading.Event().wait()
"""


def test_workers_stop_when_the_server_is_killed(engine_url: str, tmp_path: Path) -> None:
    server = subprocess.Popen(
        [sys.executable, "-c", KILLED_SERVER, engine_url, str(tmp_path / "work")],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        pids = [int(pid) for pid in server.stdout.readline().split()]
        assert len(pids) == 2 and all(alive(pid) for pid in pids)
    finally:
        server.kill()  # no close(): the workers must notice on their own
        server.wait()
    wait_until(lambda: not any(alive(pid) for pid in pids), timeout=10, what="orphaned workers stopping")
