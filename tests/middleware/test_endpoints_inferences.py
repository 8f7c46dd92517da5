"""Contract tests of the endpoint and inference routes on both backends (compute outcomes are driven
through the events service, as SageMaker's EventBridge/SNS events or the local workers would)."""

from __future__ import annotations

import base64
import json
import threading
import time

import pytest
from support import Api, items_read

ROLE = ["IT Operator"]


def create_endpoint(api: Api, name: str, kind: str = "Async", user: str = "admin", **extra: object) -> dict:
    body = {
        "endpoint_name": name,
        "endpoint_type": kind,
        "instance_type": "ml.g4dn.xlarge",
        "initial_instance_count": 1,
        "autoscaling_enabled": False,
        "assign_to_roles": ROLE,
        **extra,
    }
    response = api.post("/endpoints", body, user=user)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def in_service(api: Api, name: str, kind: str = "Async") -> str:
    full = create_endpoint(api, name, kind)["endpoint_name"]
    api.services.events.endpoint_state(full, "InService")
    return full


def test_create_endpoint_shape_and_listing(api: Api) -> None:
    endpoint = create_endpoint(api, "alpha")
    assert endpoint["endpoint_name"] == "esd-async-alpha"
    assert endpoint["endpoint_status"] == "Creating"
    assert endpoint["owner_group_or_role"] == ROLE
    assert endpoint["max_instance_number"] == "1" and endpoint["current_instance_count"] == "0"
    listed = api.get("/endpoints").json()["data"]
    assert [item["endpoint_name"] for item in listed["endpoints"]] == ["esd-async-alpha"]
    assert listed["last_evaluated_key"] is None


@pytest.mark.parametrize(
    "change,message",
    [
        ({"initial_instance_count": 0}, "required minimum: 1"),
        ({"endpoint_type": "Serverless"}, "Serverless endpoints are not supported"),
        ({"endpoint_type": "Batch"}, "endpoint_type must be one of"),
        ({"assign_to_roles": ["ghost"]}, 'user roles "ghost" not exist'),
        ({"assign_to_roles": []}, "required minimum: 1"),
        ({"instance_type": "g5.2xlarge"}, "not a SageMaker instance type"),
        ({"endpoint_name": "bad name!"}, "endpoint_name must be"),
        ({"autoscaling_enabled": True, "min_instance_number": 2, "max_instance_number": 1}, "max_instance_number"),
        ({"endpoint_type": "Real-time", "autoscaling_enabled": True, "min_instance_number": 0}, "required minimum: 1"),
    ],
)
def test_create_endpoint_validation(api: Api, change: dict, message: str) -> None:
    body = {"endpoint_name": "v", "instance_type": "ml.g4dn.xlarge", "assign_to_roles": ROLE} | change
    response = api.post("/endpoints", body)
    assert response.status_code == 400
    assert message in response.json()["message"]


def test_duplicate_endpoint_name_is_refused(api: Api) -> None:
    create_endpoint(api, "twin")
    response = api.post(
        "/endpoints", {"endpoint_name": "twin", "instance_type": "ml.g4dn.xlarge", "assign_to_roles": ROLE}
    )
    assert response.status_code == 400
    assert "already exists" in response.json()["message"]


def test_endpoint_state_events_update_the_record(api: Api) -> None:
    name = create_endpoint(api, "states")["endpoint_name"]
    api.services.events.endpoint_state(name, "Failed", "capacity error: no ml.g4dn.xlarge available")
    endpoint = api.get("/endpoints").json()["data"]["endpoints"][0]
    assert endpoint["endpoint_status"] == "Failed"
    assert "capacity error" in endpoint["error"] and endpoint["endTime"]
    api.services.events.endpoint_state(name, "InService")
    endpoint = api.get("/endpoints").json()["data"]["endpoints"][0]
    assert endpoint["endpoint_status"] == "InService" and endpoint["error"] is None
    assert endpoint["current_instance_count"] == "1"


def test_endpoints_are_visible_to_their_roles_only(api: Api) -> None:
    api.make_role("ops", ["sagemaker_endpoint:all"])
    api.make_user("olga", ["ops"])
    create_endpoint(api, "mine")
    assert api.get("/endpoints", user="olga").json()["data"]["endpoints"] == []
    assert api.delete("/endpoints", {"endpoint_name_list": ["esd-async-mine"]}, user="olga").status_code == 404
    assert api.delete("/endpoints", {"endpoint_name_list": ["esd-async-mine"]}).status_code == 204
    assert api.get("/endpoints").json()["data"]["endpoints"] == []


def test_no_endpoint_in_service_is_a_clear_400(api: Api) -> None:
    create_endpoint(api, "cold")
    body = {"inference_type": "Async", "task_type": "txt2img", "models": {}}
    response = api.post("/inferences", body)
    assert response.status_code == 400
    assert response.json()["message"] == 'no available Async endpoints for user "admin"'


