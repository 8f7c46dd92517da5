"""Schemathesis over real HTTP: every operation of the OpenAPI document, fuzzed as the admin and as a user
whose role has no permissions, against `python -m middleware_api serve` (embedded backend, engine double).

Each response must not be a 5xx, and its status code, content type and body must be the ones the document
(`/prod/api`) declares for the operation. Cases come from schemathesis' examples, coverage (valid and invalid
values, missing key or user) and fuzzing phases; the stateful phase is off. Generation is bounded
(`ESD_FUZZ_EXAMPLES` per operation and phase, 15 by default) and deterministic (derandomized, no example
database), so CI sees the same cases every run; `fuzz_long.py` beside this file runs the same test with more
examples and prints counts.

State: one server serves both actors, the viewer first. Cases that would change what the run depends on are
skipped (Hypothesis `reject`): creating/updating or deleting the admin or the viewer user, and
creating/updating or deleting the viewer's role (the service itself refuses to delete oneself and to change
or delete the default roles). Without this, one lucky case would make the viewer an admin or strip the admin
of its roles, and every later case would test the wrong thing. One more is skipped to keep the run on this
machine: checkpoint downloads from URLs that name a host (the server would fetch them; tests may only talk
to loopback). Endpoints stay small without a skip: the server allows 2 instances each
(`ESD_LOCAL_MAX_INSTANCES`; each instance of a local endpoint is a worker process) and refuses larger ones.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from support import ADMIN, API_KEY, EngineDouble, ServerProcess, free_port, served_env

pytestmark = pytest.mark.slow

VIEWER = "fuzz-viewer"
VIEWER_ROLE = "fuzz-viewer"
ACTORS = (VIEWER, ADMIN)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@dataclass
class Tally:
    """What the fuzz sent and got: cases per operation, responses by status class, distinct failures."""

    cases: Counter[tuple[str, str]] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    skipped: int = 0
    failures: set[tuple[str, str, str]] = field(default_factory=set)


TALLY = Tally()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The served API's URL, with the viewer user (a role with no permissions) in place."""
    engine = EngineDouble()
    env = served_env(engine.url, LOCAL_MAX_INSTANCES="2")
    server = ServerProcess(tmp_path_factory.mktemp("fuzz") / "data", free_port(), env=env)
    try:
        admin = _headers(ADMIN)
        role = {"role_name": VIEWER_ROLE, "permissions": []}
        assert requests.post(f"{server.url}/roles", json=role, headers=admin, timeout=10).status_code == 201
        user = {"username": VIEWER, "password": "viewer-password-1", "roles": [VIEWER_ROLE]}
        assert requests.post(f"{server.url}/users", json=user, headers=admin, timeout=10).status_code == 201
        yield server.url
    finally:
        server.stop()
        engine.stop()


@pytest.fixture(scope="module", params=ACTORS)
def actor(request: pytest.FixtureRequest) -> str:
    """Who the fuzz acts as (the viewer first: the admin's cases change more state)."""
    return request.param


@pytest.fixture(scope="module")
def api_schema(stack: str, actor: str) -> schemathesis.BaseSchema:
    """The document the server serves, with bounded, derandomized generation (loaded once per actor)."""
    config = schemathesis.Config.from_dict(
        {
            "generation": {"max-examples": examples_per_operation(), "deterministic": True, "database": "none"},
            "phases": {"stateful": {"enabled": False}},
        }
    )
    return schemathesis.openapi.from_url(f"{stack}/api", config=config)


@pytest.fixture(autouse=True)
def _node_id_shim(request: pytest.FixtureRequest) -> None:
    """schemathesis 4.30's `from_fixture` renames the test node through `_nodeid`, which pytest 9.2 no longer
    has; give it the attribute (the report keeps the plain node id, the subtests carry the operation)."""
    request.node._nodeid = request.node.nodeid


def examples_per_operation() -> int:
    return int(os.environ.get("ESD_FUZZ_EXAMPLES", "15"))


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@hypothesis.settings(deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
def test_api(case: schemathesis.Case, actor: str) -> None:
    if changes_the_fixtures(case):
        TALLY.skipped += 1
        hypothesis.reject()
    label = case.operation.label
    response = case.call(headers=_headers(actor), timeout=60)
    TALLY.cases[actor, label] += 1
    TALLY.statuses[f"{response.status_code // 100}xx"] += 1
    try:
        case.validate_response(response, checks=CHECKS)
    except (AssertionError, schemathesis.errors.FailureGroup) as failure:
        for one in getattr(failure, "exceptions", None) or [failure]:
            TALLY.failures.add((actor, label, getattr(one, "title", type(one).__name__)))
        raise


def changes_the_fixtures(case: schemathesis.Case) -> bool:
    """Whether the case would change the users and roles this run depends on (see the module docstring)."""
    body: Any = case.body if isinstance(case.body, dict) else {}
    method, path = case.method.upper(), case.path.removeprefix("/prod")
    if path == "/users" and method == "POST":
        return body.get("username") in ACTORS
    if path == "/users" and method == "DELETE":
        return _mentions(body.get("user_name_list"), ACTORS)
    if path == "/roles" and method == "POST":
        return body.get("role_name") == VIEWER_ROLE
    if path == "/roles" and method == "DELETE":
        return _mentions(body.get("role_name_list"), (VIEWER_ROLE,))
    if path == "/checkpoints" and method == "POST":
        return _mentions_host(body.get("urls"))
    return False


def _mentions(names: Any, protected: tuple[str, ...]) -> bool:
    return isinstance(names, list) and any(name in protected for name in names if isinstance(name, str))


def _mentions_host(urls: Any) -> bool:
    return isinstance(urls, list) and any("//" in url for url in urls if isinstance(url, str))


def _headers(user: str) -> dict[str, str]:
    return {"x-api-key": API_KEY, "username": user}
