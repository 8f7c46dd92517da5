"""The endpoint worker against the engine double: SageMaker's container contract, model fetching, the cache."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from fastapi.testclient import TestClient
from support import free_port

from middleware_api.worker import ModelCache, WorkerSettings, create_worker_app
from middleware_api.worker.engine_double import FAIL_ERRORS, make_png

MIB = 1 << 20
ROOT = Path(__file__).resolve().parents[2]


class FileServer:
    """A folder served over HTTP (like presigned URLs), recording the paths fetched."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.fetched: list[str] = []
        fetched = self.fetched

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                fetched.append(self.path)
                super().do_GET()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(folder)))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def put(self, name: str, data: bytes) -> str:
        (self.folder / name).write_bytes(data)
        return f"{self.url}/{name}"


@pytest.fixture
def files(tmp_path: Path) -> Iterator[FileServer]:
    folder = tmp_path / "served"
    folder.mkdir()
    server = FileServer(folder)
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    return tmp_path / "webui" / "models"


@pytest.fixture
def make_worker(engine_url: str, models_dir: Path) -> Callable[..., TestClient]:
    def make(**overrides: Any) -> TestClient:
        settings = WorkerSettings(**{"engine_url": engine_url, "models_dir": models_dir, **overrides})
        return TestClient(create_worker_app(settings))

    return make


@pytest.fixture
def worker(make_worker: Callable[..., TestClient]) -> TestClient:
    return make_worker()


def invocation(task: str = "txt2img", models: dict[str, Any] | None = None, **payload: Any) -> dict[str, Any]:
    body = {"prompt": "a red fox", "seed": 11, "width": 32, "height": 32, **payload}
    return {"task": task, "username": "alice", "models": models or {}, "payload_string": json.dumps(body)}


def sd_model(name: str, url: str | None = None, model_type: str = "Stable-diffusion") -> dict[str, Any]:
    return {"id": f"id-{name}", "model_name": name, "s3": "s3://bucket/nowhere", "type": model_type, "url": url}


def last_call(engine_url: str) -> dict[str, Any]:
    return requests.get(f"{engine_url}/double/calls", timeout=5).json()


def test_ping_is_healthy_while_the_engine_answers(worker: TestClient, models_dir: Path) -> None:
    assert worker.get("/ping").json() == {"status": "Healthy"}
    down = TestClient(
        create_worker_app(WorkerSettings(engine_url=f"http://127.0.0.1:{free_port()}", models_dir=models_dir))
    )
    response = down.get("/ping")
    assert response.status_code == 503
    assert response.json()["status"] == "Unhealthy" and "not reachable" in response.json()["reason"]


def test_txt2img_from_payload_string_returns_the_engine_json(worker: TestClient, engine_url: str) -> None:
    response = worker.post("/invocations", json=invocation(batch_size=2))
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["images"]) == 2 and json.loads(body["info"])["all_seeds"] == [11, 12]
    sent = last_call(engine_url)
    assert sent["last_route"] == "/sdapi/v1/txt2img" and sent["last_body"]["prompt"] == "a red fox"
    assert "sd_model_checkpoint" not in (sent["last_body"].get("override_settings") or {})
    assert sent["last_body"]["override_settings_restore_afterwards"] is False


def test_payload_from_param_url(worker: TestClient, files: FileServer, engine_url: str) -> None:
    url = files.put("api_param.json", json.dumps({"prompt": "from a url", "width": 16, "height": 16}).encode())
    request = {"task": "txt2img", "username": "alice", "models": {}, "param_url": url}
    response = worker.post("/invocations", json=request)
    assert response.status_code == 200, response.text
    assert json.loads(response.json()["info"])["prompt"] == "from a url"
    missing = worker.post("/invocations", json={**request, "param_url": f"{files.url}/missing.json"})
    assert missing.status_code == 400 and "404" in missing.json()["error"]


