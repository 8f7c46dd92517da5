"""Build the Lambda zip: the middleware's code and its pinned dependencies as manylinux x86_64 wheels.

    python -m middleware_api.deploy.package [--out dist] [--python-version 3.12] [--installer auto|uv|pip]
                                            [--precompile PYTHON3.12] [--sizes]

Prints the zip's path, its size and its sha256. The same inputs give the same bytes: entries sorted,
every timestamp 1980-01-01, permissions 0644, no `__pycache__`/`.pyc`, no installer bookkeeping
(`RECORD`, `INSTALLER`, `REQUESTED`, `direct_url.json`) and no console scripts (`bin/`, whose
shebangs name the build machine's Python). The zip leaves out `middleware_api/worker` (it runs in
the SageMaker image) and `middleware_api/deploy` (this builder and the template). boto3 is not
bundled: the Lambda runtime provides it (see `requirements/deploy.txt`).

`--precompile` adds bytecode made by the given interpreter (of the runtime's Python version):
hash-checked `.pyc` files (PEP 552, no timestamps) naming `/var/task/...` as their source, so still
reproducible. Lambda's code folder is read-only, so without them every cold start compiles every
module it imports (about twice the import time; see tests/bench/bench_lambda_import.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = ROOT / "middleware_api"
REQUIREMENTS = ROOT / "requirements" / "deploy.txt"
ZIP_NAME = "esd-lambda.zip"
LAMBDA_PYTHON = "3.12"
EXCLUDED_SUBPACKAGES = ("worker", "deploy")
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
FILE_MODE = 0o100644  # a regular file, readable by all: what Lambda needs
INSTALLER_FILES = frozenset({"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"})


class PackageError(RuntimeError):
    """The zip cannot be built as pinned (an installer failed, a dependency is not pinned, …)."""


@dataclass(frozen=True)
class Built:
    """A zip written by `build`."""

    path: Path
    size: int
    sha256: str
    entries: int

    @property
    def size_mb(self) -> float:
        return self.size / 1_000_000


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(requirements: Path = REQUIREMENTS) -> dict[str, str]:
    """`{canonical name: version}` of a file of `name==version` lines; PackageError on anything else."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(requirements.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)", line)
        if match is None:
            raise PackageError(f"{requirements}:{number}: not a `name==version` pin: {line!r}")
        pins[canonical(match[1])] = match[2]
    return pins


def find_uv() -> str | None:
    """uv on PATH, or the one `dev.py` installs into `.envs/tools`."""
    found = shutil.which("uv")
    if found:
        return found
    local = ROOT / ".envs" / "tools" / ("Scripts/uv.exe" if os.name == "nt" else "bin/uv")
    return str(local) if local.exists() else None


def install_command(target: Path, requirements: Path, python_version: str, installer: str = "auto") -> list[str]:
    """The command that installs the pinned wheels for Lambda (manylinux x86_64, CPython `python_version`)."""
    uv = find_uv() if installer in ("auto", "uv") else None
    if installer == "uv" and uv is None:
        raise PackageError("uv not found: install it (or run `python3 dev.py test` once) or use --installer pip")
    if uv is not None:
        return [
            uv,
            "pip",
            "install",
            "--quiet",
            "--no-python-downloads",
            "--target",
            str(target),
            "--python-platform",
            "x86_64-manylinux2014",
            "--python-version",
            python_version,
            "--only-binary",
            ":all:",
            "--no-compile",
            "-r",
            str(requirements),
        ]
    return [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--target",
        str(target),
        "--platform",
        "manylinux2014_x86_64",
        "--implementation",
        "cp",
        "--python-version",
        python_version,
        "--only-binary=:all:",
        "--no-compile",
        "-r",
        str(requirements),
    ]


