"""The connection settings file, the connection check and the API client against a real middleware."""

from __future__ import annotations

import http.server
import json
import os
import stat
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from ext_support import ADMIN, ADMIN_PASSWORD, API_KEY, ROOT, Middleware, free_port, wait_until

from aws_extension.client import KEY_REFUSED, ApiError, MiddlewareClient, NetworkError
from aws_extension.config import (
    ConfigError,
    Connection,
    config_path,
    forget_connection,
    load_connection,
    normalize_api_url,
    save_connection,
)

# -- importing ----------------------------------------------------------------------------------


def test_import_is_fast_does_no_network_and_pulls_in_no_server_or_ui_library() -> None:
    # CPU time, not wall time: other processes on a loaded machine must not fail the test
    code = (
        "import socket, sys, time\n"
        "def refuse(*args, **kwargs):\n"
        "    raise AssertionError('network use while importing')\n"
        "socket.socket.connect = socket.create_connection = socket.getaddrinfo = refuse\n"
        "start = time.process_time()\n"
        "import aws_extension, aws_extension.config, aws_extension.client, aws_extension.upload, aws_extension.jobs\n"
        "elapsed = time.process_time() - start\n"
        "heavy = [m for m in ('requests', 'pydantic', 'fastapi', 'gradio', 'middleware_api') if m in sys.modules]\n"
        "print(elapsed, ','.join(heavy))\n"
    )
    timings = []
    for _ in range(5):
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
        elapsed, _, heavy = out.stdout.strip().partition(" ")
        assert heavy == "", f"importing aws_extension imported {heavy}"
        timings.append(float(elapsed))
    print(f"import aws_extension.*: {min(timings) * 1000:.1f} ms CPU (best of 5)")
    assert min(timings) < 0.1


# -- settings file ----------------------------------------------------------------------------------


def test_saved_connection_is_private_and_reloads(config_home: Path) -> None:
    connection = Connection("http://127.0.0.1:8080/prod/", "secret-key", "ana", "secret-password")
    path = save_connection(connection)
    assert path == config_home / ".config" / "esd-webui" / "connection.json" == config_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    loaded = load_connection()
    assert loaded == Connection("http://127.0.0.1:8080/prod", "secret-key", "ana", "secret-password")

    save_connection(Connection("http://127.0.0.1:9090", "other-key", "bob"))  # overwrite: still 0600, no leftovers
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [item.name for item in path.parent.iterdir()] == ["connection.json"]
    assert load_connection() == Connection("http://127.0.0.1:9090/prod", "other-key", "bob", None)

    assert forget_connection() is True
    assert load_connection() is None
    assert forget_connection() is False


def test_settings_file_named_by_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    monkeypatch.setenv("ESD_EXTENSION_CONFIG", str(shared / "esd.json"))
    save_connection(Connection("https://gw.example.com/dev/", "key"))
    assert stat.S_IMODE((shared / "esd.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755  # a folder the user named is not ours to change
    assert load_connection() == Connection("https://gw.example.com/dev", "key")


def test_a_loose_file_is_tightened_and_a_broken_one_is_reported(config_home: Path) -> None:
    path = config_path()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"api_url": "http://h:1/prod", "api_key": "k"}))
    os.chmod(path, 0o644)
    assert load_connection() == Connection("http://h:1/prod", "k")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_connection()
    path.write_text(json.dumps({"api_url": "http://h:1/prod"}))
    with pytest.raises(ConfigError, match="api_key"):
        load_connection()


def test_repr_never_shows_secrets() -> None:
    connection = Connection("http://h:1/prod", "the-api-key", "ana", "the-password")
    client = MiddlewareClient.from_connection(connection)
    for text in (repr(connection), str(connection), repr(client)):
        assert "the-api-key" not in text and "the-password" not in text
    assert "ana" in repr(connection) and "http://h:1/prod" in repr(client)


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/prod"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/prod"),
        (" http://127.0.0.1:8080/prod/ ", "http://127.0.0.1:8080/prod"),
        (
            "HTTPS://abc.execute-api.us-east-1.amazonaws.com/prod",
            "https://abc.execute-api.us-east-1.amazonaws.com/prod",
        ),
        ("https://proxy.example.com/esd/prod//", "https://proxy.example.com/esd/prod"),
    ],
)
def test_api_url_is_normalized(given: str, stored: str) -> None:
    assert normalize_api_url(given) == stored


