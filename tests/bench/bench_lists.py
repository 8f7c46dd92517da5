"""List routes at growing table sizes, on both backends; prints figures, asserts nothing about times.

    .envs/server/bin/python tests/bench/bench_lists.py [--sizes 100 10000 100000] [--aws-sizes 100 10000]

For each list route of `middleware_api/routes` and each size N: a fresh deployment (embedded: SQLite in a
temporary folder; aws: DynamoDB and S3 on moto's in-process `mock_aws`) holding N items of that route's kind,
written straight through the table adapters (embedded `Table.put`; aws a boto3 `batch_writer`, the same items),
then the median latency of `GET /<route>?limit=10` as the admin, in process (Starlette's TestClient: the app,
services and adapters, no network). Two more rows show lists whose filter matches nothing, so a page has to
read the whole table: another user's inference jobs, and `checkpoints?status=Initial` when all are Active.

On moto the figures measure moto: its GSI query reads and sorts every item of the table (O(N)), where DynamoDB
reads one page. So the aws rows also give what DynamoDB itself would serve per request: the items its Query calls
read (`ScannedCount`: constant for a route that reads one page, N for one that reads the whole table) and the
number of GetItem calls.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from common import ADMIN, ADMIN_PASSWORD, HEADERS, KEY, Table, command, median, ms, report
from fastapi.testclient import TestClient

from middleware_api import schema
from middleware_api.app import create_app
from middleware_api.container import Services, build_services
from middleware_api.settings import Settings

Item = dict[str, Any]
OWNERS = ["IT Operator"]  # the admin's role: every seeded item is visible to it, unless a case says otherwise
REGION = "us-east-1"
BUCKET = "esd-bench"
PREFIX = "esd-bench-"
AWS_SCAN_MAX = 1_000
AWS_ENV = {  # what the aws backend reads at start (as tests/conftest.py's aws_env)
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "ESD_SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/esd-sagemaker",
    "ESD_INFERENCE_IMAGE_URI": "123456789012.dkr.ecr.us-east-1.amazonaws.com/esd-inference:1.5.0",
    "ESD_SNS_SUCCESS_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:esd-inference-success",
    "ESD_SNS_ERROR_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:esd-inference-error",
}


@dataclass(frozen=True)
class Case:
    """A list request, the table it reads, how to make its N items, and how many items a page must hold."""

    label: str
    table: str
    path: str
    key: str
    make: Callable[[int, float], Item]
    params: tuple[tuple[str, str], ...] = ()
    finds_all: bool = True  # False: the filter matches nothing, the page is empty


def _user(index: int, created: float) -> Item:
    name = f"user-{index:07d}"
    return {
        "kind": "user",
        "sort_key": name,
        "username": name,
        "creator": ADMIN,
        "roles": OWNERS,
        "password_hash": "-",
        "created": created,
    }


def _role(index: int, created: float) -> Item:
    name = f"role-{index:07d}"
    return {
        "kind": "role",
        "sort_key": name,
        "role_name": name,
        "creator": ADMIN,
        "permissions": ["checkpoint:all"],
        "created": created,
    }


def _token(index: int, created: float) -> Item:
    return {
        "kind": "token",
        "sort_key": hashlib.sha256(f"token-{index}".encode()).hexdigest(),
        "token_id": f"{index:016x}",
        "token_owner": ADMIN,
        "name": f"token {index}",
        "created": created,
    }


def _checkpoint(index: int, created: float) -> Item:
    checkpoint_id = str(uuid.uuid4())
    return {
        "id": checkpoint_id,
        "checkpoint_type": "Lora",
        "checkpoint_status": "Active",
        "checkpoint_names": [f"lora-{index}.safetensors"],
        "s3_location": f"s3://{BUCKET}/Lora/checkpoint/custom/{checkpoint_id}",
        "created": created,
        "listing": schema.LISTING,
        "name_key": f"Lora/lora-{index}.safetensors",
        "allowed_roles_or_users": OWNERS,
        "params": {"message": "", "creator": ADMIN},
    }


def _endpoint(index: int, created: float) -> Item:
    return {
        "EndpointDeploymentJobId": str(uuid.uuid4()),
        "endpoint_name": f"esd-async-e{index:07d}",
        "endpoint_type": "Async",
        "instance_type": "ml.g5.2xlarge",
        "initial_instance_count": 1,
        "current_instance_count": 1,
        "autoscaling": False,
        "min_instance_number": 1,
        "max_instance_number": 1,
        "endpoint_status": "InService",
        "owner_group_or_role": OWNERS,
        "creator": ADMIN,
        "startTime": "2026-01-01 00:00:00.000000",
        "created": created,
        "listing": schema.LISTING,
    }


def _inference(owner: str) -> Callable[[int, float], Item]:
    def make(index: int, created: float) -> Item:
        job_id = str(uuid.uuid4())
        return {
            "InferenceJobId": job_id,
            "status": "succeed",
            "taskType": "txt2img",
            "inference_type": "Async",
            "owner_group_or_role": [owner],
            "creator": owner,
            "createTime": "2026-01-01 00:00:00.000000",
            "completeTime": "2026-01-01 00:00:01.000000",
            "created": created,
            "listing": schema.LISTING,
            "image_names": ["image_0.png"],
            "params": {
                "input_body_s3": f"s3://{BUCKET}/txt2img/infer_v2/{job_id}/api_param.json",
                "used_models": {},
                "sagemaker_inference_endpoint_id": "e",
                "sagemaker_inference_endpoint_name": "esd-async-bench",
                "sagemaker_inference_instance_type": "ml.g5.2xlarge",
            },
        }

    return make


def _dataset(index: int, created: float) -> Item:
    return {
        "dataset_name": f"dataset-{index:07d}",
        "dataset_status": "Enabled",
        "prefix": "",
        "created": created,
        "timestamp": created,
        "listing": schema.LISTING,
        "allowed_roles_or_users": OWNERS,
        "creator": ADMIN,
        "file_count": 1,
        "params": {"description": "", "created": "2026-01-01 00:00:00.000000"},
    }


def _training(index: int, created: float) -> Item:
    job_id = str(uuid.uuid4())
    return {
        "id": job_id,
        "job_status": "Completed",
        "created": created,
        "timestamp": str(created),
        "listing": schema.LISTING,
        "allowed_roles_or_users": OWNERS,
        "creator": ADMIN,
        "checkpoint_id": str(uuid.uuid4()),
        "output_name": f"lora-{index}",
        "input_location": f"s3://{BUCKET}/kohya/train/{job_id}/input",
        "output_location": f"s3://{BUCKET}/kohya/train/{job_id}/output",
        "params": {"training_type": "kohya", "training_params": {"fm_type": "sd_1_5"}, "config_params": {}},
    }


CASES = (
    Case("users", schema.USERS.name, "/users", "users", _user),
    Case("roles", schema.USERS.name, "/roles", "roles", _role),
    Case("tokens", schema.USERS.name, "/tokens", "tokens", _token),
    Case("checkpoints", schema.CHECKPOINTS.name, "/checkpoints", "checkpoints", _checkpoint),
    Case("endpoints", schema.ENDPOINTS.name, "/endpoints", "endpoints", _endpoint),
    Case("inferences", schema.INFERENCES.name, "/inferences", "inferences", _inference(ADMIN)),
    Case("datasets", schema.DATASETS.name, "/datasets", "datasets", _dataset),
    Case("trainings", schema.TRAININGS.name, "/trainings", "trainings", _training),
    Case(
        "inferences, all another user's",
        schema.INFERENCES.name,
        "/inferences",
        "inferences",
        _inference("someone-else"),
        finds_all=False,
    ),
    Case(
        "checkpoints?status=Initial, all Active",
        schema.CHECKPOINTS.name,
        "/checkpoints",
        "checkpoints",
        _checkpoint,
        params=(("status", "Initial"),),
        finds_all=False,
    ),
)


@contextlib.contextmanager
def deployment(backend: str) -> Iterator[Services]:
    """Fresh services on `backend` with the admin (`IT Operator`); removed afterwards."""
    if backend == "embedded":
        with tempfile.TemporaryDirectory(prefix="esd-bench-") as folder:
            services = build_services(Settings(data_dir=Path(folder), api_key=KEY))
            try:
                services.users.bootstrap(ADMIN, ADMIN_PASSWORD, OWNERS)
                yield services
            finally:
                services.close()
        return
    import boto3
    from moto import mock_aws

    from middleware_api.adapters.aws.tables import create_tables

    saved = {name: os.environ.get(name) for name in AWS_ENV}
    os.environ.update(AWS_ENV)
    try:
        with mock_aws():
            boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
            create_tables(boto3.client("dynamodb", region_name=REGION), PREFIX)
            settings = Settings(backend="aws", api_key=KEY, bucket=BUCKET, table_prefix=PREFIX, region=REGION)
            services = build_services(settings)
            try:
                services.users.bootstrap(ADMIN, ADMIN_PASSWORD, OWNERS)
                yield services
            finally:
                services.close()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _dynamo_value(value: Any) -> Any:
    """A JSON value as boto3's resource layer takes it (floats as Decimal)."""
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {name: _dynamo_value(inner) for name, inner in value.items()}
    if isinstance(value, list):
        return [_dynamo_value(inner) for inner in value]
    return value


