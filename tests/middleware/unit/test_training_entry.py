"""The SageMaker training job's entry, run here against a local store and the kohya double."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kohya_double import write_kohya_double

from middleware_api.adapters.embedded.blobs import LocalBlobs, UrlSigner
from middleware_api.training import entry, kohya


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobs:
    blobs = LocalBlobs(tmp_path / "blobs", UrlSigner(b"secret"), bucket="esd-bucket")
    blobs.put("kohya/train/j1/input/config.toml", b"[training]\nmax_train_epochs = 2\nsave_every_n_epochs = 1\n")
    blobs.put("Stable-diffusion/checkpoint/custom/m1/base.safetensors", b"base")
    for number in range(3):
        blobs.put(f"dataset/cats/cat_{number}.png", b"png")
        blobs.put(f"dataset/cats/cat_{number}.txt", b"a cat")
    return blobs


def params(**changes: str) -> dict[str, str]:
    return {
        "job_id": "j1",
        "fm_type": "sd_1_5",
        "config_s3": "s3://esd-bucket/kohya/train/j1/input/config.toml",
        "model_s3": "s3://esd-bucket/Stable-diffusion/checkpoint/custom/m1/base.safetensors",
        "dataset_s3": "s3://esd-bucket/dataset/cats",
        "output_s3": "s3://esd-bucket/kohya/train/j1/output",
        "output_name": "cat",
        "region": "us-east-1",
    } | changes


def test_the_entry_trains_and_uploads(store: LocalBlobs, tmp_path: Path) -> None:
    kohya_dir = write_kohya_double(tmp_path / "kohya")
    printed: list[str] = []
    buckets: list[str] = []

    def store_for(bucket: str) -> LocalBlobs:
        buckets.append(bucket)
        return store

    uploaded = entry.train(
        params(), store_for=store_for, kohya_dir=str(kohya_dir), work_dir=tmp_path / "work", echo=printed.append
    )
    assert uploaded == [
        "s3://esd-bucket/kohya/train/j1/output/cat.safetensors",
        "s3://esd-bucket/kohya/train/j1/output/cat-000001.safetensors",
    ]
    assert set(buckets) == {"esd-bucket"}
    assert "double: 6 files in ['1_cats']" in printed
    log_text = store.get("kohya/train/j1/output/train.log").decode()
    assert "epoch 2/2" in log_text and "double: model saved" in log_text


def test_the_entry_reports_why_it_failed(store: LocalBlobs, tmp_path: Path, monkeypatch: Any) -> None:
    kohya_dir = write_kohya_double(tmp_path / "kohya")
    store.put("kohya/train/j1/input/config.toml", b"[training]\nesd_double_fail = true\n")
    hyperparameters = tmp_path / "hyperparameters.json"
    hyperparameters.write_text(json.dumps(params()), encoding="utf-8")
    failure = tmp_path / "output" / "failure"
    monkeypatch.setattr(entry, "HYPERPARAMETERS", hyperparameters)
    monkeypatch.setattr(entry, "FAILURE", failure)
    monkeypatch.setattr(entry, "_s3_stores", lambda region: lambda bucket: store)
    monkeypatch.setenv("ESD_KOHYA_DIR", str(kohya_dir))
    monkeypatch.setenv("ESD_WORK_DIR", str(tmp_path / "work"))
    assert entry.main(["train"]) == 1
    reason = failure.read_text(encoding="utf-8")
    assert reason.startswith("kohya exited with code 3") and "CUDA out of memory" in reason
    assert "CUDA out of memory" in store.get("kohya/train/j1/output/train.log").decode()


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"output_name": ""}, "hyperparameters missing: output_name"),
        ({"fm_type": "sd_xl"}, "sdxl_train_network.py not found"),
        ({"dataset_s3": "s3://esd-bucket/dataset/none"}, "holds no files"),
        ({"model_s3": "https://example.com/m"}, "is not an s3://bucket/key location"),
    ],
)
def test_bad_hyperparameters_are_entry_errors(
    store: LocalBlobs, tmp_path: Path, changes: dict[str, str], expected: str
) -> None:
    kohya_dir = write_kohya_double(tmp_path / "kohya")
    with pytest.raises(entry.EntryError, match=expected.replace(".", r"\.")):
        entry.train(params(**changes), store_for=lambda bucket: store, kohya_dir=str(kohya_dir), work_dir=tmp_path)


def test_the_kohya_command_line(tmp_path: Path) -> None:
    work = kohya.WorkFolder(tmp_path)
    script = write_kohya_double(tmp_path / "k") / "train_network.py"
    argv = kohya.command("python3", script, work, tmp_path / "model" / "m.safetensors", "out")
    assert argv[:2] == ["python3", str(script)]
    options = dict(zip(argv[2::2], argv[3::2], strict=True))
    assert options == {
        "--config_file": str(tmp_path / "config.toml"),
        "--pretrained_model_name_or_path": str(tmp_path / "model" / "m.safetensors"),
        "--train_data_dir": str(tmp_path / "dataset"),
        "--output_dir": str(tmp_path / "output"),
        "--output_name": "out",
        "--save_model_as": "safetensors",
    }
    with pytest.raises(kohya.KohyaNotFound, match="ESD_KOHYA_DIR"):
        kohya.find_script(None, "sd_1_5")
