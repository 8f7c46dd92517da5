"""The app as clients and API Gateway see it: the OpenAPI document, the Lambda entry, malformed input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from support import ADMIN, ADMIN_PASSWORD, API_KEY, BUCKET, TABLE_PREFIX, Api, aws_settings

import middleware_api.lambda_handler as lambda_module
from middleware_api import API_VERSION
from middleware_api.container import build_services

OPERATION_IDS = {
    "Ping",
    "ListUsers",
    "CreateUser",
    "DeleteUsers",
    "Login",
    "ListRoles",
    "CreateRole",
    "DeleteRoles",
    "CreateToken",
    "ListTokens",
    "DeleteTokens",
    "ListCheckpoints",
    "GetCheckpoint",
    "CreateCheckpoint",
    "UpdateCheckpoint",
    "DeleteCheckpoints",
    "ListEndpoints",
    "CreateEndpoint",
    "DeleteEndpoints",
    "CreateInferenceJob",
    "StartInferenceJob",
    "GetInferenceJob",
    "ListInferenceJobs",
    "DeleteInferenceJobs",
    "CreateDataset",
    "ListDatasets",
    "GetDataset",
    "UpdateDataset",
    "DeleteDatasets",
    "CreateTrainingJob",
    "ListTrainingJobs",
    "GetTrainingJobStatus",
    "StopTrainingJob",
    "DeleteTrainingJobs",
}


def test_openapi_document_and_docs_are_served(api: Api) -> None:
    document = api.client.get("/prod/api").json()
    assert document["openapi"].startswith("3.")
    assert document["info"]["version"] == API_VERSION
    operations = {op["operationId"] for item in document["paths"].values() for op in item.values()}
    assert operations == OPERATION_IDS
    assert "x-api-key" in json.dumps(document["components"]["securitySchemes"])
    assert "swagger" in api.client.get("/prod/docs").text.lower()


MALFORMED_BODIES: list[Any] = [
    b"{",
    b"[]",
    b"null",
    b"42",
    b'"text"',
    b'{"role_name_list": "not-a-list"}',
    b'{"role_name_list": [null]}',
    b'{"role_name_list": [{"a": 1}]}',
    b'{"username": 5, "roles": "x"}',
    '{"username": "\u00e9\u00e8"}'.encode(),
    b'{"checkpoint_type": [], "filenames": {}}',
    b"\xff\xfe",
]


@pytest.mark.parametrize(
    "method,path",
    [
        ("POST", "/users"),
        ("DELETE", "/users"),
        ("POST", "/roles"),
        ("DELETE", "/roles"),
        ("POST", "/login"),
        ("POST", "/tokens"),
        ("DELETE", "/tokens"),
        ("POST", "/checkpoints"),
        ("PUT", "/checkpoints/some-id"),
        ("DELETE", "/checkpoints"),
        ("POST", "/endpoints"),
        ("DELETE", "/endpoints"),
        ("POST", "/inferences"),
        ("DELETE", "/inferences"),
        ("POST", "/datasets"),
        ("PUT", "/datasets/some-name"),
        ("DELETE", "/datasets"),
        ("POST", "/trainings"),
        ("DELETE", "/trainings"),
    ],
)
def test_malformed_bodies_get_a_clear_400(api: Api, method: str, path: str) -> None:
    for body in MALFORMED_BODIES:
        response = api.call(method, path, content=body, headers={"content-type": "application/json"})
        assert 400 <= response.status_code < 500, (body, response.status_code, response.text)
        assert response.json()["message"]


def test_odd_headers_and_queries_never_500(api: Api) -> None:
    for user in ("", " ", "a" * 5000, "x\ty", "ü".encode()):
        assert api.get("/users", user=user).status_code == 401
    for params in ({"limit": "ten"}, {"limit": "-1"}, {"exclusive_start_key": "x" * 5000}, {"status": "Nope"}):
        assert api.get("/checkpoints", params=params).status_code == 400


def _rest_event(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": headers or {},
        "multiValueHeaders": {name: [value] for name, value in (headers or {}).items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "path": f"/prod{path}",
            "stage": "prod",
            "identity": {"sourceIp": "203.0.113.7"},
            "requestId": "test",
        },
        "body": json.dumps(body) if body is not None else None,
        "isBase64Encoded": False,
    }


def test_lambda_handler_serves_api_gateway_events(
    moto_url: str, aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = aws_settings(moto_url)
    build_services(settings).users.bootstrap(ADMIN, ADMIN_PASSWORD, ["IT Operator"])
    for name, value in {
        "ESD_BACKEND": "aws",
        "ESD_BUCKET": BUCKET,
        "ESD_TABLE_PREFIX": TABLE_PREFIX,
        "ESD_API_KEY": API_KEY,
        "ESD_AWS_ENDPOINT_URL": moto_url,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(lambda_module, "_adapter", None)
    monkeypatch.setattr(lambda_module, "_services", None)

    pong = lambda_module.handler(_rest_event("GET", "/ping", headers={"x-api-key": API_KEY}), None)
    assert pong["statusCode"] == 200
    assert json.loads(pong["body"]) == {"statusCode": 200, "message": "pong"}
    assert pong["headers"]["x-api-version"] == API_VERSION

    refused = lambda_module.handler(_rest_event("GET", "/users", headers={"x-api-key": "wrong"}), None)
    assert refused["statusCode"] == 403
    role = {"role_name": "from-lambda", "permissions": ["checkpoint:all"]}
    created = lambda_module.handler(
        _rest_event(
            "POST", "/roles", role, {"x-api-key": API_KEY, "username": ADMIN, "content-type": "application/json"}
        ),
        None,
    )
    assert created["statusCode"] == 201, created["body"]
    listed = lambda_module.handler(
        _rest_event("GET", "/roles", headers={"x-api-key": API_KEY, "username": ADMIN}), None
    )
    assert "from-lambda" in listed["body"]