def seed(services: Services, case: Case, count: int) -> None:
    """`count` items of the case's kind, newest last, through the table adapter (a batch writer on aws)."""
    table = services.tables[case.table]
    start = time.time() - count
    items = (case.make(index, start + index) for index in range(count))
    if services.settings.backend == "embedded":
        for item in items:
            table.put(item)
        return
    import boto3

    writer_table = boto3.resource("dynamodb", region_name=REGION).Table(table.table_name)  # type: ignore[attr-defined]
    with writer_table.batch_writer() as writer:
        for item in items:
            writer.put_item(Item=_dynamo_value(item))


class DynamoReads:
    """Counts, on the services' DynamoDB client, the items Query calls read (`ScannedCount`) and the GetItem calls."""

    def __init__(self, services: Services) -> None:
        self.scanned = 0
        self.gets = 0
        client = next(iter(services.tables.values())).client  # type: ignore[attr-defined]
        client.meta.events.register("after-call.dynamodb.Query", self._query)
        client.meta.events.register("after-call.dynamodb.GetItem", self._get)

    def _query(self, parsed: dict[str, Any], **_: Any) -> None:
        self.scanned += int(parsed.get("ScannedCount", 0))

    def _get(self, **_: Any) -> None:
        self.gets += 1

    def reset(self) -> None:
        self.scanned = self.gets = 0


