"""Contract tests of the checkpoints routes: multipart upload, download from URLs, rename, list, delete.

Everything goes through HTTP (`api`, parametrized over both backends in conftest); only the
file checks read the blob store directly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from support import ADMIN, Api, items_read

from middleware_api.ports.blobs import BlobError

MIB = 1024 * 1024
BODY = bytes(range(256)) * (3 * MIB // 256)  # 3 MiB
SECRET = "s3cr3t-token"
CHECKPOINT_KEYS = {"id", "s3Location", "type", "status", "name", "created", "allowed_roles_or_users", "params", "error"}


# -- helpers ------------------------------------------------------------------------


def create_upload(api: Api, files: dict[str, int], checkpoint_type: str = "Stable-diffusion", **options: Any) -> Any:
    body = {
        "checkpoint_type": checkpoint_type,
        "params": {"message": "api-test-message", "creator": "ignored"},
        "filenames": [{"filename": name, "parts_number": parts} for name, parts in files.items()],
    }
    return api.post("/checkpoints", body, **options)


def put_parts(api: Api, urls: list[str], chunks: list[bytes]) -> list[dict[str, Any]]:
    """PUT each chunk to its part URL; the tags to complete the upload with."""
    tags = []
    for number, (url, chunk) in enumerate(zip(urls, chunks, strict=True), start=1):
        response = api.put_url(url, chunk)
        assert response.status_code == 200, response.text
        tags.append({"ETag": response.headers["ETag"], "PartNumber": number})
    return tags


def uploaded(api: Api, files: dict[str, bytes], checkpoint_type: str = "Stable-diffusion", **options: Any) -> str:
    """A complete, Active checkpoint holding `files` (each sent as one part); its id."""
    created = create_upload(api, {name: 1 for name in files}, checkpoint_type, **options)
    assert created.status_code == 201, created.text
    data = created.json()["data"]
    tags = {name: put_parts(api, data["s3PresignUrl"][name], [content]) for name, content in files.items()}
    checkpoint_id = data["checkpoint"]["id"]
    completed = api.put(f"/checkpoints/{checkpoint_id}", {"status": "Active", "multi_parts_tags": tags}, **options)
    assert completed.status_code == 200, completed.text
    return checkpoint_id


def key_of(checkpoint_type: str, checkpoint_id: str, name: str) -> str:
    return f"{checkpoint_type}/checkpoint/custom/{checkpoint_id}/{name}"


def get_checkpoint(api: Api, checkpoint_id: str, **options: Any) -> Any:
    response = api.get(f"/checkpoints/{checkpoint_id}", **options)
    assert response.status_code == 200, response.text
    return response.json()["data"]["checkpoint"]


def wait_for_end(api: Api, checkpoint_id: str, timeout_s: float = 10) -> dict[str, Any]:
    """Poll until the checkpoint leaves Initial; fail after the deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        checkpoint = get_checkpoint(api, checkpoint_id)
        if checkpoint["status"] != "Initial":
            return checkpoint
        time.sleep(0.05)
    raise AssertionError(f"checkpoint {checkpoint_id} still Initial after {timeout_s} s")


def message(response: Any) -> str:
    return response.json()["message"]


# -- a tiny model host ------------------------------------------------------------------


class _ModelHost(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        path = self.path.split("?", 1)[0]
        if path == "/files/plain-model.safetensors":
            self._send(200, BODY)
        elif path == "/download":
            self._send(200, BODY, {"Content-Disposition": "attachment; filename*=UTF-8''my%20lora%C3%A9.safetensors"})
        elif path == "/quoted":
            self._send(200, b"tiny", {"Content-Disposition": 'attachment; filename="../../etc/evil.pt"'})
        elif path == "/redirect":
            self._send(302, b"", {"Location": "/files/plain-model.safetensors"})
        elif path == "/redirect-to-metadata":
            self._send(302, b"", {"Location": "http://169.254.169.254/latest/meta-data/"})
        else:
            self._send(404, b"not here")

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def model_host() -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving model files; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ModelHost)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


