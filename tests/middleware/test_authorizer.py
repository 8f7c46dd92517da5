"""`authorizer_handler`, API Gateway's REQUEST authorizer, on the aws backend (moto): the deployment
key and valid personal access tokens are allowed (metered under the deployment key), anything else
is denied."""

from __future__ import annotations

from typing import Any

import pytest
from support import ADMIN, API_KEY, Api

import middleware_api.lambda_handler as lambda_module

API_ID = "a1b2c3d4e5"
METHOD_ARN = f"arn:aws:execute-api:us-east-1:123456789012:{API_ID}/prod/POST/checkpoints/some-id"
STAGE = f"arn:aws:execute-api:us-east-1:123456789012:{API_ID}/prod/*/*"

pytestmark = pytest.mark.parametrize("services", ["aws"], indirect=True)


@pytest.fixture
def authorize(api: Api, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Call the authorizer with the aws services of `api` (moto) as its container's."""
    monkeypatch.setattr(lambda_module, "_authorizer_services", api.services)

    def call(headers: dict[str, str] | None, method_arn: str = METHOD_ARN) -> dict[str, Any]:
        event = {"type": "REQUEST", "methodArn": method_arn, "headers": headers, "httpMethod": "POST"}
        return lambda_module.authorizer_handler(event, None)

    return call


def _statement(answer: dict[str, Any]) -> dict[str, Any]:
    (statement,) = answer["policyDocument"]["Statement"]
    assert statement["Action"] == "execute-api:Invoke"
    return statement


def _token(api: Api, user: str = ADMIN) -> tuple[str, str]:
    response = api.post("/tokens", {"name": "laptop"}, user=user)
    assert response.status_code == 201, response.text
    token = response.json()["data"]["token"]
    return token["token"], token["token_id"]


def test_the_deployment_key_is_allowed_and_metered(authorize: Any) -> None:
    for header in ("x-api-key", "X-API-Key"):
        answer = authorize({header: API_KEY})
        assert answer["principalId"] == lambda_module.DEPLOYMENT_PRINCIPAL
        assert answer["usageIdentifierKey"] == API_KEY
        assert _statement(answer) == {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": STAGE}


def test_a_personal_token_is_allowed_as_its_user(api: Api, authorize: Any) -> None:
    api.make_role("painter", ["checkpoint:all"])
    api.make_user("carol", ["painter"])
    token, _ = _token(api, "carol")
    answer = authorize({"X-Api-Key": token})
    assert answer["principalId"] == "carol"
    assert answer["usageIdentifierKey"] == API_KEY  # every caller is metered under the deployment's key
    assert _statement(answer)["Effect"] == "Allow" and _statement(answer)["Resource"] == STAGE
    # multiValueHeaders only (API Gateway sends both; the header is found in either)
    event = {"type": "REQUEST", "methodArn": METHOD_ARN, "multiValueHeaders": {"x-api-key": [token]}}
    assert lambda_module.authorizer_handler(event, None)["principalId"] == "carol"


def test_revoked_unknown_and_wrong_keys_are_denied(api: Api, authorize: Any) -> None:
    token, token_id = _token(api)
    assert _statement(authorize({"x-api-key": token}))["Effect"] == "Allow"
    assert api.delete("/tokens", {"token_id_list": [token_id]}).status_code == 204
    refused: list[dict[str, str] | None] = [
        {"x-api-key": token},  # revoked
        {"x-api-key": "esd_pat_" + "u" * 43},  # unknown token
        {"x-api-key": "wrong-deployment-key-000"},
        {"x-api-key": API_KEY + "x"},
        {"x-api-key": ""},
        {"username": ADMIN},  # no key at all
        {},
        None,
    ]
    for headers in refused:
        answer = authorize(headers)
        assert _statement(answer)["Effect"] == "Deny", headers
        assert "usageIdentifierKey" not in answer, headers


def test_a_deleted_users_token_is_denied(api: Api, authorize: Any) -> None:
    api.make_role("painter", ["checkpoint:all"])
    api.make_user("dave", ["painter"])
    token, _ = _token(api, "dave")
    assert authorize({"x-api-key": token})["principalId"] == "dave"
    assert api.delete("/users", {"user_name_list": ["dave"]}).status_code == 204
    assert _statement(authorize({"x-api-key": token}))["Effect"] == "Deny"


def test_a_request_that_is_no_method_of_an_api_is_denied(authorize: Any) -> None:
    for method_arn in ("", "arn:aws:lambda:us-east-1:123456789012:function:x", "not an arn"):
        assert _statement(authorize({"x-api-key": API_KEY}, method_arn))["Effect"] == "Deny"


def test_the_key_is_never_logged(api: Api, authorize: Any, caplog: pytest.LogCaptureFixture) -> None:
    token, _ = _token(api)
    caplog.set_level("DEBUG")
    for key in (API_KEY, token, "wrong-deployment-key-000"):
        authorize({"x-api-key": key})
    assert caplog.records, "the denial is logged"
    for key in (API_KEY, token, "wrong-deployment-key-000"):
        assert key not in caplog.text
