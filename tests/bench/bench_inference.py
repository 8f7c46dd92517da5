"""Added latency of the whole inference job lifecycle over calling the engine directly; prints, asserts nothing.

    .envs/server/bin/python tests/bench/bench_inference.py [--jobs 50] [--concurrency 1 8] [--instances 1]

Embedded backend over real HTTP (a `serve` child process), engine double answering at once, 64×64 txt2img.

- direct: `POST /sdapi/v1/txt2img` to the engine double, nothing else.
- lifecycle, per endpoint type: `POST /inferences` → PUT the payload to its URL → `PUT …/start` →
  `GET /inferences/{id}?wait_s=20` until the job ends (skipped when a Real-time start already answers
  with the ended job, as the API does) → GET every image URL.
- added: lifecycle median − direct median (at the same concurrency).
- notice delay (Async): from the job's `completeTime` (server clock, same machine) to the return of
  the client's long-poll.

Each concurrency level runs `--jobs` jobs of each kind from that many threads, after a short warm-up.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from support import EngineDouble, ServerProcess, free_port, wait_until  # noqa: E402

KEY = "bench-key"
HEADERS = {"x-api-key": KEY, "username": "admin"}
ENDPOINTS = {"Real-time": "esd-real-time-bench", "Async": "esd-async-bench"}
WAIT_S = 20
JOB_DEADLINE_S = 60.0
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


def session() -> requests.Session:
    """A session per thread (requests.Session is not meant to be shared between threads)."""
    if not hasattr(_local, "session"):
        _local.session = requests.Session()
    return _local.session


def payload(index: int) -> dict[str, Any]:
    return {"prompt": f"bench {index}", "seed": index, "width": SIZE, "height": SIZE, "steps": 1}


def direct(engine_url: str, index: int) -> Sample:
    began = time.perf_counter()
    response = session().post(f"{engine_url}/sdapi/v1/txt2img", json=payload(index), timeout=HTTP_TIMEOUT_S)
    elapsed = (time.perf_counter() - began) * 1000
    if response.status_code != 200 or not response.json().get("images"):
        return Sample(elapsed, error=f"engine answered {response.status_code}")
    return Sample(elapsed)


def _completed_at(text: str) -> float:
    """The API's UTC time text (`2024-01-30 07:59:46.842717`) as a Unix time."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=timezone.utc).timestamp()


def lifecycle(api_url: str, inference_type: str, index: int) -> Sample:
    """One job from create to downloaded images."""
    http = session()
    phases: dict[str, float] = {}
    began = mark = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        phases[name] = phases.get(name, 0.0) + (now - mark) * 1000
        mark = now

    body = {"inference_type": inference_type, "task_type": "txt2img", "models": {}}
    body["endpoint_name"] = ENDPOINTS[inference_type]
    created = http.post(f"{api_url}/inferences", json=body, headers=HEADERS, timeout=HTTP_TIMEOUT_S)
    if created.status_code != 201:
        return Sample(error=f"create answered {created.status_code}: {created.text[:200]}")
    inference = created.json()["data"]["inference"]
    job_id = inference["id"]
    lap("create")
    uploaded = http.put(inference["api_params_s3_upload_url"], json=payload(index), timeout=HTTP_TIMEOUT_S)
    if uploaded.status_code != 200:
        return Sample(error=f"payload upload answered {uploaded.status_code}")
    lap("upload")
    started = http.put(f"{api_url}/inferences/{job_id}/start", headers=HEADERS, timeout=HTTP_TIMEOUT_S)
    if started.status_code not in (200, 202):
        return Sample(error=f"start answered {started.status_code}: {started.text[:200]}")
    job = started.json()["data"]["inference"]
    lap("start")
    notice: float | None = None
    deadline = time.monotonic() + JOB_DEADLINE_S
    while job["status"] not in ("succeed", "failed"):
        if time.monotonic() > deadline:
            return Sample(error=f"job {job_id} still {job['status']} after {JOB_DEADLINE_S:g} s")
        answer = http.get(
            f"{api_url}/inferences/{job_id}", params={"wait_s": WAIT_S}, headers=HEADERS, timeout=WAIT_S + 30
        )
        returned = time.time()
        if answer.status_code != 200:
            return Sample(error=f"GET job answered {answer.status_code}")
        job = answer.json()["data"]
        if job["status"] in ("succeed", "failed") and job.get("completeTime"):
            notice = (returned - _completed_at(job["completeTime"])) * 1000
    lap("wait")
    if job["status"] != "succeed":
        return Sample(error=f"job {job_id} failed: {job.get('error')}")
    for url in job["img_presigned_urls"]:
        image = http.get(url, timeout=HTTP_TIMEOUT_S)
        if image.status_code != 200 or not image.content.startswith(b"\x89PNG"):
            return Sample(error=f"image download answered {image.status_code}")
    lap("fetch")
    total = (time.perf_counter() - began) * 1000
    return Sample(total, notice if inference_type == "Async" else None, phases)