# -- multipart upload ---------------------------------------------------------------------


def test_multipart_upload_completes_and_lists(api: Api) -> None:
    created = create_upload(api, {"v1-5-pruned-emaonly.safetensors": 3})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["statusCode"] == 201 and body["message"] == "Checkpoint created"
    checkpoint = body["data"]["checkpoint"]
    checkpoint_id = checkpoint["id"]
    key = key_of("Stable-diffusion", checkpoint_id, "v1-5-pruned-emaonly.safetensors")
    assert set(checkpoint) == {"id", "type", "s3_location", "status", "params"}
    assert checkpoint["type"] == "Stable-diffusion" and checkpoint["status"] == "Initial"
    assert checkpoint["s3_location"] == api.services.blobs.uri(f"Stable-diffusion/checkpoint/custom/{checkpoint_id}")
    params = checkpoint["params"]
    assert params["message"] == "api-test-message" and params["creator"] == ADMIN
    assert len(params["created"]) == len("2023-12-07 00:45:59.334826")
    upload = params["multipart_upload"]["v1-5-pruned-emaonly.safetensors"]
    assert upload["key"] == key and upload["bucket"] == api.services.blobs.bucket and upload["upload_id"]
    name = "v1-5-pruned-emaonly.safetensors"
    urls = body["data"]["s3PresignUrl"][name]
    assert len(urls) == 3

    chunks = [b"a" * (5 * MIB), b"b" * (5 * MIB), b"c"]  # S3 wants 5 MiB for every part but the last
    tags = put_parts(api, urls, chunks)
    assert api.get(f"/checkpoints/{checkpoint_id}").json()["data"]["checkpoint"]["status"] == "Initial"

    # tags in any order: the service sorts them
    completed = api.put(
        f"/checkpoints/{checkpoint_id}",
        {"checkpoint_id": checkpoint_id, "status": "Active", "multi_parts_tags": {name: tags[::-1]}},
    )
    assert completed.status_code == 200, completed.text
    answer = completed.json()
    assert answer["message"] == "Updated"
    assert answer["data"]["checkpoint"] == answer["checkpoint"]
    assert answer["checkpoint"]["status"] == "Active"
    assert "multipart_upload" not in answer["checkpoint"]["params"]
    assert api.services.blobs.get(key) == b"".join(chunks)

    listed = api.get("/checkpoints")
    assert listed.status_code == 200
    items = listed.json()["data"]["checkpoints"]
    assert listed.json()["data"]["last_evaluated_key"] is None
    assert len(items) == 1
    item = items[0]
    assert set(item) == CHECKPOINT_KEYS
    assert item["id"] == checkpoint_id and item["type"] == "Stable-diffusion" and item["status"] == "Active"
    assert item["name"] == ["v1-5-pruned-emaonly.safetensors"]
    assert item["s3Location"] == checkpoint["s3_location"]
    assert isinstance(item["created"], float) and abs(item["created"] - time.time()) < 60
    assert item["allowed_roles_or_users"] == ["IT Operator"]
    assert item["params"]["message"] == "api-test-message" and item["params"]["creator"] == ADMIN
    assert item["error"] is None
    assert get_checkpoint(api, checkpoint_id) == item

    again = api.put(f"/checkpoints/{checkpoint_id}", {"status": "Active", "multi_parts_tags": {"x": tags}})
    assert again.status_code == 400


def test_wrong_etag_keeps_initial_and_a_retry_works(api: Api) -> None:
    created = create_upload(api, {"model.ckpt": 2}).json()["data"]
    checkpoint_id = created["checkpoint"]["id"]
    tags = put_parts(api, created["s3PresignUrl"]["model.ckpt"], [b"x" * (5 * MIB), b"y"])
    wrong = [dict(tags[0]), {"ETag": '"0123456789abcdef0123456789abcdef"', "PartNumber": 2}]
    refused = api.put(f"/checkpoints/{checkpoint_id}", {"status": "Active", "multi_parts_tags": {"model.ckpt": wrong}})
    assert refused.status_code == 400, refused.text
    assert "model.ckpt" in message(refused)
    assert get_checkpoint(api, checkpoint_id)["status"] == "Initial"

    retried = api.put(f"/checkpoints/{checkpoint_id}", {"status": "Active", "multi_parts_tags": {"model.ckpt": tags}})
    assert retried.status_code == 200, retried.text
    assert get_checkpoint(api, checkpoint_id)["status"] == "Active"


