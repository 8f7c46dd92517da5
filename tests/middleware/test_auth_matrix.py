"""The auth matrix: every route × {no key, wrong key, no username, unknown user, user without the
permission, permitted user}, on both backends; and every route of the OpenAPI document is in it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from support import API_KEY, Api

from middleware_api.app import create_app

ANY_USER = "any user"
NO_USER = "no user"  # the route does not act for a user (ping, the credential check)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    permission: str  # "resource:action", ANY_USER or NO_USER
    body: Any = None
    permitted_status: int = 200

    @property
    def template(self) -> str:
        parameter = "{checkpointId}"
        if self.path.startswith(("/inferences", "/trainings")):
            parameter = "{jobId}"
        elif self.path.startswith("/datasets"):
            parameter = "{datasetName}"
        return self.path.replace("missing-id", parameter)


ROUTES = [
    Route("GET", "/ping", NO_USER),
    Route("POST", "/login", NO_USER, {"username": "permitted", "password": "user-password-1"}),
    Route("GET", "/users", "user:list"),
    Route("POST", "/users", "user:create", {"username": "made", "password": "made-password", "roles": ["empty"]}, 201),
    Route("DELETE", "/users", "user:all", {"user_name_list": ["nobody"]}, 204),
    Route("GET", "/roles", "role:list"),
    Route("POST", "/roles", "role:create", {"role_name": "made", "permissions": []}, 201),
    Route("DELETE", "/roles", "role:all", {"role_name_list": ["nobody"]}, 204),
    Route("POST", "/tokens", ANY_USER, {"name": "laptop"}, 201),
    Route("GET", "/tokens", ANY_USER),
    Route("DELETE", "/tokens", ANY_USER, {"token_id_list": ["nothing"]}, 204),
    Route("GET", "/checkpoints", "checkpoint:list"),
    Route("GET", "/checkpoints/missing-id", "checkpoint:list", None, 404),
    Route(
        "POST",
        "/checkpoints",
        "checkpoint:create",
        {"checkpoint_type": "Lora", "filenames": [{"filename": "a.safetensors", "parts_number": 1}], "params": {}},
        201,
    ),
    Route("PUT", "/checkpoints/missing-id", "checkpoint:all", {"name": "b.safetensors"}, 404),
    Route("DELETE", "/checkpoints", "checkpoint:all", {"checkpoint_id_list": ["missing-id"]}, 404),
    Route("GET", "/endpoints", "sagemaker_endpoint:list"),
    Route(
        "POST",
        "/endpoints",
        "sagemaker_endpoint:create",
        {"endpoint_name": "m", "instance_type": "ml.g4dn.xlarge", "assign_to_roles": ["empty"]},
    ),
    Route("DELETE", "/endpoints", "sagemaker_endpoint:all", {"endpoint_name_list": ["esd-async-none"]}, 404),
    Route("GET", "/inferences", "inference:list"),
    Route("GET", "/inferences/missing-id", "inference:list", None, 404),
    Route(
        "POST",
        "/inferences",
        "inference:create",
        {"inference_type": "Async", "task_type": "txt2img", "models": {}},
        400,  # permitted, but no endpoint is in service
    ),
    Route("PUT", "/inferences/missing-id/start", "inference:create", None, 404),
    Route("DELETE", "/inferences", "inference:all", {"inference_id_list": ["missing-id"]}, 404),
    Route("GET", "/datasets", "train:list"),
    Route("GET", "/datasets/missing-id", "train:list", None, 404),
    Route("POST", "/datasets", "train:create", {"dataset_name": "d", "content": [{"filename": "a.png"}]}, 201),
    Route("PUT", "/datasets/missing-id", "train:all", {"status": "Enabled"}, 404),
    Route("DELETE", "/datasets", "train:all", {"dataset_name_list": ["missing-id"]}, 404),
    Route("GET", "/trainings", "train:list"),
    Route("GET", "/trainings/missing-id", "train:list", None, 404),
    Route(
        "POST",
        "/trainings",
        "train:create",
        {"params": {"training_params": {"fm_type": "sd_1_5", "model": "none", "dataset": "none"}}},
        400,  # permitted, but there is no such model
    ),
    Route("PUT", "/trainings/missing-id/stop", "train:all", None, 404),
    Route("DELETE", "/trainings", "train:all", {"training_id_list": ["missing-id"]}, 404),
]
OTHER_PERMISSION = "train:all"
OTHER_PERMISSION_FOR_TRAIN = "inference:all"


@pytest.fixture
def matrix_api(api: Api, route: Route) -> Api:
    api.make_role("empty", [])
    unrelated = OTHER_PERMISSION_FOR_TRAIN if route.permission.startswith("train:") else OTHER_PERMISSION
    api.make_role("unrelated", [unrelated])
    api.make_user("outsider", ["unrelated"])
    return api


def _call(api: Api, route: Route, **options: Any) -> Any:
    return api.call(route.method, route.path, json=route.body, **options)


def _permitted_user(api: Api, route: Route) -> str:
    if route.permission in (ANY_USER, NO_USER):
        api.make_user("permitted", ["unrelated"])
    else:
        api.make_role("granted", [route.permission])
        api.make_user("permitted", ["granted"])
    return "permitted"


@pytest.mark.parametrize("route", ROUTES, ids=lambda route: f"{route.method} {route.path}")
def test_route_auth_matrix(matrix_api: Api, route: Route) -> None:
    api = matrix_api
    for key in (None, "wrong-key", API_KEY[:-1] + "X"):
        response = _call(api, route, key=key)
        assert response.status_code == 403, (key, response.text)
        assert response.json() == {"message": "Forbidden"}

    user = _permitted_user(api, route)
    if route.permission == NO_USER:
        assert _call(api, route, user=None).status_code == route.permitted_status
        return
    for anonymous in (None, "ghost-user"):
        response = _call(api, route, user=anonymous)
        assert response.status_code == 401, (anonymous, response.text)
    if route.permission != ANY_USER:
        response = _call(api, route, user="outsider")
        assert response.status_code == 403, response.text
        assert response.json()["message"].startswith("User outsider has no permissions")
    response = _call(api, route, user=user)
    assert response.status_code == route.permitted_status, response.text


def test_the_key_is_checked_before_the_body(api: Api) -> None:
    response = api.call("POST", "/roles", key=None, content=b"{not json")
    assert response.status_code == 403
    assert response.json() == {"message": "Forbidden"}


def test_unknown_path_is_missing_authentication_token(api: Api) -> None:
    for path in ("/nothing-here", "/users/whatever/else"):
        response = api.get(path)
        assert response.status_code == 403
        assert response.json() == {"message": "Missing Authentication Token"}


def test_every_documented_route_is_in_the_matrix(api: Api) -> None:
    document = create_app(api.services).openapi()
    documented = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    covered = {(route.method, "/prod" + route.template) for route in ROUTES}
    assert documented == covered
