"""Cold start of the extension in the WebUI: loading `scripts/cloud_inference.py`; prints figures, asserts nothing.

    .envs/server/bin/python tests/bench/bench_extension_import.py [--runs 7] [--python .envs/a1111/bin/python]

In fresh processes of the WebUI's Python (default `.envs/a1111/bin/python`), with the WebUI stand-in
(`tests/extension/webui_standin`) and this repository linked as an extension: gradio and the WebUI's `modules`
are imported first (the WebUI has them before it loads any extension script), then the time of
`modules.script_loading.load_module("…/scripts/cloud_inference.py")`, as the WebUI loads every script file.
Two cases: the first start after installing (no bytecode of the extension yet: compiled while loading) and
later starts (bytecode written by an earlier start). Median and minimum of `--runs` processes each, plus the
whole process's wall time (Python, gradio and the stand-in included: the WebUI's cost, not the extension's).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import A1111_PYTHON, ROOT, Table, command, median, report

STANDIN = ROOT / "tests" / "extension" / "webui_standin"
EXTENSION_NAME = "esd-cloud"  # as tests/extension/webui_fixtures.py links it

LOAD = """
import json, os, sys, time
extensions, standin = sys.argv[1:3]
sys.path.insert(0, standin)
import gradio
import modules.processing, modules.scripts, modules.script_callbacks, modules.images, modules.sd_vae
from modules import script_callbacks, script_loading
script_callbacks.on_app_started(lambda demo, app: None)  # the WebUI's built-in extensions register first
folder = os.path.join(extensions, "esd-cloud")
sys.path.insert(0, folder)
before = set(sys.modules)
started = time.perf_counter()
script_loading.load_module(os.path.join(folder, "scripts", "cloud_inference.py"))
elapsed = time.perf_counter() - started
ours = sorted(name for name in set(sys.modules) - before if name.startswith("aws_extension"))
print(json.dumps({"ms": elapsed * 1000, "ours": ours, "modules": len(set(sys.modules) - before)}))
"""


def load_once(python: str, work: Path, cache: Path, cold: bool) -> tuple[float, float, dict]:
    """(load ms, process wall ms, details) of one fresh WebUI-like process."""
    extensions = work / "extensions"
    if cold:  # the extension's bytecode only (gradio's stays): as the first start after installing it
        shutil.rmtree(cache / extensions.relative_to(extensions.anchor), ignore_errors=True)
    env = {name: value for name, value in os.environ.items() if not name.startswith(("ESD_", "PYTHON"))}
    env.update(
        PYTHONPYCACHEPREFIX=str(cache),
        WEBUI_STANDIN_EXTENSIONS=str(extensions),
        WEBUI_STANDIN_DATA=str(work / "data"),
        WEBUI_STANDIN_ARGS="",
        GRADIO_ANALYTICS_ENABLED="False",
        HOME=str(work / "home"),
    )
    began = time.perf_counter()
    result = subprocess.run(
        [python, "-c", LOAD, str(extensions), str(STANDIN)], capture_output=True, text=True, env=env, cwd=work
    )
    wall = (time.perf_counter() - began) * 1000
    if result.returncode != 0:
        raise RuntimeError(f"loading the script failed:\n{result.stderr[-3000:]}")
    details = json.loads(result.stdout.strip().splitlines()[-1])
    return details["ms"], wall, details


def collect(runs: int, python: str = str(A1111_PYTHON)) -> list[Table]:
    shown = os.path.relpath(python, ROOT) if python.startswith(str(ROOT)) else python
    table = Table(
        title="Cold start: the WebUI loading the extension's scripts/cloud_inference.py",
        command=command("bench_extension_import.py", "--runs", runs, "--python", shown),
        headers=["case", "load_module median ms", "min ms", "process wall median ms"],
    )
    if not Path(python).exists():
        table.notes.append(f"skipped: no {shown} (make it with `python3 dev.py test`)")
        return [table]
    version = subprocess.run([python, "--version"], capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="esd-bench-import-") as scratch:
        work = Path(scratch)
        (work / "extensions").mkdir()
        (work / "home").mkdir()
        (work / "extensions" / EXTENSION_NAME).symlink_to(ROOT, target_is_directory=True)
        cache = work / "pycache"
        load_once(python, work, cache, cold=False)  # writes gradio's and the stand-in's bytecode
        details: dict = {}
        for label, cold in (("first start (no bytecode of the extension)", True), ("later starts (bytecode)", False)):
            loads, walls = [], []
            for _ in range(runs):
                load, wall, details = load_once(python, work, cache, cold)
                loads.append(load)
                walls.append(wall)
            table.rows.append([label, f"{median(loads):.1f}", f"{min(loads):.1f}", f"{median(walls):.0f}"])
    table.notes += [
        f"{version}, {runs} fresh processes per case; gradio and the WebUI's modules imported before (not timed)",
        f"modules the load imports: {details.get('modules')}, of them the extension's: "
        + ", ".join(details.get("ours", [])),
    ]
    return [table]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--python", default=str(A1111_PYTHON), help="the WebUI's Python (gradio installed)")
    args = parser.parse_args()
    sys.stdout.write(report(collect(args.runs, args.python)))


if __name__ == "__main__":
    main()