def test_completion_needs_tags_for_every_file(api: Api) -> None:
    created = create_upload(api, {"a.safetensors": 1, "b.safetensors": 1}).json()["data"]
    checkpoint_id = created["checkpoint"]["id"]
    tags = put_parts(api, created["s3PresignUrl"]["a.safetensors"], [b"a"])
    refused = api.put(
        f"/checkpoints/{checkpoint_id}", {"status": "Active", "multi_parts_tags": {"a.safetensors": tags}}
    )
    assert refused.status_code == 400
    assert "b.safetensors" in message(refused)

    neither = api.put(f"/checkpoints/{checkpoint_id}", {})
    assert neither.status_code == 400
    assert 'object has missing required properties (["status","multi_parts_tags"])' in message(neither)
    bad_status = api.put(f"/checkpoints/{checkpoint_id}", {"status": "Disabled", "multi_parts_tags": {}})
    assert bad_status.status_code == 400
    unknown_file = api.put(
        f"/checkpoints/{checkpoint_id}",
        {"status": "Active", "multi_parts_tags": {"a.safetensors": tags, "b.safetensors": tags, "c.bin": tags}},
    )
    assert unknown_file.status_code == 400 and "c.bin" in message(unknown_file)
    assert get_checkpoint(api, checkpoint_id)["status"] == "Initial"


def test_a_partly_completed_upload_can_be_retried(api: Api) -> None:
    created = create_upload(api, {"a.safetensors": 1, "b.safetensors": 1}).json()["data"]
    checkpoint_id = created["checkpoint"]["id"]
    names = ("a.safetensors", "b.safetensors")
    tags = {name: put_parts(api, created["s3PresignUrl"][name], [name.encode()]) for name in names}
    wrong = {"a.safetensors": tags["a.safetensors"], "b.safetensors": [{"ETag": '"00"', "PartNumber": 1}]}
    refused = api.put(f"/checkpoints/{checkpoint_id}", {"status": "Active", "multi_parts_tags": wrong})
    assert refused.status_code == 400 and "b.safetensors" in message(refused)
    assert get_checkpoint(api, checkpoint_id)["status"] == "Initial"

    retried = api.put(f"/checkpoints/{checkpoint_id}", {"status": "Active", "multi_parts_tags": tags})
    assert retried.status_code == 200, retried.text
    for name in names:
        assert api.services.blobs.get(key_of("Stable-diffusion", checkpoint_id, name)) == name.encode()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"checkpoint_type": "Checkpoints", "filenames": [{"filename": "a.pt", "parts_number": 1}]}, "Lora"),
        ({"checkpoint_type": "Lora", "filenames": [{"filename": "../a.pt", "parts_number": 1}]}, "plain file name"),
        ({"checkpoint_type": "Lora", "filenames": [{"filename": "dir/a.pt", "parts_number": 1}]}, "plain file name"),
        ({"checkpoint_type": "Lora", "filenames": [{"filename": ".hidden", "parts_number": 1}]}, "dot"),
        ({"checkpoint_type": "Lora", "filenames": [{"filename": "a\x00b.pt", "parts_number": 1}]}, "control"),
        ({"checkpoint_type": "Lora", "filenames": [{"filename": "é" * 128, "parts_number": 1}]}, "255 bytes"),
        ({"checkpoint_type": "Lora", "filenames": [{"filename": "a.pt", "parts_number": 0}]}, "required minimum: 1"),
        (
            {"checkpoint_type": "Lora", "filenames": [{"filename": "a.pt", "parts_number": 1}] * 2},
            "a.pt is given twice",
        ),
        (
            {"checkpoint_type": "Lora", "urls": ["http://x/a"], "filenames": [{"filename": "a", "parts_number": 1}]},
            "not both",
        ),
        ({"checkpoint_type": "Lora"}, 'object has missing required properties (["urls"])'),
        ({"checkpoint_type": "Lora", "filenames": []}, "required minimum: 1"),
        ({"checkpoint_type": "Lora", "urls": ["file:///etc/passwd"]}, "http or https"),
        ({"checkpoint_type": "Lora", "urls": ["http://169.254.169.254/x"]}, "link-local"),
        ({"checkpoint_type": "Lora", "urls": ["http://[fe80::1]/x"]}, "link-local"),
        ({"checkpoint_type": "Lora", "urls": ["http://[::ffff:169.254.169.254]/x"]}, "link-local"),
        ({"checkpoint_type": "Lora", "urls": ["http://metadata.google.internal/x"]}, "metadata"),
        ({"checkpoint_type": "Lora", "urls": ["http:///nohost"]}, "no host"),
    ],
)
def test_create_refuses_bad_requests(api: Api, body: dict[str, Any], expected: str) -> None:
    response = api.post("/checkpoints", {"params": {"message": "m"}, **body})
    assert response.status_code == 400, response.text
    assert expected in message(response)
    assert api.get("/checkpoints").json()["data"]["checkpoints"] == []


