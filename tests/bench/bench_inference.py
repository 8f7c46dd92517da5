"""Added latency of a whole cloud-inference job through the extension over calling the engine directly.

    .envs/server/bin/python tests/bench/bench_inference.py [--jobs 200] [--concurrency 1 8 32] [--instances 1]

The embedded middleware (`serve` in a child process, real HTTP) with the engine double, 64×64 txt2img, 1 step.

- direct: `POST /sdapi/v1/txt2img` to the engine double, nothing else (one `requests` session per thread).
- Real-time / Async: `aws_extension.jobs.run_job` with a new `aws_extension.client.MiddlewareClient` per job,
  as the WebUI's cloud hook (`aws_extension/webui.py` `generate`) runs one: create → PUT the payload → start →
  long-poll `GET /inferences/{id}?wait_s=…` (poll_s 1.0, the hook's) until it ends → GET the images and the
  parameters file.
- added = lifecycle − direct, median and p95 of each, at the same concurrency.
- phases (from `run_job`'s `on_status`): create (until `created`), start (payload upload + start, until
  `inprogress`, or the end for a Real-time job that finished within its start), wait (until `succeed`), fetch.
- notice (Async): from the job's `completeTime` (server clock, same machine) to the client hearing `succeed`.

Each concurrency level runs `--jobs` jobs of each kind from that many threads, after a short warm-up.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import requests
from common import ADMIN, KEY, Table, command, median, ms, percentile, report, stack
from support import wait_until

from aws_extension.client import MiddlewareClient
from aws_extension.jobs import run_job

ENDPOINT_NAME = "bench"
KINDS = ("Real-time", "Async")
POLL_S = 1.0  # aws_extension/webui.py POLL_S (not importable outside the WebUI)
HTTP_TIMEOUT_S = 60.0
WARMUP_JOBS = 3
SIZE = 64


@dataclass
class Sample:
    """One measured call or job: its duration, the notice delay (Async), its phases; or why it failed."""

    total_ms: float = 0.0
    notice_ms: float | None = None
    phases: dict[str, float] = field(default_factory=dict)
    error: str | None = None


_local = threading.local()


def payload(index: int) -> dict[str, Any]:
    return {"prompt": f"bench {index}", "seed": index, "width": SIZE, "height": SIZE, "steps": 1}


def direct(engine_url: str, index: int) -> Sample:
    if not hasattr(_local, "session"):  # a session per thread: requests.Session is not meant to be shared
        _local.session = requests.Session()
    began = time.perf_counter()
    response = _local.session.post(f"{engine_url}/sdapi/v1/txt2img", json=payload(index), timeout=HTTP_TIMEOUT_S)
    elapsed = (time.perf_counter() - began) * 1000
    if response.status_code != 200 or not response.json().get("images"):
        return Sample(elapsed, error=f"engine answered {response.status_code}")
    return Sample(elapsed)


def _completed_at(text: str) -> float:
    """The API's UTC time text (`2024-01-30 07:59:46.842717`) as a Unix time."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=timezone.utc).timestamp()


def lifecycle(api_url: str, inference_type: str, index: int) -> Sample:
    """One job through the extension's client, from a new client to the images in memory."""
    heard: list[tuple[str, float, float]] = []  # (status, perf_counter, time)
    began = time.perf_counter()
    client = MiddlewareClient(api_url, KEY, ADMIN)
    try:
        result = run_job(
            client,
            task_type="txt2img",
            payload=payload(index),
            models={},
            inference_type=inference_type,
            endpoint_name=f"esd-{inference_type.lower()}-{ENDPOINT_NAME}",
            on_status=lambda status: heard.append((status, time.perf_counter(), time.time())),
            poll_s=POLL_S,
            timeout_s=HTTP_TIMEOUT_S,
        )
    finally:
        client.close()
    ended = time.perf_counter()
    if not result.images or not all(image.startswith(b"\x89PNG") for image in result.images):
        return Sample(error=f"job {result.job_id}: no PNG images")
    at = {status: (mark, wall) for status, mark, wall in heard}
    created = at["created"][0]
    started = at["inprogress"][0] if "inprogress" in at else at["succeed"][0]
    finished = at["succeed"][0]
    phases = {
        "create": (created - began) * 1000,
        "upload + start": (started - created) * 1000,
        "wait": (finished - started) * 1000,
        "fetch": (ended - finished) * 1000,
    }
    notice = None
    if inference_type == "Async" and result.job.get("completeTime"):
        notice = (at["succeed"][1] - _completed_at(result.job["completeTime"])) * 1000
    return Sample((ended - began) * 1000, notice, phases)


