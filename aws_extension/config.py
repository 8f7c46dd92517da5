"""The connection settings (API URL, API key, user) in a file only its owner can read.

Secrets never go into WebUI options or command-line flags: the WebUI serves both over its
own API. The file is `$ESD_EXTENSION_CONFIG`, else `~/.config/esd-webui/connection.json`;
it is written atomically (a temp file beside it, renamed over it), created with mode 0600,
and the default folder is kept at mode 0700.

The stored `api_url` is the API's base URL *including the stage*, without a trailing
slash, e.g. `http://127.0.0.1:8080/prod` or `https://abc.execute-api.us-east-1.amazonaws.com/prod`.
`normalize_api_url` accepts what a user types: a trailing slash is dropped, and a URL with
no path at all (`http://host:8080/`) gets `/prod`, the stage ESD always deploys; any other
path (a custom stage, a reverse-proxy prefix) is kept as given.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger("aws_extension.config")

CONFIG_ENV = "ESD_EXTENSION_CONFIG"
DEFAULT_STAGE = "/prod"
FILE_MODE = 0o600
FOLDER_MODE = 0o700
_FIELDS = ("api_url", "api_key", "username", "password")


class ConfigError(ValueError):
    """A connection setting that cannot be used, or a settings file that cannot be read."""


@dataclass(frozen=True)
class Connection:
    """Where the middleware is and who talks to it; `repr` never shows the API key or the password."""

    api_url: str
    api_key: str = field(repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def normalized(self) -> Connection:
        """The same connection with its URL normalized and empty optional fields as None."""
        return Connection(
            api_url=normalize_api_url(self.api_url),
            api_key=self.api_key.strip(),
            username=(self.username or "").strip() or None,
            password=self.password or None,
        )


def normalize_api_url(url: str) -> str:
    """The API base URL with its stage and no trailing slash; ConfigError if it is not an http(s) URL.

    `http://host:8080`, `http://host:8080/` → `http://host:8080/prod`; `…/prod/` → `…/prod`;
    `https://gw.example.com/dev` stays as it is.
    """
    text = (url or "").strip()
    if not text:
        raise ConfigError("the API URL is empty")
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigError(f"the API URL {text!r} is not a valid URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"the API URL {text!r} must start with http:// or https:// and name a host")
    if parts.query or parts.fragment:
        raise ConfigError(f"the API URL {text!r} must not have a query string or fragment")
    path = parts.path.rstrip("/")
    if not path:
        path = DEFAULT_STAGE
    return urlunsplit((parts.scheme.lower(), parts.netloc, path, "", ""))


def config_path() -> Path:
    """The settings file: `$ESD_EXTENSION_CONFIG`, else `~/.config/esd-webui/connection.json`."""
    custom = os.environ.get(CONFIG_ENV)
    if custom:
        return Path(custom).expanduser()
    return _default_folder() / "connection.json"


def _default_folder() -> Path:
    return Path.home() / ".config" / "esd-webui"


def load_connection() -> Connection | None:
    """The saved connection, or None if none is saved; ConfigError if the file is unreadable or malformed.

    A file others can read (left by an older version or a manual copy) is tightened to 0600.
    """
    path = config_path()
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as file:
        _tighten(file.fileno(), path)
        raw = file.read()
    try:
        data = json.loads(raw)
    except ValueError:
        raise ConfigError(f"{path} is not valid JSON: save the connection again") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(name), str) for name in ("api_url", "api_key")):
        raise ConfigError(f"{path} has no api_url and api_key: save the connection again")
    values = {name: data.get(name) for name in _FIELDS}
    for name in ("username", "password"):
        if values[name] is not None and not isinstance(values[name], str):
            raise ConfigError(f"{path}: {name} must be a string")
    return Connection(**values).normalized()


def save_connection(connection: Connection) -> Path:
    """Write the connection (URL normalized) atomically, readable by its owner only; returns the file's path."""
    connection = connection.normalized()
    if not connection.api_key:
        raise ConfigError("the API key is empty")
    path = config_path()
    _make_folder(path.parent)
    body = json.dumps(asdict(connection), indent=2).encode("utf-8")
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{os.urandom(4).hex()}.tmp")
    # created with mode 0600 (O_EXCL: never an existing file or a planted link): no moment readable by others
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as file:
            _chmod_fd(file.fileno(), FILE_MODE)  # exactly 0600, whatever the umask
            file.write(body)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise
    return path


def forget_connection() -> bool:
    """Delete the saved connection; True if there was one."""
    try:
        config_path().unlink()
        return True
    except FileNotFoundError:
        return False


def _make_folder(folder: Path) -> None:
    """Create the folder (0700); the default folder is also tightened if it exists with wider rights."""
    folder.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    # a folder named by ESD_EXTENSION_CONFIG may be shared (e.g. /tmp): only ours is chmod-ed
    if os.name != "nt" and folder == _default_folder() and stat.S_IMODE(folder.stat().st_mode) != FOLDER_MODE:
        os.chmod(folder, FOLDER_MODE)


def _tighten(fd: int, path: Path) -> None:
    if os.name == "nt":
        return
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    if mode & 0o077:
        log.warning("%s was readable by others (mode %o): setting it to 600", path, mode)
        _chmod_fd(fd, FILE_MODE)


def _chmod_fd(fd: int, mode: int) -> None:
    if os.name != "nt":
        os.fchmod(fd, mode)


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
