"""Support of the extension's tests: a real middleware and engine double in child processes, and a faulty transport.

Named `ext_support` (not `support`) so it never shadows `tests/support.py` when both
folders are on `sys.path` (a plain `pytest` run over the whole tree).
The middleware runs in its own environment (`ESD_SERVER_PYTHON`): the WebUI's
environments (pydantic 1 or old FastAPI) cannot import it, and the extension never does.
"""

from __future__ import annotations

import collections
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from requests.adapters import HTTPAdapter

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "ext-test-deployment-key"
ADMIN = "admin"
ADMIN_PASSWORD = "admin-password-1"
ENGINE_TIMEOUT_S = 30  # a hanging engine request fails after this long, whatever a test forgets
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MiB = 1 << 20


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition: Callable[[], Any], timeout_s: float = 10, interval_s: float = 0.05) -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s} s")


def server_python() -> tuple[str | None, str]:
    """A Python that can run the middleware (`ESD_SERVER_PYTHON`, else this one), or None and why not."""
    candidates = [os.environ.get("ESD_SERVER_PYTHON") or "", sys.executable]
    reasons = []
    for python in dict.fromkeys(filter(None, candidates)):
        probe = subprocess.run(
            [python, "-c", "import middleware_api.app, uvicorn"], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        if probe.returncode == 0:
            return python, ""
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        reasons.append(f"{python}: {last}")
    return None, "no Python here can run the middleware (set ESD_SERVER_PYTHON): " + "; ".join(reasons)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code in (200, 403)
    except requests.ConnectionError:
        return False


class ChildProcess:
    """A child process whose output is drained in a thread (and kept, for failure messages)."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.output: collections.deque[str] = collections.deque(maxlen=200)
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for line in self.process.stdout or ():
            self.output.append(line)

    def wait_ready(self, url: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.process.args[2:4]} exited at start:\n" + "".join(self.output))
            if _answers(url):
                return
            time.sleep(0.1)
        raise RuntimeError(f"no answer from {url} within {timeout_s} s:\n" + "".join(self.output))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _clean_env(**extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("ESD_")}
    return {**env, **extra}


class Engine(ChildProcess):
    """The engine double (an A1111 `--api` stand-in) with its fault switches."""

    def __init__(self, python: str) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        super().__init__([python, "-m", "middleware_api.worker.engine_double", "--port", str(port)], _clean_env())
        self.wait_ready(f"{self.url}/internal/ping")

    def reset(self) -> None:
        """Back to "ok"; releases requests that hang."""
        requests.post(f"{self.url}/double/reset", timeout=10).raise_for_status()


class Middleware(ChildProcess):
    """`python -m middleware_api serve` on the embedded backend, with a known API key and admin password."""

    def __init__(self, python: str, data_dir: Path, engine_url: str) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/prod"
        self.data_dir = data_dir
        env = _clean_env(
            ESD_API_KEY=API_KEY,
            ESD_ADMIN_PASSWORD=ADMIN_PASSWORD,
            ESD_ENGINE_URL=engine_url,
            ESD_ENGINE_TIMEOUT_S=str(ENGINE_TIMEOUT_S),
        )
        command = [python, "-m", "middleware_api", "serve", "--port", str(port), "--data-dir", str(data_dir)]
        super().__init__(command, env)
        self.wait_ready(f"{self.url}/ping")

    def blob_path(self, checkpoint: dict[str, Any], file_name: str) -> Path:
        """Where the embedded store keeps a checkpoint's file."""
        folder = f"{checkpoint['type']}/checkpoint/custom/{checkpoint['id']}"
        return self.data_dir / "blobs" / "objects" / folder / file_name


@dataclass(frozen=True)
class Endpoints:
    """InService local endpoints (one per type, by type) and the models to generate with."""

    names: dict[str, str]
    models: dict[str, list[str]]


class FaultyAdapter(HTTPAdapter):
    """A transport for the blob session: counts part PUTs by `partNumber` and injects scripted faults.

    `faults[part]` is a list consumed one attempt at a time: "connection" raises a
    ConnectionError, an int answers that HTTP status (the embedded store's JSON), anything
    else passes the request through. `delay_s` slows every request. Headers of every
    request are kept so a test can check the API key never reached the blob store.
    """

    def __init__(self, faults: dict[int, list[Any]] | None = None, delay_s: float = 0.0) -> None:
        super().__init__(pool_maxsize=32)
        self.faults = {number: list(script) for number, script in (faults or {}).items()}
        self.delay_s = delay_s
        self.attempts: collections.Counter[int] = collections.Counter()
        self.headers_seen: list[dict[str, str]] = []
        self.lock = threading.Lock()

    def send(self, request: requests.PreparedRequest, **options: Any) -> requests.Response:  # type: ignore[override]
        query = parse_qs(urlsplit(request.url or "").query)
        number = int(query["partNumber"][0]) if "partNumber" in query else None
        with self.lock:
            self.headers_seen.append(dict(request.headers))
            fault = None
            if number is not None:
                self.attempts[number] += 1
                script = self.faults.get(number)
                fault = script.pop(0) if script else None
        if self.delay_s:
            time.sleep(self.delay_s)
        if fault == "connection":
            raise requests.ConnectionError("injected: connection reset by peer", request=request)
        if isinstance(fault, int):
            return _answer(request, fault)
        return super().send(request, **options)


def _answer(request: requests.PreparedRequest, status: int) -> requests.Response:
    message = "Forbidden: expired" if status == 403 else f"injected failure {status}"
    response = requests.Response()
    response.status_code = status
    response.reason = {403: "Forbidden", 500: "Internal Server Error", 503: "Service Unavailable"}.get(status, "")
    response._content = json.dumps({"statusCode": status, "message": message}).encode()
    response.headers["Content-Type"] = "application/json"
    response.request = request
    response.url = request.url or ""
    return response


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    assert data.startswith(PNG_SIGNATURE), data[:16]
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])