def measure(case: Case, backend: str, count: int, limit: int, samples: int, budget_s: float) -> tuple[float, str]:
    """(median ms, DynamoDB reads per request: "queried items + GetItems", or "-") of the list at `count` items."""
    with deployment(backend) as services:
        seed(services, case, count)
        client = TestClient(create_app(services))
        reads = DynamoReads(services) if backend == "aws" else None
        params = {"limit": str(limit), **dict(case.params)}
        expected = min(limit, count) if case.finds_all else 0
        timings: list[float] = []
        deadline = time.monotonic() + budget_s
        client.get(f"/prod{case.path}", params=params, headers=HEADERS)  # warm-up: first request's imports
        if reads is not None:
            reads.reset()
        while len(timings) < samples and (len(timings) < 3 or time.monotonic() < deadline):
            began = time.perf_counter()
            response = client.get(f"/prod{case.path}", params=params, headers=HEADERS)
            timings.append((time.perf_counter() - began) * 1000)
            listed = response.json().get("data", {}).get(case.key) if response.status_code == 200 else None
            if listed is None or len(listed) < expected:
                raise RuntimeError(
                    f"{case.label} at {count} on {backend}: {response.status_code} {response.text[:300]}"
                )
        read = "-"
        if reads is not None:
            read = f"{reads.scanned / len(timings):.0f} + {reads.gets / len(timings):.0f}"
        return median(timings), read


