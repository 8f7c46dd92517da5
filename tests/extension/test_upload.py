"""The parallel multipart uploader against a real middleware: retries of one part, bounded memory, resume, cancel."""

from __future__ import annotations

import hashlib
import os
import threading
import tracemalloc
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from ext_support import ADMIN, API_KEY, FaultyAdapter, MiB, Middleware

from aws_extension.client import ApiError, MiddlewareClient
from aws_extension.upload import (
    COMPLETE_MIN_BYTES_PER_S,
    UploadCancelled,
    UploadError,
    parts_for,
    resume_upload,
    upload_file,
)

PART = 8 * MiB
CONCURRENCY = 4


def _random_file(path: Path, size: int) -> Path:
    with path.open("wb") as file:
        left = size
        while left:
            chunk = min(left, 4 * MiB)
            file.write(os.urandom(chunk))
            left -= chunk
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(MiB), b""):
            digest.update(block)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _random_file(tmp_path_factory.mktemp("upload") / "model-50mib.safetensors", 50 * MiB)


def _client(middleware: Middleware, adapter: FaultyAdapter) -> MiddlewareClient:
    blobs = requests.Session()
    blobs.mount("http://", adapter)
    return MiddlewareClient(middleware.url, API_KEY, ADMIN, blob_session=blobs)


def _name(stem: str) -> str:
    return f"ext-{stem}-{uuid.uuid4().hex[:8]}.safetensors"


def test_50mib_in_8mib_parts_with_one_part_failing_twice(middleware: Middleware, big_file: Path) -> None:
    adapter = FaultyAdapter({3: ["connection", 500]})
    client = _client(middleware, adapter)
    seen: list[tuple[int, int]] = []
    threads: set[str] = set()

    def progress(done: int, total: int) -> None:
        seen.append((done, total))
        threads.add(threading.current_thread().name)

    name = _name("big")
    tracemalloc.start()
    try:
        checkpoint = upload_file(
            client, big_file, "Stable-diffusion", part_size=PART, concurrency=CONCURRENCY, progress=progress, name=name
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"\npeak traced memory of a 50 MiB upload (8 MiB parts, concurrency 4): {peak / MiB:.1f} MiB")

    assert checkpoint["status"] == "Active"
    parts = parts_for(big_file.stat().st_size, PART)[1]
    assert parts == 7
    assert adapter.attempts == {1: 1, 2: 1, 3: 3, 4: 1, 5: 1, 6: 1, 7: 1}  # only part 3 was sent again
    stored = middleware.blob_path(checkpoint, name)
    assert stored.stat().st_size == big_file.stat().st_size and _sha256(stored) == _sha256(big_file)

    size = big_file.stat().st_size
    assert seen[0] == (0, size) and seen[-1] == (size, size)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen) and len(seen) == parts + 1
    assert any(name.startswith("esd-upload") for name in threads)  # reported from the workers as parts finish
    assert peak < PART * (CONCURRENCY + 2)
    assert all("x-api-key" not in {key.lower() for key in headers} for headers in adapter.headers_seen)
    client.delete_checkpoints([checkpoint["id"]])


def test_a_part_failing_beyond_its_retries_names_the_part_and_can_be_resumed(
    middleware: Middleware, tmp_path: Path
) -> None:
    source = _random_file(tmp_path / "model.safetensors", 2 * PART + MiB)  # 3 parts
    adapter = FaultyAdapter({2: [500, 503, "connection", 500]})
    client = _client(middleware, adapter)
    name = _name("resume")
    with pytest.raises(UploadError) as caught:
        upload_file(client, source, "Lora", part_size=PART, concurrency=2, retries=2, backoff_s=0.01, name=name)
    error = caught.value
    assert error.part_number == 2 and "part 2 of 3" in str(error) and "after 3 attempts" in str(error)
    assert "stays Initial" in str(error) and error.state is not None
    assert adapter.attempts[2] == 3
    assert client.get_checkpoint(error.state.checkpoint_id)["status"] == "Initial"

    resumed: list[int] = []
    done = resume_upload(  # the 4th scripted fault is retried away
        client, error.state, backoff_s=0.01, progress=lambda sent, _total: resumed.append(sent)
    )
    assert resumed == [PART + MiB, source.stat().st_size]  # starts from parts 1 and 3, already sent
    assert done["status"] == "Active"
    assert adapter.attempts == {1: 1, 2: 5, 3: 1}  # parts 1 and 3 were not sent again
    assert _sha256(middleware.blob_path(client.get_checkpoint(done["id"]), name)) == _sha256(source)
    client.delete_checkpoints([done["id"]])


