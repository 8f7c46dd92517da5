"""Checkpoint upload through the extension's uploader vs a plain `cp`: throughput and peak memory of both sides.

    .envs/server/bin/python tests/bench/bench_upload.py [--sizes 100M 1G 4G]

For each size: a sparse file (`truncate`; reads as zeros, so the source costs no disk reads on either side),
then on the same disk
- `cp --sparse=never` of it (every byte written, as the upload writes them), timed, its max RSS; then
  `sync` of the copy, as the server fsyncs each part it stores (cp + sync is the fair reference);
- `aws_extension.upload.upload_file` (parts of 8 MiB, 4 at a time: its defaults) in a child process against a
  fresh embedded middleware (`serve` in a child process, real HTTP): the time from the first request to the
  Active checkpoint, the child's peak RSS (`VmHWM`; before: after imports and a ping), and the server's
  peak RSS over the upload (`VmHWM` in /proc, reset through `clear_refs` after a 1 MiB warm-up upload).
Every file is removed afterwards. Peak memory must not grow with the file size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ADMIN, KEY, ROOT, MiB, Table, command, mib, parse_size, report, size_option, stack

CHECKPOINT_TYPE = "Stable-diffusion"
GNU_TIME = "/usr/bin/time"
# The uploading client, as the WebUI runs it: the extension's client and uploader, nothing else.
CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
def peak_kib():  # VmHWM, not ru_maxrss: Linux keeps the parent's RSS in ru_maxrss across fork and exec
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
from aws_extension.client import MiddlewareClient
from aws_extension.upload import upload_file
url, key, user, path, kind = sys.argv[2:7]
client = MiddlewareClient(url, key, user)
client.ping()
complete = client.complete_checkpoint
timed = {}
def complete_timed(*args, **options):  # the complete request: the server joins the parts before it answers
    began = time.perf_counter()
    try:
        return complete(*args, **options)
    finally:
        timed["complete_s"] = time.perf_counter() - began
client.complete_checkpoint = complete_timed
before = peak_kib()
began = time.perf_counter()
checkpoint = upload_file(client, path, kind)
seconds = time.perf_counter() - began
peak = peak_kib()
result = {"seconds": seconds, "before_kib": before, "peak_kib": peak, "status": checkpoint.get("status")}
print(json.dumps({**result, **timed}))
"""


def run(argv: list[str]) -> tuple[float, str]:
    """(wall seconds, stdout) of a child process; RuntimeError if it fails."""
    began = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({result.returncode}): {result.stderr[-2000:]}")
    return time.perf_counter() - began, result.stdout


def copy_file(source: Path, target: Path) -> tuple[float, int | None]:
    """(seconds, peak RSS KiB or None) of `cp --sparse=never`; the RSS from GNU time (`%M`) when installed,
    as this process's ru_maxrss for a child would report this (larger) process's size: Linux keeps it across
    fork and exec."""
    argv = ["cp", "--sparse=never", str(source), str(target)]
    if not Path(GNU_TIME).exists():
        return run(argv)[0], None
    seconds, _ = run([GNU_TIME, "-f", "%M", "-o", str(target) + ".rss", *argv])
    rss = Path(str(target) + ".rss")
    peak = int(rss.read_text().split()[-1])
    rss.unlink()
    return seconds, peak


def server_memory(pid: int) -> dict[str, int]:
    """VmHWM and VmRSS (KiB) of a process."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            values[name] = int(rest.split()[0])
    return values


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux 4.0+); False where not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def sparse_file(path: Path, size: int) -> Path:
    with open(path, "wb") as file:
        file.truncate(size)
    return path


def upload(api_url: str, path: Path) -> dict[str, float]:
    argv = [sys.executable, "-c", CHILD, str(ROOT), api_url, KEY, ADMIN, str(path), CHECKPOINT_TYPE]
    _, stdout = run(argv)
    result = json.loads(stdout.strip().splitlines()[-1])
    if result["status"] != "Active":
        raise RuntimeError(f"upload ended {result['status']}, not Active")
    return result


def measure(size: int, folder: Path) -> list[str]:
    """One table row for `size` bytes."""
    source = sparse_file(folder / f"model-{size}.safetensors", size)
    copy = folder / "copy.safetensors"
    try:
        cp_seconds, cp_rss = copy_file(source, copy)
        sync_seconds, _ = run(["sync", str(copy)])  # the server fsyncs every part it writes: so does this
        copy.unlink()
        with stack(engine=False) as (server, _):
            pid = server.process.pid
            upload(server.url, sparse_file(folder / "warm-up.safetensors", 1 << 20))
            reset = reset_peak(pid)
            server_before = server_memory(pid)
            result = upload(server.url, source)
            server_after = server_memory(pid)
    finally:
        for path in folder.iterdir():
            path.unlink()
    seconds = result["seconds"]
    server_peak = server_after["VmHWM"] if reset else None
    return [
        mib(size),
        f"{size / MiB / seconds:.0f}",
        f"{size / MiB / cp_seconds:.0f}",
        f"{size / MiB / (cp_seconds + sync_seconds):.0f}",
        f"{cp_seconds / seconds:.2f} / {(cp_seconds + sync_seconds) / seconds:.2f}",
        f"{result['complete_s']:.2f}",
        f"{result['before_kib'] / 1024:.0f} → {result['peak_kib'] / 1024:.0f}",
        f"{server_before['VmRSS'] / 1024:.0f} → {server_peak / 1024:.0f}" if server_peak else "-",
        f"{cp_rss / 1024:.1f}" if cp_rss else "-",
    ]


def collect(sizes: list[int]) -> list[Table]:
    table = Table(
        title="Checkpoint upload: the extension's upload_file to the embedded middleware vs cp on the same disk",
        command=command("bench_upload.py", "--sizes", *(size_option(size) for size in sizes)),
        headers=[
            "file",
            "upload MiB/s",
            "cp MiB/s",
            "cp + sync MiB/s",
            "upload speed / cp, / cp + sync",
            "complete request s",
            "client RSS MiB (before → peak)",
            "server RSS MiB (before → peak)",
            "cp peak RSS MiB",
        ],
    )
    with tempfile.TemporaryDirectory(prefix="esd-bench-upload-") as scratch:
        for size in sizes:
            table.rows.append(measure(size, Path(scratch)))
            print(f"  upload {mib(size)}: {table.rows[-1]}", file=sys.stderr, flush=True)
    table.notes += [
        "upload: create, 8 MiB parts 4 at a time (upload_file's defaults) over HTTP to the server, which writes"
        " each part to its blob folder with its MD5 (the ETag) and an fsync, then complete (parts joined with"
        " copy_file_range); sources are sparse, so neither side reads the disk",
        "complete request: the server joins the parts into the object (copy + fsync) before it answers, so it"
        " grows with the size; upload_file waits size / 20 MiB/s for it (at least the client's 30 s)",
        "client RSS grows by about concurrency × part size (4 × 8 MiB), the server's by about 1 MiB per part"
        " in flight: both independent of the file size",
    ]
    return [table]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=parse_size, nargs="+", default=[parse_size(s) for s in ("100M", "1G", "4G")])
    args = parser.parse_args()
    sys.stdout.write(report(collect(args.sizes)))


if __name__ == "__main__":
    main()