def test_extras_task_goes_to_its_route_untouched(worker: TestClient, engine_url: str) -> None:
    image = base64.b64encode(make_png(8, 8, (1, 2, 3), (1, 2, 3))).decode()
    request = {"task": "extra-single-image", "username": "alice", "payload_string": json.dumps({"image": image})}
    assert worker.post("/invocations", json=request).json() == {"html_info": "", "image": image}
    assert "override_settings" not in last_call(engine_url)["last_body"]
    request = {"task": "rembg", "username": "alice", "payload_string": json.dumps({"input_image": image})}
    assert worker.post("/invocations", json=request).json() == {"image": image}
    assert last_call(engine_url)["last_route"] == "/rembg"


def test_a_missing_model_is_fetched_once_and_selected(
    worker: TestClient, files: FileServer, engine_url: str, models_dir: Path
) -> None:
    url = files.put("x.safetensors", b"weights" * 1000)
    models = {"Stable-diffusion": [sd_model("x.safetensors", url)], "VAE": [sd_model("Automatic", None, "VAE")]}
    response = worker.post("/invocations", json=invocation(models=models))
    assert response.status_code == 200, response.text
    assert (models_dir / "Stable-diffusion" / "x.safetensors").read_bytes() == b"weights" * 1000
    sent = last_call(engine_url)
    assert sent["last_body"]["override_settings"] == {"sd_model_checkpoint": "x.safetensors", "sd_vae": "Automatic"}
    assert sent["last_body"]["override_settings_restore_afterwards"] is False
    assert sent["refreshes"] >= 2
    assert json.loads(response.json()["info"])["sd_model_name"] == "x.safetensors"

    again = worker.post("/invocations", json=invocation(models=models, override_settings={"sd_vae": "mine.pt"}))
    assert again.status_code == 200
    assert files.fetched == ["/x.safetensors"], "the cached file is not downloaded again"
    assert last_call(engine_url)["refreshes"] == sent["refreshes"]
    assert last_call(engine_url)["last_body"]["override_settings"]["sd_vae"] == "mine.pt"
    assert not [path for path in (models_dir / "Stable-diffusion").iterdir() if path.name.startswith(".")]


def test_least_recently_used_models_are_evicted_never_those_in_use(
    make_worker: Callable[..., TestClient], files: FileServer, models_dir: Path
) -> None:
    worker = make_worker(model_cache_bytes=int(2.5 * MIB))
    urls = {name: files.put(f"{name}.safetensors", name.encode() * MIB) for name in "abc"}

    def invoke(*names: str) -> None:
        models = {"Stable-diffusion": [sd_model(f"{name}.safetensors", urls[name]) for name in names]}
        response = worker.post("/invocations", json=invocation(models=models))
        assert response.status_code == 200, response.text

    def on_disk() -> set[str]:
        return {path.stem for path in (models_dir / "Stable-diffusion").glob("*.safetensors")}

    invoke("a")
    invoke("b")
    invoke("a")  # b is now the least recently used
    invoke("c")
    assert on_disk() == {"a", "c"}
    # b must be fetched; a is the least recently used but this invocation uses it, so c goes.
    invoke("b", "a")
    assert on_disk() == {"a", "b"}
    index = json.loads((models_dir / ".esd-model-cache.json").read_text())["files"]
    assert set(index) == {"Stable-diffusion/a.safetensors", "Stable-diffusion/b.safetensors"}


def test_invocations_run_one_at_a_time(worker: TestClient, engine_url: str, serve: Callable[[Any], Any]) -> None:
    url = serve(worker.app).url
    requests.post(f"{engine_url}/double/mode", json={"mode": "ok", "delay_s": 0.3}, timeout=5).raise_for_status()
    results: list[int] = []

    def call() -> None:
        results.append(requests.post(f"{url}/invocations", json=invocation(), timeout=10).status_code)

    started = time.monotonic()
    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200, 200] and time.monotonic() - started >= 0.6


