"""Contract tests of the trainings routes on both backends: create (by S3 paths or by names), the status flow
driven through the events service (as EventBridge or the local runner would), the Lora checkpoint it makes,
validation, stop and delete.

On the embedded backend the local runner is replaced by a passive recorder, so that only the events given
here move a job (the runner itself is tested in test_local_training.py); on the aws backend the real
SageMaker trainer creates jobs in moto, which runs nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import tomllib
from botocore.stub import Stubber
from support import Api

from middleware_api.ports.training import TrainingSpec

BASE = "base-v15.safetensors"
ROLE = ["IT Operator"]
INSTANCE = "ml.g4dn.2xlarge"  # moto's SageMaker knows the older instance types only


class RecordingTrainer:
    """A `Trainer` that starts nothing: it records what it was asked."""

    def __init__(self) -> None:
        self.started: list[TrainingSpec] = []
        self.stopped: list[str] = []

    def start(self, spec: TrainingSpec) -> None:
        self.started.append(spec)

    def stop(self, job_id: str) -> None:
        self.stopped.append(job_id)

    def close(self) -> None:
        pass


@pytest.fixture(autouse=True)
def training_image(monkeypatch: pytest.MonkeyPatch) -> None:
    """The aws backend's trainer reads its image when the services are built."""
    monkeypatch.setenv("ESD_TRAINING_IMAGE_URI", "123456789012.dkr.ecr.us-east-1.amazonaws.com/esd-training:1.5.0")


@pytest.fixture
def tapi(api: Api) -> Iterator[Api]:
    """The api with a base model and an Enabled dataset `lego` (on embedded, with a passive trainer)."""
    if api.services.settings.backend == "embedded":
        api.services.trainings.trainer = RecordingTrainer()
    upload_checkpoint(api, "Stable-diffusion", BASE, b"base model weights")
    enabled_dataset(api, "lego", 3)
    yield api


# -- helpers ----------------------------------------------------------------------------------


def upload_checkpoint(api: Api, checkpoint_type: str, name: str, content: bytes) -> dict[str, Any]:
    body = {
        "checkpoint_type": checkpoint_type,
        "params": {"message": ""},
        "filenames": [{"filename": name, "parts_number": 1}],
    }
    created = api.post("/checkpoints", body).json()["data"]
    etag = api.put_url(created["s3PresignUrl"][name][0], content).headers["ETag"]
    checkpoint_id = created["checkpoint"]["id"]
    tags = {name: [{"ETag": etag, "PartNumber": 1}]}
    completed = api.put(f"/checkpoints/{checkpoint_id}", {"status": "Active", "multi_parts_tags": tags})
    assert completed.status_code == 200, completed.text
    return api.get(f"/checkpoints/{checkpoint_id}").json()["data"]["checkpoint"]


def enabled_dataset(api: Api, name: str, count: int, enable: bool = True) -> None:
    content = [{"filename": f"img_{number:03d}.png", "type": "image"} for number in range(count)]
    created = api.post("/datasets", {"dataset_name": name, "content": content, "prefix": "10_lego"})
    assert created.status_code == 201, created.text
    for url in created.json()["data"]["s3PresignUrl"].values():
        assert api.put_url(url, b"\x89PNG\r\n\x1a\n").status_code == 200
    if enable:
        assert api.put(f"/datasets/{name}", {"status": "Enabled"}).status_code == 200


