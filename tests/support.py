"""Test support: the constants of the test deployment and `Api`, an HTTP helper over the app."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
from fastapi.testclient import TestClient

from middleware_api.container import Services
from middleware_api.settings import Settings

API_KEY = "test-deployment-key"
ADMIN = "admin"
ADMIN_PASSWORD = "admin-password-1"
BUCKET = "esd-test-bucket"
TABLE_PREFIX = "esd-test-"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def aws_settings(moto_url: str) -> Settings:
    """Fresh moto state with the bucket and every table, and settings pointing at it."""
    import boto3

    from middleware_api.adapters.aws.tables import create_tables

    requests.post(f"{moto_url}/moto-api/reset", timeout=10).raise_for_status()
    boto3.client("s3", endpoint_url=moto_url, region_name=REGION).create_bucket(Bucket=BUCKET)
    create_tables(boto3.client("dynamodb", endpoint_url=moto_url, region_name=REGION), TABLE_PREFIX)
    return Settings(
        backend="aws",
        api_key=API_KEY,
        bucket=BUCKET,
        table_prefix=TABLE_PREFIX,
        region=REGION,
        aws_endpoint_url=moto_url,
    )


class Api:
    """Calls the app like a client: the deployment key and a `username` header by default."""

    def __init__(self, client: TestClient, services: Services) -> None:
        self.client = client
        self.services = services

    def call(
        self, method: str, path: str, *, user: str | None = ADMIN, key: str | None = API_KEY, **options: Any
    ) -> Any:
        headers = dict(options.pop("headers", {}))
        if key is not None:
            headers["x-api-key"] = key
        if user is not None:
            headers["username"] = user
        return self.client.request(method, f"/prod{path}", headers=headers, **options)

    def get(self, path: str, **options: Any) -> Any:
        return self.call("GET", path, **options)

    def post(self, path: str, json: Any = None, **options: Any) -> Any:
        return self.call("POST", path, json=json, **options)

    def put(self, path: str, json: Any = None, **options: Any) -> Any:
        return self.call("PUT", path, json=json, **options)

    def delete(self, path: str, json: Any = None, **options: Any) -> Any:
        return self.call("DELETE", path, json=json, **options)

    def put_url(self, url: str, data: bytes) -> Any:
        """PUT bytes to a presigned URL: the app's own (embedded) or moto's S3 (aws)."""
        if url.startswith("http://testserver"):
            return self.client.put(url, content=data)
        return requests.put(url, data=data, timeout=30)

    def get_url(self, url: str) -> Any:
        if url.startswith("http://testserver"):
            return self.client.get(url)
        return requests.get(url, timeout=30)

    def make_user(self, username: str, roles: list[str], password: str = "user-password-1") -> None:
        response = self.post("/users", {"username": username, "password": password, "roles": roles})
        assert response.status_code in (200, 201), response.text

    def make_role(self, name: str, permissions: list[str]) -> None:
        response = self.post("/roles", {"role_name": name, "permissions": permissions})
        assert response.status_code in (200, 201), response.text


def served_env(engine_url: str, **settings: str) -> dict[str, str]:
    """The environment of a served middleware: the test key and admin password, this engine, and `settings`
    (`ESD_*` names without the prefix, e.g. `ENGINE_TIMEOUT_S="2"`)."""
    env = {"ESD_API_KEY": API_KEY, "ESD_ADMIN_PASSWORD": ADMIN_PASSWORD, "ESD_ENGINE_URL": engine_url}
    return {**env, **{f"ESD_{name}": value for name, value in settings.items()}}


class ServerProcess:
    """`python -m middleware_api serve` in a child process, with what it printed at start."""

    def __init__(self, data_dir: Path, port: int, env: dict[str, str] | None = None) -> None:
        self.url = f"http://127.0.0.1:{port}/prod"
        command = [sys.executable, "-m", "middleware_api", "serve", "--port", str(port), "--data-dir", str(data_dir)]
        clean_env = {name: value for name, value in os.environ.items() if not name.startswith("ESD_")}
        self.process = subprocess.Popen(
            command, env={**clean_env, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.banner: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.process.stdout.readline() if self.process.stdout else ""
            if not line and self.process.poll() is not None:
                raise RuntimeError("server exited at start:\n" + "".join(self.banner))
            self.banner.append(line)
            if "Uvicorn running" in line or "Application startup complete" in line:
                break
        threading.Thread(target=self._drain, daemon=True).start()
        wait_until(lambda: _answers(self.url + "/ping"), timeout_s=30)

    def _drain(self) -> None:
        for _ in self.process.stdout or ():
            pass

    def printed(self, label: str) -> str | None:
        """The value after `label` on the banner line that has it."""
        for line in self.banner:
            if label in line:
                return line.split(label, 1)[1].split()[0]
        return None

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code in (200, 403)
    except requests.ConnectionError:
        return False


def wait_until(condition: Any, timeout_s: float = 10, interval_s: float = 0.02) -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s} s")


class EngineDouble:
    """The engine double (`python -m middleware_api.worker.engine_double`) in a child process."""

    def __init__(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "middleware_api.worker.engine_double", "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: _answers(f"{self.url}/internal/ping"), timeout_s=30)

    def set_mode(self, mode: str, delay_s: float = 0) -> None:
        requests.post(f"{self.url}/double/mode", json={"mode": mode, "delay_s": delay_s}, timeout=5).raise_for_status()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@contextlib.contextmanager
def items_read(table: Any) -> Iterator[list[dict[str, Any]]]:
    """Within the block, every item `table.query` reads (what its filter is shown) is appended to the list."""
    read: list[dict[str, Any]] = []
    original_query = table.query

    def recording_query(partition: str, *, where: Any = None, **options: Any) -> Any:
        def recording(item: dict[str, Any]) -> bool:
            read.append(item)
            return where is None or where(item)

        return original_query(partition, where=recording, **options)

    table.query = recording_query
    try:
        yield read
    finally:
        del table.query