def install_dependencies(target: Path, requirements: Path, python_version: str, installer: str = "auto") -> None:
    """Install the pins into `target`; PackageError if the installer fails or installs anything unpinned."""
    command = install_command(target, requirements, python_version, installer)
    environment = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=environment)
    if result.returncode != 0:
        raise PackageError(f"installing {requirements.name} failed:\n{result.stdout}{result.stderr}")
    check_installed(target, read_pins(requirements))


def installed(target: Path) -> dict[str, str]:
    """`{canonical name: version}` of the distributions in an install target."""
    found = {}
    for info in target.glob("*.dist-info"):
        name, _, version = info.name[: -len(".dist-info")].rpartition("-")
        found[canonical(name)] = version
    return found


def check_installed(target: Path, pins: dict[str, str]) -> None:
    """PackageError unless exactly the pinned distributions, at their pinned versions, are installed."""
    present = installed(target)
    unpinned = sorted(f"{name}=={version}" for name, version in present.items() if name not in pins)
    differing = sorted(
        f"{name}=={present[name]} (pinned {pins[name]})"
        for name in present
        if name in pins and present[name] != pins[name]
    )
    missing = sorted(name for name in pins if name not in present)
    if unpinned or differing or missing:
        problems = [
            *(f"installed but not pinned: {item}" for item in unpinned),
            *(f"installed at another version: {item}" for item in differing),
            *(f"pinned but not installed: {name}" for name in missing),
        ]
        raise PackageError("requirements/deploy.txt must pin every dependency exactly:\n  " + "\n  ".join(problems))


def _skipped(relative: Path) -> bool:
    parts = relative.parts
    return "__pycache__" in parts or relative.suffix in (".pyc", ".pyo") or any(part.startswith(".") for part in parts)


def code_files(package_dir: Path = PACKAGE_DIR) -> list[tuple[str, Path]]:
    """`(name in the zip, file)` of the middleware's code, without the worker and deploy subpackages."""
    files = []
    for path in package_dir.rglob("*"):
        relative = path.relative_to(package_dir)
        if not path.is_file() or _skipped(relative) or relative.parts[0] in EXCLUDED_SUBPACKAGES:
            continue
        files.append((f"{package_dir.name}/{relative.as_posix()}", path))
    return files


def dependency_files(target: Path) -> list[tuple[str, Path]]:
    """`(name in the zip, file)` of an install target, without scripts, caches and installer bookkeeping."""
    files = []
    for path in target.rglob("*"):
        relative = path.relative_to(target)
        if not path.is_file() or _skipped(relative) or relative.parts[0] == "bin":
            continue
        if relative.parts[0].endswith(".dist-info") and relative.name in INSTALLER_FILES and len(relative.parts) == 2:
            continue
        files.append((relative.as_posix(), path))
    return files


def write_zip(entries: Sequence[tuple[str, Path]], path: Path) -> None:
    """A zip of `entries`, byte for byte the same for the same files: sorted, fixed times and modes."""
    names = [name for name, _ in entries]
    duplicates = [name for name, count in Counter(names).items() if count > 1]
    if duplicates:
        raise PackageError(f"two files for the same zip entry: {', '.join(sorted(duplicates))}")
    partial = path.with_name(path.name + ".partial")
    with zipfile.ZipFile(partial, "w") as archive:
        for name, source in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.create_system = 3  # Unix, so that the mode below is read
            info.external_attr = FILE_MODE << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, source.read_bytes(), compresslevel=9)
    partial.replace(path)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


LAMBDA_TASK_ROOT = "/var/task"
_COMPILER = """
import json, py_compile, sys
jobs = json.load(sys.stdin)
failed = []
for source, target, shown in jobs:
    try:
        py_compile.compile(source, cfile=target, dfile=shown, doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
    except py_compile.PyCompileError:
        failed.append(shown)
json.dump({"tag": sys.implementation.cache_tag, "failed": failed}, sys.stdout)
"""