def training_body(training: dict[str, Any] | None = None, config: dict[str, Any] | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {
        "training_params": {"training_instance_type": INSTANCE, "fm_type": "sd_1_5", "model": BASE, "dataset": "lego"}
        | (training or {}),
    }
    if config is not None:
        params["config_params"] = config
    return {"lora_train_type": "kohya", "params": params}


def create_training(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    response = api.post("/trainings", body)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def job(api: Api, job_id: str) -> dict[str, Any]:
    response = api.get(f"/trainings/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()["data"]


def checkpoint(api: Api, checkpoint_id: str) -> dict[str, Any]:
    return api.get(f"/checkpoints/{checkpoint_id}").json()["data"]["checkpoint"]


def write_outputs(api: Api, job_id: str, names: list[str]) -> None:
    """What the training container (or the local runner) uploads at the end of a job."""
    for name in names:
        api.services.blobs.put(f"kohya/train/{job_id}/output/{name}", f"weights of {name}".encode())


def in_service_endpoint(api: Api, name: str) -> str:
    body = {
        "endpoint_name": name,
        "endpoint_type": "Async",
        "instance_type": "ml.g4dn.xlarge",
        "autoscaling_enabled": False,
        "assign_to_roles": ROLE,
    }
    response = api.post("/endpoints", body)
    assert response.status_code == 200, response.text
    full = response.json()["data"]["endpoint_name"]
    api.services.events.endpoint_state(full, "InService")
    return full


def message(response: Any) -> str:
    return response.json()["message"]


# -- the flow -------------------------------------------------------------------------------------


def test_training_by_names_to_an_active_lora_used_in_inference(tapi: Api) -> None:
    api = tapi
    enabled_dataset(api, "technic", 60)
    config = {"training": {"output_name": "lego-lora", "max_train_epochs": 4, "optimizer_type": "Lion"}}
    created = create_training(api, training_body({"dataset": "technic"}, config))
    job_id = created["id"]
    assert created["status"] == "Training"
    assert created["input_location"] == api.services.blobs.uri(f"kohya/train/{job_id}/input")
    assert created["output_location"] == api.services.blobs.uri(f"kohya/train/{job_id}/output")
    assert created["params"]["training_type"] == "kohya"
    training_params = created["params"]["training_params"]
    assert training_params["s3_data_path"] == api.services.blobs.uri("dataset/technic")
    assert training_params["s3_model_path"].endswith(f"/{BASE}")
    assert created["params"]["config_params"]["training"]["output_name"] == "lego-lora"
    # the config as kohya reads it: the template merged, optimizer_type moved to its own section
    toml = tomllib.loads(api.services.blobs.get(f"kohya/train/{job_id}/input/config.toml").decode())
    assert toml["training"]["max_train_epochs"] == 4 and toml["optimizer"]["optimizer_type"] == "Lion"
    assert "optimizer_type" not in toml["training"]
    assert toml["additional_network"]["network_module"] == "networks.lora"

    lora = checkpoint(api, created["checkpoint_id"])
    assert (lora["type"], lora["status"], lora["name"]) == ("Lora", "Initial", ["lego-lora.safetensors"])
    listed = api.get("/trainings").json()["data"]
    assert [item["id"] for item in listed["trainings"]] == [job_id] and listed["last_evaluated_key"] is None

    events = api.services.events
    for secondary in ("Starting", "Downloading", "Training", "Uploading"):
        events.training_state(job_id, "InProgress", secondary)
        assert job(api, job_id)["job_status"] == secondary
    write_outputs(api, job_id, ["lego-lora-000002.safetensors", "lego-lora.safetensors", "train.log"])
    api.services.blobs.put(f"kohya/train/{job_id}/output/esd-kohya-{job_id}/output/model.tar.gz", b"tar")
    events.training_state(job_id, "Completed", "Completed")

    finished = job(api, job_id)
    assert finished["job_status"] == "Completed" and finished["status"] == "Completed"
    assert finished["checkpoint_names"] == ["lego-lora.safetensors", "lego-lora-000002.safetensors"]
    assert finished["model_id"] == "kohya" and finished["train_type"] == "Stable-diffusion"
    assert finished["timestamp"] == created["created"] and finished["error"] is None
    assert api.get_url(finished["log_url"]).content == b"weights of train.log"
    lora = checkpoint(api, created["checkpoint_id"])
    assert lora["status"] == "Active" and lora["name"] == finished["checkpoint_names"]
    lora_key = f"Lora/checkpoint/custom/{lora['id']}/lego-lora.safetensors"
    assert api.services.blobs.get(lora_key) == b"weights of lego-lora.safetensors"

    events.training_state(job_id, "InProgress", "Training")  # late and out of order: ignored
    assert job(api, job_id)["job_status"] == "Completed"

    in_service_endpoint(api, "lora")
    models = {"Lora": ["lego-lora.safetensors"]}
    inference = api.post("/inferences", {"inference_type": "Async", "task_type": "txt2img", "models": models})
    assert inference.status_code == 201, inference.text
    assert inference.json()["data"]["inference"]["models"] == [
        {"id": lora["id"], "name": ["lego-lora.safetensors"], "type": "Lora"}
    ]

    assert api.delete("/trainings", {"training_id_list": [job_id]}).status_code == 204
    assert api.get(f"/trainings/{job_id}").status_code == 404
    assert api.services.blobs.list(f"kohya/train/{job_id}/") == []
    assert checkpoint(api, lora["id"])["status"] == "Active"  # the product stays
    base = api.get("/checkpoints", params={"types": "Stable-diffusion"}).json()["data"]["checkpoints"]
    assert [item["name"] for item in base] == [[BASE]]
    assert api.services.blobs.size(f"Stable-diffusion/checkpoint/custom/{base[0]['id']}/{BASE}") is not None
    assert api.get("/datasets/technic").json()["data"]["status"] == "Enabled"
    assert len(api.services.blobs.list("dataset/technic/")) == 60


def test_training_by_s3_paths_and_failure_with_reason(tapi: Api) -> None:
    api = tapi
    base = api.get("/checkpoints").json()["data"]["checkpoints"][0]
    dataset = api.get("/datasets/lego").json()["data"]
    paths = {"s3_model_path": f"{base['s3Location']}/{BASE}", "s3_data_path": dataset["s3"]}
    body = training_body({"model": None, "dataset": None} | paths, {"training": {"output_name": "by-path"}})
    created = create_training(api, body)
    assert created["params"]["training_params"]["s3_model_path"] == paths["s3_model_path"]
    assert created["params"]["training_params"]["s3_data_path"] == paths["s3_data_path"]
    # a checkpoint's folder names its model file too
    folder = training_body({"model": None, "dataset": None, **paths, "s3_model_path": base["s3Location"]})
    assert create_training(api, folder)["params"]["training_params"]["s3_model_path"] == paths["s3_model_path"]

    job_id = created["id"]
    api.services.events.training_state(job_id, "InProgress", "Downloading")
    api.services.events.training_state(job_id, "Failed", "Failed", "AlgorithmError: CUDA out of memory")
    failed = job(api, job_id)
    assert failed["job_status"] == "Failed" and failed["error"] == "AlgorithmError: CUDA out of memory"
    lora = checkpoint(api, created["checkpoint_id"])
    assert lora["status"] == "Failed" and job_id in lora["error"]
    api.services.events.training_state(job_id, "Completed")  # the first outcome stands
    assert job(api, job_id)["job_status"] == "Failed"
    # the failed job's name is free again
    assert create_training(api, body)["output_name"] == "by-path"
    assert api.delete("/trainings", {"training_id_list": [job_id]}).status_code == 204
    assert api.get(f"/checkpoints/{created['checkpoint_id']}").status_code == 404  # its unfinished checkpoint


def test_completion_without_outputs_fails_with_a_reason(tapi: Api) -> None:
    created = create_training(tapi, training_body())
    assert created["output_name"].startswith("lora-")
    tapi.services.events.training_state(created["id"], "Completed", "Completed")
    finished = job(tapi, created["id"])
    assert finished["job_status"] == "Failed" and ".safetensors" in finished["error"]


def test_stop_and_delete_a_running_job(tapi: Api) -> None:
    api = tapi
    created = create_training(api, training_body())
    job_id = created["id"]
    api.services.events.training_state(job_id, "InProgress", "Training")
    trainer = api.services.trainings.trainer
    if isinstance(trainer, RecordingTrainer):
        stopped = api.put(f"/trainings/{job_id}/stop")
        assert trainer.stopped == [job_id]
    else:  # moto has no StopTrainingJob: check the request SageMaker would get
        with Stubber(trainer.sagemaker) as stub:  # type: ignore[attr-defined]
            stub.add_response("stop_training_job", {}, {"TrainingJobName": f"esd-kohya-{job_id}"})
            stopped = api.put(f"/trainings/{job_id}/stop")
            stub.assert_no_pending_responses()
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["data"]["status"] == "Stopping"
    api.services.events.training_state(job_id, "Stopped", "MaxRuntimeExceeded")
    ended = job(api, job_id)
    assert ended["job_status"] == "Stopped" and "MaxRuntimeExceeded" in ended["error"]
    again = api.put(f"/trainings/{job_id}/stop")
    assert again.status_code == 400 and "already Stopped" in message(again)

    running = create_training(api, training_body())["id"]
    api.services.events.training_state(running, "InProgress", "Starting")
    if isinstance(trainer, RecordingTrainer):
        assert api.delete("/trainings", {"training_id_list": [running]}).status_code == 204
        assert trainer.stopped[-1] == running
    else:
        with Stubber(trainer.sagemaker) as stub:  # type: ignore[attr-defined]
            stub.add_response("stop_training_job", {}, {"TrainingJobName": f"esd-kohya-{running}"})
            assert api.delete("/trainings", {"training_id_list": [running]}).status_code == 204
    assert api.get(f"/trainings/{running}").status_code == 404
    assert api.put(f"/trainings/{running}/stop").json()["message"] == f"Job with id {running} not found"


def test_unknown_statuses_are_shown_never_fatal(tapi: Api) -> None:
    job_id = create_training(tapi, training_body())["id"]
    tapi.services.events.training_state(job_id, "InProgress", "SomethingNew")
    assert job(tapi, job_id)["job_status"] == "SomethingNew"
    tapi.services.events.training_state(job_id, "Paused", None)
    assert job(tapi, job_id)["job_status"] == "Paused"
    tapi.services.events.training_state(job_id, "Stopping", "Stopping")
    assert job(tapi, job_id)["job_status"] == "Stopping"
    tapi.services.events.training_state("no-such-job", "Completed")  # ignored


# -- validation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("training", "config", "expected"),
    [
        ({"fm_type": "sd_2"}, None, "fm_type must be one of sd_1_5, sd_xl, not 'sd_2'"),
        ({"training_instance_type": "g5.big"}, None, "training_instance_type 'g5.big'"),
        ({"model": "nothing.safetensors"}, None, "checkpoint nothing.safetensors of type Stable-diffusion"),
        ({"dataset": "ghost"}, None, "training_params.dataset: dataset ghost is not found"),
        ({"dataset": "draft"}, None, "dataset draft is Initialed, not Enabled"),
        ({"s3_model_path": "s3://x/y"}, None, "give model (a checkpoint name) or s3_model_path, not both"),
        ({"model": None, "s3_model_path": "s3://another-bucket/m.safetensors"}, None, "is not a valid location"),
        ({"model": None, "s3_model_path": "LOCATION/nothing.ckpt"}, None, "neither a model file"),
        ({"model": None, "s3_model_path": "LOCATION/" + "k" * 1100}, None, "s3_model_path 's3://"),
        ({"model": None}, None, 'object has missing required properties (["s3_model_path"])'),
        ({"dataset": None, "s3_data_path": "LOCATION/dataset/empty"}, None, "holds no files"),
        ({"dataset": None}, None, 'object has missing required properties (["s3_data_path"])'),
        ({}, {"nonsense": {}}, "config_params: unknown section 'nonsense'"),
        ({}, {"training": "x"}, "config_params.training must be an object"),
        ({}, {"training": {"max_train_epochs": "ten"}}, 'max_train_epochs must be an integer, not "ten"'),
        ({}, {"training": {"max_train_epochs": 10.5}}, "max_train_epochs must be an integer"),
        ({}, {"training": {"learning_rate": True}}, "learning_rate must be a number, not true"),
        ({}, {"dataset": {"enable_bucket": "yes"}}, "enable_bucket must be true or false"),
        ({}, {"training": {"extra": None}}, "config_params.training.extra: null cannot be written to TOML"),
        ({}, {"training": {"extra": {"a": 1}}}, "config_params.training.extra: an object cannot be"),
        ({}, {"training": {"extra": [[1]]}}, "config_params.training.extra[0]: a list inside a list"),
        ({}, {"training": {"bad key": 1}}, "'bad key' is not a kohya argument name"),
        ({}, {"training": {"seed": 2**70}}, "too large for TOML"),
        ({}, {"optimizer": {"learning_rate": 1e300}}, "learning_rate: 1e+300 is out of range"),
        ({}, {"training": {"output_name": "../evil"}}, "config_params.training.output_name"),
        ({}, {"training": {"output_name": "taken"}}, "taken.safetensors already exists"),
    ],
)
def test_create_refuses_each_wrong_value(
    tapi: Api, training: dict[str, Any], config: dict[str, Any] | None, expected: str
) -> None:
    api = tapi
    enabled_dataset(api, "draft", 1, enable=False)
    upload_checkpoint(api, "Lora", "taken.safetensors", b"other lora")
    location = api.services.blobs.uri("").rstrip("/")
    training = {
        name: value.replace("LOCATION", location) if isinstance(value, str) else value
        for name, value in training.items()
    }
    response = api.post("/trainings", training_body(training, config))
    assert response.status_code == 400, response.text
    assert expected in message(response)
    assert api.get("/trainings").json()["data"]["trainings"] == []
    loras = api.get("/checkpoints", params={"types": "Lora"}).json()["data"]["checkpoints"]
    assert [item["name"] for item in loras] == [["taken.safetensors"]]


def test_request_shape_errors_name_the_field(tapi: Api) -> None:
    body = training_body()
    body["lora_train_type"] = "dreambooth"
    wrong_type = tapi.post("/trainings", body)
    assert wrong_type.status_code == 400 and "lora_train_type must be kohya, not 'dreambooth'" in message(wrong_type)
    missing = tapi.post("/trainings", {"lora_train_type": "kohya", "params": {"training_params": {}}})
    assert missing.status_code == 400
    assert 'object has missing required properties (["fm_type"]) at /params/training_params' in message(missing)
    not_object = tapi.post("/trainings", training_body(config=["x"]))  # type: ignore[arg-type]
    assert not_object.status_code == 400 and "config_params" in message(not_object)
    assert tapi.get("/trainings/missing").json()["message"] == "Job with id missing not found"
    assert tapi.delete("/trainings", {"training_id_list": ["missing"]}).status_code == 404


def test_jobs_are_visible_to_their_creators_roles(tapi: Api) -> None:
    job_id = create_training(tapi, training_body())["id"]
    tapi.make_role("trainers", ["train:all"])
    tapi.make_user("tess", ["trainers"])
    assert tapi.get("/trainings", user="tess").json()["data"]["trainings"] == []
    assert tapi.get(f"/trainings/{job_id}", user="tess").status_code == 404
    assert tapi.put(f"/trainings/{job_id}/stop", user="tess").status_code == 404
    assert tapi.delete("/trainings", {"training_id_list": [job_id]}, user="tess").status_code == 404
    # and tess cannot train on what she cannot see
    refused = tapi.post("/trainings", training_body(), user="tess")
    assert refused.status_code == 400 and "checkpoint base-v15.safetensors" in message(refused)
