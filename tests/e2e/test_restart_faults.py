"""Over real HTTP, embedded backend: the server is killed (SIGKILL) mid-upload, mid-job and mid-download, then
restarted on the same data folder and port.

The module's fixture builds one scene and kills the server once, with everything in flight at the same time:
an Async job running in the engine and one queued behind it, a Real-time job running (its start request still
waiting), a created job not started yet, a URL download half received, and a multipart upload whose third part
is half received. Each test then checks one promise of the restarted server: no record lost or changed, the
SQLite store intact, in-flight jobs and downloads `failed` with the reason, the endpoints serving, and the upload
finished by sending only the missing part.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from support import ADMIN, API_KEY, EngineDouble, ServerProcess, free_port, served_env, wait_until

from aws_extension.client import ApiError, MiddlewareClient
from aws_extension.upload import MIN_PART_SIZE, UploadError, UploadState, resume_upload, upload_file
from middleware_api.container import INTERRUPTED_DOWNLOAD, INTERRUPTED_JOB

MiB = 1 << 20
PART_SIZE = MIN_PART_SIZE
UPLOAD_SIZE = 2 * PART_SIZE + 123_457  # three parts, the last one short
DOWNLOAD_SIZE = 8 * MiB
DOWNLOAD_SENT = 2 * MiB  # sent before the download stalls: more than the store's 1 MiB chunk, so some is on disk
ENDPOINTS = {"Async": "esd-async-restart", "Real-time": "esd-real-time-restart"}
SMALL = {"width": 64, "height": 64, "seed": 7}
TMP_PREFIX = ".esd-tmp-"  # the embedded blob store's temp files


@dataclass
class Scene:
    """What was done before the kill, what the records were just before it, and the restarted server."""

    data_dir: Path
    client: MiddlewareClient
    before: dict[str, dict[str, dict[str, Any]]]
    integrity_after_kill: str
    temp_files_at_kill: list[Path]
    running: dict[str, str]  # label -> job id of the jobs in flight at the kill
    created_job: str
    download_id: str
    upload_file: Path
    upload_state: UploadState
    upload_error: str


def _records(client: MiddlewareClient) -> dict[str, dict[str, dict[str, Any]]]:
    """Every record the API lists, by kind and id."""
    return {
        "users": {item["username"]: item for item in client.iter_users()},
        "roles": {item["role_name"]: item for item in client.iter_roles()},
        "checkpoints": {item["id"]: item for item in client.iter_checkpoints()},
        "endpoints": {item["endpoint_name"]: item for item in client.iter_endpoints()},
        "inferences": {item["InferenceJobId"]: item for item in client.list_inferences(limit=100).items},
    }


def _integrity(data_dir: Path) -> str:
    """SQLite's own check of the store, read-only so this test changes nothing the server would find."""
    connection = sqlite3.connect(f"file:{data_dir / 'esd.sqlite3'}?mode=ro", uri=True)
    try:
        rows = connection.execute("PRAGMA integrity_check").fetchall()
    finally:
        connection.close()
    return "; ".join(str(row[0]) for row in rows)


def _temp_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "blobs").rglob(f"{TMP_PREFIX}*"))


def _engine_calls(engine: EngineDouble) -> int:
    return requests.get(f"{engine.url}/double/calls", timeout=5).json()["count"]


def _create_job(client: MiddlewareClient, inference_type: str, prompt: str) -> str:
    """A created job with its payload uploaded, not started."""
    inference = client.create_inference(
        "txt2img", {}, inference_type=inference_type, endpoint_name=ENDPOINTS[inference_type]
    )
    client.upload_payload(inference["api_params_s3_upload_url"], {"prompt": prompt, **SMALL})
    return inference["id"]


