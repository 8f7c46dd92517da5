"""The SageMaker training job's program: fetch the inputs from S3, run kohya, upload the outputs.

SageMaker starts the training image as `<image> train`. The job's hyperparameters
(set by `SageMakerTrainer`) are in /opt/ml/input/config/hyperparameters.json:
`config_s3`, `model_s3`, `dataset_s3`, `output_s3`, `output_name`, `fm_type` and
`region`. kohya's log goes to stdout (CloudWatch) and to `{output_s3}/train.log`;
the `.safetensors` it writes go right into `output_s3`. On failure the reason is
written to /opt/ml/output/failure, which SageMaker reports as the job's FailureReason.

    python -m middleware_api.training.entry [train]
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlparse

from middleware_api.ports.blobs import Blobs
from middleware_api.ports.training import LOG_NAME
from middleware_api.training import kohya

HYPERPARAMETERS = Path("/opt/ml/input/config/hyperparameters.json")
FAILURE = Path("/opt/ml/output/failure")
WORK_DIR = Path("/opt/ml/esd-work")  # on the job's ML storage volume, not the container's small root disk
REQUIRED = ("config_s3", "model_s3", "dataset_s3", "output_s3", "output_name", "fm_type")
_FAILURE_CHARS = 1000

StoreFor = Callable[[str], Blobs]


class EntryError(Exception):
    """The job cannot go on; the message becomes its FailureReason."""


def train(
    params: Mapping[str, str],
    *,
    store_for: StoreFor,
    kohya_dir: str,
    work_dir: Path,
    python: str | None = None,
    echo: Callable[[str], None] = print,
) -> list[str]:
    """Run one job from its hyperparameters; the `s3://` locations of the outputs it uploaded.

    `store_for(bucket)` gives the store of a bucket (S3 in the image).
    """
    missing = [name for name in REQUIRED if not params.get(name)]
    if missing:
        raise EntryError(f"hyperparameters missing: {', '.join(missing)}")
    try:
        script = kohya.find_script(kohya_dir, params["fm_type"])
    except kohya.KohyaNotFound as error:
        raise EntryError(str(error)) from None
    work = kohya.WorkFolder(work_dir)
    work.make()
    echo(f"esd: fetching {params['config_s3']}, {params['model_s3']} and {params['dataset_s3']}")
    _fetch(store_for, params["config_s3"], work.config)
    model = work.model_dir / params["model_s3"].rstrip("/").rsplit("/", 1)[-1]
    _fetch(store_for, params["model_s3"], model)
    _fetch_folder(store_for, params["dataset_s3"], work.dataset)
    kohya.prepare_dataset(work.dataset, params["dataset_s3"].rstrip("/").rsplit("/", 1)[-1])
    if not kohya.has_repeats_folder(work.dataset):
        raise EntryError(f"the dataset {params['dataset_s3']} has no images for kohya")

    argv = kohya.command(kohya.python_for(kohya_dir, python), script, work, model, params["output_name"])
    last: list[str] = []
    with open(work.log, "a", encoding="utf-8") as log_file:

        def on_line(line: str) -> None:
            echo(line)
            log_file.write(line + "\n")
            last.append(line)
            del last[:-12]

        code = kohya.run(argv, on_line, cwd=kohya_dir)
    output_bucket, output_key = _split(params["output_s3"])
    output_store = store_for(output_bucket)
    output_prefix = output_key.rstrip("/")
    _upload(output_store, work.log, f"{output_prefix}/{LOG_NAME}")
    if code != 0:
        raise EntryError(f"kohya exited with code {code}: " + "\n".join(last)[-_FAILURE_CHARS:])
    outputs = kohya.find_outputs(work.output, params["output_name"])
    if not outputs:
        raise EntryError("kohya finished without writing a .safetensors file")
    uploaded = []
    for path in outputs:
        key = f"{output_prefix}/{path.name}"
        _upload(output_store, path, key)
        uploaded.append(f"s3://{output_bucket}/{key}")
        echo(f"esd: uploaded {uploaded[-1]}")
    return uploaded


def main(argv: list[str] | None = None) -> int:
    """The image's entry point: run the job, and tell SageMaker why when it fails."""
    del argv  # SageMaker passes `train`; nothing else is expected
    try:
        params = json.loads(HYPERPARAMETERS.read_text(encoding="utf-8"))
        if not isinstance(params, dict):
            raise EntryError(f"{HYPERPARAMETERS} is not a JSON object")
        train(
            {str(name): str(value) for name, value in params.items()},
            store_for=_s3_stores(params.get("region") or os.environ.get("AWS_REGION")),
            kohya_dir=os.environ.get("ESD_KOHYA_DIR", "/opt/kohya"),
            work_dir=Path(os.environ.get("ESD_WORK_DIR", str(WORK_DIR))),
            python=os.environ.get("ESD_KOHYA_PYTHON") or sys.executable,
        )
    except Exception as error:
        traceback.print_exc()
        reason = str(error) if isinstance(error, EntryError) else f"{type(error).__name__}: {error}"
        try:
            FAILURE.parent.mkdir(parents=True, exist_ok=True)
            FAILURE.write_text(reason[:_FAILURE_CHARS], encoding="utf-8")
        except OSError:
            pass
        return 1
    return 0


def _s3_stores(region: str | None) -> StoreFor:
    from middleware_api.adapters.aws.blobs import S3Blobs, s3_client

    client = s3_client(region)
    return lambda bucket: S3Blobs(client, bucket)


def _split(location: str) -> tuple[str, str]:
    parsed = urlparse(location)
    if parsed.scheme != "s3" or not parsed.netloc or not parsed.path.strip("/"):
        raise EntryError(f"{location!r} is not an s3://bucket/key location")
    return parsed.netloc, parsed.path.lstrip("/")


def _fetch(store_for: StoreFor, location: str, target: Path) -> None:
    bucket, key = _split(location)
    with open(target, "wb") as file:
        for chunk in store_for(bucket).read_stream(key):
            file.write(chunk)


def _fetch_folder(store_for: StoreFor, location: str, folder: Path) -> None:
    bucket, key = _split(location)
    store = store_for(bucket)
    prefix = key.rstrip("/") + "/"
    keys = store.list(prefix)
    if not keys:
        raise EntryError(f"the dataset {location} holds no files")
    root = folder.resolve()
    for found in keys:
        target = (folder / found[len(prefix) :]).resolve()
        if not target.is_relative_to(root):
            raise EntryError(f"the dataset file {found} is outside the dataset's folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as file:
            for chunk in store.read_stream(found):
                file.write(chunk)


def _upload(store: Blobs, path: Path, key: str) -> None:
    with open(path, "rb") as file:
        store.write_stream(key, file)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
