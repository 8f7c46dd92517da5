"""`is_installed`, `run_pip`, `run` and `git_tag` with the WebUI's signatures; pip calls are recorded, not run."""

import importlib.metadata
import importlib.util
import os
import sys

from modules import cmd_args

args, _ = cmd_args.parser.parse_known_args([])

python = sys.executable
default_command_live = os.environ.get("WEBUI_LAUNCH_LIVE_OUTPUT") == "1"
pip_calls: list[tuple[str, str | None]] = []


def run(command, desc=None, errdesc=None, custom_env=None, live: bool = default_command_live) -> str:
    raise RuntimeError(f"the stand-in does not run commands: {command}")


def is_installed(package):
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        try:
            spec = importlib.util.find_spec(package)
        except ModuleNotFoundError:
            return False

        return spec is not None

    return dist is not None


def run_pip(command, desc=None, live=default_command_live):
    if args.skip_install:
        return
    pip_calls.append((command, desc))
    return ""


def git_tag():
    return "v1.10.1-standin"
