"""Cold import of the API handler from the Lambda zip; prints figures, asserts nothing.

    .envs/server/bin/python tests/bench/bench_lambda_import.py [--runs 7]

Builds the zip (`middleware_api.deploy.package`), extracts it, and runs
`python -S -B -X importtime -c "import middleware_api.lambda_handler"` with `PYTHONPATH` = the
extracted zip and the runtime's boto3 only, with Python 3.12 when this machine has one (else this
Python, with a zip built for it). The figure is the sum of the cumulative times of the top-level
`middleware_api*` imports (what importing the handler module costs), median of the runs. `-B` and a
fresh folder keep Python from writing bytecode, as in Lambda, whose code folder is read-only: so
the plain zip compiles every module at every cold start, which the `--precompile` zip avoids.
Also printed: `import boto3` (the runtime's, with its bytecode; the first request pays it when it
builds the services). Figures vary with the machine's load: compare the minimums.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, Table, command, report

sys.path.insert(0, str(ROOT / "tests" / "deploy"))

from lambda_runtime import Interpreter, extract, lambda_python, runtime_packages  # noqa: E402

from middleware_api.deploy.package import build  # noqa: E402

_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def top_level_ms(stderr: str, prefix: str) -> float:
    """Sum of the cumulative times (ms) of the top-level imports whose module starts with `prefix`."""
    total = 0
    for line in stderr.splitlines():
        match = _LINE.match(line)
        if match and len(match[3]) == 1 and match[4].startswith(prefix):
            total += int(match[2])
    return total / 1000


def measure(
    interpreter: Interpreter, code: Path, runtime: Path, statement: str, prefix: str, runs: int
) -> tuple[float, float, float]:
    """(median import ms, min import ms, median wall ms) of `statement` in fresh processes."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": f"{code}{os.pathsep}{runtime}",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    imports, walls = [], []
    for _ in range(runs):
        started = time.perf_counter()
        result = subprocess.run(
            [interpreter.path, "-S", "-B", "-X", "importtime", "-c", statement],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        walls.append((time.perf_counter() - started) * 1000)
        imports.append(top_level_ms(result.stderr, prefix))
    return statistics.median(imports), min(imports), statistics.median(walls)


def collect(runs: int) -> list[Table]:
    interpreter = lambda_python()
    note = "" if interpreter.faithful else ", not the runtime's version"
    table = Table(
        title="Cold start: import of the Lambda API handler from the zip",
        command=command("bench_lambda_import.py", "--runs", runs),
        headers=["case", "zip MB", "import median ms", "min ms", "process wall median ms"],
    )
    with tempfile.TemporaryDirectory(prefix="esd-bench-") as scratch:
        folder = Path(scratch)
        runtime = runtime_packages(folder / "runtime")
        variants = [("plain zip", None)]
        if interpreter.faithful:
            variants.append(("--precompile zip", interpreter.path))
        for label, precompile in variants:
            built = build(folder / label.replace(" ", "-"), python_version=interpreter.version, precompile=precompile)
            code = extract(built.path, folder / f"code-{len(label)}")
            median, fastest, wall = measure(
                interpreter, code, runtime, "import middleware_api.lambda_handler", "middleware_api", runs
            )
            row = [f"import middleware_api.lambda_handler, {label}", f"{built.size_mb:.2f}"]
            table.rows.append(row + [f"{median:.0f}", f"{fastest:.0f}", f"{wall:.0f}"])
        compiled = folder / "runtime-compiled"  # Lambda's runtime ships boto3's bytecode: so does this copy
        for link in runtime.iterdir():
            copy = shutil.copytree if link.is_dir() else shutil.copy2
            copy(link.resolve(), compiled / link.name)
        subprocess.run(
            [interpreter.path, "-m", "compileall", "-q", "-j0", str(compiled)], check=True, capture_output=True
        )
        median, fastest, wall = measure(interpreter, code, compiled, "import boto3", "boto3", runs)
        table.rows.append(
            ["import boto3 (the runtime's, with bytecode)", "-", f"{median:.0f}", f"{fastest:.0f}", f"{wall:.0f}"]
        )
    table.notes.append(f"Python {interpreter.version} ({interpreter.path}{note}), {runs} fresh processes each")
    return [table]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    arguments = parser.parse_args()
    sys.stdout.write(report(collect(arguments.runs)))


if __name__ == "__main__":
    main()
