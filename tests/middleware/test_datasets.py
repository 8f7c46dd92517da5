"""Contract tests of the datasets routes on both backends: create with upload URLs, enable, list, get, delete."""

from __future__ import annotations

from typing import Any

import pytest
from support import Api

PNG = b"\x89PNG\r\n\x1a\n"


def create_dataset(api: Api, name: str, files: list[str], options: dict[str, Any] | None = None, **extra: Any) -> Any:
    content = [{"filename": file, "name": file, "type": "image", "params": {}} for file in files]
    return api.post("/datasets", {"dataset_name": name, "content": content, **extra}, **(options or {}))


def upload_all(api: Api, urls: dict[str, str], skip: tuple[str, ...] = ()) -> None:
    for filename, url in urls.items():
        if filename not in skip:
            response = api.put_url(url, PNG + filename.encode())
            assert response.status_code == 200, response.text


def enabled_dataset(api: Api, name: str, count: int, prefix: str | None = "10_lego") -> list[str]:
    """A dataset of `count` uploaded files, Enabled; its file names."""
    files = [f"img_{number:03d}.png" for number in range(count)]
    extra = {"prefix": prefix} if prefix else {}
    created = create_dataset(api, name, files, **extra)
    assert created.status_code == 201, created.text
    upload_all(api, created.json()["data"]["s3PresignUrl"])
    enabled = api.put(f"/datasets/{name}", {"status": "Enabled"})
    assert enabled.status_code == 200, enabled.text
    return files


def message(response: Any) -> str:
    return response.json()["message"]


def test_sixty_files_upload_enable_and_get(api: Api) -> None:
    files = [f"img_{number:03d}.png" for number in range(60)]
    created = create_dataset(api, "lego", files, prefix="10_lego", params={"description": "technic bricks"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["message"] == "Dataset created"
    data = body["data"]
    assert data["datasetName"] == "lego" and data["status"] == "Initialed"
    assert sorted(data["s3PresignUrl"]) == files

    listed = api.get("/datasets").json()["data"]["datasets"]
    assert [(item["datasetName"], item["status"]) for item in listed] == [("lego", "Initialed")]
    assert listed[0]["description"] == "technic bricks" and listed[0]["file_count"] == 60

    upload_all(api, data["s3PresignUrl"])
    enabled = api.put("/datasets/lego", {"status": "Enabled"})
    assert enabled.status_code == 200, enabled.text
    assert enabled.json()["data"] == {"dataset_name": "lego", "datasetName": "lego", "status": "Enabled"}

    got = api.get("/datasets/lego")
    assert got.status_code == 200, got.text
    dataset = got.json()["data"]
    assert dataset["status"] == "Enabled" and dataset["dataset_name"] == "lego"
    assert dataset["s3"] == api.services.blobs.uri("dataset/lego")
    assert [item["key"] for item in dataset["data"]] == [f"10_lego/{file}" for file in files]
    assert {item["dataStatus"] for item in dataset["data"]} == {"Enabled"}
    assert api.get_url(dataset["data"][59]["preview_url"]).content == PNG + b"img_059.png"
    keys = api.services.blobs.list("dataset/lego/")
    assert keys == [f"dataset/lego/10_lego/{file}" for file in files]


def test_enable_names_the_files_not_uploaded(api: Api) -> None:
    files = ["a.png", "b.png", "c.txt", "d.png"]
    created = create_dataset(api, "partial", files).json()["data"]
    upload_all(api, created["s3PresignUrl"], skip=("b.png", "d.png"))
    refused = api.put("/datasets/partial", {"status": "Enabled"})
    assert refused.status_code == 400
    assert "b.png" in message(refused) and "d.png" in message(refused) and "a.png" not in message(refused)
    assert api.get("/datasets/partial").json()["data"]["status"] == "Initialed"

    upload_all(api, {name: created["s3PresignUrl"][name] for name in ("b.png", "d.png")})
    assert api.put("/datasets/partial", {"status": "Enabled"}).status_code == 200
    assert api.put("/datasets/partial", {"status": "Disabled"}).json()["data"]["status"] == "Disabled"
    weird = api.put("/datasets/partial", {"status": "Ready"})
    assert weird.status_code == 400 and "Ready" in message(weird)
    assert api.put("/datasets/missing", {"status": "Enabled"}).json()["message"] == "dataset missing is not found"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"dataset_name": "../up", "content": [{"filename": "a.png"}]}, "dataset_name '../up'"),
        ({"dataset_name": "a/b", "content": [{"filename": "a.png"}]}, "dataset_name 'a/b'"),
        ({"dataset_name": ".hidden", "content": [{"filename": "a.png"}]}, "dot"),
        ({"dataset_name": "ok", "content": [{"filename": "../a.png"}]}, "filename '../a.png'"),
        ({"dataset_name": "ok", "content": [{"filename": "x\\a.png"}]}, "plain name"),
        ({"dataset_name": "ok", "content": [{"filename": "a\x00.png"}]}, "control character"),
        ({"dataset_name": "ok", "content": [{"filename": "a.png"}, {"filename": "a.png"}]}, "a.png is given twice"),
        ({"dataset_name": "ok", "content": [{"filename": "a.png"}], "prefix": "../up"}, "prefix '..'"),
        ({"dataset_name": "ok", "content": [{"filename": "a.png"}], "prefix": "a//b"}, "prefix must not be empty"),
        ({"dataset_name": "ok", "content": []}, "required minimum: 1"),
        ({"dataset_name": "ok"}, 'object has missing required properties (["content"])'),
        ({"content": [{"filename": "a.png"}]}, 'object has missing required properties (["dataset_name"])'),
        ('{"dataset_name": "ok", "content": [{"filename": "a.png", "params": {"x": NaN}}]}', "params of a.png"),
        ({"dataset_name": "ok", "content": [{"filename": "a.png", "params": {"x": [10**40]}}]}, "out of range"),
        ({"dataset_name": "ok", "content": [{"filename": "a.png", "params": {"x": {"y": 1e300}}}]}, "out of range"),
    ],
)
def test_create_refuses_bad_names(api: Api, body: dict[str, Any] | str, expected: str) -> None:
    if isinstance(body, str):  # JSON that json= cannot send
        response = api.call("POST", "/datasets", content=body.encode(), headers={"content-type": "application/json"})
    else:
        response = api.post("/datasets", body)
    assert response.status_code == 400, response.text
    assert expected in message(response)
    assert api.get("/datasets").json()["data"]["datasets"] == []


