#!/usr/bin/env python3
"""The project's two commands, on a machine with only Python 3.10+:

    python3 dev.py run     the middleware on the embedded backend (http://127.0.0.1:8080/prod/)
    python3 dev.py test    lint and every test, in environments made from scratch

Environments live in `.envs/` and are made with uv (installed into `.envs/tools`
on first use), which resolves and installs them in seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
ENVS = ROOT / ".envs"
REQUIREMENTS = ROOT / "requirements"
UV_VERSION = "0.13.9"

# name -> requirement files
ENVIRONMENTS = {
    "server": ["server.txt", "test.txt"],
}


def _bin(env: Path, name: str) -> Path:
    return env / ("Scripts" if os.name == "nt" else "bin") / name


def _run(*command: object, **options: object) -> None:
    print("+", " ".join(str(part) for part in command), flush=True)
    subprocess.run([str(part) for part in command], check=True, **options)  # type: ignore[arg-type]


def uv() -> Path:
    """uv, installed into `.envs/tools` if this machine lacks it."""
    tools = ENVS / "tools"
    executable = _bin(tools, "uv")
    if not executable.exists():
        venv.create(tools, with_pip=True, clear=True)
        _run(_bin(tools, "python"), "-m", "pip", "install", "--quiet", f"uv=={UV_VERSION}")
    return executable


def environment(name: str) -> Path:
    """The environment `name` with its pinned requirements (re-synced every time: fast with uv)."""
    env = ENVS / name
    python = _bin(env, "python")
    if not python.exists():
        _run(uv(), "venv", "--quiet", "--python", sys.executable, env)
    requirements = [arg for file in ENVIRONMENTS[name] for arg in ("-r", REQUIREMENTS / file)]
    _run(uv(), "pip", "install", "--quiet", "--python", python, *requirements)
    return python


def run(arguments: list[str]) -> int:
    python = environment("server")
    environ = {**os.environ, "ESD_DATA_DIR": os.environ.get("ESD_DATA_DIR", str(ROOT / "data"))}
    return subprocess.call([str(python), "-m", "middleware_api", "serve", *arguments], cwd=ROOT, env=environ)


def test(arguments: list[str]) -> int:
    python = environment("server")
    _run(_bin(python.parent.parent, "ruff"), "check", "middleware_api", "tests", "dev.py", cwd=ROOT)
    return subprocess.call([str(python), "-m", "pytest", *arguments], cwd=ROOT)


def main() -> int:
    commands = {"run": run, "test": test}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    return commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
