"""Bad input through the routes, on both backends: a clear 4xx in the envelope, never a 500, nothing written.

Covered elsewhere and not repeated here: malformed JSON and wrong body roots on every write
route (test_app_surface), the first name checks of checkpoints and datasets (`../a.pt`,
`dir/a.pt`, leading dots, NUL, over 255 bytes: test_checkpoints, test_datasets), download URL
checks (test_checkpoints) and blob keys in the embedded store (unit/test_local_blobs).

Decisions these tests pin down:
- bodies over `ESD_MAX_BODY_BYTES` (10 MiB, API Gateway's own limit) get 413 before parsing;
  a presigned blob PUT over 5 GiB (S3's limit on one PUT or part) gets 413 too;
- body fields are typed strictly, as API Gateway's JSON schema validator does: `"2"` is not an
  integer, `"yes"` not a boolean; unknown fields are ignored and never stored;
- `limit` must be 1..1000 (400 otherwise, never silently capped); a cursor the list did not
  hand out is a 400;
- user and role names are ASCII (they travel in the `username` header): other letters get a
  400 naming the rule; checkpoint, dataset, dataset file and token names take any Unicode
  (NFD stays NFD, zero-width and right-to-left marks included) and come back byte for byte.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from mangum import Mangum
from support import API_KEY, Api

from middleware_api.app import create_app
from middleware_api.settings import DEFAULT_MAX_BODY_BYTES, Settings, SettingsError

LISTS = ("/users", "/roles", "/tokens", "/checkpoints", "/endpoints", "/inferences", "/datasets", "/trainings")
ADMIN_USER = {"username": "newbie", "roles": ["IT Operator"], "password": "long-enough-1"}
UPLOAD = {"checkpoint_type": "Lora", "params": {}, "filenames": [{"filename": "a.pt", "parts_number": 1}]}
DATASET = {"dataset_name": "set", "content": [{"filename": "a.png"}]}
ENDPOINT = {"endpoint_type": "Async", "assign_to_roles": ["IT Operator"]}
INFERENCE = {"inference_type": "Async", "task_type": "txt2img", "models": {"Stable-diffusion": ["m.safetensors"]}}
TRAINING = {"params": {"training_params": {"fm_type": "sd_1_5", "model": "m.safetensors", "dataset": "set"}}}
DEEP = "[" * 100_000 + "]" * 100_000  # deeper than any JSON parser's recursion allows


# -- helpers ------------------------------------------------------------------------


def stored(api: Api) -> dict[str, Any]:
    """What a rejected request must leave unchanged: every list, every object, and (embedded) every file."""
    state: dict[str, Any] = {path: api.get(path, params={"limit": 1000}).json()["data"] for path in LISTS}
    state["objects"] = api.services.blobs.list("")
    settings = api.services.settings
    if settings.backend == "embedded":
        # the whole test folder, so a file written outside the data dir shows too; the database changes on reads
        root = Path(settings.data_dir).parent
        state["files"] = sorted(str(path) for path in root.rglob("*") if path.is_file() and ".sqlite" not in path.name)
    else:
        state["uploads"] = api.services.blobs.client.list_multipart_uploads(Bucket=settings.bucket).get("Uploads", [])
    return state


def assert_refused(response: Any, status: int = 400, reason: str = "", what: str = "") -> None:
    """A `status` answer in the envelope whose message holds `reason`; `what` names the case on failure."""
    assert response.status_code == status, (what, response.text)
    body = response.json()
    assert body == {"statusCode": status, "message": body["message"]}, (what, body)
    assert reason in body["message"], (what, body["message"])


def send(api: Api, method: str, path: str, body: Any) -> Any:
    return api.call(method, path, content=json.dumps(body).encode(), headers={"content-type": "application/json"})


@pytest.fixture
def active_checkpoint(api: Api) -> str:
    """An Active one-file Lora checkpoint (`model.safetensors`); its id."""
    created = api.post("/checkpoints", {**UPLOAD, "filenames": [{"filename": "model.safetensors", "parts_number": 1}]})
    created = created.json()["data"]
    etag = api.put_url(created["s3PresignUrl"]["model.safetensors"][0], b"weights").headers["ETag"]
    checkpoint_id = created["checkpoint"]["id"]
    tags = {"model.safetensors": [{"ETag": etag, "PartNumber": 1}]}
    assert api.put(f"/checkpoints/{checkpoint_id}", {"status": "Active", "multi_parts_tags": tags}).status_code == 200
    return checkpoint_id


# -- oversized bodies -------------------------------------------------------------------


def _chunks(body: bytes, size: int = 4096) -> Iterator[bytes]:
    """The body as a stream of unknown length (sent chunked, without content-length)."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def _role_body(size: int, name: str = "padded") -> bytes:
    """A valid create-role body of exactly `size` bytes."""
    head = b'{"role_name": "' + name.encode() + b'", "permissions": [], "creator": "'
    return head + b"x" * (size - len(head) - 2) + b'"}'