def run(measure: Callable[[int], Sample], jobs: int, concurrency: int) -> list[Sample]:
    def guarded(index: int) -> Sample:
        try:
            return measure(index)
        except Exception as error:  # a broken job is reported, not fatal to the run
            return Sample(error=f"{type(error).__name__}: {error}")

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(guarded, range(jobs)))


def prepare(api_url: str, instances: int) -> None:
    """One endpoint of each type, InService."""
    client = MiddlewareClient(api_url, KEY, ADMIN)
    try:
        for kind in KINDS:
            client.create_endpoint(
                kind, roles=["IT Operator"], name=ENDPOINT_NAME, initial_instance_count=instances, autoscaling=False
            )

        def in_service() -> bool:
            statuses = {item["endpoint_name"]: item["endpoint_status"] for item in client.iter_endpoints()}
            failed = {name: status for name, status in statuses.items() if status == "Failed"}
            if failed:
                raise RuntimeError(f"endpoints failed: {failed}")
            return all(statuses.get(f"esd-{kind.lower()}-{ENDPOINT_NAME}") == "InService" for kind in KINDS)

        wait_until(in_service, timeout_s=120, interval_s=0.1)
    finally:
        client.close()


def collect(jobs: int, levels: list[int], instances: int) -> list[Table]:
    """The overhead table and the phases table."""
    overhead = Table(
        title="Job overhead: the extension's run_job + embedded middleware vs the engine double called directly",
        command=command("bench_inference.py", "--jobs", jobs, "--concurrency", *levels, "--instances", instances),
        headers=[
            "concurrent jobs",
            "path",
            "ok / failed",
            "median ms",
            "p95 ms",
            "added median ms",
            "added p95 ms",
            "notice median / p95 ms",
        ],
    )
    phases_table = Table(
        title="Job overhead: median ms per phase of run_job",
        command=overhead.command,
        headers=["concurrent jobs", "path", "create", "upload + start", "wait", "fetch"],
    )
    errors: list[str] = []
    with stack(engine=True) as (server, engine):
        assert engine is not None
        prepare(server.url, instances)
        measures: dict[str, Callable[[int], Sample]] = {
            "direct": lambda index: direct(engine.url, index),
            **{kind: (lambda index, kind=kind: lifecycle(server.url, kind, index)) for kind in KINDS},
        }
        for measure in measures.values():  # warm-up: imports, connections, the first model "load"
            run(measure, WARMUP_JOBS, 1)
        for concurrency in levels:
            base: list[float] = []
            for what, measure in measures.items():
                samples = run(measure, jobs, concurrency)
                good = [sample for sample in samples if sample.error is None]
                errors += [f"{what} at {concurrency}: {sample.error}" for sample in samples if sample.error]
                totals = [sample.total_ms for sample in good]
                if what == "direct":
                    base = totals
                notices = [sample.notice_ms for sample in good if sample.notice_ms is not None]
                row = [str(concurrency), "engine directly" if what == "direct" else f"{what} run_job"]
                row.append(f"{len(good)} / {len(samples) - len(good)}")
                row += [ms(median(totals)) if totals else "-", ms(percentile(totals, 0.95)) if totals else "-"]
                if what != "direct" and totals and base:
                    row += [ms(median(totals) - median(base)), ms(percentile(totals, 0.95) - percentile(base, 0.95))]
                else:
                    row += ["-", "-"]
                row.append(f"{ms(median(notices))} / {ms(percentile(notices, 0.95))}" if notices else "-")
                overhead.rows.append(row)
                if what != "direct" and good:
                    values = [median([sample.phases[name] for sample in good]) for name in phases_table.headers[2:]]
                    phases_table.rows.append([str(concurrency), what, *(ms(value) for value in values)])
    overhead.notes.append(
        f"{jobs} jobs of each kind per level, 64x64 txt2img, {instances} worker instance(s) per endpoint "
        "(jobs beyond that queue at the endpoint, as on one GPU); a new MiddlewareClient per job, as the WebUI's hook"
    )
    overhead.notes.append("added p95 = lifecycle p95 − direct p95")
    if errors:
        overhead.notes.append(f"{len(errors)} failed: " + "; ".join(errors[:5]))
    return [overhead, phases_table]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200, help="jobs of each kind per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32], help="client threads")
    parser.add_argument("--instances", type=int, default=1, help="worker processes per endpoint")
    args = parser.parse_args()
    sys.stdout.write(report(collect(args.jobs, args.concurrency, args.instances)))


if __name__ == "__main__":
    main()