def test_a_model_with_no_location_is_400(worker: TestClient) -> None:
    models = {"Stable-diffusion": [{"id": "1", "model_name": "absent.safetensors", "type": "Stable-diffusion"}]}
    response = worker.post("/invocations", json=invocation(models=models))
    assert response.status_code == 400 and "no url or s3" in response.json()["error"]


def test_engine_failure_is_a_502_with_the_reason(worker: TestClient, engine_url: str) -> None:
    requests.post(f"{engine_url}/double/mode", json={"mode": "fail"}, timeout=5).raise_for_status()
    response = worker.post("/invocations", json=invocation())
    assert response.status_code == 502
    assert response.json() == {"status": "failed", "error": f"engine answered 500: {FAIL_ERRORS}"}


def test_engine_hang_is_a_504(make_worker: Callable[..., TestClient]) -> None:
    worker = make_worker(engine_timeout_s=1)
    response = worker.post("/invocations", json=invocation(prompt="[[hang]]"))
    assert response.status_code == 504
    assert response.json() == {"status": "failed", "error": "engine did not answer within 1 s"}


def test_engine_down_is_a_502(models_dir: Path) -> None:
    worker = TestClient(
        create_worker_app(WorkerSettings(engine_url=f"http://127.0.0.1:{free_port()}", models_dir=models_dir))
    )
    response = worker.post("/invocations", json=invocation())
    assert response.status_code == 502 and "not reachable" in response.json()["error"]


