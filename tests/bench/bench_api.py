"""Requests per second of the API on the embedded backend; prints figures, asserts nothing.

    .envs/server/bin/python tests/bench/bench_api.py [--seconds 10]

`GET /ping` and `GET /users?limit=10` (permission-checked), against one uvicorn worker in a child process,
loaded by `wrk` when installed (`apt-get install wrk`), else by a thread pool of Python clients (slower,
client-bound). List latency at growing table sizes, per route and backend, is `bench_lists.py`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from shutil import which

import requests
from common import HEADERS, KEY, Table, command, report, stack


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


def collect(seconds: int) -> list[Table]:
    tool = "wrk -t2 -c16" if which("wrk") else "8 Python client threads"
    table = Table(
        title="Requests per second, one uvicorn worker (embedded backend)",
        command=command("bench_api.py", "--seconds", seconds),
        headers=["request", "req/s"],
    )
    with stack(engine=False) as (server, _):
        ping = requests_per_second(f"{server.url}/ping", {"x-api-key": KEY}, seconds)
        table.rows.append(["GET /ping", f"{ping:.0f}"])
        users = requests_per_second(f"{server.url}/users?limit=10", HEADERS, seconds)
        table.rows.append(["GET /users?limit=10", f"{users:.0f}"])
    table.notes.append(f"{seconds} s each, load from {tool} on the same machine")
    return [table]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    sys.stdout.write(report(collect(args.seconds)))


if __name__ == "__main__":
    main()
