"""The embedded middleware: `python -m middleware_api serve` as a child process, in its own Python environment.

With no cloud deployment, a WebUI user can still try every tab and the whole job lifecycle:
the extension folder holds the whole repository, so `middleware_api` is importable from it;
what it lacks is a Python with the middleware's packages (FastAPI, pydantic 2, uvicorn —
never installed into the WebUI's own environment, whose pins they would break). On first use
`EmbeddedMiddleware.start()` makes that environment (`uv` when present, else `python -m venv`
and pip) from `requirements/server.txt`, with a Python 3.11 or newer; later starts reuse it
until that file changes.

Its secrets (a generated API key and admin password) are kept in `secrets.json` in the data
folder (mode 0600, the source of truth across restarts) and saved as the extension's
connection (`config.save_connection`, also 0600) at each start, since the port may change.
The caller registers `stop()` on `atexit` or the WebUI's shutdown hook; `start_shared()`
does it for the one instance the UI uses. As the WebUI may end without running either
(`os._exit` on Ctrl-C), the child also watches its parent (POSIX) and stops when it is gone.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aws_extension import config

log = logging.getLogger("aws_extension.embedded")

REPO_ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = REPO_ROOT / "requirements" / "server.txt"
DEFAULT_ENGINE_URL = "http://127.0.0.1:7860"
DATA_DIR_ENV = "ESD_EMBEDDED_DIR"
PYTHON_ENV = "ESD_EMBEDDED_PYTHON"  # the Python to build the environment with (3.11 or newer)
MIN_PYTHON = (3, 11)  # what requirements/server.txt needs (FastAPI's current releases)
ADMIN_USERNAME = "admin"
STAGE = "/prod"
READY_MARKER = ".esd-ready"
STATE_FILE = "embedded.json"
SECRETS_FILE = "secrets.json"
LOG_FILE = "middleware.log"

Report = Callable[[str], None]

# Runs the middleware's `__main__` after starting a thread that stops it (SIGTERM, then exit) once its parent is
# gone: the WebUI ends with `os._exit` on Ctrl-C, so neither `atexit` nor a shutdown hook would stop it there.
WATCHDOG = """
import os, runpy, signal, sys, threading, time
parent = int(sys.argv.pop(1))
def watch():
    while os.getppid() == parent:
        time.sleep(1)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(20)
    os._exit(1)
if os.name == "posix":
    threading.Thread(target=watch, name="esd-parent-watch", daemon=True).start()