@pytest.mark.parametrize("bad", ["", "127.0.0.1:8080", "ftp://host/prod", "http:///prod", "http://h/prod?x=1"])
def test_bad_api_urls_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError):
        normalize_api_url(bad)


# -- connection check -----------------------------------------------------------------------------


def test_check_connection_passes_every_step(middleware: Middleware) -> None:
    report = MiddlewareClient(middleware.url, API_KEY, ADMIN).check_connection()
    assert report.ok, report.summary()
    assert [check.name for check in report.checks] == ["reach", "api key", "version", "user"]
    assert report.api_version == "1.5.0" and report.step("version").detail == "1.5.0"
    with_password = MiddlewareClient(middleware.url, API_KEY, ADMIN).check_connection(password=ADMIN_PASSWORD)
    assert with_password.ok and "signed in as admin" in with_password.step("user").detail


def test_wrong_key_fails_the_api_key_step(middleware: Middleware) -> None:
    report = MiddlewareClient(middleware.url, "wrong-key", ADMIN).check_connection()
    assert not report.ok
    assert report.failed is not None and report.failed.name == "api key"
    assert "API key was refused" in report.failed.detail
    assert report.step("reach").ok is True
    assert report.step("version").ok is None and report.step("user").ok is None
    assert report.summary().startswith("api key failed: the API key was refused")


def test_unknown_user_or_wrong_password_fails_the_user_step(middleware: Middleware) -> None:
    report = MiddlewareClient(middleware.url, API_KEY, "nobody-here").check_connection()
    assert report.failed is not None and report.failed.name == "user"
    assert "nobody-here does not exist" in report.failed.detail
    assert report.step("version").ok is True
    report = MiddlewareClient(middleware.url, API_KEY, ADMIN).check_connection(password="not-the-password")
    assert report.failed is not None and report.failed.name == "user"
    assert "wrong username or password" in report.failed.detail
    report = MiddlewareClient(middleware.url, API_KEY).check_connection()
    assert report.failed is not None and "no username set" in report.failed.detail


def test_unreachable_url_fails_the_reach_step() -> None:
    report = MiddlewareClient(f"http://127.0.0.1:{free_port()}/prod", API_KEY, ADMIN, timeout=3).check_connection()
    assert report.failed is not None and report.failed.name == "reach"
    assert "cannot reach" in report.failed.detail and "cannot connect" in report.failed.detail
    assert [check.ok for check in report.checks] == [False, None, None, None]


def test_url_without_the_stage_fails_the_reach_step(middleware: Middleware) -> None:
    wrong = middleware.url.rsplit("/prod", 1)[0] + "/dev"
    report = MiddlewareClient(wrong, API_KEY, ADMIN).check_connection()
    assert report.failed is not None and report.failed.name == "reach"
    assert "no ESD API" in report.failed.detail