def test_create_needs_params(api: Api) -> None:
    response = api.post("/checkpoints", {"checkpoint_type": "Lora", "urls": ["http://127.0.0.1/a"]})
    assert response.status_code == 400
    assert 'object has missing required properties (["params"])' in message(response)
    files = [{"filename": "a.pt", "parts_number": 1}]
    response = api.post("/checkpoints", {"checkpoint_type": "Lora", "params": {}, "filenames": files})
    assert response.status_code == 201, response.text
    assert response.json()["data"]["checkpoint"]["params"]["message"] == ""


def test_a_live_file_name_cannot_be_reused_in_its_type(api: Api) -> None:
    assert create_upload(api, {"style.safetensors": 1}, "Lora").status_code == 201
    duplicate = create_upload(api, {"other.safetensors": 1, "style.safetensors": 1}, "Lora")
    assert duplicate.status_code == 400
    assert message(duplicate) == "style.safetensors already exists, please use another or rename/delete exists"
    assert create_upload(api, {"style.safetensors": 1}, "VAE").status_code == 201


# -- list and get ------------------------------------------------------------------------------


def test_list_filters_and_paginates_newest_first(api: Api) -> None:
    ids = []
    for number in range(7):
        checkpoint_type = "Lora" if number % 2 else "VAE"
        if number < 3:
            ids.append(uploaded(api, {f"model-{number}.safetensors": b"m"}, checkpoint_type))
        else:
            response = create_upload(api, {f"model-{number}.safetensors": 1}, checkpoint_type)
            ids.append(response.json()["data"]["checkpoint"]["id"])

    seen: list[str] = []
    sizes = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["exclusive_start_key"] = cursor
        data = api.get("/checkpoints", params=params).json()["data"]
        sizes.append(len(data["checkpoints"]))
        seen += [item["id"] for item in data["checkpoints"]]
        cursor = data["last_evaluated_key"]
        if cursor is None:
            break
        assert isinstance(cursor, str)
    assert sizes == [3, 3, 1]
    assert seen == ids[::-1]

    def listed(**params: Any) -> list[str]:
        response = api.get("/checkpoints", params=params)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["data"]["checkpoints"]]

    assert listed(status="Active") == ids[:3][::-1]
    assert listed(status=["Active", "Initial"]) == ids[::-1]
    assert listed(types="Lora") == [ids[5], ids[3], ids[1]]
    assert listed(types=["Lora", "VAE"], status="Initial") == ids[3:][::-1]
    assert listed(types="VAE,Lora", status="Active", limit=1) == [ids[2]]
    assert listed(checkpoint_type="VAE", status="Active") == [ids[2], ids[0]]
    assert api.get("/checkpoints", params={"types": "Checkpoints"}).status_code == 400
    assert api.get("/checkpoints", params={"status": "Done"}).status_code == 400
    assert api.get("/checkpoints", params={"exclusive_start_key": "garbage!"}).status_code == 400
    assert api.get("/checkpoints", params={"limit": 0}).status_code == 400