sys.argv[0] = "middleware_api"
runpy.run_module("middleware_api", run_name="__main__", alter_sys=True)
"""


class EmbeddedError(RuntimeError):
    """The embedded middleware could not be set up, started or reached; the message says what to do."""


def default_data_dir() -> Path:
    """`$ESD_EMBEDDED_DIR`, else `$XDG_DATA_HOME/esd-webui/embedded` (`~/.local/share/…`)."""
    custom = os.environ.get(DATA_DIR_ENV)
    if custom:
        return Path(custom).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "esd-webui" / "embedded"


class EmbeddedMiddleware:
    """The middleware on this machine, on the embedded backend, with its data under `data_dir`.

    `python`: a Python that can already run the middleware (tests pass the server's
    environment); None makes (once) and uses `data_dir/python`, a virtual environment.
    `port`: None picks a free one at each start. `engine_url`: the A1111-compatible
    engine local endpoints call (a WebUI started with `--api`, e.g. this one).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        python: str | None = None,
        port: int | None = None,
        engine_url: str = DEFAULT_ENGINE_URL,
        *,
        host: str = "127.0.0.1",
        env_dir: str | os.PathLike[str] | None = None,
        base_python: str | None = None,
        offline: bool = False,
        start_timeout_s: float = 90.0,
        install_timeout_s: float = 1800.0,
        save_connection: bool = True,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.python = python
        self.port = port
        self.engine_url = engine_url.rstrip("/")
        self.host = host
        self.env_dir = Path(env_dir).expanduser() if env_dir else self.data_dir / "python"
        self.base_python = base_python or os.environ.get(PYTHON_ENV) or None
        self.offline = offline
        self.start_timeout_s = start_timeout_s
        self.install_timeout_s = install_timeout_s
        self.save_connection_on_start = save_connection
        self._process: subprocess.Popen[bytes] | None = None
        self._adopted_pid: int | None = None
        self._lock = threading.RLock()
        self._active_port: int | None = None

    def __repr__(self) -> str:
        return f"EmbeddedMiddleware({str(self.data_dir)!r}, url={self.url!r}, running={self.running})"

    # -- state -----------------------------------------------------------------------------

    @property
    def url(self) -> str | None:
        """The API's base URL (`http://127.0.0.1:P/prod`) while it runs, else None."""
        port = self._active_port
        return f"http://{_client_host(self.host)}:{port}{STAGE}" if port else None

    @property
    def running(self) -> bool:
        """True while the child (or the adopted process of an earlier WebUI run) is alive."""
        if self._process is not None:
            return self._process.poll() is None
        return self._adopted_pid is not None and _alive(self._adopted_pid)

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_FILE

    def secrets(self) -> dict[str, str]:
        """The API key and admin password of this data folder, made (and kept, 0600) on first use."""
        path = self.data_dir / SECRETS_FILE
        try:
            stored = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            stored = None
        except (OSError, ValueError) as exc:
            raise EmbeddedError(f"cannot read {path}: {exc}; delete it to make new secrets") from None
        if isinstance(stored, dict) and isinstance(stored.get("api_key"), str) and stored.get("admin_password"):
            _tighten(path)
            return {"api_key": stored["api_key"], "admin_password": str(stored["admin_password"])}
        made = {"api_key": "esd-" + secrets.token_urlsafe(32), "admin_password": secrets.token_urlsafe(16)}
        _write_private(path, made)
        return made

    def connection(self) -> config.Connection:
        """The connection to this middleware (as the admin); EmbeddedError if it is not running."""
        if not self.url:
            raise EmbeddedError("the embedded middleware is not running")
        values = self.secrets()
        return config.Connection(self.url, values["api_key"], ADMIN_USERNAME, values["admin_password"])

    # -- environment -----------------------------------------------------------------------

    def environment_ready(self) -> bool:
        """True if the Python to run is given, or the environment is made for the current requirements."""
        if self.python:
            return True
        marker = self.env_dir / READY_MARKER
        try:
            return marker.read_text("utf-8").strip() == _requirements_digest() and _env_python(self.env_dir).exists()
        except OSError:
            return False

    def ensure_environment(self, report: Report | None = None) -> str:
        """The Python that runs the middleware: `python` if given, else the environment, made on first use."""
        if self.python:
            return self.python
        python = _env_python(self.env_dir)
        if self.environment_ready():
            return str(python)
        say = report or (lambda text: None)
        if not REQUIREMENTS.is_file():
            raise EmbeddedError(f"{REQUIREMENTS} is missing: the extension folder must hold the whole repository")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.env_dir.exists():
            shutil.rmtree(self.env_dir)  # made for other requirements, or half made
        uv = shutil.which("uv")
        with open(self.log_path, "ab") as output:
            if uv:
                wanted = self.base_python or _find_base_python() or ">={}.{}".format(*MIN_PYTHON)
                say(f"making the middleware's Python environment with uv in {self.env_dir} …")
                self._run([uv, "venv", "--python", wanted, str(self.env_dir)], output)
                install = [uv, "pip", "install", "--python", str(python), "-r", str(REQUIREMENTS)]
                self._run([*install, "--offline"] if self.offline else install, output)
            else:
                base = self.base_python or _find_base_python()
                if base is None:
                    raise EmbeddedError(
                        "the embedded middleware needs Python {}.{} or newer: install one (or uv), "
                        "or name it in ${}".format(*MIN_PYTHON, PYTHON_ENV)
                    )
                say(f"making the middleware's Python environment in {self.env_dir} (pip: a few minutes) …")
                self._run([base, "-m", "venv", str(self.env_dir)], output)
                pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-r", str(REQUIREMENTS)]
                self._run([*pip, "--no-index"] if self.offline else pip, output)
        (self.env_dir / READY_MARKER).write_text(_requirements_digest() + "\n", "utf-8")
        say("the middleware's Python environment is ready")
        return str(python)

    def _run(self, command: list[str], output: Any) -> None:
        output.write(f"\n$ {' '.join(command)}\n".encode())
        output.flush()
        try:
            done = subprocess.run(
                command, stdout=output, stderr=subprocess.STDOUT, timeout=self.install_timeout_s, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EmbeddedError(f"{command[0]} failed: {exc}; see {self.log_path}") from None
        if done.returncode != 0:
            raise EmbeddedError(
                f"making the middleware's environment failed ({Path(command[0]).name} exited {done.returncode}): "
                f"{_tail(self.log_path)}; full log in {self.log_path}"
            )

    # -- start and stop --------------------------------------------------------------------

    def start(self, report: Report | None = None) -> config.Connection:
        """Start the middleware (making its environment first if needed) and wait until it answers.

        Returns the admin's connection, also saved as the extension's connection unless
        `save_connection=False`. A middleware this data folder already runs (started by an
        earlier WebUI run) is reused. EmbeddedError says what went wrong.
        """
        say = report or (lambda text: None)
        with self._lock:
            if self.running and self.url:
                return self._finish_start(say)
            if self._adopt():
                say(f"reusing the embedded middleware already running on {self.url}")
                return self._finish_start(say)
            python = self.ensure_environment(say)
            values = self.secrets()
            port = self.port or _free_port(self.host)
            data = self.data_dir / "data"
            data.mkdir(parents=True, exist_ok=True)
            env = {name: value for name, value in os.environ.items() if not name.startswith("ESD_")}
            env.update(
                ESD_API_KEY=values["api_key"],
                ESD_ADMIN_USERNAME=ADMIN_USERNAME,
                ESD_ADMIN_PASSWORD=values["admin_password"],
                ESD_ENGINE_URL=self.engine_url,
                PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
                PYTHONUNBUFFERED="1",
            )
            command = [python, "-c", WATCHDOG, str(os.getpid()), "serve", "--host", self.host, "--port", str(port)]
            command += ["--data-dir", str(data)]
            say(f"starting the embedded middleware on port {port} …")
            with open(self.log_path, "ab") as output:
                shown = [python, "-m", "middleware_api", *command[4:]]  # what the watchdog runs
                output.write(f"\n$ {' '.join(shown)}\n".encode())
                output.flush()
                try:
                    self._process = subprocess.Popen(
                        command, cwd=self.data_dir, env=env, stdout=output, stderr=subprocess.STDOUT
                    )
                except OSError as exc:
                    raise EmbeddedError(f"cannot run {python}: {exc}") from None
            self._active_port = port
            try:
                self._wait_ready(values["api_key"])
            except BaseException:
                self.stop()
                raise
            _write_private(self.data_dir / STATE_FILE, {"pid": self._process.pid, "port": port, "host": self.host})
            return self._finish_start(say)

    def _finish_start(self, say: Report) -> config.Connection:
        connection = self.connection()
        if self.save_connection_on_start:
            config.save_connection(connection)
        say(f"the embedded middleware answers on {self.url}")
        return connection

    def _wait_ready(self, api_key: str) -> None:
        import requests

        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise EmbeddedError(
                    f"the embedded middleware exited at start (code {self._process.returncode}): "
                    f"{_tail(self.log_path)}; full log in {self.log_path}"
                )
            try:
                answer = requests.get(f"{self.url}/ping", headers={"x-api-key": api_key}, timeout=2)
                if answer.status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise EmbeddedError(
            f"the embedded middleware did not answer within {self.start_timeout_s:g} s; see {self.log_path}"
        )

    def _adopt(self) -> bool:
        """Take over a middleware this data folder still runs (its pid alive and answering our key)."""
        path = self.data_dir / STATE_FILE
        try:
            state = json.loads(path.read_text("utf-8"))
            pid, port = int(state["pid"]), int(state["port"])
        except (OSError, ValueError, KeyError, TypeError):
            return False
        if not _alive(pid) or (self.port and port != self.port):
            return False
        import requests

        self._active_port = port
        try:
            answer = requests.get(f"{self.url}/ping", headers={"x-api-key": self.secrets()["api_key"]}, timeout=2)
        except requests.RequestException:
            answer = None
        if answer is None or answer.status_code != 200:
            self._active_port = None
            return False
        self._adopted_pid = pid
        return True

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop the middleware (SIGTERM, then SIGKILL after `timeout_s`); nothing if it is not running."""
        with self._lock:
            process, self._process = self._process, None
            adopted, self._adopted_pid = self._adopted_pid, None
            self._active_port = None
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            elif adopted is not None and _alive(adopted):
                with contextlib.suppress(OSError):
                    os.kill(adopted, signal.SIGTERM)
                deadline = time.monotonic() + timeout_s
                while _alive(adopted) and time.monotonic() < deadline:
                    time.sleep(0.1)
                if _alive(adopted) and hasattr(signal, "SIGKILL"):
                    with contextlib.suppress(OSError):
                        os.kill(adopted, signal.SIGKILL)
            with contextlib.suppress(OSError):
                (self.data_dir / STATE_FILE).unlink()


# -- the one instance the UI uses ------------------------------------------------------------

_shared: EmbeddedMiddleware | None = None
_shared_lock = threading.Lock()
_atexit_registered = False


def shared() -> EmbeddedMiddleware | None:
    """The embedded middleware the UI started (or None)."""
    return _shared


def start_shared(
    data_dir: str | os.PathLike[str] | None = None,
    engine_url: str = DEFAULT_ENGINE_URL,
    report: Report | None = None,
    **options: Any,
) -> EmbeddedMiddleware:
    """Start (or reuse) the UI's embedded middleware; its `stop` is registered on `atexit` once."""
    global _shared, _atexit_registered
    with _shared_lock:
        wanted = Path(data_dir or default_data_dir()).expanduser().resolve()
        if _shared is not None and (_shared.data_dir != wanted or _shared.engine_url != engine_url.rstrip("/")):
            _shared.stop()
            _shared = None
        if _shared is None:
            _shared = EmbeddedMiddleware(wanted, engine_url=engine_url, **options)
        if not _atexit_registered:
            atexit.register(stop_shared)
            _atexit_registered = True
        middleware = _shared
    middleware.start(report)
    return middleware


def stop_shared() -> bool:
    """Stop the UI's embedded middleware (for the WebUI's shutdown hook); True if one was running."""
    with _shared_lock:
        middleware = _shared
    if middleware is None or not middleware.running:
        return False
    middleware.stop()
    return True


# -- helpers ---------------------------------------------------------------------------------


def _env_python(env_dir: Path) -> Path:
    return env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _requirements_digest() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()


def _find_base_python() -> str | None:
    """A Python 3.11+ to make the environment with: this one if new enough, else one on PATH."""
    if sys.version_info[:2] >= MIN_PYTHON:
        return sys.executable
    for name in ("python3.13", "python3.12", "python3.11", "python3"):
        found = shutil.which(name)
        if not found:
            continue
        try:
            probe = subprocess.run(
                [found, "-c", "import sys; print(sys.version_info[0], sys.version_info[1])"],
                capture_output=True,
                text=True,
                timeout=20,
            )
            major, minor = (int(part) for part in probe.stdout.split())
        except (OSError, ValueError, subprocess.TimeoutExpired):
            continue
        if (major, minor) >= MIN_PYTHON:
            return found
    return None


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((_client_host(host), 0))
        return int(probe.getsockname()[1])


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    # a zombie child of ours counts as gone
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def _write_private(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically with mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        if os.name != "nt":
            os.fchmod(file.fileno(), 0o600)
        json.dump(data, file)
    os.replace(tmp, path)


def _tighten(path: Path) -> None:
    if os.name != "nt" and path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text("utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(line.strip() for line in text[-lines:]) or "(empty log)"


__all__ = [
    "DEFAULT_ENGINE_URL",
    "EmbeddedError",
    "EmbeddedMiddleware",
    "default_data_dir",
    "shared",
    "start_shared",
    "stop_shared",
]