def test_bodies_over_the_limit_get_413_before_parsing(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    before = stored(api)
    default = api.call("POST", "/roles", content=_role_body(DEFAULT_MAX_BODY_BYTES + 1))
    assert_refused(default, 413, f"Request Too Long: the body is larger than {DEFAULT_MAX_BODY_BYTES} bytes")
    assert default.headers["x-api-version"]

    monkeypatch.setattr(api.services, "settings", dataclasses.replace(api.services.settings, max_body_bytes=2048))
    oversized = [_role_body(2049), b"{" * 5000, b"\xff" * 3000]  # valid JSON or not: the size decides first
    oversized.append(b'{"user_name_list": ["admin"]' + b" " * 3000 + b"}")
    for body in oversized:
        for content in (body, _chunks(body)):  # with content-length, and chunked without one
            path = "/users" if b"user_name_list" in body else "/roles"
            response = api.call("DELETE" if path == "/users" else "POST", path, content=content)
            assert_refused(response, 413, "Request Too Long: the body is larger than 2048 bytes")
    assert stored(api) == before
    for content in (_role_body(2048, "fits"), _chunks(_role_body(2048, "fits-too"))):
        at_limit = api.call("POST", "/roles", content=content, headers={"content-type": "application/json"})
        assert at_limit.status_code == 201, at_limit.text


def test_the_body_limit_setting() -> None:
    assert Settings.from_env({}).max_body_bytes == DEFAULT_MAX_BODY_BYTES == 10 * 1024 * 1024
    assert Settings.from_env({"ESD_MAX_BODY_BYTES": "2048"}).max_body_bytes == 2048
    for wrong in ("0", "-1", "1.5", "ten", "\uff19"):
        with pytest.raises(SettingsError, match="ESD_MAX_BODY_BYTES must be a positive whole number of bytes"):
            Settings.from_env({"ESD_MAX_BODY_BYTES": wrong})


def test_the_body_limit_holds_under_lambda(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api.services, "settings", dataclasses.replace(api.services.settings, max_body_bytes=2048))
    handler = Mangum(create_app(api.services), lifespan="off")

    def event(body: bytes, with_length: bool) -> dict[str, Any]:
        headers = {"x-api-key": API_KEY, "username": "admin", "content-type": "application/json"}
        if with_length:
            headers["content-length"] = str(len(body))
        return {
            "resource": "/{proxy+}",
            "path": "/prod/roles",
            "httpMethod": "POST",
            "headers": headers,
            "multiValueHeaders": {name: [value] for name, value in headers.items()},
            "queryStringParameters": None,
            "multiValueQueryStringParameters": None,
            "requestContext": {"resourcePath": "/{proxy+}", "httpMethod": "POST", "path": "/prod/roles"},
            "body": body.decode(),
            "isBase64Encoded": False,
        }

    before = stored(api)
    for with_length in (True, False):
        answer = handler(event(_role_body(2049), with_length), None)
        assert answer["statusCode"] == 413, answer
        assert "Request Too Long" in json.loads(answer["body"])["message"]
    assert stored(api) == before
    assert handler(event(_role_body(2048), False), None)["statusCode"] == 201


@pytest.mark.parametrize("services", ["embedded"], indirect=True)
def test_a_blob_put_over_the_upload_limit_gets_413_and_leaves_nothing(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api.services.blobs, "max_upload_bytes", 300_000)
    created = api.post("/checkpoints", UPLOAD).json()["data"]
    url = created["s3PresignUrl"]["a.pt"][0]
    upload = created["checkpoint"]["params"]["multipart_upload"]["a.pt"]
    before = stored(api)

    too_big = bytes(300_001)
    for content in (too_big, _chunks(too_big, 65536)):
        refused = api.client.put(url, content=content)
        assert_refused(refused, 413, "EntityTooLarge: the body is larger than 300000 bytes")
    assert stored(api) == before
    assert api.services.blobs.list_parts(upload["key"], upload["upload_id"]) == []
    assert api.client.put(url, content=bytes(300_000)).status_code == 200


# -- wrong types ----------------------------------------------------------------------------

# (method, path, [(body, reason)]): each body is refused with a 400 whose message holds the reason
WRONG_TYPES: list[tuple[str, str, list[tuple[Any, str]]]] = [
    (
        "POST",
        "/users",
        [
            ({**ADMIN_USER, "username": 5}, "/username: Input should be a valid string"),
            ({**ADMIN_USER, "username": None}, "/username: Input should be a valid string"),
            ({**ADMIN_USER, "roles": "IT Operator"}, "/roles: Input should be a valid list"),
            ({**ADMIN_USER, "roles": [None]}, "/roles/0: Input should be a valid string"),
            ({**ADMIN_USER, "password": ["long-enough-1"]}, "/password: Input should be a valid string"),
            ({**ADMIN_USER, "initial": "yes"}, "/initial: Input should be a valid boolean"),
            ({**ADMIN_USER, "initial": 1}, "/initial: Input should be a valid boolean"),
            ({"roles": ["IT Operator"]}, 'object has missing required properties (["username"])'),
        ],
    ),
    (
        "POST",
        "/roles",
        [
            ({"role_name": "r", "permissions": "checkpoint:all"}, "/permissions: Input should be a valid list"),
            ({"role_name": {"name": "r"}, "permissions": []}, "/role_name: Input should be a valid string"),
            ({"role_name": "r", "permissions": [["checkpoint:all"]]}, "/permissions/0: Input should be a valid string"),
        ],
    ),
    (
        "POST",
        "/tokens",
        [
            ({"name": "t", "expires_in_days": "7"}, "/expires_in_days: Input should be a valid integer"),
            ({"name": "t", "expires_in_days": 7.5}, "/expires_in_days: Input should be a valid integer"),
            ({"name": "t", "expires_in_days": True}, "/expires_in_days: Input should be a valid integer"),
            ({"name": 7}, "/name: Input should be a valid string"),
        ],
    ),
    (
        "POST",
        "/checkpoints",
        [
            (
                {**UPLOAD, "filenames": [{"filename": "a.pt", "parts_number": "2"}]},
                "/filenames/0/parts_number: Input should be a valid integer",
            ),
            (
                {**UPLOAD, "filenames": [{"filename": "a.pt", "parts_number": 2.5}]},
                "/filenames/0/parts_number: Input should be a valid integer",
            ),
            (
                {**UPLOAD, "filenames": [{"filename": "a.pt", "parts_number": None}]},
                "/filenames/0/parts_number: Input should be a valid integer",
            ),
            ({**UPLOAD, "filenames": {"a.pt": 1}}, "/filenames: Input should be a valid list"),
            ({**UPLOAD, "filenames": [{"filename": ["a.pt"], "parts_number": 1}]}, "/filenames/0/filename"),
            ({**UPLOAD, "params": {"message": {"nested": [1, {"deeper": []}]}}}, "/params/message"),
            ({**UPLOAD, "params": "a message"}, "/params: Input should be a valid dictionary"),
            ({**UPLOAD, "checkpoint_type": None}, "/checkpoint_type: Input should be a valid string"),
            ({"checkpoint_type": "Lora", "params": {}, "urls": "http://example.com/a.pt"}, "/urls"),
            ({"checkpoint_type": "Lora", "filenames": UPLOAD["filenames"]}, '(["params"])'),
        ],
    ),
    (
        "PUT",
        "/checkpoints/no-such-id",
        [
            ({"status": "Active", "multi_parts_tags": [["a.pt"]]}, "/multi_parts_tags: Input should be a valid dict"),
            (
                {"status": "Active", "multi_parts_tags": {"a.pt": [{"ETag": '"x"', "PartNumber": "1"}]}},
                "/multi_parts_tags/a.pt/0/PartNumber: Input should be a valid integer",
            ),
            ({"status": "Active", "multi_parts_tags": {"a.pt": [{"ETag": 5, "PartNumber": 1}]}}, "/ETag"),
            ({"status": ["Active"]}, "/status: Input should be a valid string"),
        ],
    ),
    (
        "POST",
        "/datasets",
        [
            ({**DATASET, "content": {"filename": "a.png"}}, "/content: Input should be a valid list"),
            ({**DATASET, "content": [{"filename": 5}]}, "/content/0/filename: Input should be a valid string"),
            ({**DATASET, "content": ["a.png"]}, "/content/0: Input should be a valid dictionary"),
            ({**DATASET, "content": [{"filename": "a.png", "params": [1]}]}, "/content/0/params"),
            ({**DATASET, "description": 5}, "/description: Input should be a valid string"),
            ({**DATASET, "params": {"description": {"a": 1}}}, "/params/description"),
            (DEEP, "There was an error parsing the body"),
        ],
    ),
    ("PUT", "/datasets/set", [({"status": 5}, "/status: Input should be a valid string"), ({}, '(["status"])')]),
    (
        "POST",
        "/endpoints",
        [
            ({**ENDPOINT, "initial_instance_count": "2"}, "/initial_instance_count: Input should be a valid integer"),
            ({**ENDPOINT, "autoscaling_enabled": "no"}, "/autoscaling_enabled: Input should be a valid boolean"),
            ({**ENDPOINT, "assign_to_roles": "IT Operator"}, "/assign_to_roles: Input should be a valid list"),
        ],
    ),
    (
        "POST",
        "/inferences",
        [
            ({**INFERENCE, "models": ["m.safetensors"]}, "/models: Input should be a valid dictionary"),
            ({**INFERENCE, "models": {"Stable-diffusion": "m.safetensors"}}, "/models/Stable-diffusion"),
            ({**INFERENCE, "payload_string": {"prompt": "a cat"}}, "/payload_string: Input should be a valid string"),
        ],
    ),
    (
        "POST",
        "/trainings",
        [
            ({"params": {"training_params": "sd_1_5"}}, "/params/training_params: Input should be a valid dictionary"),
            ({"params": {**TRAINING["params"], "config_params": [1]}}, "/params/config_params"),
            ({"params": {"training_params": {"fm_type": 15}}}, "/params/training_params/fm_type"),
        ],
    ),
    ("DELETE", "/users", [({"user_name_list": "admin"}, "/user_name_list: Input should be a valid list")]),
    ("DELETE", "/checkpoints", [({"checkpoint_id_list": [1]}, "/checkpoint_id_list/0")]),
    ("DELETE", "/datasets", [({"dataset_name_list": None}, "/dataset_name_list: Input should be a valid list")]),
]


def test_wrong_types_get_400_with_the_field_and_write_nothing(api: Api) -> None:
    before = stored(api)
    wrong: list[str] = []
    for method, path, cases in WRONG_TYPES:
        for body, reason in cases:
            content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            response = api.call(method, path, content=content, headers={"content-type": "application/json"})
            answer = response.json()
            if (
                response.status_code != 400
                or set(answer) != {"statusCode", "message"}
                or reason not in answer["message"]
            ):
                wrong.append(f"{method} {path} {str(body)[:120]}: {response.status_code} {response.text[:200]}")
    assert not wrong, "\n".join(wrong)
    assert stored(api) == before


def test_unknown_fields_are_ignored_and_never_stored(api: Api) -> None:
    junk = {"deep": [[[{"x": [None, 1e308, "\u202e"]}]]], "statusCode": 500}
    created = send(api, "POST", "/roles", {"role_name": "junk", "permissions": ["train:all"], **junk})
    assert created.status_code == 201, created.text
    role = next(item for item in api.get("/roles").json()["data"]["roles"] if item["role_name"] == "junk")
    assert "deep" not in json.dumps(role) and "statusCode" not in role
    dataset = send(api, "POST", "/datasets", {**DATASET, "content": [{"filename": "a.png", **junk}], **junk})
    assert dataset.status_code == 201, dataset.text
    assert "deep" not in api.get("/datasets/set").text


# -- path traversal in names ------------------------------------------------------------------

TRAVERSALS = [
    "../../x.safetensors",
    "/etc/cron.d/x.safetensors",
    "..\\..\\x.safetensors",
    "C:\\x.safetensors",
    "x.safetensors\x00.png",
    "....//x.safetensors",
    "a/../../../x.safetensors",
    "..",
    "~/x.safetensors",
]


NAME_RULES = ("must be a plain", "has a control character")


def test_traversal_in_names_is_refused_everywhere(api: Api, active_checkpoint: str) -> None:
    before = stored(api)
    wrong: list[str] = []
    for name in TRAVERSALS:
        attempts = {
            "checkpoint file": (
                "POST",
                "/checkpoints",
                {**UPLOAD, "filenames": [{"filename": name, "parts_number": 1}]},
            ),
            "checkpoint rename": ("PUT", f"/checkpoints/{active_checkpoint}", {"name": name}),
            "dataset name": ("POST", "/datasets", {**DATASET, "dataset_name": name}),
            "dataset file": ("POST", "/datasets", {**DATASET, "content": [{"filename": name}]}),
        }
        if ".." in name or "\\" in name or "\x00" in name:  # a prefix is a folder path: `/` alone is fine there
            attempts["dataset prefix"] = ("POST", "/datasets", {**DATASET, "prefix": name})
        for what, (method, path, body) in attempts.items():
            response = send(api, method, path, body)
            if response.status_code != 400 or not any(rule in response.json()["message"] for rule in NAME_RULES):
                wrong.append(f"{what} {name!r}: {response.status_code} {response.text[:200]}")
    assert not wrong, "\n".join(wrong)
    assert stored(api) == before
    checkpoint = api.get(f"/checkpoints/{active_checkpoint}").json()["data"]["checkpoint"]
    assert checkpoint["name"] == ["model.safetensors"]


def test_traversal_in_path_parameters_finds_nothing(api: Api, active_checkpoint: str) -> None:
    before = stored(api)
    for path in (
        "/checkpoints/..",
        "/checkpoints/%2e%2e%2f%2e%2e",
        "/datasets/%2e%2e",
        "/inferences/..%5c..",
        "/trainings/%00",
    ):
        response = api.get(path)
        assert response.status_code in (403, 404), (path, response.text)
        assert response.status_code == 403 or "not found" in response.json()["message"], path
    for body in ({"dataset_name_list": ["../set"]}, {"dataset_name_list": ["/"]}):
        assert api.delete("/datasets", body).status_code == 404
    assert api.delete("/checkpoints", {"checkpoint_id_list": ["../" + active_checkpoint]}).status_code == 404
    assert stored(api) == before


# -- unicode names ---------------------------------------------------------------------------------

UNICODE_NAMES = {
    "accent": "caf\u00e9",
    "decomposed accent": "cafe\u0301",
    "CJK": "\u6a21\u578b",
    "emoji": "\U0001f3a8\U0001f469\u200d\U0001f3a8",
    "right-to-left": "\u05de\u05d5\u05d3\u05dc",
    "bidi override": "img\u202egnp",
    "zero-width": "a\u200bb",
    "long": "\u00e9" * 120,
}


def test_unicode_names_round_trip_exactly_or_get_a_clear_400(api: Api) -> None:
    for text in UNICODE_NAMES.values():
        _round_trip_or_refuse(api, text)


def _round_trip_or_refuse(api: Api, text: str) -> None:
    file_name = f"{text}.safetensors"
    created = api.post("/checkpoints", {**UPLOAD, "filenames": [{"filename": file_name, "parts_number": 1}]})
    assert created.status_code == 201, created.text
    data = created.json()["data"]
    etag = api.put_url(data["s3PresignUrl"][file_name][0], b"w").headers["ETag"]
    checkpoint_id = data["checkpoint"]["id"]
    tags = {file_name: [{"ETag": etag, "PartNumber": 1}]}
    assert api.put(f"/checkpoints/{checkpoint_id}", {"status": "Active", "multi_parts_tags": tags}).status_code == 200
    assert api.get(f"/checkpoints/{checkpoint_id}").json()["data"]["checkpoint"]["name"] == [file_name]
    assert api.services.blobs.get(f"Lora/checkpoint/custom/{checkpoint_id}/{file_name}") == b"w"

    dataset = api.post("/datasets", {"dataset_name": text, "content": [{"filename": f"{text}.png"}], "prefix": text})
    assert dataset.status_code == 201, dataset.text
    assert list(dataset.json()["data"]["s3PresignUrl"]) == [f"{text}.png"]
    assert api.put_url(dataset.json()["data"]["s3PresignUrl"][f"{text}.png"], b"png").status_code == 200
    assert api.put(f"/datasets/{quote(text)}", {"status": "Enabled"}).status_code == 200
    got = api.get(f"/datasets/{quote(text)}").json()["data"]
    assert (got["dataset_name"], [file["key"] for file in got["data"]]) == (text, [f"{text}/{text}.png"])
    assert api.get_url(got["data"][0]["preview_url"]).content == b"png"

    before = stored(api)
    token = api.post("/tokens", {"name": text})  # a token's label takes letters of any script, nothing else
    if token.status_code == 201:
        assert text in [item["name"] for item in api.get("/tokens").json()["data"]["tokens"]]
        before = stored(api)
    else:
        assert_refused(token, 400, "token name must be 1-64 letters, digits, spaces or _.@+-")
    assert_refused(api.post("/users", {**ADMIN_USER, "username": text}), 400, "username must be 1-64 letters")
    assert_refused(api.post("/roles", {"role_name": text, "permissions": []}), 400, "role_name must be 1-64 letters")
    assert stored(api) == before


# -- page sizes and cursors ----------------------------------------------------------------------------


def test_page_sizes_outside_1_to_1000_and_foreign_cursors_get_400(api: Api) -> None:
    foreign = api.get("/roles", params={"limit": 1}).json()["data"]["last_evaluated_key"]
    assert foreign  # two default roles, so a first page of one has a cursor
    for path in LISTS:
        _check_paging(api, path, foreign)


def _check_paging(api: Api, path: str, foreign: str) -> None:
    for limit, reason in [
        ("100000000", "/limit: numeric instance is greater than the required maximum: 1000"),
        ("1001", "/limit: numeric instance is greater than the required maximum: 1000"),
        ("0", "/limit: numeric instance is lower than the required minimum: 1"),
        ("-5", "/limit: numeric instance is lower than the required minimum: 1"),
        ("ten", "/limit: Input should be a valid integer"),
        ("1.5", "/limit: Input should be a valid integer"),
        ("", "/limit: Input should be a valid integer"),
        ("\uff19", "/limit: Input should be a valid integer"),  # a full-width digit
        ("9" * 400, "/limit"),
    ]:
        assert_refused(api.get(path, params={"limit": limit}), 400, reason, f"{path}?limit={limit}")
    assert api.get(path, params={"limit": 1000}).status_code == 200

    cursors = ["garbage", "eyJpZCI6ICJ4In0=", "\x00\xff", "x" * 2048, json.dumps({"id": {"S": "x"}})]
    if path != "/roles":
        cursors.append(foreign)
    for cursor in cursors:
        assert_refused(api.get(path, params={"exclusive_start_key": cursor}), 400, "exclusive_start_key", path)
