"""What a server start does about work the previous server left unfinished: in-flight jobs and URL downloads end
`Failed` with the reason on the embedded backend (they died with its process), never on aws (they run on SageMaker
and in the task Lambda); multipart uploads keep their parts; temp files of cut writes are removed.

The end-to-end version, with a real SIGKILL, is tests/e2e/test_restart_faults.py.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from support import Api

from middleware_api.adapters.embedded.blobs import LocalBlobs, UrlSigner
from middleware_api.container import INTERRUPTED_DOWNLOAD, INTERRUPTED_JOB, build_services

ROLE = ["IT Operator"]
URL = "http://127.0.0.1:9/models/cut.safetensors?token=s3cr3t"


def _endpoint_in_service(api: Api, name: str) -> str:
    body = {"endpoint_name": name, "instance_type": "ml.g4dn.xlarge", "assign_to_roles": ROLE}
    created = api.post("/endpoints", body)
    assert created.status_code == 200, created.text
    full = created.json()["data"]["endpoint_name"]
    api.services.events.endpoint_state(full, "InService")
    return full


def _job(api: Api, status: str) -> str:
    """An Async job with its payload, moved to `status` as the compute would."""
    created = api.post("/inferences", {"inference_type": "Async", "task_type": "txt2img", "models": {}})
    assert created.status_code == 201, created.text
    inference = created.json()["data"]["inference"]
    assert api.put_url(inference["api_params_s3_upload_url"], json.dumps({"prompt": "x"}).encode()).status_code == 200
    job_id = inference["id"]
    if status != "created":
        api.services.inferences.table.update({"InferenceJobId": job_id}, {"status": "inprogress"})
    if status == "failed":
        api.services.inferences.record_failure(job_id, "CUDA out of memory")
    return job_id


def _download_cut_short(api: Api, monkeypatch: pytest.MonkeyPatch) -> str:
    """A checkpoint created from a URL whose download died with its server, part of a file written."""
    with monkeypatch.context() as patch:
        patch.setattr(api.services.background, "submit", lambda task, payload: None)
        created = api.post("/checkpoints", {"checkpoint_type": "VAE", "urls": [URL], "params": {}})
    assert created.status_code == 202, created.text
    checkpoint_id = created.json()["data"]["checkpoint"]["id"]
    api.services.blobs.put(f"VAE/checkpoint/custom/{checkpoint_id}/cut.safetensors", b"half a model")
    return checkpoint_id


def _upload_with_one_part(api: Api) -> tuple[str, str]:
    """A two-part upload with its first part sent: (checkpoint id, the part's ETag)."""
    body = {"checkpoint_type": "Lora", "params": {}, "filenames": [{"filename": "big.safetensors", "parts_number": 2}]}
    created = api.post("/checkpoints", body)
    assert created.status_code == 201, created.text
    data = created.json()["data"]
    sent = api.put_url(data["s3PresignUrl"]["big.safetensors"][0], b"first part")
    assert sent.status_code == 200, sent.text
    return data["checkpoint"]["id"], sent.headers["ETag"]


def test_fail_unfinished_fails_only_the_jobs_in_progress(api: Api) -> None:
    _endpoint_in_service(api, "recover")
    jobs = {status: _job(api, status) for status in ("created", "inprogress", "failed")}
    before = {status: api.get(f"/inferences/{job_id}").json()["data"] for status, job_id in jobs.items()}

    assert api.services.inferences.fail_unfinished(INTERRUPTED_JOB) == 1

    failed = api.get(f"/inferences/{jobs['inprogress']}").json()["data"]
    assert failed["status"] == "failed" and failed["error"] == INTERRUPTED_JOB and failed["completeTime"]
    for status in ("created", "failed"):
        after = api.get(f"/inferences/{jobs[status]}").json()["data"]
        assert (after["status"], after["error"], after["completeTime"]) == (
            before[status]["status"],
            before[status]["error"],
            before[status]["completeTime"],
        )
    assert api.services.inferences.fail_unfinished(INTERRUPTED_JOB) == 0  # nothing left to fail


def test_fail_interrupted_downloads_fails_downloads_and_keeps_uploads(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    download_id = _download_cut_short(api, monkeypatch)
    upload_id, etag = _upload_with_one_part(api)

    assert api.services.checkpoints.fail_interrupted_downloads(INTERRUPTED_DOWNLOAD) == 1

    download = api.get(f"/checkpoints/{download_id}").json()["data"]["checkpoint"]
    assert download["status"] == "Failed" and download["error"] == INTERRUPTED_DOWNLOAD
    assert api.services.blobs.list(f"VAE/checkpoint/custom/{download_id}/") == []  # what it had written is gone
    stored = api.services.checkpoints.table.get({"id": download_id})
    assert stored["source_urls"] == ["http://127.0.0.1:9/models/cut.safetensors"]  # no token kept
    upload = api.services.checkpoints.table.get({"id": upload_id})
    assert upload["checkpoint_status"] == "Initial"
    part = upload["params"]["multipart_upload"]["big.safetensors"]
    assert api.services.blobs.list_parts(part["key"], part["upload_id"]) == [{"PartNumber": 1, "ETag": etag}]
    assert api.services.checkpoints.fail_interrupted_downloads(INTERRUPTED_DOWNLOAD) == 0


def test_a_start_fails_the_previous_servers_local_work_on_embedded_only(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = _endpoint_in_service(api, "restart")
    job_id = _job(api, "inprogress")
    download_id = _download_cut_short(api, monkeypatch)
    upload_id, _ = _upload_with_one_part(api)
    # the endpoint must not come back as local workers in this test (there is no engine): it failed
    api.services.events.endpoint_state(endpoint, "Failed", "stopped for the test")

    again = build_services(api.services.settings)  # what the next server process does at its start
    try:
        job = again.inferences.table.get({"InferenceJobId": job_id})
        download = again.checkpoints.table.get({"id": download_id})
        upload = again.checkpoints.table.get({"id": upload_id})
    finally:
        again.close()
    if api.services.settings.backend == "embedded":
        assert (job["status"], job["error"]) == ("failed", INTERRUPTED_JOB)
        assert (download["checkpoint_status"], download["error"]) == ("Failed", INTERRUPTED_DOWNLOAD)
    else:  # the job runs on SageMaker and the download in the task Lambda, whatever happens to an API process
        assert job["status"] == "inprogress" and download["checkpoint_status"] == "Initial"
    assert upload["checkpoint_status"] == "Initial"


def test_remove_temp_files_keeps_objects_and_parts(tmp_path: Path) -> None:
    blobs = LocalBlobs(tmp_path / "blobs", UrlSigner(b"k" * 32))
    blobs.put("keep/a.bin", b"a")
    upload_id = blobs.start_multipart("big/model.bin")
    blobs.receive_part("big/model.bin", upload_id, 1, io.BytesIO(b"part one"))
    objects, uploads = tmp_path / "blobs" / "objects", tmp_path / "blobs" / "uploads"
    cut = [
        objects / "keep" / ".esd-tmp-object",  # an object being received
        objects / "gone" / "deep" / ".esd-tmp-download",  # a download's first file, in folders of its own
        uploads / upload_id / ".esd-tmp-part",  # part 2 being received
    ]
    for path in cut:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    (uploads / ".esd-tmp-dropped").mkdir()  # an upload being dropped
    (uploads / ".esd-tmp-dropped" / "part-00001").write_bytes(b"x")
    (uploads / ("f" * 32)).mkdir()  # an upload whose upload.json was never written

    assert blobs.remove_temp_files() == 5

    assert not any(path.name.startswith(".esd-tmp-") for path in (tmp_path / "blobs").rglob("*"))
    assert not (objects / "gone").exists() and not (uploads / ("f" * 32)).exists()
    assert blobs.get("keep/a.bin") == b"a" and blobs.list("") == ["keep/a.bin"]
    assert [part["PartNumber"] for part in blobs.list_parts("big/model.bin", upload_id)] == [1]
    assert blobs.remove_temp_files() == 0
