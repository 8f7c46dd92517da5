"""API benchmarks on the embedded backend; prints figures, asserts nothing.

    .envs/server/bin/python tests/bench/bench_api.py [--records 100 100000] [--seconds 10]

1. `GET /checkpoints?limit=10` median latency with N checkpoints in the table (in process).
2. Requests per second on `GET /ping` and on `GET /users?limit=10` (permission-checked),
   against one uvicorn worker in a child process, loaded by `wrk` when installed
   (`apt-get install wrk`), else by a thread pool of Python clients (slower, client-bound).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from shutil import which

import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fastapi.testclient import TestClient  # noqa: E402
from support import ServerProcess, free_port  # noqa: E402

from middleware_api import schema  # noqa: E402
from middleware_api.app import create_app  # noqa: E402
from middleware_api.container import build_services  # noqa: E402
from middleware_api.settings import Settings  # noqa: E402

KEY = "bench-key"


def list_latency(records: int, samples: int = 200) -> float:
    """Median ms of GET /checkpoints?limit=10 with `records` checkpoints stored."""
    with tempfile.TemporaryDirectory() as folder:
        services = build_services(Settings(data_dir=Path(folder), api_key=KEY))
        services.users.bootstrap("admin", "bench-password", ["IT Operator"])
        table = services.tables[schema.CHECKPOINTS.name]
        start = time.time()
        for index in range(records):
            checkpoint_id = str(uuid.uuid4())
            table.put(
                {
                    "id": checkpoint_id,
                    "checkpoint_type": "Lora",
                    "checkpoint_status": "Active",
                    "checkpoint_names": [f"lora-{index}.safetensors"],
                    "s3_location": f"s3://esd-local/Lora/checkpoint/custom/{checkpoint_id}",
                    "created": start + index,
                    "listing": schema.LISTING,
                    "name_key": f"Lora/lora-{index}.safetensors",
                    "allowed_roles_or_users": ["IT Operator"],
                    "params": {"message": "", "creator": "admin"},
                }
            )
        client = TestClient(create_app(services))
        headers = {"x-api-key": KEY, "username": "admin"}
        timings = []
        for _ in range(samples):
            began = time.perf_counter()
            response = client.get("/prod/checkpoints", params={"limit": 10}, headers=headers)
            timings.append((time.perf_counter() - began) * 1000)
            assert response.status_code == 200 and len(response.json()["data"]["checkpoints"]) == min(10, records)
        services.close()
        return statistics.median(timings)


def requests_per_second(url: str, headers: dict[str, str], seconds: int) -> float:
    if which("wrk"):
        header_args = [arg for name, value in headers.items() for arg in ("-H", f"{name}: {value}")]
        output = subprocess.run(
            ["wrk", "-t2", "-c16", f"-d{seconds}s", *header_args, url], capture_output=True, text=True, check=True
        ).stdout
        line = next(line for line in output.splitlines() if line.startswith("Requests/sec"))
        return float(line.split()[1])
    deadline, done = time.monotonic() + seconds, 0

    def client() -> int:
        count, session = 0, requests.Session()
        while time.monotonic() < deadline:
            session.get(url, headers=headers, timeout=10).raise_for_status()
            count += 1
        return count

    with ThreadPoolExecutor(8) as pool:
        done = sum(pool.map(lambda _: client(), range(8)))
    return done / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, nargs="+", default=[100, 100_000])
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()

    print("GET /checkpoints?limit=10, embedded, median of 200 requests")
    medians = {}
    for records in args.records:
        medians[records] = list_latency(records)
        print(f"  {records:>7} checkpoints: {medians[records]:.2f} ms")
    if len(medians) > 1:
        low, high = min(args.records), max(args.records)
        print(f"  ratio {high}/{low}: {medians[high] / medians[low]:.2f}")

    with tempfile.TemporaryDirectory() as folder:
        server = ServerProcess(
            Path(folder), free_port(), env={"ESD_API_KEY": KEY, "ESD_ADMIN_PASSWORD": "bench-password"}
        )
        try:
            tool = "wrk -t2 -c16" if which("wrk") else "8 Python client threads"
            print(f"Requests per second, one uvicorn worker, {args.seconds} s each, load from {tool}")
            ping = requests_per_second(f"{server.url}/ping", {"x-api-key": KEY}, args.seconds)
            print(f"  GET /ping:             {ping:8.0f} req/s")
            users = requests_per_second(
                f"{server.url}/users?limit=10", {"x-api-key": KEY, "username": "admin"}, args.seconds
            )
            print(f"  GET /users?limit=10:   {users:8.0f} req/s")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