def test_a_list_of_one_status_reads_only_that_status(api: Api) -> None:
    active = [uploaded(api, {f"active-{number}.safetensors": b"m"}, "Lora") for number in range(12)]
    initial = create_upload(api, {"initial.safetensors": 1}, "Lora").json()["data"]["checkpoint"]["id"]
    with items_read(api.services.checkpoints.table) as read:
        listed = api.get("/checkpoints", params={"status": "Initial", "limit": 5}).json()["data"]
    assert [item["id"] for item in listed["checkpoints"]] == [initial] and listed["last_evaluated_key"] is None
    assert {item.get("checkpoint_status") for item in read} == {"Initial"}

    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"status": "Active", "limit": 5, **({"exclusive_start_key": cursor} if cursor else {})}
        data = api.get("/checkpoints", params=params).json()["data"]
        seen += [item["id"] for item in data["checkpoints"]]
        if not (cursor := data["last_evaluated_key"]):
            break
    assert seen == active[::-1]
    renamed = api.put(f"/checkpoints/{active[0]}", {"name": "renamed.safetensors"})
    assert renamed.status_code == 200, renamed.text
    deleted = api.delete("/checkpoints", {"checkpoint_id_list": [active[1]]})
    assert deleted.status_code == 204, deleted.text
    listed_active = api.get("/checkpoints", params={"status": "Active", "limit": 50}).json()["data"]["checkpoints"]
    assert {item["id"] for item in listed_active} == set(active) - {active[1]}


def test_unknown_checkpoint_is_not_found(api: Api) -> None:
    response = api.get("/checkpoints/no-such-id")
    assert response.status_code == 404
    assert message(response) == "checkpoint not found with id no-such-id"
    assert api.put("/checkpoints/no-such-id", {"name": "x.pt"}).status_code == 404
    assert api.get("/checkpoints/" + "x" * 3000).status_code == 404


# -- ownership and permissions ----------------------------------------------------------------------


def test_users_see_only_checkpoints_of_their_roles(api: Api) -> None:
    api.make_role("artist", ["checkpoint:all"])
    api.make_user("ann", ["artist"])
    admins = uploaded(api, {"admin.safetensors": b"a"})
    anns = uploaded(api, {"ann.safetensors": b"b"}, user="ann")
    assert get_checkpoint(api, anns, user="ann")["allowed_roles_or_users"] == ["artist"]

    def listed(user: str) -> list[str]:
        return [item["id"] for item in api.get("/checkpoints", user=user).json()["data"]["checkpoints"]]

    assert listed("ann") == [anns]
    assert listed(ADMIN) == [admins]
    hidden = api.get(f"/checkpoints/{admins}", user="ann")
    assert hidden.status_code == 404 and message(hidden) == f"checkpoint not found with id {admins}"
    assert api.put(f"/checkpoints/{admins}", {"name": "stolen.safetensors"}, user="ann").status_code == 404
    refused = api.delete("/checkpoints", {"checkpoint_id_list": [anns, admins]}, user="ann")
    assert refused.status_code == 404
    assert get_checkpoint(api, anns, user="ann")["status"] == "Active"  # nothing deleted


