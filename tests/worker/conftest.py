"""Fixtures of the worker tests: the engine double served by a real uvicorn server in a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
import requests
import uvicorn
from support import free_port

from middleware_api.worker.engine_double import create_engine_app


class ServerThread:
    """A FastAPI app served by uvicorn in a daemon thread on a free local port."""

    def __init__(self, app: object) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)


@pytest.fixture
def serve() -> Iterator[Callable[[object], ServerThread]]:
    """Serve apps on real ports for one test: `serve(app).url`."""
    started: list[ServerThread] = []

    def start(app: object) -> ServerThread:
        started.append(ServerThread(app).start())
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def engine_server() -> Iterator[ServerThread]:
    server = ServerThread(create_engine_app()).start()
    yield server
    requests.post(f"{server.url}/double/reset", timeout=5)
    server.stop()


@pytest.fixture
def engine_url(engine_server: ServerThread) -> Iterator[str]:
    """The URL of a running engine double in its default state; reset again (hangs released) after the test."""
    requests.post(f"{engine_server.url}/double/reset", timeout=5).raise_for_status()
    yield engine_server.url
    requests.post(f"{engine_server.url}/double/reset", timeout=5).raise_for_status()
