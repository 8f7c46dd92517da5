"""`Compute` on local worker processes: each endpoint instance is a process running the endpoint worker.

An endpoint gets `initial_instance_count` workers on free local ports, each with its own
log (`work_dir/<endpoint>/worker-<n>.log`) and a models folder shared by the endpoint's
workers (`work_dir/<endpoint>/models`). One monitor thread per endpoint starts the
workers, polls their `/ping` until all are healthy (then reports `InService`) or one
exits or stays unhealthy too long (then stops them and reports `Failed` with the
worker's own reason), and afterwards restarts a worker that dies, up to a few quick
deaths. As on SageMaker (MaxConcurrentInvocationsPerInstance=1), an instance runs one
invocation at a time; invocations wait for a free instance in one FIFO queue per
endpoint, real-time and async alike. Async results are written to the blob store
under `output_prefix` and reported through `ComputeEvents.async_result`.

Workers run in their own session (process group), so a Ctrl-C of the server does not
reach them: `close()` stops them, and must be called when the server stops. Should the
server die without closing (SIGKILL, a crash), each worker notices the end of its stdin
pipe and stops itself (`serve_worker`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import runpy
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

import middleware_api
from middleware_api.ports.blobs import Blobs
from middleware_api.ports.compute import ComputeEvents, EndpointSpec, InvocationError
from middleware_api.settings import DEFAULT_LOCAL_MAX_INSTANCES

log = logging.getLogger("middleware_api.compute")

DEFAULT_ENGINE_URL = "http://127.0.0.1:7860"
CREATING = "Creating"
IN_SERVICE = "InService"
FAILED = "Failed"

# worker states
STARTING = "starting"
READY = "ready"
STOPPED = "stopped"

_LOG_MARK = "=== esd: worker"  # starts the header line written before each run of a worker into its log
_LOG_TAIL_LINES = 12
_LOG_TAIL_CHARS = 1500
_PING_TIMEOUT_S = 5.0
_CONNECT_TIMEOUT_S = 5.0
_MONITOR_JOIN_S = 60.0
_PORT_RETRIES = 3
_PORT_TAKEN = re.compile(r"address already in use|errno 98", re.IGNORECASE)
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
_ORPHAN_GRACE_S = 5.0
_WORKER_ENTRY = "from middleware_api.adapters.embedded.compute import serve_worker; serve_worker()"


def _default_engine_url() -> str:
    return os.environ.get("ESD_ENGINE_URL") or DEFAULT_ENGINE_URL


@dataclass
class LocalComputeSettings:
    """How local endpoints run: where their files go, which engine they call, how patiently they are watched."""

    work_dir: Path
    engine_url: str = field(default_factory=_default_engine_url)
    python: str = sys.executable
    health_timeout_s: float = 60.0
    health_interval_s: float = 0.2
    model_cache_bytes: int | None = None  # None: the worker's default budget
    engine_timeout_s: float = 900.0
    fetch_margin_s: float = 60.0  # on top of the engine's time: the worker fetches the payload and models first
    output_prefix: str = "sagemaker_output/"
    max_quick_deaths: int = 3  # this many worker deaths within `quick_death_window_s` fail the endpoint
    quick_death_window_s: float = 60.0
    stop_timeout_s: float = 5.0  # SIGTERM, then SIGKILL after this long
    async_threads: int = 16
    max_instances: int = DEFAULT_LOCAL_MAX_INSTANCES  # per endpoint (ESD_LOCAL_MAX_INSTANCES)


@dataclass(frozen=True)
class WorkerInfo:
    """One instance of a local endpoint, as seen now."""

    endpoint_name: str
    index: int
    pid: int
    port: int
    state: str  # starting | ready | stopped
    busy: bool
    log_path: Path


class _Worker:
    def __init__(self, index: int, port: int, process: subprocess.Popen[bytes], log_path: Path, tries: int) -> None:
        self.index = index
        self.port = port
        self.process = process
        self.log_path = log_path
        self.port_tries = tries
        self.started = time.monotonic()
        self.state = STARTING
        self.busy = False
        self.ping_reason: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass(eq=False)
class _Job:
    """An invocation waiting for an instance: real-time (a thread waits on it) or async (run on the pool)."""

    request: dict[str, Any] | None = None
    inference_id: str | None = None
    key: str = ""
    location: str = ""
    worker: _Worker | None = None
    error: str | None = None

    @property
    def is_async(self) -> bool:
        return self.inference_id is not None


class _Endpoint:
    def __init__(self, spec: EndpointSpec, folder: Path) -> None:
        self.spec = spec
        self.name = spec.name
        self.folder = folder
        self.state = CREATING
        self.reason: str | None = None
        self.workers: list[_Worker | None] = [None] * max(1, spec.initial_instance_count)
        self.waiters: deque[_Job] = deque()
        self.stop = threading.Event()
        self.deaths: deque[float] = deque()
        self.restarts = 0
        self.monitor: threading.Thread | None = None

    def live_workers(self) -> list[_Worker]:
        return [worker for worker in self.workers if worker is not None and worker.state != STOPPED]


class LocalCompute:
    """The `Compute` port on worker processes of this machine, calling the engine at `settings.engine_url`."""

    def __init__(self, events: ComputeEvents, blobs: Blobs, settings: LocalComputeSettings) -> None:
        self.events = events
        self.blobs = blobs
        # absolute, because each worker runs in its endpoint's folder and gets its models folder by path
        self.settings = dataclasses.replace(settings, work_dir=Path(settings.work_dir).resolve())
        self._cond = threading.Condition()  # guards every endpoint, worker and job; never held while reporting
        self._endpoints: dict[str, _Endpoint] = {}
        self._pool = ThreadPoolExecutor(max_workers=max(1, settings.async_threads), thread_name_prefix="esd-invoke")
        self._closed = False

    # the port

    @property
    def max_instances(self) -> int:
        """The most worker processes one endpoint may have (`ESD_LOCAL_MAX_INSTANCES`)."""
        return self.settings.max_instances

    def deploy(self, spec: EndpointSpec) -> None:
        """Start the endpoint's workers in the background; `InService` or `Failed` is reported when known.

        ValueError if an endpoint of that name is already creating or in service (a failed one is replaced).
        """
        with self._cond:
            if self._closed:
                raise RuntimeError("local compute is closed")
            existing = self._endpoints.get(spec.name)
            if existing is not None and existing.state != FAILED:
                raise ValueError(f"endpoint {spec.name} already exists")
            endpoint = _Endpoint(spec, self.settings.work_dir / _UNSAFE_NAME.sub("_", spec.name))
            self._endpoints[spec.name] = endpoint
            endpoint.monitor = threading.Thread(
                target=self._monitor, args=(endpoint,), name=f"esd-endpoint-{spec.name}", daemon=True
            )
            endpoint.monitor.start()

    def in_service(self, spec: EndpointSpec) -> None:
        """Nothing: local endpoints keep their initial instance count (no autoscaling)."""

    def delete(self, endpoint_name: str) -> None:
        """Stop the endpoint's workers and forget it (nothing is reported); an unknown name is no error.

        Invocations still waiting for an instance fail (async ones are reported failed).
        """
        with self._cond:
            endpoint = self._endpoints.pop(endpoint_name, None)
            if endpoint is None:
                return
            workers, orphans = self._halt(endpoint, f"endpoint {endpoint_name} was deleted")
        self._stop_processes(workers)
        self._report_failures(orphans)
        self._join_monitor(endpoint)
        shutil.rmtree(endpoint.folder / "models", ignore_errors=True)

    def invoke(self, endpoint_name: str, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Run one invocation within `timeout_s` (queueing included); the worker's JSON or InvocationError.

        An endpoint still creating (as after `restore`) is waited for within the same time.
        """
        deadline = time.monotonic() + timeout_s
        endpoint, worker = self._acquire(endpoint_name, deadline, timeout_s)
        try:
            response = self._post(endpoint, worker, request, max(deadline - time.monotonic(), 0.001), timeout_s)
        finally:
            self._release(endpoint, worker)
        try:
            body = response.json()
        except ValueError as exc:
            raise InvocationError(f"endpoint {endpoint_name} answered with something other than JSON") from exc
        if not isinstance(body, dict):
            raise InvocationError(f"endpoint {endpoint_name} answered with JSON that is not an object")
        return body

    def invoke_async(self, endpoint_name: str, request: dict[str, Any], inference_id: str) -> str:
        """Queue an async invocation; returns its output location (`s3://bucket/<output_prefix><uuid>.out`).

        InvocationError at once if the endpoint is unknown or failed. The outcome is reported
        through `ComputeEvents.async_result` once a free instance has run it.
        """
        key = f"{self.settings.output_prefix}{uuid.uuid4()}.out"
        location = self.blobs.uri(key)
        job = _Job(request=request, inference_id=inference_id, key=key, location=location)
        with self._cond:
            endpoint = self._usable(endpoint_name)
            endpoint.waiters.append(job)
            self._dispatch(endpoint)
        return location

    def restore(self, specs: Iterable[EndpointSpec]) -> None:
        """Deploy again the endpoints that were creating or in service when the server last stopped."""
        for spec in specs:
            with self._cond:
                known = spec.name in self._endpoints and self._endpoints[spec.name].state != FAILED
            if not known:
                self.deploy(spec)

    def close(self) -> None:
        """Stop every worker process and thread of this adapter; safe to call more than once."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            endpoints = list(self._endpoints.values())
            self._endpoints.clear()
            workers: list[_Worker] = []
            orphans: list[_Job] = []
            for endpoint in endpoints:
                stopped, dropped = self._halt(
                    endpoint, f"the server stopped before endpoint {endpoint.name} ran the invocation"
                )
                workers += stopped
                orphans += dropped
        self._stop_processes(workers)
        for endpoint in endpoints:
            self._join_monitor(endpoint)
        self._pool.shutdown(wait=True)
        self._report_failures(orphans)

    # inspection (status pages, tests)

    def endpoint_status(self, endpoint_name: str) -> str | None:
        """`Creating`, `InService` or `Failed` as this adapter sees it; None if unknown."""
        with self._cond:
            endpoint = self._endpoints.get(endpoint_name)
            return None if endpoint is None else endpoint.state

    def workers(self, endpoint_name: str) -> list[WorkerInfo]:
        """The current worker of each instance of an endpoint (empty if unknown or none started yet)."""
        with self._cond:
            endpoint = self._endpoints.get(endpoint_name)
            if endpoint is None:
                return []
            return [
                WorkerInfo(endpoint_name, w.index, w.process.pid, w.port, w.state, w.busy, w.log_path)
                for w in endpoint.workers
                if w is not None
            ]

    def restart_count(self, endpoint_name: str) -> int:
        """How many times a dead or unhealthy worker of the endpoint was restarted."""
        with self._cond:
            endpoint = self._endpoints.get(endpoint_name)
            return 0 if endpoint is None else endpoint.restarts

    # queueing (all under self._cond)

    def _usable(self, name: str) -> _Endpoint:
        endpoint = None if self._closed else self._endpoints.get(name)
        if endpoint is None:
            raise InvocationError(f"endpoint {name} is not in service")
        if endpoint.state == FAILED:
            raise InvocationError(f"endpoint {name} is not in service (Failed: {endpoint.reason})")
        return endpoint

    def _acquire(self, name: str, deadline: float, timeout_s: float) -> tuple[_Endpoint, _Worker]:
        with self._cond:
            endpoint = self._usable(name)
            job = _Job()
            endpoint.waiters.append(job)
            self._dispatch(endpoint)
            while job.worker is None and job.error is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    endpoint.waiters.remove(job)
                    if endpoint.state != IN_SERVICE:
                        raise InvocationError(f"endpoint {name} is not in service ({endpoint.state})")
                    raise InvocationError(f"endpoint {name} had no free instance within {timeout_s:g} s")
                self._cond.wait(remaining)
            if job.error is not None:
                raise InvocationError(job.error)
            assert job.worker is not None
            return endpoint, job.worker

    def _release(self, endpoint: _Endpoint, worker: _Worker) -> None:
        with self._cond:
            worker.busy = False
            self._dispatch(endpoint)

    def _dispatch(self, endpoint: _Endpoint) -> None:
        """Give free instances to the waiting jobs, oldest first."""
        if endpoint.state == IN_SERVICE and not endpoint.stop.is_set():
            free = [w for w in endpoint.workers if w is not None and w.state == READY and not w.busy]
            while endpoint.waiters and free:
                job = endpoint.waiters.popleft()
                worker = free.pop(0)
                worker.busy = True
                job.worker = worker
                if job.is_async:
                    self._pool.submit(self._run_async, endpoint, worker, job)
        self._cond.notify_all()

    def _halt(self, endpoint: _Endpoint, reason: str) -> tuple[list[_Worker], list[_Job]]:
        """Stop the endpoint's monitor and queue: its live workers (now marked stopped) and its dropped async jobs."""
        endpoint.stop.set()
        workers = endpoint.live_workers()
        for worker in workers:
            worker.state = STOPPED
        return workers, self._drop_waiters(endpoint, reason)

    def _drop_waiters(self, endpoint: _Endpoint, reason: str) -> list[_Job]:
        orphans = []
        while endpoint.waiters:
            job = endpoint.waiters.popleft()
            job.error = reason
            if job.is_async:
                orphans.append(job)
        self._cond.notify_all()
        return orphans

    # invocations

    def _post(
        self, endpoint: _Endpoint, worker: _Worker, request: dict[str, Any], timeout_s: float, nominal_s: float
    ) -> requests.Response:
        """POST /invocations to one worker; InvocationError unless it answers 200 within `timeout_s`."""
        try:
            response = requests.post(
                f"{worker.url}/invocations", json=request, timeout=(min(_CONNECT_TIMEOUT_S, timeout_s), timeout_s)
            )
        except requests.Timeout as exc:
            raise InvocationError(f"endpoint {endpoint.name} did not answer within {nominal_s:g} s") from exc
        except requests.RequestException as exc:
            try:
                code = worker.process.wait(timeout=1.0)  # a dying worker drops its connections a moment before it exits
            except subprocess.TimeoutExpired:
                raise InvocationError(f"endpoint {endpoint.name}: worker {worker.index} did not answer: {exc}") from exc
            raise InvocationError(
                f"endpoint {endpoint.name}: worker {worker.index} exited with code {code} during the invocation"
            ) from exc
        if response.status_code != 200:
            raise InvocationError(_error_text(response))
        return response

    def _run_async(self, endpoint: _Endpoint, worker: _Worker, job: _Job) -> None:
        assert job.inference_id is not None and job.request is not None
        try:
            try:
                timeout_s = self.settings.engine_timeout_s + self.settings.fetch_margin_s
                response = self._post(endpoint, worker, job.request, timeout_s, timeout_s)
            finally:
                self._release(endpoint, worker)
            self.blobs.put(job.key, response.content, "application/json")
        except InvocationError as exc:
            self._report_result(job.inference_id, False, None, str(exc))
            return
        except Exception as exc:
            log.exception("async invocation %s on endpoint %s failed", job.inference_id, endpoint.name)
            self._report_result(job.inference_id, False, None, f"could not store the result: {exc}")
            return
        self._report_result(job.inference_id, True, job.location)

    # the monitor thread of an endpoint

    def _monitor(self, endpoint: _Endpoint) -> None:
        try:
            for index in range(len(endpoint.workers)):
                if not self._launch(endpoint, index):
                    return
            while not endpoint.stop.wait(self.settings.health_interval_s):
                if not self._check(endpoint):
                    return
        except Exception as exc:  # the endpoint must end Failed, not stuck in Creating
            log.exception("monitor of endpoint %s failed", endpoint.name)
            self._fail(endpoint, f"endpoint {endpoint.name}: the local monitor failed: {exc!r}")

    def _check(self, endpoint: _Endpoint) -> bool:
        """One round of watching; False once the endpoint is stopped or failed."""
        with self._cond:
            workers = [w for w in endpoint.workers if w is not None]
        for worker in workers:
            if endpoint.stop.is_set() or endpoint.state == FAILED:
                return False
            if worker.state == STOPPED:
                continue
            code = worker.process.poll()
            if code is not None:
                if not self._on_exit(endpoint, worker, code):
                    return False
            elif worker.state == STARTING and not self._check_starting(endpoint, worker):
                return False
        with self._cond:
            if endpoint.stop.is_set():
                return False
            ready = all(w is not None and w.state == READY for w in endpoint.workers)
            became_in_service = endpoint.state == CREATING and ready
            if became_in_service:
                endpoint.state = IN_SERVICE
                self._dispatch(endpoint)
        if became_in_service:
            log.info("endpoint %s is in service on ports %s", endpoint.name, [w.port for w in workers])
            self._report_state(endpoint, IN_SERVICE)
        return True

    def _check_starting(self, endpoint: _Endpoint, worker: _Worker) -> bool:
        healthy, reason = self._ping(worker)
        if healthy:
            with self._cond:
                if worker.state == STARTING:
                    worker.state = READY
                    self._dispatch(endpoint)
            return True
        worker.ping_reason = reason or worker.ping_reason
        if time.monotonic() - worker.started < self.settings.health_timeout_s:
            return True
        detail = worker.ping_reason or _log_tail(worker.log_path) or "no answer to /ping"
        reason = f"worker {worker.index} not healthy within {self.settings.health_timeout_s:g} s: {detail}"
        with self._cond:
            worker.state = STOPPED
        self._stop_processes([worker])
        if endpoint.state == CREATING:
            self._fail(endpoint, f"endpoint {endpoint.name}: {reason}")
            return False
        return self._replace(endpoint, worker, reason)

    def _on_exit(self, endpoint: _Endpoint, worker: _Worker, code: int) -> bool:
        with self._cond:
            worker.state = STOPPED
        tail = _log_tail(worker.log_path)
        reason = f"worker {worker.index} exited with code {code}" + (f": {tail}" if tail else "")
        if endpoint.state == CREATING:
            if _PORT_TAKEN.search(tail) and worker.port_tries < _PORT_RETRIES:
                return self._launch(endpoint, worker.index, worker.port_tries + 1)
            self._fail(endpoint, f"endpoint {endpoint.name}: {reason}")
            return False
        return self._replace(endpoint, worker, reason)

    def _replace(self, endpoint: _Endpoint, worker: _Worker, reason: str) -> bool:
        """Restart a worker that died or went unhealthy in service, unless it happened too often lately."""
        now = time.monotonic()
        endpoint.deaths.append(now)
        while endpoint.deaths and now - endpoint.deaths[0] > self.settings.quick_death_window_s:
            endpoint.deaths.popleft()
        if len(endpoint.deaths) >= self.settings.max_quick_deaths:
            self._fail(
                endpoint,
                f"endpoint {endpoint.name}: workers failed {len(endpoint.deaths)} times within "
                f"{self.settings.quick_death_window_s:g} s; last: {reason}",
            )
            return False
        log.warning("endpoint %s: %s; restarting it", endpoint.name, reason)
        self._stop_processes([worker])
        with self._cond:
            endpoint.restarts += 1
        return self._launch(endpoint, worker.index)

    def _fail(self, endpoint: _Endpoint, reason: str) -> None:
        with self._cond:
            if endpoint.state == FAILED:
                return
            endpoint.state = FAILED
            endpoint.reason = reason
            workers = endpoint.live_workers()
            for worker in workers:
                worker.state = STOPPED
            orphans = self._drop_waiters(endpoint, f"endpoint {endpoint.name} failed: {reason}")
        log.warning("%s", reason)
        self._stop_processes(workers)
        self._report_failures(orphans)
        self._report_state(endpoint, FAILED, reason)

    # processes

    def _launch(self, endpoint: _Endpoint, index: int, tries: int = 0) -> bool:
        """Start (or restart) instance `index`; False if the endpoint stopped or failed meanwhile."""
        try:
            worker = self._start_worker(endpoint, index, tries)
        except OSError as exc:
            self._fail(endpoint, f"endpoint {endpoint.name}: cannot start worker {index}: {exc}")
            return False
        with self._cond:
            stopped = endpoint.stop.is_set() or endpoint.state == FAILED
            if not stopped:
                endpoint.workers[index] = worker
        if stopped:  # deleted or closed while the process started: it is ours alone to stop
            self._stop_processes([worker])
            return False
        return True

    def _start_worker(self, endpoint: _Endpoint, index: int, tries: int) -> _Worker:
        models = endpoint.folder / "models"
        models.mkdir(parents=True, exist_ok=True)
        log_path = endpoint.folder / f"worker-{index}.log"
        port = _free_port()
        env = {**os.environ, **endpoint.spec.environment}
        env.update(
            {
                "ESD_ENGINE_URL": self.settings.engine_url,
                "ESD_MODELS_DIR": str(models),
                "ESD_ENGINE_TIMEOUT_S": f"{self.settings.engine_timeout_s:g}",
                "PYTHONUNBUFFERED": "1",
                # the worker imports middleware_api from where this server has it, whatever the working folder
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(Path(middleware_api.__file__).resolve().parent.parent), env.get("PYTHONPATH")])
                ),
            }
        )
        if self.settings.model_cache_bytes is not None:
            env["ESD_MODEL_CACHE_BYTES"] = str(self.settings.model_cache_bytes)
        # loopback only: nothing but this server should reach a worker
        command = [self.settings.python, "-c", _WORKER_ENTRY, "--host", "127.0.0.1", "--port", str(port)]
        with open(log_path, "ab") as log_file:
            header = (
                f"\n{_LOG_MARK} {index} of {endpoint.name}, port {port}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
            )
            log_file.write(header.encode())
            log_file.flush()
            process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,  # never written: its end of file tells the worker that this server is gone
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=endpoint.folder,
                env=env,
                start_new_session=True,
            )
        return _Worker(index, port, process, log_path, tries)

    def _stop_processes(self, workers: Iterable[_Worker]) -> None:
        """SIGTERM each worker's process group, SIGKILL what is left after `stop_timeout_s`, reap them all."""
        running = [w.process for w in workers if w.process.poll() is None]
        for process in running:
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.stop_timeout_s
        for process in running:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()
            _signal_group(process, signal.SIGKILL)  # anything the worker started in its group
            if process.stdin is not None:
                process.stdin.close()

    def _ping(self, worker: _Worker) -> tuple[bool, str | None]:
        timeout = min(_PING_TIMEOUT_S, max(self.settings.health_timeout_s, 0.5))
        try:
            response = requests.get(f"{worker.url}/ping", timeout=timeout)
        except requests.Timeout:
            return False, f"/ping did not answer within {timeout:g} s"
        except requests.RequestException:
            return False, None  # not listening yet
        if response.status_code == 200:
            return True, None
        return False, _error_text(response)

    def _join_monitor(self, endpoint: _Endpoint) -> None:
        monitor = endpoint.monitor
        if monitor is not None and monitor is not threading.current_thread():
            monitor.join(_MONITOR_JOIN_S)
            if monitor.is_alive():
                log.error("monitor of endpoint %s did not stop within %s s", endpoint.name, _MONITOR_JOIN_S)

    # reporting (never under self._cond: the events may call back into this adapter)

    def _report_state(self, endpoint: _Endpoint, status: str, reason: str | None = None) -> None:
        if endpoint.stop.is_set():
            return  # deleted or closed: nobody waits for its state any more
        try:
            self.events.endpoint_state(endpoint.name, status, reason)
        except Exception:
            log.exception("reporting endpoint %s as %s failed", endpoint.name, status)

    def _report_result(
        self, inference_id: str, succeeded: bool, location: str | None, error: str | None = None
    ) -> None:
        try:
            self.events.async_result(inference_id, succeeded, location, error)
        except Exception:
            log.exception("reporting the result of async inference %s failed", inference_id)

    def _report_failures(self, jobs: Iterable[_Job]) -> None:
        for job in jobs:
            assert job.inference_id is not None
            self._report_result(job.inference_id, False, None, job.error)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:  # not a group of ours (should not happen): signal the process alone
        if process.poll() is None:
            process.send_signal(sig)


