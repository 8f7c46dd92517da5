"""Fixtures of the extension's tests: a real middleware and engine double (session), clients, a private HOME.

Run in each WebUI's environment with `--confcutdir tests/extension`, so the middleware's
own conftest is not loaded; the middleware runs in `ESD_SERVER_PYTHON` (default: this
Python). When no Python can run it, the tests that need it are skipped with the reason.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from ext_support import ADMIN, API_KEY, Endpoints, Engine, MiB, Middleware, server_python, wait_until

from aws_extension.client import MiddlewareClient
from aws_extension.upload import upload_file


@pytest.fixture(scope="session")
def middleware_python() -> str:
    python, reason = server_python()
    if python is None:
        pytest.skip(reason)
    return python


@pytest.fixture(scope="session")
def engine(middleware_python: str) -> Iterator[Engine]:
    double = Engine(middleware_python)
    yield double
    double.stop()


@pytest.fixture(scope="session")
def middleware(
    middleware_python: str, engine: Engine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Middleware]:
    server = Middleware(middleware_python, tmp_path_factory.mktemp("middleware-data"), engine.url)
    yield server
    server.stop()


@pytest.fixture
def client(middleware: Middleware) -> Iterator[MiddlewareClient]:
    """The admin, with the deployment's key."""
    api = MiddlewareClient(middleware.url, API_KEY, ADMIN)
    yield api
    api.close()


@pytest.fixture(scope="session")
def endpoints(middleware: Middleware, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    api = MiddlewareClient(middleware.url, API_KEY, ADMIN)
    names = {}
    for kind in ("Async", "Real-time"):
        created = api.create_endpoint(kind, name="ext-jobs", roles=["IT Operator"], autoscaling=False)
        names[kind] = created["endpoint_name"]

    def in_service() -> bool:
        statuses = {item["endpoint_name"]: item["endpoint_status"] for item in api.iter_endpoints()}
        failed = [name for name in names.values() if statuses.get(name) == "Failed"]
        assert not failed, f"endpoints failed to start: {failed}"
        return all(statuses.get(name) == "InService" for name in names.values())

    wait_until(in_service, timeout_s=90, interval_s=0.2)
    model = tmp_path_factory.mktemp("model") / f"ext-tiny-{uuid.uuid4().hex[:8]}.safetensors"
    model.write_bytes(b"weights" * (MiB // 64))
    upload_file(api, model, "Stable-diffusion")
    yield Endpoints(names, {"Stable-diffusion": [model.name], "VAE": ["Automatic"]})
    api.close()


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private HOME, without ESD_EXTENSION_CONFIG: the settings file goes to its default place there."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("ESD_EXTENSION_CONFIG", raising=False)
    return home