class _FakeApi(http.server.BaseHTTPRequestHandler):
    version_header: str | None = None
    body = json.dumps({"statusCode": 200, "message": "pong"}).encode()

    def do_GET(self) -> None:  # noqa: N802
        body = self.body
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.version_header:
            self.send_header("x-api-version", self.version_header)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_api() -> Iterator[tuple[str, type[_FakeApi]]]:
    handler = type("Handler", (_FakeApi,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/prod", handler
    server.shutdown()
    server.server_close()


def test_version_step_needs_the_header_and_major_version_1(fake_api: tuple[str, type[_FakeApi]]) -> None:
    url, handler = fake_api
    report = MiddlewareClient(url, "key", ADMIN).check_connection()
    assert report.failed is not None and report.failed.name == "version"
    assert "no x-api-version header" in report.failed.detail
    handler.version_header = "2.0.0"
    report = MiddlewareClient(url, "key", ADMIN).check_connection()
    assert report.failed is not None and report.failed.name == "version"
    assert "2.0.0 is not supported" in report.failed.detail
    assert report.step("user").ok is None


def test_an_answer_that_is_not_the_api_envelope_is_an_error(fake_api: tuple[str, type[_FakeApi]]) -> None:
    url, handler = fake_api
    handler.body = b"<html>a login page of some proxy</html>"
    with pytest.raises(ApiError) as caught:
        MiddlewareClient(url, "key", ADMIN).list_roles()
    assert caught.value.status == 200 and "not an ESD API envelope" in caught.value.message
    report = MiddlewareClient(url, "key", ADMIN).check_connection()
    assert report.failed is not None and report.failed.name == "reach"


# -- API calls ------------------------------------------------------------------------------------


def test_api_error_carries_the_middleware_message(client: MiddlewareClient, middleware: Middleware) -> None:
    with pytest.raises(ApiError) as caught:
        client.delete_roles(["IT Operator"])
    assert caught.value.status == 400 and caught.value.message == "cannot delete default role"
    assert "DELETE /roles" in str(caught.value)
    with pytest.raises(ApiError) as caught:
        client.get_checkpoint("no-such-id")
    assert caught.value.status == 404 and caught.value.message == "checkpoint not found with id no-such-id"
    with pytest.raises(ApiError) as caught:
        MiddlewareClient(middleware.url, "wrong-key", ADMIN).list_roles()
    assert caught.value.status == 403 and caught.value.message == KEY_REFUSED
    with pytest.raises(ApiError) as caught:
        client.create_role("bad role!", ["role:all"])
    assert caught.value.status == 400 and "role_name must be" in caught.value.message
    with pytest.raises(ApiError) as caught:
        MiddlewareClient(middleware.url, API_KEY, "ghost-user").list_roles()
    assert caught.value.status == 401 and "user ghost-user is unknown" in caught.value.message
    with pytest.raises(NetworkError) as unreachable:
        MiddlewareClient(f"http://127.0.0.1:{free_port()}/prod", API_KEY, ADMIN).ping()
    assert unreachable.value.status == 0


def test_roles_and_users_with_pagination(client: MiddlewareClient) -> None:
    tag = uuid.uuid4().hex[:6]
    roles = [f"ext-role-{tag}-{index}" for index in range(5)]
    for role in roles:
        assert client.create_role(role, ["checkpoint:all", "inference:all"])["statusCode"] == 201
    assert client.create_role(roles[0], ["checkpoint:all"])["statusCode"] == 200  # an update

    pages, cursor, seen = 0, None, []
    while True:
        page = client.list_roles(limit=2, cursor=cursor)
        assert len(page.items) <= 2
        seen += [role["role_name"] for role in page.items]
        pages += 1
        cursor = page.cursor
        if cursor is None:
            break
    assert pages >= 4 and set(roles) <= set(seen) and len(seen) == len(set(seen))
    assert [role["role_name"] for role in client.iter_roles(page_size=3)] == seen
    assert next(r for r in client.iter_roles() if r["role_name"] == roles[0])["permissions"] == ["checkpoint:all"]

    user = f"ext-user-{tag}"
    assert client.create_user(user, "user-password-1", [roles[1]])["statusCode"] == 201
    listed = {item["username"]: item for item in client.iter_users(page_size=1)}
    assert listed[user]["roles"] == [roles[1]] and listed[user]["password"] == "********"
    assert MiddlewareClient(client.api_url, API_KEY, user).check_connection(password="user-password-1").ok
    client.delete_users([user])
    assert user not in {item["username"] for item in client.iter_users()}
    client.delete_roles(roles)
    assert not set(roles) & {role["role_name"] for role in client.iter_roles()}


def test_checkpoints_list_get_rename_delete(client: MiddlewareClient, tmp_path: Path) -> None:
    from aws_extension.upload import upload_file

    tag = uuid.uuid4().hex[:6]
    ids = []
    for index in range(3):
        path = tmp_path / f"ext-lora-{tag}-{index}.safetensors"
        path.write_bytes(os.urandom(1000 + index))
        done = upload_file(client, path, "Lora", message="from the test")
        assert done["status"] == "Active" and done["type"] == "Lora"
        ids.append(done["id"])
    page = client.list_checkpoints(types=["Lora"], statuses=["Active"], limit=2)
    assert len(page.items) == 2 and page.cursor
    mine = [item for item in client.iter_checkpoints(types=["Lora"], page_size=1) if item["id"] in ids]
    assert [item["id"] for item in mine] == ids[::-1]  # newest first
    assert all(item["type"] == "Lora" for item in client.iter_checkpoints(types=["Lora"]))
    assert not [item for item in client.iter_checkpoints(statuses=["Initial"]) if item["id"] in ids]

    one = client.get_checkpoint(ids[0])
    assert one["name"] == [f"ext-lora-{tag}-0.safetensors"] and one["params"]["message"] == "from the test"
    renamed = client.rename_checkpoint(ids[0], f"ext-renamed-{tag}.safetensors")
    assert renamed["id"] == ids[0]
    assert client.get_checkpoint(ids[0])["name"] == [f"ext-renamed-{tag}.safetensors"]
    client.delete_checkpoints(ids)
    with pytest.raises(ApiError) as caught:
        client.get_checkpoint(ids[1])
    assert caught.value.status == 404


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[str, bytes]]:
    """A local HTTP server with one model file (there is no internet here)."""
    content = os.urandom(200_000)
    (tmp_path / "served").mkdir()
    name = f"ext-vae-{uuid.uuid4().hex[:6]}.safetensors"
    (tmp_path / "served" / name).write_bytes(content)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(tmp_path / "served"), **kwargs)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{name}", content
    server.shutdown()
    server.server_close()