def test_list_permission_alone_cannot_change_checkpoints(api: Api) -> None:
    api.make_role("viewer", ["checkpoint:list"])
    api.make_user("val", ["viewer"])
    checkpoint_id = uploaded(api, {"shared.safetensors": b"s"})
    api.services.tables["checkpoints"].update({"id": checkpoint_id}, {"allowed_roles_or_users": ["*"]})

    assert [item["id"] for item in api.get("/checkpoints", user="val").json()["data"]["checkpoints"]] == [checkpoint_id]
    created = create_upload(api, {"mine.safetensors": 1}, user="val")
    assert created.status_code == 403
    assert message(created).startswith("User val has no permissions")
    deleted = api.delete("/checkpoints", {"checkpoint_id_list": [checkpoint_id]}, user="val")
    assert deleted.status_code == 403 and message(deleted).startswith("User val has no permissions")
    renamed = api.put(f"/checkpoints/{checkpoint_id}", {"name": "x.safetensors"}, user="val")
    assert renamed.status_code == 403
    assert api.get("/checkpoints", user="nobody").status_code == 401


# -- rename and delete ----------------------------------------------------------------------------------


def test_rename_moves_the_file(api: Api) -> None:
    blobs = api.services.blobs
    checkpoint_id = uploaded(api, {"old.safetensors": b"weights"}, "Lora")
    uploaded(api, {"taken.safetensors": b"t"}, "Lora")
    old_key = key_of("Lora", checkpoint_id, "old.safetensors")
    new_key = key_of("Lora", checkpoint_id, "new.safetensors")

    taken = api.put(f"/checkpoints/{checkpoint_id}", {"name": "taken.safetensors"})
    assert taken.status_code == 400 and "already exists" in message(taken)
    assert api.put(f"/checkpoints/{checkpoint_id}", {"name": "../new.safetensors"}).status_code == 400

    renamed = api.put(f"/checkpoints/{checkpoint_id}", {"name": "new.safetensors"})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["checkpoint"]["status"] == "Active"
    assert blobs.size(old_key) is None
    assert blobs.get(new_key) == b"weights"
    assert get_checkpoint(api, checkpoint_id)["name"] == ["new.safetensors"]
    # the old name is free again, the new one is taken
    assert create_upload(api, {"old.safetensors": 1}, "Lora").status_code == 201
    assert create_upload(api, {"new.safetensors": 1}, "Lora").status_code == 400

    pending = create_upload(api, {"pending.safetensors": 1}, "Lora").json()["data"]["checkpoint"]["id"]
    assert api.put(f"/checkpoints/{pending}", {"name": "p2.safetensors"}).status_code == 400
    two_files = uploaded(api, {"one.pt": b"1", "two.pt": b"2"}, "Lora")
    assert api.put(f"/checkpoints/{two_files}", {"name": "three.pt"}).status_code == 400


def test_delete_removes_files_uploads_and_records(api: Api) -> None:
    blobs = api.services.blobs
    active = uploaded(api, {"gone.safetensors": b"bytes"}, "ControlNet")
    pending = create_upload(api, {"half.safetensors": 2}, "ControlNet").json()["data"]
    pending_id = pending["checkpoint"]["id"]
    put_parts(api, pending["s3PresignUrl"]["half.safetensors"][:1], [b"x" * (5 * MIB)])
    assert blobs.size(key_of("ControlNet", active, "gone.safetensors")) == 5

    missing = api.delete("/checkpoints", {"checkpoint_id_list": [active, "no-such-id"]})
    assert missing.status_code == 404 and message(missing) == "checkpoint not found with id no-such-id"
    assert get_checkpoint(api, active)["status"] == "Active"

    deleted = api.delete("/checkpoints", {"checkpoint_id_list": [active, pending_id, active]})
    assert deleted.status_code == 204
    assert deleted.content == b""
    for checkpoint_id in (active, pending_id):
        assert api.get(f"/checkpoints/{checkpoint_id}").status_code == 404
        assert blobs.list(f"ControlNet/checkpoint/custom/{checkpoint_id}/") == []
    upload = pending["checkpoint"]["params"]["multipart_upload"]["half.safetensors"]
    with pytest.raises(BlobError):  # the unfinished upload was aborted
        blobs.list_parts(upload["key"], upload["upload_id"])
    assert api.put_url(pending["s3PresignUrl"]["half.safetensors"][1], b"late").status_code != 200
    assert blobs.size(upload["key"]) is None
    assert api.get("/checkpoints").json()["data"]["checkpoints"] == []
    assert api.delete("/checkpoints", {}).status_code == 400


