#!/usr/bin/env python3
"""The project's two commands, on a machine with only Python 3.10+:

    python3 dev.py run     the middleware on the embedded backend with the extension's Cloud tabs
                           standalone on http://127.0.0.1:7861 (and an engine double if no WebUI API answers)
    python3 dev.py test    lint and every test, in environments made from scratch

Environments live in `.envs/` and are made with uv (installed into `.envs/tools`
on first use), which resolves and installs them in seconds.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import urllib.request
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
ENVS = ROOT / ".envs"
REQUIREMENTS = ROOT / "requirements"
UV_VERSION = "0.13.9"

# name -> (requirement files, preferred Python): the WebUIs run Python 3.10, so their envs do too when present
ENVIRONMENTS = {
    "server": (["server.txt", "test.txt"], None),
    "a1111": (["a1111.txt", "browser.txt"], "3.10"),
    "forge": (["forge.txt", "browser.txt"], "3.10"),
}
EXTENSION_TESTS = "tests/extension"


def _bin(env: Path, name: str) -> Path:
    return env / ("Scripts" if os.name == "nt" else "bin") / name


def _run(*command: object, **options: object) -> None:
    print("+", " ".join(str(part) for part in command), flush=True)
    subprocess.run([str(part) for part in command], check=True, **options)  # type: ignore[arg-type]


os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")  # only registries are reachable: use local Pythons


def uv() -> Path:
    """uv, installed into `.envs/tools` if this machine lacks it."""
    tools = ENVS / "tools"
    executable = _bin(tools, "uv")
    if not executable.exists():
        venv.create(tools, with_pip=True, clear=True)
        _run(_bin(tools, "python"), "-m", "pip", "install", "--quiet", f"uv=={UV_VERSION}")
    return executable


def interpreter(version: str | None) -> str:
    """A Python of `version` on this machine (PATH or pyenv), else the one running this script."""
    if version:
        candidates = [shutil.which(f"python{version}")]
        candidates += sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}*/bin/python{version}")))
        for candidate in filter(None, candidates):
            probe = subprocess.run([candidate, "-c", "import venv"], capture_output=True)
            if probe.returncode == 0:
                return candidate
    return sys.executable


def environment(name: str) -> Path:
    """The environment `name` with its pinned requirements (re-synced every time: fast with uv)."""
    files, version = ENVIRONMENTS[name]
    env = ENVS / name
    python = _bin(env, "python")
    if not python.exists():
        _run(uv(), "venv", "--quiet", "--python", interpreter(version), env)
    requirements = [arg for file in files for arg in ("-r", REQUIREMENTS / file)]
    _run(uv(), "pip", "install", "--quiet", "--python", python, *requirements)
    return python


def run(arguments: list[str]) -> int:
    """The embedded middleware, started by the standalone Cloud page, with an engine for local endpoints."""
    server, page = environment("server"), environment("a1111")
    engine_url = os.environ.get("ESD_ENGINE_URL") or "http://127.0.0.1:7860"
    double = None
    if "ESD_ENGINE_URL" not in os.environ and not _answers(engine_url + "/internal/ping"):
        print(f"no WebUI API at {engine_url}: starting the engine double there (real PNGs, no GPU)", flush=True)
        double_command = [str(server), "-m", "middleware_api.worker.engine_double", "--port", "7860"]
        double = subprocess.Popen(double_command, cwd=ROOT)
    command = [
        str(page), "-m", "aws_extension", "--embedded", "--embedded-python", str(server),
        "--embedded-dir", os.environ.get("ESD_DATA_DIR", str(ROOT / "data")), "--engine-url", engine_url, *arguments,
    ]  # fmt: skip
    try:
        return subprocess.call(command, cwd=ROOT)
    finally:
        if double is not None:
            double.terminate()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


def test(arguments: list[str]) -> int:
    """Lint, the middleware's tests in the server env, then the extension's in each WebUI's env."""
    server = environment("server")
    _run(_bin(server.parent.parent, "ruff"), "check", ".", cwd=ROOT)
    environ = {**os.environ, "ESD_SERVER_PYTHON": str(server)}  # extension tests start real middleware with it
    failed = subprocess.call([str(server), "-m", "pytest", "--ignore", EXTENSION_TESTS, *arguments], cwd=ROOT)
    if (ROOT / EXTENSION_TESTS).is_dir():
        for webui in ("a1111", "forge"):
            python = environment(webui)
            command = [str(python), "-m", "pytest", EXTENSION_TESTS, "--confcutdir", EXTENSION_TESTS, *arguments]
            failed |= subprocess.call(command, cwd=ROOT, env=environ)
    return failed


def main() -> int:
    commands = {"run": run, "test": test}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    return commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
