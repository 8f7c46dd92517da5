"""Shared fixtures of the middleware tests: fake AWS credentials, moto, and a table factory over both backends."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from middleware_api.adapters.aws.blobs import s3_client
from middleware_api.adapters.aws.tables import DynamoTable, create_tables
from middleware_api.adapters.embedded.tables import SqliteDatabase
from middleware_api.ports.tables import Table, TableSpec

REGION = "us-east-1"


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials and region, and no shared AWS config, so nothing can reach a real account."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))


@pytest.fixture
def dynamodb(aws_credentials: None) -> Iterator[object]:
    """A boto3 DynamoDB client on in-process moto."""
    with mock_aws():
        yield boto3.client("dynamodb", region_name=REGION)


@pytest.fixture
def s3_bucket(aws_credentials: None, moto_url: str) -> tuple[object, str]:
    """A SigV4 S3 client on the session's moto server (`moto_url`, tests/conftest.py) and a fresh bucket in it."""
    client = s3_client(REGION, endpoint_url=moto_url)
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return client, bucket


@pytest.fixture(params=["sqlite", "dynamodb", "dynamodb-resource"])
def make_table(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[TableSpec], Table]]:
    """A factory of empty tables of a spec: on SQLite, and on DynamoDB (moto) through a client and a resource."""
    if request.param == "sqlite":
        database = SqliteDatabase(tmp_path / "db.sqlite3")
        yield database.table
        database.close()
    else:
        client = request.getfixturevalue("dynamodb")
        handle = boto3.resource("dynamodb", region_name=REGION) if request.param == "dynamodb-resource" else client

        def make(spec: TableSpec) -> Table:
            create_tables(client, "test-", [spec])
            return DynamoTable(handle, f"test-{spec.name}", spec)

        yield make
