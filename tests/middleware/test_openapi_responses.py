"""The OpenAPI document tells the truth about the answers: each status a route sends is declared for its
operation, with the body's schema (the envelope, or the error body). Found by the schemathesis fuzz
(tests/fuzz): the document declared only 200 and FastAPI's 422, which the API never sends."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel
from support import Api
from test_endpoints_inferences import in_service

from middleware_api.models.responses import Envelope, ErrorBody, Message, paged

MODELS: dict[str, type[BaseModel]] = {"Message": Message, "Envelope": Envelope, "ErrorBody": ErrorBody}


@pytest.fixture
def document(api: Api) -> dict[str, Any]:
    return api.client.get("/prod/api").json()


def assert_declared(document: dict[str, Any], method: str, template: str, response: Any) -> None:
    """The response's status is declared for the operation (exactly or as `4XX`) and its body fits the schema."""
    declared = document["paths"][f"/prod{template}"][method.lower()]["responses"]
    status = response.status_code
    key = str(status) if str(status) in declared else f"{status // 100}XX"
    assert key in declared, (method, template, status, sorted(declared))
    if status == 204:
        assert not response.content and "content" not in declared[key]
        return
    name = declared[key]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    model = paged(name.removesuffix("List").lower()) if name.endswith("List") else MODELS[name]
    model.model_validate(response.json(), strict=True)


def test_every_operation_declares_its_refusals_and_never_422(document: dict[str, Any]) -> None:
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "422" not in responses, (method, path)  # validation failures are 400s in the envelope
            assert responses["4XX"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
            for status, response in responses.items():
                if status.startswith("2") and status != "204":
                    schema = response["content"]["application/json"]["schema"]
                    name = schema["$ref"].rsplit("/", 1)[1]
                    assert name in ("Message", "Envelope") or name.endswith("List"), (method, path, status)


@pytest.mark.parametrize(
    "operation,statuses",
    [
        ("CreateUser", {"201", "200"}),
        ("CreateRole", {"201", "200"}),
        ("CreateToken", {"201"}),
        ("CreateCheckpoint", {"201", "202"}),
        ("CreateInferenceJob", {"201", "202", "200"}),
        ("StartInferenceJob", {"200", "202"}),
        ("DeleteUsers", {"204"}),
    ],
)
def test_success_statuses_are_the_ones_sent(document: dict[str, Any], operation: str, statuses: set[str]) -> None:
    found = [op for item in document["paths"].values() for op in item.values() if op["operationId"] == operation]
    assert {status for status in found[0]["responses"] if status.startswith("2")} == statuses


def test_answers_match_the_document(api: Api, document: dict[str, Any]) -> None:
    def check(method: str, template: str, response: Any, status: int) -> None:
        assert response.status_code == status, response.text
        assert_declared(document, method, template, response)

    check("GET", "/ping", api.get("/ping"), 200)
    check("GET", "/ping", api.get("/ping", key=None), 403)  # the gateway's own `{"message": "Forbidden"}`
    check("GET", "/users", api.get("/users", user="nobody"), 401)
    check("POST", "/roles", api.post("/roles", {"role_name": "painter", "permissions": ["checkpoint:all"]}), 201)
    check("POST", "/roles", api.post("/roles", {"role_name": "painter", "permissions": []}), 200)
    check("POST", "/roles", api.post("/roles", {"role_name": ""}), 400)  # not FastAPI's 422
    created = api.post("/users", {"username": "ana", "password": "ana-password-1", "roles": ["painter"]})
    check("POST", "/users", created, 201)
    updated = api.post("/users", {"username": "ana", "password": "ana-password-2", "roles": ["painter"]})
    check("POST", "/users", updated, 200)
    check("GET", "/users", api.get("/users", user="ana"), 403)  # no user:list permission
    check("DELETE", "/users", api.delete("/users", {"user_name_list": ["ana"]}), 204)
    check("POST", "/tokens", api.post("/tokens", {"name": "laptop"}), 201)
    check("GET", "/tokens", api.get("/tokens"), 200)
    for listed in ("/users", "/roles", "/checkpoints", "/endpoints", "/inferences", "/datasets", "/trainings"):
        check("GET", listed, api.get(listed, params={"limit": 1}), 200)
    check("GET", "/checkpoints/{checkpointId}", api.get("/checkpoints/missing"), 404)
    body = {"checkpoint_type": "Lora", "filenames": [{"filename": "a.safetensors", "parts_number": 1}], "params": {}}
    check("POST", "/checkpoints", api.post("/checkpoints", body), 201)

    in_service(api, "documented")
    job = {"inference_type": "Async", "task_type": "txt2img", "models": {"VAE": ["Automatic"]}}
    check("POST", "/inferences", api.post("/inferences", job), 201)


def test_a_download_that_cannot_be_queued_is_a_declared_503(
    api: Api, document: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_: Any) -> None:
        raise RuntimeError("queue full")

    monkeypatch.setattr(api.services.checkpoints.background, "submit", refuse)
    body = {"checkpoint_type": "Lora", "urls": ["http://127.0.0.1:9/style.safetensors"], "params": {}}
    response = api.post("/checkpoints", body)
    assert response.status_code == 503 and "retry later" in response.json()["message"]
    assert_declared(document, "POST", "/checkpoints", response)