def test_checkpoint_from_url(client: MiddlewareClient, middleware: Middleware, file_server: tuple[str, bytes]) -> None:
    url, content = file_server
    created = client.create_checkpoint_from_urls("VAE", [url], message="by url")
    assert created["status"] == "Initial"
    done = wait_until(lambda: client.get_checkpoint(created["id"])["status"] == "Active" or None, timeout_s=20)
    assert done
    checkpoint = client.get_checkpoint(created["id"])
    name = url.rsplit("/", 1)[1]
    assert checkpoint["name"] == [name]
    assert middleware.blob_path(checkpoint, name).read_bytes() == content
    client.delete_checkpoints([created["id"]])


def test_personal_token_acts_as_its_user(client: MiddlewareClient, middleware: Middleware) -> None:
    token = client.create_token(f"ext-token-{uuid.uuid4().hex[:6]}", expires_in_days=1)
    assert token["token"].startswith("esd_pat_") and token["username"] == ADMIN
    as_token = MiddlewareClient(middleware.url, token["token"])
    assert as_token.ping()["message"] == "pong"
    assert as_token.list_roles(limit=1).items
    assert token["token_id"] in {item["token_id"] for item in client.list_tokens().items}
    client.delete_tokens([token["token_id"]])
    with pytest.raises(ApiError) as caught:
        as_token.ping()
    assert caught.value.message == KEY_REFUSED


def test_endpoints_and_inferences_lists(client: MiddlewareClient) -> None:
    assert isinstance(client.list_endpoints().items, list)
    page = client.list_inferences(statuses=["succeed"], task_types=["txt2img"], limit=5)
    assert all(job["status"] == "succeed" for job in page.items)
    with pytest.raises(ApiError) as caught:
        client.list_inferences(statuses=["bogus"])
    assert caught.value.status == 400 and "status must be one of" in caught.value.message
