"""Fixtures of the deployment tests: a Python of the Lambda runtime's version and the Lambda zip, built once."""

from __future__ import annotations

import pytest
from lambda_runtime import Interpreter, lambda_python

from middleware_api.deploy.package import Built, build


@pytest.fixture(scope="session")
def interpreter() -> Interpreter:
    """Python 3.12 (the runtime's) when this machine has one; else this Python, with a zip built for it."""
    return lambda_python()


@pytest.fixture(scope="session")
def lambda_zip(interpreter: Interpreter, tmp_path_factory: pytest.TempPathFactory) -> Built:
    built = build(tmp_path_factory.mktemp("dist"), python_version=interpreter.version)
    note = "" if interpreter.faithful else f" (no Python 3.12 here: built for {interpreter.version})"
    print(f"\nLambda zip: {built.size_mb:.2f} MB, sha256 {built.sha256}{note}")
    return built