# -- download from URLs ----------------------------------------------------------------------------------


def test_download_from_urls_becomes_active(api: Api, model_host: str) -> None:
    urls = [
        f"{model_host}/files/plain-model.safetensors",
        f"http://user:pass@{model_host.removeprefix('http://')}/download?token={SECRET}",
        f"{model_host}/quoted",
    ]
    created = api.post("/checkpoints", {"checkpoint_type": "Lora", "params": {"message": "dl"}, "urls": urls})
    assert created.status_code == 202, created.text
    body = created.json()
    assert body["message"] == "Checkpoint creation in progress, please check later"
    checkpoint_id = body["data"]["checkpoint"]["id"]
    assert body["data"]["checkpoint"]["status"] == "Initial"

    checkpoint = wait_for_end(api, checkpoint_id)
    assert checkpoint["status"] == "Active", checkpoint
    assert checkpoint["name"] == ["plain-model.safetensors", "my loraé.safetensors", "evil.pt"]
    blobs = api.services.blobs
    assert blobs.get(key_of("Lora", checkpoint_id, "plain-model.safetensors")) == BODY
    assert blobs.get(key_of("Lora", checkpoint_id, "my loraé.safetensors")) == BODY
    assert blobs.get(key_of("Lora", checkpoint_id, "evil.pt")) == b"tiny"
    stored = api.services.tables["checkpoints"].get({"id": checkpoint_id})
    assert SECRET not in str(stored) and "pass" not in str(stored.get("source_urls"))

    # the downloaded names are taken now
    assert create_upload(api, {"plain-model.safetensors": 1}, "Lora").status_code == 400


def test_download_follows_redirects(api: Api, model_host: str) -> None:
    created = api.post(
        "/checkpoints", {"checkpoint_type": "VAE", "params": {"message": ""}, "urls": [f"{model_host}/redirect"]}
    )
    assert created.status_code == 202
    checkpoint = wait_for_end(api, created.json()["data"]["checkpoint"]["id"])
    assert checkpoint["status"] == "Active" and checkpoint["name"] == ["plain-model.safetensors"]


@pytest.mark.parametrize(
    ("path", "reason"),
    [(f"/missing?token={SECRET}", "404 Not Found"), ("/redirect-to-metadata", "link-local")],
)
def test_failed_download_records_why(api: Api, model_host: str, path: str, reason: str) -> None:
    urls = [f"{model_host}/files/plain-model.safetensors", model_host + path]
    created = api.post("/checkpoints", {"checkpoint_type": "Lora", "params": {"message": ""}, "urls": urls})
    assert created.status_code == 202
    checkpoint_id = created.json()["data"]["checkpoint"]["id"]
    checkpoint = wait_for_end(api, checkpoint_id)
    assert checkpoint["status"] == "Failed"
    assert reason in checkpoint["error"]
    assert model_host + path.split("?")[0] in checkpoint["error"]
    assert SECRET not in checkpoint["error"]
    assert api.services.blobs.list(f"Lora/checkpoint/custom/{checkpoint_id}/") == []
    # a failed checkpoint holds no name, and can be deleted
    assert create_upload(api, {"plain-model.safetensors": 1}, "Lora").status_code == 201
    assert api.delete("/checkpoints", {"checkpoint_id_list": [checkpoint_id]}).status_code == 204


def test_routes_carry_the_api_pages_operation_ids(api: Api) -> None:
    spec = api.client.get("/prod/api").json()
    operations = {
        operation["operationId"]
        for path, methods in spec["paths"].items()
        if path.startswith("/prod/checkpoints")
        for operation in methods.values()
    }
    expected = {"CreateCheckpoint", "UpdateCheckpoint", "DeleteCheckpoints", "ListCheckpoints", "GetCheckpoint"}
    assert operations == expected
