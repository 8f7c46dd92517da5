"""Every benchmark in one run: one markdown report on stdout and in `tests/bench/results.md`.

    .envs/server/bin/python tests/bench/run_all.py [--quick] [--only inference lists ...] [--output FILE]

Full: job overhead at 1, 8 and 32 concurrent jobs (200 jobs each); list routes at 100, 10,000 and
100,000 items (aws on moto up to 10,000); uploads of 100 MiB, 1 GiB and 4 GiB (about 9 GiB of disk
at the largest, removed after); cold starts over 7 processes; requests per second for 10 s. Run it
on a quiet machine: the figures are side-by-side ratios, but a busy machine widens them.
`--quick`: 32 jobs per level, up to 10,000 items, 100 MiB, 3 processes, 3 s: a few minutes.
Each section also names the command that reproduces it alone.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import bench_api
import bench_extension_import
import bench_inference
import bench_lambda_import
import bench_lists
import bench_upload
from common import ROOT, Table, command, machine, parse_size, report

RESULTS = Path(__file__).with_name("results.md")

FULL: dict[str, Callable[[], list[Table]]] = {
    "inference": lambda: bench_inference.collect(jobs=200, levels=[1, 8, 32], instances=1),
    "lists": lambda: bench_lists.collect(sizes=[100, 10_000, 100_000], aws_sizes=[100, 10_000]),
    "upload": lambda: bench_upload.collect([parse_size(size) for size in ("100M", "1G", "4G")]),
    "extension-import": lambda: bench_extension_import.collect(runs=7),
    "lambda-import": lambda: bench_lambda_import.collect(runs=7),
    "api": lambda: bench_api.collect(seconds=10),
}
QUICK: dict[str, Callable[[], list[Table]]] = {
    "inference": lambda: bench_inference.collect(jobs=32, levels=[1, 8, 32], instances=1),
    "lists": lambda: bench_lists.collect(sizes=[100, 10_000], aws_sizes=[100, 10_000], samples=10, budget_s=3),
    "upload": lambda: bench_upload.collect([parse_size("100M")]),
    "extension-import": lambda: bench_extension_import.collect(runs=3),
    "lambda-import": lambda: bench_lambda_import.collect(runs=3),
    "api": lambda: bench_api.collect(seconds=3),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smaller run: a few minutes")
    parser.add_argument("--only", nargs="+", choices=list(FULL), help="run only these sections")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where the report is written too")
    args = parser.parse_args()
    sections = QUICK if args.quick else FULL
    chosen = args.only or list(sections)

    started = time.monotonic()
    about = machine()  # before the load the benchmarks make themselves
    tables: list[Table] = []
    for name in chosen:
        print(f"[{time.monotonic() - started:6.0f} s] {name} …", file=sys.stderr, flush=True)
        try:
            tables += sections[name]()
        except Exception as error:  # one broken section must not lose the others' figures
            traceback.print_exc()
            tables.append(Table(title=f"{name}: failed", command="-", headers=["error"], rows=[[repr(error)]]))
    elapsed = time.monotonic() - started

    options = [*(["--quick"] if args.quick else []), *(["--only", *chosen] if args.only else [])]
    intro = [f"## Benchmarks ({'quick' if args.quick else 'full'} run)", ""]
    intro += [f"`{command('run_all.py', *options)}` took {elapsed / 60:.1f} min.", ""]
    text = report(tables, about, intro)
    sys.stdout.write(text)
    args.output.write_text(text)
    shown = args.output.relative_to(ROOT) if args.output.is_relative_to(ROOT) else args.output
    print(f"written to {shlex.quote(str(shown))}", file=sys.stderr)


if __name__ == "__main__":
    main()
