"""Running kohya sd-scripts: the work folder, the one command line and the process runner of both trainers.

The local runner (`adapters/embedded/training.py`) and the SageMaker job's entry
(`training/entry.py`) fill a `WorkFolder` from the store, then call `command` and
`run` with a log callback. Paths go on the command line: kohya parses it into the
namespace its `--config_file` filled, so they win over whatever the config holds.
Standard library only, so the training image needs nothing else of the middleware.
"""

from __future__ import annotations

import codecs
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

SCRIPTS = {"sd_1_5": "train_network.py", "sd_xl": "sdxl_train_network.py"}
BASE_SCRIPT = SCRIPTS["sd_1_5"]
SETUP_HINT = (
    "set ESD_KOHYA_DIR to a checkout of https://github.com/kohya-ss/sd-scripts with its requirements installed "
    "(and ESD_KOHYA_PYTHON to the Python of that environment, if it is not ESD_KOHYA_DIR/venv/bin/python)"
)
OUTPUT_SUFFIX = ".safetensors"
_REPEATS_FOLDER = re.compile(r"^\d+_")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # tqdm redraws its progress bar after a bare \r


class KohyaNotFound(Exception):
    """kohya's scripts are not where the settings say; the message says how to set them up."""


@dataclass(frozen=True)
class WorkFolder:
    """One job's files on the machine that trains: inputs fetched from the store, kohya's outputs, the log."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def dataset(self) -> Path:
        return self.root / "dataset"

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def log(self) -> Path:
        return self.root / "train.log"

    def make(self) -> None:
        for folder in (self.model_dir, self.dataset, self.output):
            folder.mkdir(parents=True, exist_ok=True)


def find_script(kohya_dir: str | os.PathLike[str] | None, fm_type: str) -> Path:
    """kohya's training script for `fm_type` (`train_network.py`, `sdxl_train_network.py`); KohyaNotFound if absent."""
    if not kohya_dir:
        raise KohyaNotFound(f"kohya sd-scripts is not set up: {SETUP_HINT}")
    folder = Path(kohya_dir)
    if not (folder / BASE_SCRIPT).is_file():
        raise KohyaNotFound(f"{folder / BASE_SCRIPT} not found: {SETUP_HINT}")
    script = folder / SCRIPTS.get(fm_type, BASE_SCRIPT)
    if not script.is_file():
        raise KohyaNotFound(f"{script} not found: {fm_type} training needs a version of sd-scripts that has it")
    return script


def python_for(kohya_dir: str | os.PathLike[str], configured: str | None = None) -> str:
    """The Python that runs kohya: `configured`, else kohya's own venv, else this one."""
    if configured:
        return configured
    venv = Path(kohya_dir) / "venv" / "bin" / "python"
    return str(venv) if venv.is_file() else sys.executable


def command(python: str, script: Path, work: WorkFolder, model: Path, output_name: str) -> list[str]:
    """The command line that trains `work`'s dataset on `model` into `work.output/{output_name}.safetensors`."""
    return [
        python,
        str(script),
        "--config_file",
        str(work.config),
        "--pretrained_model_name_or_path",
        str(model),
        "--train_data_dir",
        str(work.dataset),
        "--output_dir",
        str(work.output),
        "--output_name",
        output_name,
        "--save_model_as",
        "safetensors",
    ]


def run(
    argv: list[str],
    on_line: Callable[[str], None],
    *,
    cwd: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    on_start: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> int:
    """Run `argv` in its own process group, passing each line it prints (stdout and stderr) to `on_line`;
    its exit code. `on_start` gets the process at once, so that another thread can `terminate` it."""
    environment = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        argv,
        cwd=cwd,
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    if on_start is not None:
        on_start(process)
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    pending = ""
    assert process.stdout is not None
    with process.stdout:
        while chunk := process.stdout.read1(1 << 16):
            pending += decoder.decode(chunk)
            *lines, pending = _LINE_BREAK.split(pending)
            for line in lines:
                if line.strip():
                    on_line(line)
    pending += decoder.decode(b"", final=True)
    if pending.strip():
        on_line(pending)
    return process.wait()


def terminate(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM the process group, SIGKILL it after `timeout_s`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            process.wait(timeout=timeout_s)
            return
        except subprocess.TimeoutExpired:
            continue


def prepare_dataset(folder: Path, concept: str) -> None:
    """Give kohya the folder layout it reads (`{repeats}_{concept}/` subfolders): loose files at the top of
    `folder` move into `1_{concept}/`. A dataset uploaded with a prefix such as `10_lego` is left as it is."""
    loose = [path for path in folder.iterdir() if path.is_file()]
    if not loose:
        return
    target = folder / f"1_{concept}"
    target.mkdir(exist_ok=True)
    for path in loose:
        path.rename(target / path.name)


def has_repeats_folder(folder: Path) -> bool:
    """Whether `folder` holds at least one `{repeats}_{concept}` folder, the only ones kohya trains on."""
    return any(path.is_dir() and _REPEATS_FOLDER.match(path.name) for path in folder.iterdir())


def find_outputs(folder: Path, output_name: str) -> list[Path]:
    """The `.safetensors` kohya wrote into `folder`: the final `{output_name}.safetensors` first, then the
    intermediate ones (`{output_name}-000050.safetensors`, …) in name order."""
    found = sorted(path for path in folder.glob(f"*{OUTPUT_SUFFIX}") if path.is_file())
    final = folder / f"{output_name}{OUTPUT_SUFFIX}"
    return sorted(found, key=lambda path: path != final)
