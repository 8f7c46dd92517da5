"""Shared fixtures: the middleware on each backend (embedded; aws on a moto server), and an HTTP helper.

`api` is parametrized over both backends, so every test written against it is a
contract test of both.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support import ADMIN, ADMIN_PASSWORD, API_KEY, REGION, Api, EngineDouble, aws_settings, free_port

from middleware_api.app import create_app
from middleware_api.container import Services, build_services
from middleware_api.settings import Settings


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """One moto server for the session (a real HTTP endpoint, so presigned URLs work)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    wsgi = server._server  # type: ignore[attr-defined]  # moto offers no hook to wrap its app
    wsgi.app = _one_dynamodb_request_at_a_time(wsgi.app)
    yield f"http://127.0.0.1:{port}"
    server.stop()


def _one_dynamodb_request_at_a_time(app: Callable[..., Any]) -> Callable[..., Any]:
    """DynamoDB applies each conditional write atomically; moto checks and writes in separate steps that
    racing requests interleave (lost updates under 50 threads). Serializing its DynamoDB requests gives
    the concurrency tests DynamoDB's semantics; S3 requests stay parallel."""
    lock = threading.Lock()

    def serialized(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            return app(environ, start_response)
        with lock:  # moto builds the whole response before returning it
            return app(environ, start_response)

    return serialized


@pytest.fixture(scope="session")
def engine() -> Iterator[EngineDouble]:
    """An A1111-compatible engine double for the whole session (reset to "ok" by `engine_ok`)."""
    double = EngineDouble()
    yield double
    double.stop()


@pytest.fixture
def engine_ok(engine: EngineDouble) -> EngineDouble:
    engine.set_mode("ok")
    return engine


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "ESD_SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/esd-sagemaker",
        "ESD_INFERENCE_IMAGE_URI": "123456789012.dkr.ecr.us-east-1.amazonaws.com/esd-inference:1.5.0",
        "ESD_SNS_SUCCESS_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:esd-inference-success",
        "ESD_SNS_ERROR_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:esd-inference-error",
    }.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(params=["embedded", "aws"])
def services(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Services]:
    """The services on each backend, with an admin user holding `IT Operator`."""
    if request.param == "aws":
        request.getfixturevalue("aws_env")
        settings = aws_settings(request.getfixturevalue("moto_url"))
    else:
        settings = Settings(data_dir=tmp_path / "data", api_key=API_KEY)
    built = build_services(settings)
    built.users.bootstrap(ADMIN, ADMIN_PASSWORD, ["IT Operator"])
    yield built
    built.close()


@pytest.fixture
def api(services: Services) -> Iterator[Api]:
    with TestClient(create_app(services)) as client:
        yield Api(client, services)