def _finished(client: MiddlewareClient, job_id: str, timeout_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get_inference(job_id, wait_s=min(20, max(deadline - time.monotonic(), 0.1)))
        if job["status"] in ("succeed", "failed") or time.monotonic() >= deadline:
            return job


def _run_job(client: MiddlewareClient, inference_type: str, prompt: str) -> dict[str, Any]:
    job_id = _create_job(client, inference_type, prompt)
    client.start_inference(job_id)
    return _finished(client, job_id)


def _part_number(url: str) -> int:
    return int(parse_qs(urlsplit(url).query)["partNumber"][0])


def _send_half_a_part(url: str, data: bytes) -> http.client.HTTPConnection:
    """PUT the first half of `data` to a part URL, announcing all of it; the connection stays open."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    connection.putrequest("PUT", f"{parts.path}?{parts.query}", skip_accept_encoding=True)
    connection.putheader("Content-Length", str(len(data)))
    connection.endheaders()
    connection.send(data[: len(data) // 2])
    return connection


class _StallingFile(http.server.BaseHTTPRequestHandler):
    """Serves a model file of DOWNLOAD_SIZE bytes, but stops after DOWNLOAD_SENT until `release` is set."""

    sent = threading.Event()
    release = threading.Event()

    def do_GET(self) -> None:  # noqa: N802 - the handler's protocol
        self.send_response(200)
        self.send_header("Content-Length", str(DOWNLOAD_SIZE))
        self.send_header("Content-Disposition", 'attachment; filename="stalled-vae.safetensors"')
        self.end_headers()
        self.wfile.write(os.urandom(DOWNLOAD_SENT))
        self.wfile.flush()
        type(self).sent.set()
        type(self).release.wait(60)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory, engine: EngineDouble) -> Iterator[Scene]:
    data_dir = tmp_path_factory.mktemp("restart-faults")
    port = free_port()
    env = served_env(engine.url, ENGINE_TIMEOUT_S="60")
    engine.set_mode("ok")
    file_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StallingFile)
    threading.Thread(target=file_server.serve_forever, daemon=True).start()
    servers = [ServerProcess(data_dir, port, env=env)]
    client = MiddlewareClient(servers[0].url, API_KEY, ADMIN, timeout=30)
    pool = ThreadPoolExecutor(1)
    try:
        # records that are done: a role, a user, endpoints, a finished job, an Active checkpoint
        client.create_role("restart-painter", ["inference:all", "checkpoint:all"])
        client.create_user("restart-user", "user-password-1", ["restart-painter", "IT Operator"])
        for kind in ENDPOINTS:
            client.create_endpoint(kind, roles=["IT Operator"], name="restart", autoscaling=False)
        wait_until(
            lambda: all(item["endpoint_status"] == "InService" for item in client.iter_endpoints()), timeout_s=60
        )
        assert _run_job(client, "Async", "a finished job")["status"] == "succeed"
        small = tmp_path_factory.mktemp("files") / "restart-lora.safetensors"
        small.write_bytes(os.urandom(300_000))
        assert upload_file(client, small, "Lora")["status"] == "Active"
        created_job = _create_job(client, "Async", "started after the restart")

        # in flight: an Async job in the engine and one queued behind it (one instance), a Real-time job in the
        # engine (its start waits for the outcome, so it is sent from a thread), a URL download half received
        calls = _engine_calls(engine)
        running = {"async running": _create_job(client, "Async", "never ends [[hang]]")}
        client.start_inference(running["async running"])
        running["real-time running"] = _create_job(client, "Real-time", "never ends either [[hang]]")
        real_time_start: Future[Any] = pool.submit(client.start_inference, running["real-time running"])
        wait_until(lambda: _engine_calls(engine) >= calls + 2, timeout_s=20)
        running["async queued"] = _create_job(client, "Async", "waits for a free instance")
        client.start_inference(running["async queued"])
        url = f"http://127.0.0.1:{file_server.server_address[1]}/models/stalled-vae.safetensors?token=secret"
        download_id = client.create_checkpoint_from_urls("VAE", [url])["id"]
        assert _StallingFile.sent.wait(20)
        downloading = data_dir / "blobs" / "objects" / "VAE" / "checkpoint" / "custom" / download_id
        wait_until(lambda: any(path.stat().st_size > 0 for path in downloading.glob(f"{TMP_PREFIX}*")), timeout_s=20)

        # the upload: parts 1 and 2 arrive whole; the server is killed while part 3 is half received
        killed: dict[str, Any] = {}

        def kill() -> None:
            killed["before"] = _records(client)
            killed["temp_files"] = _temp_files(data_dir)
            servers[0].process.kill()
            servers[0].process.wait(10)
            killed["integrity"] = _integrity(data_dir)

        original_put = client.put_presigned

        def put_part(url: str, data: bytes, *, timeout: float | None = None) -> str:
            if _part_number(url) == 3 and not killed:
                already = set(_temp_files(data_dir))
                half = _send_half_a_part(url, data)
                wait_until(lambda: set(_temp_files(data_dir)) - already, timeout_s=20)
                kill()
                half.close()
            return original_put(url, data, timeout=timeout)

        client.put_presigned = put_part  # type: ignore[method-assign]
        big = tmp_path_factory.mktemp("files") / "restart-model.safetensors"
        big.write_bytes(os.urandom(UPLOAD_SIZE))
        with pytest.raises(UploadError) as failed:
            upload_file(client, big, "Stable-diffusion", part_size=PART_SIZE, concurrency=1, retries=0)
        del client.put_presigned
        assert failed.value.part_number == 3 and failed.value.state is not None, failed.value
        with contextlib.suppress(ApiError):  # its connection died with the server (or it answered 202 before)
            real_time_start.result(timeout=30)

        servers.append(ServerProcess(data_dir, port, env=env))
        yield Scene(
            data_dir=data_dir,
            client=client,
            before=killed["before"],
            integrity_after_kill=killed["integrity"],
            temp_files_at_kill=killed["temp_files"],
            running=running,
            created_job=created_job,
            download_id=download_id,
            upload_file=big,
            upload_state=failed.value.state,
            upload_error=failed.value.message,
        )
    finally:
        for server in servers:
            server.stop()
        _StallingFile.release.set()
        file_server.shutdown()
        file_server.server_close()
        pool.shutdown(wait=False, cancel_futures=True)
        engine.set_mode("ok")  # releases the requests the dead server's workers left hanging


def _without(item: dict[str, Any], *names: str) -> dict[str, Any]:
    return {name: value for name, value in item.items() if name not in names}


def test_the_store_is_intact_after_the_kill_and_the_restart(scene: Scene) -> None:
    assert scene.integrity_after_kill == "ok"
    assert _integrity(scene.data_dir) == "ok"


def test_every_record_is_still_there_with_the_same_fields(scene: Scene) -> None:
    before, after = scene.before, _records(scene.client)
    assert {"restart-user", ADMIN} <= set(before["users"]) and "restart-painter" in before["roles"]
    assert set(before["endpoints"]) == set(ENDPOINTS.values())
    assert len(before["checkpoints"]) == 3 and len(before["inferences"]) == 5
    for kind in ("users", "roles"):
        assert after[kind] == before[kind], kind
    for name, endpoint in before["endpoints"].items():
        # InService again once the restored workers answer: only the time of that report changes
        assert _without(after["endpoints"][name], "endTime") == _without(endpoint, "endTime")
    for checkpoint_id, checkpoint in before["checkpoints"].items():
        changed = ("status", "error") if checkpoint_id == scene.download_id else ()
        assert _without(after["checkpoints"][checkpoint_id], *changed) == _without(checkpoint, *changed)
    in_flight = set(scene.running.values())
    for job_id, job in before["inferences"].items():
        changed = ("status", "error", "completeTime") if job_id in in_flight else ()
        assert _without(after["inferences"][job_id], *changed) == _without(job, *changed)


def test_jobs_in_flight_at_the_kill_ended_failed_with_the_reason(scene: Scene) -> None:
    for label, job_id in scene.running.items():
        assert scene.before["inferences"][job_id]["status"] == "inprogress", label
        job = scene.client.get_inference(job_id)  # failed at the start: no waiting
        assert job["status"] == "failed", (label, job)
        assert job["error"] == INTERRUPTED_JOB and job["completeTime"], (label, job)


def test_a_job_created_before_the_kill_can_still_be_started(scene: Scene) -> None:
    assert scene.before["inferences"][scene.created_job]["status"] == "created"
    scene.client.start_inference(scene.created_job)
    job = _finished(scene.client, scene.created_job)
    assert job["status"] == "succeed" and job["image_names"] == ["image_0.png"], job


@pytest.mark.parametrize("inference_type", list(ENDPOINTS))
def test_the_restored_endpoints_serve_new_jobs(scene: Scene, inference_type: str) -> None:
    job = _run_job(scene.client, inference_type, "a calm sea after the storm")
    assert job["status"] == "succeed", job
    assert requests.get(job["img_presigned_urls"][0], timeout=30).content.startswith(b"\x89PNG")


def test_a_download_cut_by_the_kill_ended_failed_with_the_reason(scene: Scene) -> None:
    assert scene.before["checkpoints"][scene.download_id]["status"] == "Initial"
    checkpoint = scene.client.get_checkpoint(scene.download_id)
    assert checkpoint["status"] == "Failed" and checkpoint["error"] == INTERRUPTED_DOWNLOAD, checkpoint
    folder = scene.data_dir / "blobs" / "objects" / "VAE" / "checkpoint" / "custom" / scene.download_id
    assert not folder.exists()  # the bytes it had received are gone, temp file included


def test_temp_files_of_writes_cut_by_the_kill_are_removed_at_the_restart(scene: Scene) -> None:
    assert len(scene.temp_files_at_kill) == 2  # the download's object and the half-received part
    assert _temp_files(scene.data_dir) == []


def test_the_interrupted_upload_resumes_with_the_missing_part_only(scene: Scene) -> None:
    state = scene.upload_state
    assert "part 3 of 3" in scene.upload_error and sorted(state.etags) == [1, 2]
    assert scene.before["checkpoints"][state.checkpoint_id]["status"] == "Initial"
    sent: list[int] = []
    client = scene.client
    original_put: Callable[..., str] = client.put_presigned

    def put_part(url: str, data: bytes, *, timeout: float | None = None) -> str:
        etag = original_put(url, data, timeout=timeout)
        sent.append(_part_number(url))
        return etag

    client.put_presigned = put_part  # type: ignore[method-assign]
    try:
        done = resume_upload(client, state, concurrency=1, retries=0)
    finally:
        del client.put_presigned
    assert sent == [3]
    assert done["status"] == "Active" and done["id"] == state.checkpoint_id
    checkpoint = client.get_checkpoint(state.checkpoint_id)
    assert checkpoint["status"] == "Active" and checkpoint["name"] == [state.name]
    key = checkpoint["s3Location"].split("/", 3)[3] + "/" + state.name
    stored = scene.data_dir / "blobs" / "objects" / key
    assert stored.read_bytes() == scene.upload_file.read_bytes()
    assert not list((scene.data_dir / "blobs" / "uploads").iterdir())  # the parts went into the object