def test_a_name_is_taken_once(api: Api) -> None:
    assert create_dataset(api, "twice", ["a.png"]).status_code == 201
    again = create_dataset(api, "twice", ["b.png"])
    assert again.status_code == 400
    assert message(again) == "twice already exists, please use another or rename/delete exists"


def test_visibility_and_delete(api: Api) -> None:
    enabled_dataset(api, "mine", 3)
    api.make_role("trainers", ["train:all"])
    api.make_user("tess", ["trainers"])
    assert api.get("/datasets", user="tess").json()["data"]["datasets"] == []
    hidden = api.get("/datasets/mine", user="tess")
    assert hidden.status_code == 404 and message(hidden) == "dataset mine is not found"
    assert api.delete("/datasets", {"dataset_name_list": ["mine"]}, user="tess").status_code == 404
    assert api.put("/datasets/mine", {"status": "Disabled"}, user="tess").status_code == 404

    create_dataset(api, "hers", ["h.png"], options={"user": "tess"})
    assert [item["datasetName"] for item in api.get("/datasets", user="tess").json()["data"]["datasets"]] == ["hers"]

    missing = api.delete("/datasets", {"dataset_name_list": ["mine", "ghost"]})
    assert missing.status_code == 404 and message(missing) == "dataset ghost is not found"
    assert api.get("/datasets/mine").status_code == 200
    assert api.delete("/datasets", {"dataset_name_list": ["mine"]}).status_code == 204
    assert api.get("/datasets/mine").status_code == 404
    assert api.services.blobs.list("dataset/mine/") == []
    assert api.services.tables["dataset_items"].query("mine").items == []
    # the name is free again
    assert create_dataset(api, "mine", ["a.png"]).status_code == 201


def test_list_paginates_newest_first(api: Api) -> None:
    for name in ("one", "two", "three"):
        assert create_dataset(api, name, ["a.png"]).status_code == 201
    first = api.get("/datasets", params={"limit": 2}).json()["data"]
    assert [item["datasetName"] for item in first["datasets"]] == ["three", "two"]
    assert first["last_evaluated_key"]
    second = api.get("/datasets", params={"limit": 2, "exclusive_start_key": first["last_evaluated_key"]})
    assert [item["datasetName"] for item in second.json()["data"]["datasets"]] == ["one"]
    assert second.json()["data"]["last_evaluated_key"] is None
