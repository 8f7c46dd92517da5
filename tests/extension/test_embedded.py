"""The embedded middleware as a child process: start, connect, stop, restart with the same secrets, reuse one left
running, say why a start failed; its Python environment made once (uv, offline); the UI's start and stop.

Tests pass `python=` (the middleware's own environment) to skip making one, except the slow test that makes it.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from ext_support import ROOT, Engine, wait_until

from aws_extension import config, embedded
from aws_extension.client import MiddlewareClient
from aws_extension.embedded import EmbeddedError, EmbeddedMiddleware
from aws_extension.ui import handlers as h


@pytest.fixture(autouse=True)
def private_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "connection.json"
    monkeypatch.setenv("ESD_EXTENSION_CONFIG", str(path))
    return path


@pytest.fixture
def no_shared(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The UI's shared instance starts empty and is stopped after the test."""
    monkeypatch.setattr(embedded, "_shared", None)
    yield
    embedded.stop_shared()


def _answers(url: str, key: str) -> bool:
    try:
        return requests.get(f"{url}/ping", headers={"x-api-key": key}, timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_start_stop_restart_and_reuse(
    middleware_python: str, engine: Engine, tmp_path: Path, private_config: Path
) -> None:
    data_dir = tmp_path / "embedded"
    middleware = EmbeddedMiddleware(data_dir, python=middleware_python, engine_url=engine.url)
    assert not middleware.running and middleware.url is None
    connection = middleware.start()
    try:
        assert middleware.running and connection.api_url == middleware.url
        assert connection.username == "admin" and connection.password
        assert config.load_connection() == connection  # saved as the extension's connection
        assert _mode(private_config) == 0o600 and _mode(data_dir / "secrets.json") == 0o600
        client = MiddlewareClient.from_connection(connection)
        report = client.check_connection(connection.password)
        client.close()
        assert report.ok, report.summary()

        # a second instance on the same folder (a reloaded UI) reuses the running middleware
        again = EmbeddedMiddleware(data_dir, python=middleware_python, engine_url=engine.url)
        assert again.start() == connection and again.url == middleware.url
        again.stop()
        wait_until(lambda: not middleware.running, timeout_s=20)
        assert not _answers(connection.api_url, connection.api_key)
    finally:
        middleware.stop()

    # a restart keeps the key and the admin's password
    restarted = middleware.start()
    try:
        assert (restarted.api_key, restarted.password) == (connection.api_key, connection.password)
        client = MiddlewareClient.from_connection(restarted)
        assert client.check_connection(restarted.password).ok
        client.close()
    finally:
        middleware.stop()
    assert not middleware.running and middleware.url is None
    assert not _answers(restarted.api_url, restarted.api_key)


def test_a_failed_start_says_why(tmp_path: Path) -> None:
    fake = tmp_path / "fake-python"
    fake.write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named fastapi' >&2\nexit 3\n")
    fake.chmod(0o755)
    middleware = EmbeddedMiddleware(tmp_path / "embedded", python=str(fake), start_timeout_s=20)
    with pytest.raises(EmbeddedError) as caught:
        middleware.start()
    assert "exited at start (code 3)" in str(caught.value) and "No module named fastapi" in str(caught.value)
    assert not middleware.running
    assert "No module named fastapi" in (tmp_path / "embedded" / "middleware.log").read_text()


@pytest.mark.slow
def test_environment_is_made_once_with_uv_offline(tmp_path: Path, engine: Engine) -> None:
    if shutil.which("uv") is None:
        pytest.skip("uv is not installed: making the environment with pip needs the network")
    middleware = EmbeddedMiddleware(tmp_path / "embedded", engine_url=engine.url, offline=True, save_connection=False)
    assert not middleware.environment_ready()
    try:
        python = middleware.ensure_environment()
    except EmbeddedError as exc:
        pytest.skip(f"uv's cache cannot make the environment offline here: {exc}")
    assert Path(python) == tmp_path / "embedded" / "python" / "bin" / "python"
    assert middleware.environment_ready()
    assert middleware.ensure_environment() == python  # made once
    connection = middleware.start()
    try:
        assert _answers(connection.api_url, connection.api_key)
    finally:
        middleware.stop()


def test_the_ui_starts_and_stops_it(middleware_python: str, engine: Engine, tmp_path: Path, no_shared: None) -> None:
    session = h.CloudSession(embedded_dir=str(tmp_path / "embedded"), embedded_options={"python": middleware_python})
    session.connection = None
    assert "is not running" in h.embedded_status(session)
    messages = list(h.start_embedded(session, engine.url, poll_s=0.1))
    assert messages[0] == "Starting the embedded middleware …"
    assert messages[-1].startswith("✓ The embedded middleware runs on"), messages
    assert session.connection is not None and session.username == "admin"
    assert session.permissions and "checkpoint:all" in session.permissions
    assert h.embedded_status(session).startswith("✓ The embedded middleware runs on")
    running = embedded.shared()
    assert running is not None and running.engine_url == engine.url
    assert h.list_endpoints(session).info == "0 endpoint(s)"
    assert h.stop_embedded(session) == "✓ The embedded middleware stopped."
    assert session.connection is None and not running.running
    assert h.stop_embedded(session) == "The embedded middleware was not running."


def test_it_stops_when_the_webui_dies_without_cleaning_up(middleware_python: str, tmp_path: Path) -> None:
    """A1111 ends with `os._exit` on Ctrl-C (no atexit): the child notices its parent is gone and stops."""
    data_dir = tmp_path / "embedded"
    code = (
        "import os, sys\n"
        "from aws_extension.embedded import EmbeddedMiddleware\n"
        f"EmbeddedMiddleware({str(data_dir)!r}, python={middleware_python!r}, save_connection=False).start()\n"
        "os._exit(0)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, env=env, cwd=tmp_path)
    state = json.loads((data_dir / "embedded.json").read_text())
    wait_until(lambda: not embedded._alive(state["pid"]), timeout_s=20, interval_s=0.2)
    assert "Finished server process" in (data_dir / "middleware.log").read_text()