def _log_tail(path: Path) -> str:
    """The last lines a worker wrote in its latest run, for a failure reason."""
    try:
        with open(path, "rb") as file:
            file.seek(0, os.SEEK_END)
            file.seek(max(file.tell() - 32768, 0))
            text = file.read().decode("utf-8", "replace")
    except OSError:
        return ""
    run = text.rsplit(_LOG_MARK, 1)[-1].split("\n", 1)[-1] if _LOG_MARK in text else text
    lines = [line.rstrip() for line in run.splitlines() if line.strip()]
    return "\n".join(lines[-_LOG_TAIL_LINES:])[-_LOG_TAIL_CHARS:]


def _error_text(response: requests.Response) -> str:
    """The error a worker or /ping answer gives: its JSON `error`/`reason`/`detail`, else its text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for name in ("error", "reason", "detail", "message"):
            value = body.get(name)
            if isinstance(value, str) and value:
                return value
    text = response.text.strip()
    return text[:_LOG_TAIL_CHARS] if text else f"HTTP {response.status_code}"


def serve_worker() -> None:
    """Run `python -m middleware_api.worker` in this process, and end it if the server that started it goes away.

    The entry point of a local worker process (its arguments are the worker's). The server
    holds the only write end of the worker's stdin pipe and never writes to it, so end of
    file on stdin means the server is gone, even killed with SIGKILL (which leaves it no
    chance to call `close`): the worker then gets SIGTERM, and is ended outright after a
    few seconds if a request it is still serving holds up its shutdown.
    """

    def watch_parent() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except (OSError, ValueError):
            pass
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(_ORPHAN_GRACE_S)
        os._exit(1)

    threading.Thread(target=watch_parent, name="esd-parent-watch", daemon=True).start()
    runpy.run_module("middleware_api.worker", run_name="__main__", alter_sys=True)