@pytest.mark.parametrize(
    ("request_body", "message"),
    [
        ({"task": "train", "payload_string": "{}"}, "unknown task"),
        (invocation(models={"Stable-diffusion": [sd_model("../x.safetensors", "http://x")]}), "plain file name"),
        (invocation(models={"Stable-diffusion": [sd_model("a/b.ckpt", "http://x")]}), "plain file name"),
        (invocation(models={"Weights": [sd_model("a.ckpt", "http://x")]}), "unknown model type"),
        ({"task": "txt2img", "payload_string": "{not json"}, "payload_string must be valid json"),
        ({"task": "txt2img", "payload_string": "[1, 2]"}, "JSON object"),
        ({"task": "txt2img"}, "no payload"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_requests_are_400(worker: TestClient, request_body: Any, message: str) -> None:
    response = worker.post("/invocations", json=request_body)
    assert response.status_code == 400
    assert response.json()["status"] == "failed" and message in response.json()["error"]


def test_a_body_that_is_not_json_is_400(worker: TestClient) -> None:
    response = worker.post("/invocations", content=b"\x00nope", headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["status"] == "failed"


def test_a_model_url_that_fails_is_a_502(worker: TestClient, files: FileServer, models_dir: Path) -> None:
    models = {"Lora": [sd_model("gone.safetensors", f"{files.url}/gone.safetensors", "Lora")]}
    response = worker.post("/invocations", json=invocation(models=models))
    assert response.status_code == 502
    assert response.json()["error"] == "could not fetch model gone.safetensors: its url answered 404"
    assert not list((models_dir / "Lora").iterdir()), "no partial file is left behind"


class FakeS3:
    """boto3's `head_object` and `download_file`, from a dict; `sized=False` hides the size."""

    def __init__(self, objects: dict[tuple[str, str], bytes], sized: bool = True) -> None:
        self.objects = objects
        self.sized = sized
        self.downloads: list[tuple[str, str]] = []

    def head_object(self, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803 (boto3's names)
        return {"ContentLength": len(self.objects[Bucket, Key])} if self.sized else {}

    def download_file(self, bucket: str, key: str, filename: str) -> None:
        self.downloads.append((bucket, key))
        Path(filename).write_bytes(self.objects[bucket, key])


def test_cache_fetches_from_s3_and_evicts_after_download_when_the_size_is_unknown(tmp_path: Path) -> None:
    models = tmp_path / "models"
    s3 = FakeS3({("b", f"Lora/checkpoint/custom/{n}/{n}.safetensors"): n.encode() * MIB for n in "xyz"}, sized=False)
    cache = ModelCache(models, int(2.5 * MIB), s3_client_factory=lambda: s3)
    (models / "Lora").mkdir(parents=True)
    (models / "Lora" / "mine.safetensors").write_bytes(b"m" * 3 * MIB)  # not the cache's: used, never evicted
    assert cache.ensure("Lora", "mine.safetensors") is False
    for name in "xyz":
        uri = f"s3://b/Lora/checkpoint/custom/{name}/"
        assert cache.ensure("Lora", f"{name}.safetensors", s3=uri) is True
    assert s3.downloads[0] == ("b", "Lora/checkpoint/custom/x/x.safetensors")
    assert {path.name for path in (models / "Lora").iterdir()} == {"mine.safetensors", "y.safetensors", "z.safetensors"}
    assert cache.used_bytes() == 2 * MIB
    reopened = ModelCache(models, int(2.5 * MIB))
    assert set(reopened.cached()) == {"Lora/y.safetensors", "Lora/z.safetensors"}
    assert cache.folder("embeddings") == tmp_path / "embeddings"


def test_settings_come_from_the_environment() -> None:
    settings = WorkerSettings.from_env(
        {
            "ESD_ENGINE_URL": "http://engine:7860/",
            "ESD_MODELS_DIR": "/webui/models",
            "ESD_MODEL_CACHE_BYTES": "1000",
            "ESD_ENGINE_TIMEOUT_S": "30",
        }
    )
    assert settings.engine_url == "http://engine:7860" and settings.models_dir == Path("/webui/models")
    assert settings.model_cache_bytes == 1000 and settings.engine_timeout_s == 30.0
    assert settings.embeddings_folder == Path("/webui/embeddings")
    assert WorkerSettings.from_env({}).model_cache_bytes == 100 << 30


def test_the_worker_package_ships_alone(tmp_path: Path) -> None:
    """As in the image: only `middleware_api/worker`, a namespace package, importable without the rest."""
    shutil.copytree(ROOT / "middleware_api" / "worker", tmp_path / "middleware_api" / "worker")
    code = (
        "import sys, middleware_api.worker.app, middleware_api.worker.__main__;"
        "assert not [m for m in sys.modules if m.startswith('middleware_api.') and '.worker' not in m];"
        f"assert set(sys.modules['middleware_api'].__path__) == {{{str(tmp_path / 'middleware_api')!r}}}"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True, timeout=60)


def test_caches_sharing_a_folder_respect_each_others_pins(tmp_path: Path) -> None:
    """Two caches on one folder stand for two worker processes of an endpoint."""
    models = tmp_path / "models"
    s3 = FakeS3({("b", f"p/{n}.safetensors"): n.encode() * MIB for n in "xyz"})
    first, second = (ModelCache(models, int(2.5 * MIB), s3_client_factory=lambda: s3) for _ in range(2))

    def fetch(cache: ModelCache, name: str) -> bool:
        return cache.ensure("Lora", f"{name}.safetensors", s3="s3://b/p")

    def on_disk() -> set[str]:
        return {path.stem for path in (models / "Lora").glob("*.safetensors")}

    assert fetch(first, "x") is True
    with first.pinned(["Lora/x.safetensors"]):
        assert fetch(second, "x") is False, "the other process's download is reused"
        assert fetch(second, "y") is True
        assert fetch(second, "z") is True  # x is the least recently used, but pinned by the first cache
        assert on_disk() == {"x", "z"}
    assert fetch(second, "y") is True
    assert on_disk() == {"z", "y"}

    index_path = models / ".esd-model-cache.json"
    index = json.loads(index_path.read_text())
    assert index["pins"] == {}
    index["pins"] = {"999999999-gone": ["Lora/z.safetensors"]}  # a process that died while pinning
    index_path.write_text(json.dumps(index))
    assert fetch(first, "x") is True
    assert on_disk() == {"y", "x"}
