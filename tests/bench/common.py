"""Shared bits of the benchmarks: paths, the machine, statistics, markdown tables, the stack in child processes.

Each bench module has `collect(...) -> list[Table]` (what `run_all.py` calls) and a `main()` that parses its own
command line, calls `collect` and prints the tables. A `Table` carries the command that reproduces it alone.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import re
import shlex
import statistics
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for _folder in (ROOT / "tests", ROOT):  # the repository (middleware_api, aws_extension) and tests/support.py
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

# support.py imports Starlette's TestClient, which warns about its httpx backend: noise in a report
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
from support import EngineDouble, ServerProcess, free_port  # noqa: E402

KEY = "bench-key"
ADMIN = "admin"
ADMIN_PASSWORD = "bench-password"
HEADERS = {"x-api-key": KEY, "username": ADMIN}
A1111_PYTHON = ROOT / ".envs" / "a1111" / "bin" / "python"
MiB = 1 << 20


@dataclass
class Table:
    """One result table: a title, the command that produces it alone, rows, and notes under it."""

    title: str
    command: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", f"`{self.command}`", ""]
        lines.append("| " + " | ".join(self.headers) + " |")
        lines.append("|" + "|".join("---" if index == 0 else "---:" for index in range(len(self.headers))) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.notes:
            lines.append("")
            lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines)


def command(script: str, *options: object) -> str:
    """The shell command running `tests/bench/<script>` with `options` in this Python (path relative to the repo)."""
    python = Path(sys.executable)
    with contextlib.suppress(ValueError):
        python = python.relative_to(ROOT)
    return shlex.join([str(python), f"tests/bench/{script}", *(str(option) for option in options)])


def machine() -> list[tuple[str, str]]:
    """(label, value) pairs: date, CPU model, cores, RAM, OS, Python, load average."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        cpu = match[1].strip() if match else cpu
    ram = "?"
    with contextlib.suppress(OSError, AttributeError, ValueError):
        ram = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / (1 << 30):.1f} GiB"
    load = "?"
    with contextlib.suppress(OSError, AttributeError):
        load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    return [
        ("date", datetime.now().astimezone().isoformat(timespec="seconds")),
        ("CPU", f"{cpu}, {os.cpu_count()} cores"),
        ("RAM", ram),
        ("OS", platform.platform()),
        ("Python", f"{platform.python_version()} ({platform.python_implementation()})"),
        ("load average at start", load),
    ]


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def ms(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def mib(size: int) -> str:
    """A byte count as `100 MiB` / `4 GiB`."""
    if size >= 1 << 30 and size % (1 << 30) == 0:
        return f"{size >> 30} GiB"
    return f"{size / MiB:g} MiB"


def size_option(size: int) -> str:
    """A byte count as `parse_size` reads it back: `100M`, `4G`."""
    for suffix, unit in (("G", 1 << 30), ("M", MiB), ("K", 1 << 10)):
        if size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


def parse_size(text: str) -> int:
    """`100M`, `1G`, `4GiB`, `512MiB` or a byte count as bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)(?:i?[bB])?\s*", text)
    if not match:
        raise ValueError(f"not a size: {text!r} (e.g. 100M, 1G)")
    factor = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[match[2].lower()]
    return int(float(match[1]) * factor)


@contextlib.contextmanager
def stack(
    engine: bool = True, env: dict[str, str] | None = None
) -> Iterator[tuple[ServerProcess, EngineDouble | None]]:
    """The middleware (`serve`, embedded backend) in a child process, with the engine double when asked,
    on a temporary data folder; stopped and removed afterwards."""
    double = EngineDouble() if engine else None
    try:
        with tempfile.TemporaryDirectory(prefix="esd-bench-") as folder:
            server_env = {"ESD_API_KEY": KEY, "ESD_ADMIN_PASSWORD": ADMIN_PASSWORD, **(env or {})}
            if double is not None:
                server_env["ESD_ENGINE_URL"] = double.url
            server = ServerProcess(Path(folder) / "data", free_port(), env=server_env)
            try:
                yield server, double
            finally:
                server.stop()
    finally:
        if double is not None:
            double.stop()


def report(tables: Sequence[Table], about: list[tuple[str, str]] | None = None, intro: Sequence[str] = ()) -> str:
    """The tables as one markdown document: `intro` lines, the machine (`about`, else now), the tables."""
    lines = list(intro)
    lines += ["| machine | |", "|---|---|", *(f"| {label} | {value} |" for label, value in about or machine())]
    for table in tables:
        lines += ["", table.markdown()]
    return "\n".join(lines) + "\n"