def test_job_lifecycle_through_events(api: Api) -> None:
    endpoint = in_service(api, "jobs")
    body = {"inference_type": "Async", "task_type": "txt2img", "models": {"VAE": ["Automatic"]}}
    created = api.post("/inferences", body)
    assert created.status_code == 201, created.text
    inference = created.json()["data"]["inference"]
    assert inference["api_params_s3_location"].endswith(f"txt2img/infer_v2/{inference['id']}/api_param.json")
    assert inference["endpoint_name"] == endpoint

    not_uploaded = api.put(f"/inferences/{inference['id']}/start")
    assert not_uploaded.status_code == 400 and "not uploaded" in not_uploaded.json()["message"]
    assert api.put_url(inference["api_params_s3_upload_url"], json.dumps({"prompt": "x"}).encode()).status_code == 200

    job_id = inference["id"]
    api.services.inferences.table.update({"InferenceJobId": job_id}, {"status": "inprogress"})
    png = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
    api.services.inferences.record_result(job_id, {"images": [png, png], "parameters": {"prompt": "x"}, "info": "{}"})
    job = api.get(f"/inferences/{job_id}").json()["data"]
    assert job["status"] == "succeed" and job["image_names"] == ["image_0.png", "image_1.png"]
    assert api.get_url(job["img_presigned_urls"][1]).content == b"\x89PNG\r\n\x1a\nfake"
    assert api.get_url(job["output_presigned_urls"][0]).json()["parameters"] == {"prompt": "x"}

    listed = api.get("/inferences", params={"status": "succeed"}).json()["data"]["inferences"]
    assert [item["InferenceJobId"] for item in listed] == [job_id]
    assert api.delete("/inferences", {"inference_id_list": [job_id]}).status_code == 204
    assert api.services.blobs.list(f"out/{job_id}/") == []
    assert api.services.blobs.list(f"txt2img/infer_v2/{job_id}/") == []
    assert api.get(f"/inferences/{job_id}").status_code == 404


def test_jobs_belong_to_their_creator(api: Api) -> None:
    in_service(api, "shared")
    api.make_role("painter", ["inference:all"])
    api.make_user("pia", ["painter", "IT Operator"])
    body = {"inference_type": "Async", "task_type": "txt2img", "models": {}}
    job_id = api.post("/inferences", body).json()["data"]["inference"]["id"]
    assert api.get(f"/inferences/{job_id}", user="pia").status_code == 404
    assert api.get("/inferences", user="pia").json()["data"]["inferences"] == []
    assert api.delete("/inferences", {"inference_id_list": [job_id]}, user="pia").status_code == 404
    assert api.get(f"/inferences/{job_id}").status_code == 200


def test_listing_ones_jobs_reads_none_of_anyone_elses(api: Api) -> None:
    in_service(api, "busy")
    api.make_user("quiet", ["IT Operator"])
    body = {"inference_type": "Async", "task_type": "txt2img", "models": {}}
    busy_ids = {api.post("/inferences", body).json()["data"]["inference"]["id"] for _ in range(30)}
    quiet_id = api.post("/inferences", body, user="quiet").json()["data"]["inference"]["id"]
    with items_read(api.services.inferences.table) as read:
        listed = api.get("/inferences", params={"limit": 10}, user="quiet").json()["data"]["inferences"]
    assert [job["InferenceJobId"] for job in listed] == [quiet_id]
    assert not busy_ids & {job["InferenceJobId"] for job in read}, "listing one user's jobs read another user's"

    pages, cursor = [], None
    while True:
        params = {"limit": 7, **({"exclusive_start_key": cursor} if cursor else {})}
        data = api.get("/inferences", params=params).json()["data"]
        pages += [job["InferenceJobId"] for job in data["inferences"]]
        if not (cursor := data["last_evaluated_key"]):
            break
    assert sorted(pages) == sorted(busy_ids)


def test_a_waiting_request_wakes_when_this_process_finishes_the_job(api: Api) -> None:
    in_service(api, "waking")
    body = {"inference_type": "Async", "task_type": "txt2img", "models": {}}
    job_id = api.post("/inferences", body).json()["data"]["inference"]["id"]
    inferences = api.services.inferences
    inferences.table.update({"InferenceJobId": job_id}, {"status": "inprogress"})
    inferences.settings.poll_interval_s = 10.0  # only a wake-up can end the wait early
    threading.Timer(0.3, inferences.record_failure, (job_id, "stopped")).start()
    began = time.monotonic()
    job = api.get(f"/inferences/{job_id}", params={"wait_s": 20}).json()["data"]
    assert job["status"] == "failed"
    assert time.monotonic() - began < 3


def test_async_failure_event_records_the_reason(api: Api) -> None:
    in_service(api, "failing")
    body = {"inference_type": "Async", "task_type": "txt2img", "models": {}}
    job_id = api.post("/inferences", body).json()["data"]["inference"]["id"]
    api.services.inferences.table.update({"InferenceJobId": job_id}, {"status": "inprogress"})
    api.services.events.async_result(job_id, False, None, "ModelError: engine answered 500: CUDA out of memory")
    job = api.get(f"/inferences/{job_id}").json()["data"]
    assert job["status"] == "failed" and "CUDA out of memory" in job["error"]


def test_models_must_be_visible_active_checkpoints(api: Api) -> None:
    in_service(api, "models")
    body = {"inference_type": "Async", "task_type": "txt2img", "models": {"Lora": ["nothing.safetensors"]}}
    response = api.post("/inferences", body)
    assert response.status_code == 400 and "nothing.safetensors" in response.json()["message"]
    response = api.post("/inferences", {**body, "models": {"Weird": ["x"]}})
    assert response.status_code == 400


def test_validation_of_inference_requests(api: Api) -> None:
    for change, message in [
        ({"inference_type": "Batch"}, "inference_type must be one of"),
        ({"task_type": "draw"}, "task_type must be one of"),
        ({"payload_string": "[1, 2]"}, "payload_string must be valid json string"),
    ]:
        body = {"inference_type": "Async", "task_type": "txt2img", "models": {}} | change
        response = api.post("/inferences", body)
        assert response.status_code == 400 and message in response.json()["message"], response.text
    assert api.put("/inferences/missing/start").status_code == 404
    assert api.get("/inferences/missing").json()["message"] == "inference with id missing not found"
