"""`Trainer` on this machine: kohya sd-scripts (`train_network.py`) in a child process per job.

Each job runs in a thread: it fills a work folder (`work_dir/{job id}`) from the blob
store (files are hard-linked when the store is a local folder, else copied), runs
kohya with the job's config, keeps the last lines of its log on the job every few
seconds (`TrainingEvents.training_log`) and the whole log in `train.log`, then uploads
the `.safetensors` and the log into the job's output folder. States are reported in
SageMaker's words (`InProgress`/`Starting`, `Downloading`, `Training`, `Uploading`,
then `Completed`, `Failed` with the reason, or `Stopped`). Without kohya
(`ESD_KOHYA_DIR` unset, or no `train_network.py` there) `start` refuses at once,
saying how to set it up.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
import shutil
import subprocess
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from middleware_api.ports.blobs import BlobError, BlobNotFound, Blobs
from middleware_api.ports.training import (
    COMPLETED,
    DOWNLOADING,
    FAILED,
    IN_PROGRESS,
    LOG_NAME,
    STARTING,
    STOPPED,
    TRAINING,
    UPLOADING,
    TrainingError,
    TrainingEvents,
    TrainingSpec,
)
from middleware_api.training import kohya

log = logging.getLogger("middleware_api.training")

_REASON_LINES = 12
_REASON_CHARS = 1500
_JOIN_GRACE_S = 30.0


@dataclass
class LocalTrainerSettings:
    """Where kohya is and how jobs are watched."""

    work_dir: Path
    kohya_dir: Path | None = None
    kohya_python: str | None = None  # None: kohya's venv/bin/python if it has one, else this Python
    log_interval_s: float = 3.0
    log_lines: int = 50
    stop_timeout_s: float = 10.0  # SIGTERM, then SIGKILL after this long


class _Stopped(Exception):
    """The job was asked to stop."""


class _JobFailed(Exception):
    """The job cannot go on; the message is the reason shown on the job."""


class _Job:
    def __init__(self, spec: TrainingSpec, script: Path) -> None:
        self.spec = spec
        self.script = script
        self.stop = threading.Event()
        self.stop_reason: str | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.thread: threading.Thread | None = None


class _LogTail:
    """A job's log lines: every one to its file at once, the last few to the job every `interval_s`
    (from a thread of its own, so that a kohya that prints a line and then works for long is shown)."""

    def __init__(self, path: Path, send: Callable[[list[str]], None], lines: int, interval_s: float) -> None:
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self.send = send
        self.lines: deque[str] = deque(maxlen=lines)
        self.interval_s = interval_s
        self.dirty = False
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="esd-train-log", daemon=True)
        self._ticker.start()

    def add(self, line: str) -> None:
        with self._lock:
            self.file.write(line + "\n")
            self.file.flush()
            self.lines.append(line)
            self.dirty = True

    def flush(self) -> None:
        with self._lock:
            if not self.dirty:
                return
            lines = list(self.lines)
            self.dirty = False
        self.send(lines)

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        if self._ticker is not threading.current_thread():
            self._ticker.join()
        self.flush()
        with self._lock:
            self.file.close()

    def reason(self) -> str:
        with self._lock:
            text = "\n".join(list(self.lines)[-_REASON_LINES:])
        return text[-_REASON_CHARS:]

    def _tick(self) -> None:
        while not self._closed.wait(self.interval_s):
            self.flush()


class LocalTrainer:
    """The `Trainer` port on kohya processes of this machine."""

    def __init__(self, events: TrainingEvents, blobs: Blobs, settings: LocalTrainerSettings) -> None:
        self.events = events
        self.blobs = blobs
        self.settings = dataclasses.replace(settings, work_dir=Path(settings.work_dir).resolve())
        self._lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}
        self._closed = False

    # the port

    def start(self, spec: TrainingSpec) -> None:
        """Start the job in a thread; TrainingError at once if kohya is not set up."""
        try:
            script = kohya.find_script(self.settings.kohya_dir, spec.fm_type)
        except kohya.KohyaNotFound as error:
            raise TrainingError(str(error)) from None
        with self._lock:
            if self._closed:
                raise TrainingError("the local trainer is shut down")
            if spec.job_id in self._jobs:
                raise TrainingError(f"training job {spec.job_id} is already running")
            job = _Job(spec, script)
            self._jobs[spec.job_id] = job
            job.thread = threading.Thread(
                target=self._run, args=(job,), name=f"esd-train-{spec.job_id[:8]}", daemon=True
            )
            job.thread.start()

    def stop(self, job_id: str) -> None:
        """Stop the job and wait for its thread to report `Stopped`; an unknown or finished job is no error."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is not None:
            self._halt(job, None)

    def close(self) -> None:
        """Stop every running job (each reports `Stopped`: the server is going away)."""
        with self._lock:
            self._closed = True
            jobs = list(self._jobs.values())
        for job in jobs:
            self._halt(job, "the server stopped during the training")

    def running(self) -> list[str]:
        """The ids of the jobs running now."""
        with self._lock:
            return list(self._jobs)

    # a job's thread

    def _run(self, job: _Job) -> None:
        spec = job.spec
        work = kohya.WorkFolder(self.settings.work_dir / spec.job_id)
        tail: _LogTail | None = None
        try:
            self._report(spec.job_id, IN_PROGRESS, STARTING)
            shutil.rmtree(work.root, ignore_errors=True)
            work.make()
            self._report(spec.job_id, IN_PROGRESS, DOWNLOADING)
            self._fetch(spec.config_location, work.config)
            model = work.model_dir / spec.model_location.rstrip("/").rsplit("/", 1)[-1]
            self._fetch(spec.model_location, model)
            self._check(job)
            self._fetch_folder(spec.dataset_location, work.dataset, job)
            kohya.prepare_dataset(work.dataset, spec.dataset_location.rstrip("/").rsplit("/", 1)[-1])
            if not kohya.has_repeats_folder(work.dataset):
                raise _JobFailed(
                    f"the dataset {spec.dataset_location} has no images for kohya: put them at its top or in "
                    "{repeats}_{concept} folders (a dataset prefix such as 10_lego)"
                )
            self._check(job)
            self._report(spec.job_id, IN_PROGRESS, TRAINING)
            tail = _LogTail(
                work.log,
                lambda lines: self._send_log(spec.job_id, lines),
                self.settings.log_lines,
                self.settings.log_interval_s,
            )
            assert self.settings.kohya_dir is not None  # find_script checked it
            argv = kohya.command(
                kohya.python_for(self.settings.kohya_dir, self.settings.kohya_python),
                job.script,
                work,
                model,
                spec.output_name,
            )
            tail.add("$ " + shlex.join(argv))
            code = kohya.run(
                argv,
                tail.add,
                cwd=self.settings.kohya_dir,
                env={name: value for name, value in os.environ.items() if not name.startswith("ESD_")},
                on_start=lambda process: self._started(job, process),
            )
            tail.close()
            output = self.blobs.key_of(spec.output_location).rstrip("/")
            self._upload(work.log, f"{output}/{LOG_NAME}")
            self._check(job)
            if code != 0:
                raise _JobFailed(f"kohya exited with code {code}: {tail.reason()}")
            outputs = kohya.find_outputs(work.output, spec.output_name)
            if not outputs:
                raise _JobFailed(f"kohya finished without writing a .safetensors file: {tail.reason()}")
            self._report(spec.job_id, IN_PROGRESS, UPLOADING)
            for path in outputs:
                self._upload(path, f"{output}/{path.name}")
            self._check(job)
            self._report(spec.job_id, COMPLETED)
        except _Stopped:
            self._report(spec.job_id, STOPPED, None, job.stop_reason)
        except _JobFailed as failure:
            self._report(spec.job_id, FAILED, None, str(failure))
        except Exception as error:  # the job must end Failed, never stay InProgress
            log.exception("local training job %s failed", spec.job_id)
            self._report(spec.job_id, FAILED, None, f"the local training failed: {type(error).__name__}: {error}")
        finally:
            if tail is not None:
                tail.close()
            shutil.rmtree(work.root, ignore_errors=True)
            with self._lock:
                self._jobs.pop(spec.job_id, None)

    def _check(self, job: _Job) -> None:
        if job.stop.is_set():
            raise _Stopped()

    def _started(self, job: _Job, process: subprocess.Popen[bytes]) -> None:
        job.process = process
        if job.stop.is_set():  # stopped between the last check and the start
            kohya.terminate(process, self.settings.stop_timeout_s)

    def _halt(self, job: _Job, reason: str | None) -> None:
        job.stop_reason = job.stop_reason or reason
        job.stop.set()
        process = job.process
        if process is not None and process.poll() is None:
            kohya.terminate(process, self.settings.stop_timeout_s)
        thread = job.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.settings.stop_timeout_s + _JOIN_GRACE_S)

    # the store

    def _fetch(self, location: str, target: Path) -> None:
        try:
            self._fetch_key(self.blobs.key_of(location), target)
        except BlobNotFound:
            raise _JobFailed(f"{location} not found") from None

    def _fetch_folder(self, location: str, folder: Path, job: _Job) -> None:
        prefix = self.blobs.key_of(location).rstrip("/") + "/"
        keys = self.blobs.list(prefix)
        if not keys:
            raise _JobFailed(f"the dataset {location} holds no files")
        root = folder.resolve()
        for key in keys:
            target = (folder / key[len(prefix) :]).resolve()
            if not target.is_relative_to(root):
                raise _JobFailed(f"the dataset file {key} is outside the dataset's folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            self._fetch_key(key, target)
            self._check(job)

    def _fetch_key(self, key: str, target: Path) -> None:
        """The object as a file: a hard link to a local store's own file when possible, else a copy."""
        object_path = getattr(self.blobs, "object_path", None)
        if callable(object_path):
            source = object_path(key)
            try:
                os.link(source, target)
                return
            except OSError:
                shutil.copyfile(source, target)
                return
        with open(target, "wb") as file:
            for chunk in self.blobs.read_stream(key):
                file.write(chunk)

    def _upload(self, path: Path, key: str) -> None:
        try:
            with open(path, "rb") as file:
                self.blobs.write_stream(key, file)
        except (OSError, BlobError) as error:
            raise _JobFailed(f"{path.name} could not be stored under {key}: {error}") from error

    # reporting (never under self._lock: the events may call back into this trainer)

    def _report(self, job_id: str, status: str, secondary: str | None = None, reason: str | None = None) -> None:
        try:
            self.events.training_state(job_id, status, secondary, reason)
        except Exception:
            log.exception("reporting training job %s as %s failed", job_id, status)

    def _send_log(self, job_id: str, lines: list[str]) -> None:
        try:
            self.events.training_log(job_id, lines)
        except Exception:
            log.exception("storing the log of training job %s failed", job_id)
