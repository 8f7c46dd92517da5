"""The embedded backend's local trainer end to end over HTTP, with a kohya double (`kohya_double.py`) in a
temporary `ESD_KOHYA_DIR`: dataset and base model uploaded, training by names, job Completed, the Lora
checkpoint Active, the log on the job and in the store; failure, stop, restart and missing kohya."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from kohya_double import write_kohya_double
from support import ADMIN, ADMIN_PASSWORD, API_KEY, Api

from middleware_api.adapters.embedded.training import LocalTrainer
from middleware_api.app import create_app
from middleware_api.container import build_services
from middleware_api.settings import Settings

BASE = "base-v15.safetensors"
WAIT_S = 30.0


@pytest.fixture
def make_api(tmp_path: Path) -> Iterator[Callable[..., Api]]:
    """Builds the embedded app on `tmp_path/data` with the given settings; closes what it built."""
    built: list[tuple[TestClient, Any]] = []

    def make(**settings: Any) -> Api:
        services = build_services(Settings(data_dir=tmp_path / "data", api_key=API_KEY, **settings))
        if not services.users.has_users():
            services.users.bootstrap(ADMIN, ADMIN_PASSWORD, ["IT Operator"])
        client = TestClient(create_app(services))
        client.__enter__()
        built.append((client, services))
        return Api(client, services)

    yield make
    for client, services in reversed(built):
        client.__exit__(None, None, None)
        services.close()


@pytest.fixture
def kohya_dir(tmp_path: Path) -> Path:
    return write_kohya_double(tmp_path / "sd-scripts", sdxl=True)


def prepare(api: Api, files: int = 5, prefix: str | None = None) -> None:
    """A base model and an Enabled dataset `cats` of `files` images (at the top, or under `prefix`)."""
    body = {"checkpoint_type": "Stable-diffusion", "params": {}, "filenames": [{"filename": BASE, "parts_number": 1}]}
    created = api.post("/checkpoints", body).json()["data"]
    etag = api.put_url(created["s3PresignUrl"][BASE][0], b"base weights").headers["ETag"]
    tags = {BASE: [{"ETag": etag, "PartNumber": 1}]}
    assert api.put(f"/checkpoints/{created['checkpoint']['id']}", {"status": "Active", "multi_parts_tags": tags})
    content = [{"filename": f"cat_{number}.png"} for number in range(files)]
    dataset = api.post("/datasets", {"dataset_name": "cats", "content": content, "prefix": prefix}).json()["data"]
    for url in dataset["s3PresignUrl"].values():
        assert api.put_url(url, b"\x89PNG\r\n\x1a\n").status_code == 200
    assert api.put("/datasets/cats", {"status": "Enabled"}).status_code == 200


def start(api: Api, training: dict[str, Any] | None = None, **config: Any) -> Any:
    training_params = {"fm_type": "sd_1_5", "model": BASE, "dataset": "cats"} | (training or {})
    config_params = {"training": {"output_name": "cat-lora", "max_train_epochs": 4, "save_every_n_epochs": 2, **config}}
    body = {"lora_train_type": "kohya", "params": {"training_params": training_params, "config_params": config_params}}
    return api.post("/trainings", body)


def wait_for_end(api: Api, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        job = api.get(f"/trainings/{job_id}").json()["data"]
        if job["job_status"] in ("Completed", "Failed", "Stopped"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"training {job_id} did not end within {WAIT_S} s: {job}")


def test_training_runs_kohya_and_registers_the_lora(make_api: Callable[..., Api], kohya_dir: Path) -> None:
    api = make_api(kohya_dir=kohya_dir)
    prepare(api)
    created = start(api)
    assert created.status_code == 200, created.text
    job_id = created.json()["data"]["id"]

    job = wait_for_end(api, job_id)
    assert job["job_status"] == "Completed", job
    assert job["checkpoint_names"] == ["cat-lora.safetensors", "cat-lora-000002.safetensors"]
    log_text = "\n".join(job["logs"])
    assert f"double: model {BASE} of 12 bytes" in log_text
    # loose dataset files were put in a {repeats}_{concept} folder for kohya
    assert "double: 5 files in ['1_cats']" in log_text
    assert "output_name=cat-lora epochs=4 optimizer=AdamW8bit save_model_as=safetensors" in log_text
    assert "double: ESD variables seen: []" in log_text  # the server's secrets stay out of kohya's environment
    assert "steps: 100%|4/4" in log_text  # a tqdm line ending in \r is a line of its own
    full_log = api.get_url(job["log_url"]).text
    assert "--config_file" in full_log and "double: model saved" in full_log

    lora = api.get(f"/checkpoints/{job['checkpoint_id']}").json()["data"]["checkpoint"]
    assert lora["status"] == "Active" and lora["type"] == "Lora"
    stored = api.services.blobs.get(f"Lora/checkpoint/custom/{lora['id']}/cat-lora.safetensors")
    assert b"ss_output_name" in stored
    assert not (Path(api.services.settings.data_dir) / "trainings" / job_id).exists()  # the work folder is gone


def test_sdxl_uses_its_script_and_a_prefixed_dataset_stays(make_api: Callable[..., Api], kohya_dir: Path) -> None:
    api = make_api(kohya_dir=kohya_dir)
    prepare(api, files=2, prefix="20_tabby")
    job_id = start(api, {"fm_type": "sd_xl"}, output_name="xl-cat").json()["data"]["id"]
    job = wait_for_end(api, job_id)
    assert job["job_status"] == "Completed", job
    full_log = api.get_url(job["log_url"]).text
    assert "sdxl_train_network.py" in full_log and "double: 2 files in ['20_tabby']" in full_log


def test_a_failing_kohya_fails_the_job_with_its_last_lines(make_api: Callable[..., Api], kohya_dir: Path) -> None:
    api = make_api(kohya_dir=kohya_dir)
    prepare(api)
    job_id = start(api, esd_double_fail=True).json()["data"]["id"]
    job = wait_for_end(api, job_id)
    assert job["job_status"] == "Failed"
    assert "kohya exited with code 3" in job["error"] and "CUDA out of memory" in job["error"]
    lora = api.get(f"/checkpoints/{job['checkpoint_id']}").json()["data"]["checkpoint"]
    assert lora["status"] == "Failed"
    assert "CUDA out of memory" in api.get_url(job["log_url"]).text


def test_stop_ends_the_process_and_the_job(make_api: Callable[..., Api], kohya_dir: Path) -> None:
    api = make_api(kohya_dir=kohya_dir)
    prepare(api)
    job_id = start(api, esd_double_sleep=60).json()["data"]["id"]
    trainer: LocalTrainer = api.services.trainer  # type: ignore[assignment]
    deadline = time.monotonic() + WAIT_S
    while "double: sleeping" not in "\n".join(api.get(f"/trainings/{job_id}").json()["data"]["logs"]):
        assert time.monotonic() < deadline, "the double never started"
        time.sleep(0.05)
    began = time.monotonic()
    stopped = api.put(f"/trainings/{job_id}/stop")
    assert stopped.status_code == 200, stopped.text
    assert time.monotonic() - began < 15
    assert stopped.json()["data"]["status"] == "Stopped"  # the local runner reports it before the answer
    assert trainer.running() == []
    assert api.delete("/trainings", {"training_id_list": [job_id]}).status_code == 204
    assert api.services.blobs.list(f"kohya/train/{job_id}/") == []


def test_a_restart_fails_jobs_that_were_running(make_api: Callable[..., Api], kohya_dir: Path) -> None:
    api = make_api(kohya_dir=kohya_dir)
    prepare(api)
    job_id = start(api, esd_double_sleep=60).json()["data"]["id"]
    # a second server on the same data folder, as after a crash: the job it finds running is not its own
    restarted = make_api(kohya_dir=kohya_dir)
    job = restarted.get(f"/trainings/{job_id}").json()["data"]
    assert job["job_status"] == "Failed" and "server stopped" in job["error"]
    lora = restarted.get(f"/checkpoints/{job['checkpoint_id']}").json()["data"]["checkpoint"]
    assert lora["status"] == "Failed"


@pytest.mark.parametrize("layout", ["unset", "empty folder"])
def test_without_kohya_a_job_fails_at_once_saying_how_to_set_it_up(
    make_api: Callable[..., Api], tmp_path: Path, layout: str
) -> None:
    folder = None if layout == "unset" else tmp_path / "empty"
    if folder is not None:
        folder.mkdir()
    api = make_api(kohya_dir=folder)
    prepare(api)
    response = start(api)
    assert response.status_code == 400
    text = response.json()["message"]
    assert "ESD_KOHYA_DIR" in text and "https://github.com/kohya-ss/sd-scripts" in text
    if folder is not None:
        assert str(folder / "train_network.py") in text
    [job] = api.get("/trainings").json()["data"]["trainings"]
    assert job["job_status"] == "Failed" and "ESD_KOHYA_DIR" in job["error"]
    assert job["id"] in text
