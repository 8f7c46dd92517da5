"""Over real HTTP, embedded backend: a local endpoint on the engine double, then txt2img and img2img jobs
(Async and Real-time) from create to downloaded PNGs; and failures that end the job `failed` with a reason."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from support import API_KEY, EngineDouble, ServerProcess, free_port, served_env, wait_until

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(PNG_SIGNATURE)
    return struct.unpack(">II", data[16:24])


def png_text(data: bytes) -> dict[str, str]:
    """The tEXt chunks of a PNG."""
    texts, offset = {}, 8
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if kind == b"tEXt":
            key, _, value = data[offset + 8 : offset + 8 + length].partition(b"\0")
            texts[key.decode()] = value.decode("latin-1")
        offset += 12 + length
    return texts


def tiny_png(width: int, height: int, value: int) -> bytes:
    rows = b"".join(b"\0" + bytes([value]) * width * 3 for _ in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


class Client:
    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()
        self.session.headers.update({"x-api-key": API_KEY, "username": "admin"})

    def __call__(self, method: str, path: str, **options: Any) -> requests.Response:
        return self.session.request(method, self.url + path, timeout=60, **options)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, engine: EngineDouble) -> Iterator[Client]:
    data_dir: Path = tmp_path_factory.mktemp("inference-e2e")
    env = served_env(engine.url)
    server = ServerProcess(data_dir, free_port(), env=env)
    try:
        yield _prepared(Client(server.url))
    finally:
        server.stop()


def _prepared(client: Client) -> Client:
    for name, kind in (("local-async", "Async"), ("local-rt", "Real-time")):
        body = {
            "endpoint_name": name,
            "endpoint_type": kind,
            "initial_instance_count": 1,
            "autoscaling_enabled": False,
            "assign_to_roles": ["IT Operator"],
        }
        created = client("POST", "/endpoints", json=body)
        assert created.status_code == 200, created.text
    wait_until(lambda: _statuses(client) == {"InService"}, timeout_s=60)
    _upload_checkpoint(client, "Stable-diffusion", "tiny-model.safetensors", b"weights" * 1000)
    return client


def _statuses(client: Client) -> set[str]:
    return {item["endpoint_status"] for item in client("GET", "/endpoints").json()["data"]["endpoints"]}


def _upload_checkpoint(client: Client, kind: str, name: str, data: bytes) -> None:
    body = {"checkpoint_type": kind, "filenames": [{"filename": name, "parts_number": 1}], "params": {}}
    created = client("POST", "/checkpoints", json=body).json()["data"]
    etag = requests.put(created["s3PresignUrl"][name][0], data=data, timeout=30).headers["ETag"]
    tags = {name: [{"ETag": etag, "PartNumber": 1}]}
    done = client(
        "PUT", f"/checkpoints/{created['checkpoint']['id']}", json={"status": "Active", "multi_parts_tags": tags}
    )
    assert done.status_code == 200, done.text


def _run_job(client: Client, inference_type: str, task: str, payload: dict[str, Any]) -> dict[str, Any]:
    models = {"Stable-diffusion": ["tiny-model.safetensors"], "VAE": ["Automatic"]}
    created = client(
        "POST", "/inferences", json={"inference_type": inference_type, "task_type": task, "models": models}
    )
    assert created.status_code == 201, created.text
    inference = created.json()["data"]["inference"]
    assert requests.put(inference["api_params_s3_upload_url"], data=json.dumps(payload), timeout=30).status_code == 200
    started = client("PUT", f"/inferences/{inference['id']}/start")
    assert started.status_code in (200, 202), started.text
    again = client("PUT", f"/inferences/{inference['id']}/start")
    assert again.status_code == 409 and "already been started" in again.json()["message"]
    return client("GET", f"/inferences/{inference['id']}", params={"wait_s": 20}).json()["data"]


@pytest.mark.parametrize("inference_type", ["Async", "Real-time"])
def test_txt2img_job_returns_the_engine_pngs(stack: Client, inference_type: str) -> None:
    payload = {"prompt": "a lighthouse at dusk", "seed": 1234, "width": 96, "height": 64, "batch_size": 2}
    job = _run_job(stack, inference_type, "txt2img", payload)
    assert job["status"] == "succeed", job
    assert job["image_names"] == ["image_0.png", "image_1.png"]
    assert job["completeTime"] and job["inference_type"] == inference_type
    images = [requests.get(url, timeout=30).content for url in job["img_presigned_urls"]]
    assert [png_size(image) for image in images] == [(96, 64), (96, 64)]
    infotext = png_text(images[1])["parameters"]
    assert "a lighthouse at dusk" in infotext and "Seed: 1235" in infotext
    assert "tiny-model.safetensors" in infotext
    parameters = requests.get(job["output_presigned_urls"][0], timeout=30).json()
    assert json.loads(parameters["info"])["all_seeds"] == [1234, 1235]


@pytest.mark.parametrize("inference_type", ["Async", "Real-time"])
def test_img2img_with_init_image_and_mask(stack: Client, inference_type: str) -> None:
    init = base64.b64encode(tiny_png(64, 64, 200)).decode()
    mask = base64.b64encode(tiny_png(64, 64, 255)).decode()
    payload = {
        "prompt": "repaint",
        "seed": 7,
        "width": 64,
        "height": 64,
        "init_images": [init],
        "mask": mask,
        "denoising_strength": 0.5,
        "inpainting_fill": 1,
    }
    job = _run_job(stack, inference_type, "img2img", payload)
    assert job["status"] == "succeed", job
    image = requests.get(job["img_presigned_urls"][0], timeout=30).content
    assert png_size(image) == (64, 64)


@pytest.mark.parametrize("inference_type", ["Async", "Real-time"])
def test_engine_failure_ends_the_job_failed_with_the_reason(stack: Client, inference_type: str) -> None:
    job = _run_job(stack, inference_type, "txt2img", {"prompt": "boom [[fail]]", "width": 64, "height": 64})
    assert job["status"] == "failed"
    assert "CUDA out of memory" in job["error"]


def test_payload_string_starts_at_once_and_delete_leaves_nothing(stack: Client, tmp_path: Path) -> None:
    body = {
        "inference_type": "Real-time",
        "task_type": "txt2img",
        "models": {},
        "payload_string": json.dumps({"prompt": "quick", "width": 64, "height": 64}),
    }
    created = stack("POST", "/inferences", json=body)
    assert created.status_code in (200, 202), created.text
    job_id = created.json()["data"]["inference"]["id"]
    job = stack("GET", f"/inferences/{job_id}", params={"wait_s": 20}).json()["data"]
    assert job["status"] == "succeed"
    assert stack("DELETE", "/inferences", json={"inference_id_list": [job_id]}).status_code == 204
    assert stack("GET", f"/inferences/{job_id}").status_code == 404
    assert requests.get(job["img_presigned_urls"][0], timeout=30).status_code == 404


def test_bad_payload_string_and_unknown_model(stack: Client) -> None:
    body = {"inference_type": "Async", "task_type": "txt2img", "models": {}, "payload_string": "{not json"}
    response = stack("POST", "/inferences", json=body)
    assert response.status_code == 400 and response.json()["message"] == "payload_string must be valid json string"
    body = {"inference_type": "Async", "task_type": "txt2img", "models": {"Lora": ["ghost.safetensors"]}}
    assert stack("POST", "/inferences", json=body).status_code == 400