def run(measure: Callable[[int], Sample], jobs: int, concurrency: int) -> list[Sample]:
    def guarded(index: int) -> Sample:
        try:
            return measure(index)
        except Exception as error:  # a broken job is reported, not fatal to the run
            return Sample(error=f"{type(error).__name__}: {error}")

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(guarded, range(jobs)))


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)]


def summary(values: list[float]) -> tuple[str, str]:
    if not values:
        return "-", "-"
    return f"{statistics.median(values):.1f}", f"{percentile(values, 0.95):.1f}"


def prepare(api_url: str, instances: int) -> None:
    for kind, name in ENDPOINTS.items():
        body = {
            "endpoint_name": "bench",
            "endpoint_type": kind,
            "initial_instance_count": instances,
            "autoscaling_enabled": False,
            "assign_to_roles": ["IT Operator"],
        }
        created = requests.post(f"{api_url}/endpoints", json=body, headers=HEADERS, timeout=HTTP_TIMEOUT_S)
        created.raise_for_status()
        assert created.json()["data"]["endpoint_name"] == name, created.text

    def in_service() -> bool:
        listed = requests.get(f"{api_url}/endpoints", headers=HEADERS, timeout=HTTP_TIMEOUT_S).json()
        statuses = {item["endpoint_name"]: item["endpoint_status"] for item in listed["data"]["endpoints"]}
        failed = {name: status for name, status in statuses.items() if status == "Failed"}
        if failed:
            raise RuntimeError(f"endpoints failed: {listed}")
        return all(statuses.get(name) == "InService" for name in ENDPOINTS.values())

    wait_until(in_service, timeout_s=90, interval_s=0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=50, help="jobs of each kind per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1], help="client threads, e.g. 1 8 32")
    parser.add_argument("--instances", type=int, default=1, help="instances (worker processes) per endpoint")
    args = parser.parse_args()

    print("Inference job lifecycle vs the engine called directly: embedded backend, engine double, 64x64 txt2img")
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"date:    {datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"jobs:    {args.jobs} of each kind per concurrency level; {args.instances} instance(s) per endpoint")

    engine: EngineDouble | None = None
    server: ServerProcess | None = None
    with tempfile.TemporaryDirectory() as folder:
        try:
            engine = EngineDouble()
            env = {"ESD_API_KEY": KEY, "ESD_ADMIN_PASSWORD": "bench-password", "ESD_ENGINE_URL": engine.url}
            server = ServerProcess(Path(folder), free_port(), env=env)
            prepare(server.url, args.instances)
            measures: dict[str, Callable[[int], Sample]] = {
                "direct": lambda index, url=engine.url: direct(url, index),
                **{kind: lambda index, url=server.url, kind=kind: lifecycle(url, kind, index) for kind in ENDPOINTS},
            }
            for measure in measures.values():  # warm-up: imports, connections, first model "load"
                run(measure, WARMUP_JOBS, 1)

            header = (
                f"{'conc':>4}  {'what':<20} {'ok':>4} {'fail':>4}  {'median ms':>9} {'p95 ms':>8}  "
                f"{'added ms':>8}  {'notice med ms':>13} {'notice p95 ms':>13}"
            )
            print()
            print(header)
            print("-" * len(header))
            phase_rows = []
            errors: list[str] = []
            for concurrency in args.concurrency:
                direct_median: float | None = None
                for what, measure in measures.items():
                    samples = run(measure, args.jobs, concurrency)
                    good = [s for s in samples if s.error is None]
                    errors += [f"{what} at {concurrency}: {s.error}" for s in samples if s.error]
                    totals = [s.total_ms for s in good]
                    median, p95 = summary(totals)
                    added = "-"
                    if what == "direct":
                        direct_median = statistics.median(totals) if totals else None
                    elif totals and direct_median is not None:
                        added = f"{statistics.median(totals) - direct_median:.1f}"
                    notices = [s.notice_ms for s in good if s.notice_ms is not None]
                    notice_median, notice_p95 = summary(notices)
                    label = what if what == "direct" else f"{what} lifecycle"
                    print(
                        f"{concurrency:>4}  {label:<20} {len(good):>4} {len(samples) - len(good):>4}  "
                        f"{median:>9} {p95:>8}  {added:>8}  {notice_median:>13} {notice_p95:>13}"
                    )
                    if what != "direct" and good:
                        phases = {
                            name: statistics.median(s.phases.get(name, 0.0) for s in good)
                            for name in ("create", "upload", "start", "wait", "fetch")
                        }
                        phase_rows.append((concurrency, what, phases))
            print()
            print("median ms per phase of the lifecycle")
            for concurrency, what, phases in phase_rows:
                parts = "  ".join(f"{name} {value:6.1f}" for name, value in phases.items())
                print(f"{concurrency:>4}  {what:<10} {parts}")
            if errors:
                print()
                print(f"{len(errors)} failed measurements; the first ones:")
                for line in errors[:10]:
                    print(f"  {line}")
        finally:
            if server is not None:
                server.stop()
            if engine is not None:
                engine.stop()


if __name__ == "__main__":
    main()