def sizes_for(case: Case, backend: str, sizes: list[int]) -> list[int]:
    """The sizes a case runs at: on moto a list that reads the whole table stops at AWS_SCAN_MAX items."""
    if backend != "aws" or case.finds_all or not sizes:
        return sizes
    return sorted({size for size in sizes if size <= AWS_SCAN_MAX} | {AWS_SCAN_MAX})


def collect(
    sizes: list[int], aws_sizes: list[int], limit: int = 10, samples: int = 30, budget_s: float = 5.0
) -> list[Table]:
    backends = [("embedded", sizes), ("aws", aws_sizes)]
    runs = [(case, backend, sizes_for(case, backend, chosen)) for case in CASES for backend, chosen in backends]
    columns = sorted({size for _, _, chosen in runs for size in chosen})
    headers = ["route", "backend", *(f"{size:,} items ms" for size in columns), "ratio largest/smallest"]
    options: list[object] = ["--sizes", *sizes, "--aws-sizes", *(aws_sizes or [0])]
    table = Table(
        title=f"List scaling: median ms of GET /<route>?limit={limit} as the admin, N items in the table",
        command=command("bench_lists.py", *options, "--limit", limit, "--samples", samples),
        headers=[*headers, "DynamoDB per request: items queried + GetItems"],
    )
    for case, backend, chosen in runs:
        if not chosen:
            continue
        medians: dict[int, float] = {}
        reads: dict[int, str] = {}
        for size in chosen:
            medians[size], reads[size] = measure(case, backend, size, limit, samples, budget_s)
            print(f"  {case.label:40} {backend:8} {size:>7}: {medians[size]:8.2f} ms", file=sys.stderr, flush=True)
        low, high = min(medians), max(medians)
        row = [case.label, "aws (moto)" if backend == "aws" else backend]
        row += [ms(medians.get(size), 2) for size in columns]
        row.append(f"{medians[high] / medians[low]:.2f} ({high:,}/{low:,})" if high != low else "-")
        row.append(" / ".join(f"{reads[size]} at {size:,}" for size in chosen) if backend == "aws" else "-")
        table.rows.append(row)
    aws_note = f"sizes on aws (moto): {', '.join(f'{size:,}' for size in aws_sizes) or 'none'}"
    if 100_000 not in aws_sizes:
        aws_note += " (100,000 on moto, `--aws-sizes 100 10000 100000`, takes tens of minutes: seeding, O(N) queries)"
    table.notes += [
        aws_note,
        "aws latencies are moto's: it reads and sorts the whole table on every index query, DynamoDB reads one"
        " page; the last column is what DynamoDB itself would serve per request: the items its Query calls read"
        " (ScannedCount, at least 100 a call) + GetItem calls (the caller's user and role, and more)",
        f"the two last cases match nothing in the whole table: they stay flat because the caller's jobs and one"
        f" checkpoint status are index partitions of their own (`by_creator`, `by_status` in middleware_api/schema.py);"
        f" a filter without such an index reads pages until `limit` items match; on moto they stop at"
        f" {AWS_SCAN_MAX:,} items",
    ]
    return [table]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 10_000, 100_000], help="items, embedded")
    parser.add_argument("--aws-sizes", type=int, nargs="*", default=[100, 10_000], help="items on moto (0 to skip)")
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--samples", type=int, default=30, help="requests per cell (at least 3, within 5 s)")
    args = parser.parse_args()
    aws_sizes = [size for size in args.aws_sizes if size > 0]
    sys.stdout.write(report(collect(args.sizes, aws_sizes, args.limit, args.samples)))


if __name__ == "__main__":
    main()
