"""Running the Lambda zip as Lambda would: its Python, only its files and the runtime's boto3, the
function's environment.

- `lambda_python()`: an interpreter of the Lambda runtime's Python version (3.12), else this one;
- `extract()`: the zip into a folder (Lambda's `/var/task`);
- `runtime_packages()`: a folder with boto3 and what it needs, from this environment (Lambda's `/var/runtime`);
- `LambdaProcess`: `lambda_driver.py` in a child process with `PYTHONPATH` = those two folders only.
"""

from __future__ import annotations

import glob
import importlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from middleware_api.deploy.package import LAMBDA_PYTHON

DRIVER = Path(__file__).with_name("lambda_driver.py")
# boto3 and its dependencies, all pure Python: what Lambda's Python runtime puts on sys.path after the code
RUNTIME_MODULES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six")


@dataclass(frozen=True)
class Interpreter:
    """A Python to run the zip with; `faithful` when it is the Lambda runtime's version."""

    path: str
    version: str

    @property
    def faithful(self) -> bool:
        return self.version == LAMBDA_PYTHON


def _version_of(path: str) -> str | None:
    try:
        result = subprocess.run(
            [path, "-S", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def find_python(version: str = LAMBDA_PYTHON) -> str | None:
    """An interpreter of `version`: `$ESD_LAMBDA_PYTHON`, `python3.12` on PATH, pyenv's, or uv's."""
    candidates = [os.environ.get("ESD_LAMBDA_PYTHON"), shutil.which(f"python{version}")]
    candidates += sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python{version}")))
    uv = shutil.which("uv")
    if uv:
        found = subprocess.run(
            [uv, "python", "find", "--no-python-downloads", version], capture_output=True, text=True, timeout=60
        )
        candidates.append(found.stdout.strip() if found.returncode == 0 else None)
    for candidate in candidates:
        if candidate and _version_of(candidate) == version:
            return candidate
    return None


def lambda_python() -> Interpreter:
    """Python 3.12 when this machine has one, else the running interpreter (the zip is then built for it)."""
    found = find_python()
    if found:
        return Interpreter(found, LAMBDA_PYTHON)
    return Interpreter(sys.executable, f"{sys.version_info.major}.{sys.version_info.minor}")


def extract(zip_path: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(folder)
    return folder


def runtime_packages(folder: Path) -> Path:
    """Links to this environment's boto3 and its dependencies: the modules Lambda's runtime provides."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in RUNTIME_MODULES:
        module = importlib.import_module(name)
        origin = Path(module.__file__ or "")
        source = origin.parent if origin.name == "__init__.py" else origin
        link = folder / source.name
        if not link.exists():
            link.symlink_to(source, target_is_directory=source.is_dir())
    return folder


class LambdaProcess:
    """One warm Lambda container: the handlers imported once from `code`, invoked many times."""

    def __init__(self, python: str, code: Path, runtime: Path, environment: dict[str, str], log: Path) -> None:
        """`log` receives the function's stderr (its logging), as CloudWatch Logs would."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "PYTHONPATH": f"{code}{os.pathsep}{runtime}",
            "PYTHONDONTWRITEBYTECODE": "1",  # Lambda's /var/task is read-only
            **environment,
        }
        self.log = log
        with log.open("w") as stderr:
            self.process = subprocess.Popen(
                [python, "-S", "-u", str(DRIVER)],
                cwd=code,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        ready = self._read()
        if not ready.get("ready"):
            raise RuntimeError(f"the handlers did not import: {ready}")

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(timeout=10)
            stderr = self.log.read_text()[-4000:]
            raise RuntimeError(f"the Lambda driver exited ({self.process.returncode}):\n{stderr}")
        return json.loads(line)

    def invoke(self, entry: str, event: Any) -> dict[str, Any]:
        """`{"ok", "result" | "error", "calls"}` of one invocation of the handler named `entry`."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"entry": entry, "event": event}) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()