def test_an_expired_part_url_is_not_retried(middleware: Middleware, tmp_path: Path) -> None:
    source = _random_file(tmp_path / "model.safetensors", PART + 10)
    adapter = FaultyAdapter({1: [403]})
    client = _client(middleware, adapter)
    with pytest.raises(UploadError) as caught:
        upload_file(client, source, "Lora", part_size=PART, name=_name("expired"))
    assert caught.value.part_number == 1 and "may have expired" in str(caught.value)
    assert adapter.attempts[1] == 1
    client.delete_checkpoints([caught.value.state.checkpoint_id])


def test_should_stop_cancels_and_deletes_the_checkpoint(middleware: Middleware, tmp_path: Path) -> None:
    source = _random_file(tmp_path / "model.safetensors", 4 * PART)
    adapter = FaultyAdapter(delay_s=0.3)
    client = _client(middleware, adapter)
    done: list[int] = []
    with pytest.raises(UploadCancelled) as caught:
        upload_file(
            client,
            source,
            "Lora",
            part_size=PART,
            concurrency=1,
            progress=lambda sent, _total: done.append(sent),
            should_stop=lambda: done[-1] > 0,
            name=_name("cancel"),
        )
    assert sum(adapter.attempts.values()) < 4
    with pytest.raises(ApiError) as gone:
        client.get_checkpoint(caught.value.checkpoint_id)
    assert gone.value.status == 404


def test_an_empty_file_is_one_empty_part(client: MiddlewareClient, middleware: Middleware, tmp_path: Path) -> None:
    source = tmp_path / "empty.safetensors"
    source.write_bytes(b"")
    name = _name("empty")
    checkpoint = upload_file(client, source, "embeddings", name=name)
    assert checkpoint["status"] == "Active"
    assert middleware.blob_path(checkpoint, name).read_bytes() == b""
    client.delete_checkpoints([checkpoint["id"]])


def test_refusals_before_any_part_is_sent(client: MiddlewareClient, tmp_path: Path) -> None:
    with pytest.raises(UploadError, match="cannot read"):
        upload_file(client, tmp_path / "missing.safetensors", "Lora")
    source = tmp_path / "small.safetensors"
    source.write_bytes(b"x" * 100)
    with pytest.raises(UploadError, match="checkpoint_type must be one of"):
        upload_file(client, source, "NotAType")
    with pytest.raises(ValueError, match="at least 5 MiB"):
        upload_file(client, _random_file(tmp_path / "two.bin", 3 * MiB), "Lora", part_size=MiB)
    grown, count = parts_for(100 * 1024 * MiB, PART)  # 100 GiB would need 12 800 parts of 8 MiB
    assert count <= 10_000 and grown * count >= 100 * 1024 * MiB


class _TimeoutRecorder(requests.adapters.HTTPAdapter):
    """The API session's transport, keeping (method, path, timeout) of every request."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[str, str, object]] = []

    def send(self, request: requests.PreparedRequest, **options: object) -> requests.Response:  # type: ignore[override]
        self.requests.append((request.method or "", urlsplit(request.url or "").path, options.get("timeout")))
        return super().send(request, **options)  # type: ignore[arg-type]


def test_completing_waits_for_the_middleware_in_proportion_to_the_size(middleware: Middleware, tmp_path: Path) -> None:
    """The middleware joins the parts before it answers the complete (the embedded one copies the whole file):
    the client waits for that answer longer than its own short timeout when the file is large."""
    recorder = _TimeoutRecorder()
    api = requests.Session()
    api.mount("http://", recorder)
    client = MiddlewareClient(middleware.url, API_KEY, ADMIN, timeout=1.0, session=api)
    source = tmp_path / "sparse.safetensors"
    with source.open("wb") as file:
        file.truncate(40 * MiB)
    checkpoint = upload_file(client, source, "Lora", name=_name("complete"))
    assert checkpoint["status"] == "Active"
    completes = [timeout for method, path, timeout in recorder.requests if method == "PUT" and "/checkpoints/" in path]
    assert completes == [pytest.approx(40 * MiB / COMPLETE_MIN_BYTES_PER_S)]  # 2 s, not the client's 1 s
    assert all(timeout == 1.0 for method, _, timeout in recorder.requests if method == "POST")
    client.delete_checkpoints([checkpoint["id"]])