def bytecode_files(
    entries: Sequence[tuple[str, Path]], python: str, python_version: str, scratch: Path
) -> list[tuple[str, Path]]:
    """`(name in the zip, file)` of hash-checked `.pyc` files for the `.py` entries, made by `python`.

    PackageError if `python` is not the runtime's version: bytecode is only read by the minor
    version that wrote it. A module that does not compile (none among the pins) is left without one.
    """
    probe = subprocess.run(
        [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True
    )
    if probe.returncode != 0 or probe.stdout.strip() != python_version:
        found = probe.stdout.strip() or probe.stderr.strip()
        raise PackageError(f"--precompile needs a Python {python_version} interpreter; {python} is {found!r}")
    jobs = []
    for name, source in entries:
        if not name.endswith(".py"):
            continue
        folder, _, module = name.rpartition("/")
        target = scratch / "bytecode" / name
        jobs.append((str(source), str(target), f"{LAMBDA_TASK_ROOT}/{name}", folder, module[:-3]))
    result = subprocess.run(
        [python, "-S", "-c", _COMPILER],
        input=json.dumps([job[:3] for job in jobs]),
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    if result.returncode != 0:
        raise PackageError(f"compiling the bytecode failed:\n{result.stderr}")
    report = json.loads(result.stdout)
    failed = set(report["failed"])
    files = []
    for _, target, shown, folder, module in jobs:
        if shown in failed:
            continue
        prefix = f"{folder}/" if folder else ""
        files.append((f"{prefix}__pycache__/{module}.{report['tag']}.pyc", Path(target)))
    return files


def build(
    out_dir: Path = Path("dist"),
    *,
    python_version: str = LAMBDA_PYTHON,
    requirements: Path = REQUIREMENTS,
    installer: str = "auto",
    package_dir: Path = PACKAGE_DIR,
    precompile: str | None = None,
) -> Built:
    """Write `out_dir/esd-lambda.zip`: the code of `package_dir` and the wheels pinned in `requirements`,
    with bytecode made by the interpreter `precompile` when given."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="esd-lambda-") as scratch:
        target = Path(scratch) / "dependencies"
        install_dependencies(target, requirements, python_version, installer)
        entries = dependency_files(target) + code_files(package_dir)
        if precompile:
            entries += bytecode_files(entries, precompile, python_version, Path(scratch))
        path = out_dir / ZIP_NAME
        write_zip(entries, path)
    return Built(path=path, size=path.stat().st_size, sha256=sha256_of(path), entries=len(entries))


def sizes_by_top_level(path: Path) -> list[tuple[str, int]]:
    """Compressed bytes per top-level name in a zip (packages, dist-info folders, modules), largest first."""
    totals: Counter[str] = Counter()
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            totals[info.filename.split("/", 1)[0]] += info.compress_size
    return totals.most_common()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m middleware_api.deploy.package", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("dist"), help="folder for the zip (default: dist)")
    parser.add_argument(
        "--python-version", default=LAMBDA_PYTHON, help=f"the Lambda runtime's Python (default {LAMBDA_PYTHON})"
    )
    parser.add_argument("--installer", choices=("auto", "uv", "pip"), default="auto", help="default: uv if found")
    parser.add_argument(
        "--precompile",
        metavar="PYTHON",
        help="add hash-checked bytecode made by this interpreter (of --python-version): a faster cold start",
    )
    parser.add_argument("--sizes", action="store_true", help="also print the largest entries by compressed size")
    arguments = parser.parse_args(argv)
    try:
        built = build(
            arguments.out,
            python_version=arguments.python_version,
            installer=arguments.installer,
            precompile=arguments.precompile,
        )
    except PackageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(built.path)
    print(f"size: {built.size_mb:.2f} MB ({built.size} bytes, {built.entries} files)")
    print(f"sha256: {built.sha256}")
    if arguments.sizes:
        for name, size in sizes_by_top_level(built.path)[:12]:
            print(f"  {size / 1_000_000:7.2f} MB  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
