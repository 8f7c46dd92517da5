"""The Cloud tab's actions as plain Python: what each button does, testable without gradio.

Every handler takes the `CloudSession` (the connection, its client and the signed-in user's
permissions) and the form's values, calls the middleware, and returns plain data: a
`ListView` (a table, the choices of its selection dropdown, a status line), a message
(`✓ …` done, `✗ …` refused or failed, with the middleware's own reason), or, for long
actions (uploads, watching, following a training), an iterator of `Step`s. Handlers never
raise for what a user can cause; `layout` turns their results into `gr.update`s.

A user's permissions come from the login answer (when a password is saved) or from the
user's own row in `GET /users`; when neither is available they are unknown and nothing is
hidden (the middleware still refuses what the user may not do, and the message says so).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aws_extension import config
from aws_extension.client import NO_SUCH_ROUTE, ApiError, MiddlewareClient, Page
from aws_extension.ui import local_models
from aws_extension.ui.local_models import CHECKPOINT_TYPES

log = logging.getLogger("aws_extension.ui")

RESOURCES = ("role", "user", "checkpoint", "sagemaker_endpoint", "inference", "train")
ACTIONS = ("all", "list", "create")
ALL_PERMISSIONS = tuple(f"{resource}:{action}" for resource in RESOURCES for action in ACTIONS)
CHECKPOINT_STATUSES = ("Initial", "Active", "Disabled")
ENDPOINT_TYPES = ("Async", "Real-time")
INSTANCE_TYPES = (
    "ml.g5.2xlarge",
    "ml.g5.4xlarge",
    "ml.g5.8xlarge",
    "ml.g5.12xlarge",
    "ml.g5.24xlarge",
    "ml.g4dn.2xlarge",
    "ml.g4dn.4xlarge",
    "ml.g4dn.8xlarge",
    "ml.g4dn.12xlarge",
)
ENDPOINT_SETTLING = ("Creating", "Updating", "Deleting", "RollingBack")
JOB_STATUSES = ("created", "inprogress", "succeed", "failed")
TASK_TYPES = ("txt2img", "img2img", "extra-single-image", "extra-batch-images", "rembg")
TRAINING_DONE = ("Completed", "Failed", "Stopped")
FM_TYPES = ("sd_1_5", "sd_xl")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CAPTION_SUFFIXES = (".txt", ".caption")
SEPARATOR = " · "
KEPT_JOB_FOLDERS = 20
MiB = 1 << 20

# What each guarded part of the tabs needs: (resource, action); `all` also grants list and create.
SECTIONS: dict[str, tuple[str, str]] = {
    "checkpoints.list": ("checkpoint", "list"),
    "checkpoints.upload": ("checkpoint", "all"),  # completing a multipart upload is an update
    "checkpoints.url": ("checkpoint", "create"),
    "checkpoints.manage": ("checkpoint", "all"),
    "endpoints.list": ("sagemaker_endpoint", "list"),
    "endpoints.deploy": ("sagemaker_endpoint", "create"),
    "endpoints.delete": ("sagemaker_endpoint", "all"),
    "roles.list": ("role", "list"),
    "roles.edit": ("role", "create"),
    "roles.delete": ("role", "all"),
    "users.list": ("user", "list"),
    "users.edit": ("user", "create"),
    "users.delete": ("user", "all"),
    "train.list": ("train", "list"),
    "train.datasets": ("train", "all"),  # enabling an uploaded dataset is an update
    "train.start": ("train", "create"),
    "jobs.list": ("inference", "list"),
    "jobs.delete": ("inference", "all"),
}


class NotConnected(Exception):
    """No connection is saved or given."""


class Denied(Exception):
    """The signed-in user lacks the permission a control needs (known before asking the middleware)."""


@dataclass(frozen=True)
class TableView:
    """A table for a `gr.Dataframe`: fixed headers and rows of strings."""

    headers: list[str]
    rows: list[list[str]]

    def as_value(self) -> dict[str, Any]:
        """The Dataframe value both gradio 3 and 4 accept (headers kept even with no rows)."""
        return {"headers": list(self.headers), "data": [list(row) for row in self.rows]}


@dataclass(frozen=True)
class Pager:
    """Where a paged list is: the cursor that opened each page visited (the last is the current one)."""

    cursors: tuple[str | None, ...] = (None,)
    next_cursor: str | None = None

    @property
    def page(self) -> int:
        return len(self.cursors)

    def target(self, move: str) -> Pager:
        """The pager for the page `move` (first, next, prev, same) asks for, before it is fetched."""
        if move == "first":
            return Pager()
        if move == "next" and self.next_cursor:
            return Pager((*self.cursors, self.next_cursor))
        if move == "prev" and len(self.cursors) > 1:
            return Pager(self.cursors[:-1])
        return Pager(self.cursors)

    def after(self, page: Page) -> Pager:
        return replace(self, next_cursor=page.cursor)


@dataclass(frozen=True)
class ListView:
    """What a list handler returns: the table, the selection dropdown's choices, a status line, the pager."""

    table: TableView
    choices: list[str] = field(default_factory=list)
    info: str = ""
    pager: Pager | None = None
    items: list[dict[str, Any]] = field(default_factory=list, repr=False)


@dataclass(frozen=True)
class Step:
    """One update of a long action: `fraction` done (None: unknown), the text to show, and whether it ended."""

    fraction: float | None
    text: str
    done: bool = False
    ok: bool | None = None


@dataclass(frozen=True)
class JobView:
    """A job opened from the history: its images (files) and a description."""

    images: list[str]
    info: str


@dataclass(frozen=True)
class ConnectionForm:
    """The connection form's values: never the saved key or password, only whether there are ones."""

    api_url: str
    username: str
    has_key: bool
    has_password: bool
    note: str = ""


# -- the session -------------------------------------------------------------------------------


class CloudSession:
    """What the tabs share: the connection, its client, and the signed-in user's permissions.

    `connection` (e.g. from `--api-url`) wins over the saved one; without it the saved
    connection is read when first needed. `model_folders` maps checkpoint types to
    folders; None asks the WebUI (`aws_extension.webui.model_folders()`) when needed.
    """

    def __init__(
        self,
        connection: config.Connection | None = None,
        *,
        model_folders: Mapping[str, Any] | None = None,
        engine_url: str | None = None,
        embedded_dir: str | None = None,
        embedded_options: Mapping[str, Any] | None = None,
        image_dir: str | None = None,
        client_factory: Callable[[config.Connection], MiddlewareClient] | None = None,
    ) -> None:
        self._lock = threading.RLock()
        self.connection = connection.normalized() if connection else None
        self._client: MiddlewareClient | None = None
        self._model_folders = local_models.normalize(model_folders) if model_folders is not None else None
        self.engine_url = engine_url
        self.embedded_dir = embedded_dir
        self.embedded_options = dict(embedded_options or {})
        self._image_dir = Path(image_dir) if image_dir else None
        self._client_factory = client_factory or MiddlewareClient.from_connection
        self.user: dict[str, Any] | None = None
        self.permissions: frozenset[str] | None = None
        self.api_version: str | None = None
        self.note = ""

    def __repr__(self) -> str:
        url = self.connection.api_url if self.connection else None
        return f"CloudSession({url!r}, user={self.username!r})"

    @property
    def username(self) -> str | None:
        return self.connection.username if self.connection else None

    def client(self) -> MiddlewareClient:
        """The client of the current connection (the saved one if none was given); NotConnected if none."""
        with self._lock:
            if self._client is not None:
                return self._client
            if self.connection is None:
                try:
                    self.connection = config.load_connection()
                except config.ConfigError as exc:
                    raise NotConnected(str(exc)) from None
            if self.connection is None:
                raise NotConnected("no connection is saved: enter the API URL, key and user in the Connection tab")
            self._client = self._client_factory(self.connection)
            return self._client

    def use(self, connection: config.Connection, client: MiddlewareClient | None = None) -> None:
        """Switch to another connection; permissions are unknown until `identify` runs."""
        with self._lock:
            old, self._client = self._client, client
            self.connection = connection.normalized()
            self.user = None
            self.permissions = None
            self.api_version = None
            self.note = ""
        if old is not None and old is not client:
            old.close()

    def forget(self) -> None:
        """Disconnect (the saved connection stays unless `forget_connection` deletes it)."""
        with self._lock:
            old, self._client = self._client, None
            self.connection = None
            self.user = None
            self.permissions = None
            self.note = ""
        if old is not None:
            old.close()

    def can(self, section: str) -> bool:
        """True if the user may use a section (`SECTIONS`); unknown permissions allow everything."""
        if self.permissions is None:
            return True
        resource, action = SECTIONS[section]
        return holds(self.permissions, resource, action)

    def require(self, section: str) -> None:
        """Denied, naming the permission, if the user may not use a section."""
        if not self.can(section):
            resource, action = SECTIONS[section]
            needed = f"{resource}:all" if action == "all" else f"{resource}:{action} or {resource}:all"
            raise Denied(f"user {self.username} lacks the permission {needed}; ask an administrator for it")

    def model_folders(self) -> dict[str, list[Path]]:
        """`{checkpoint type: [folder, …]}`: the given folders, else the WebUI's."""
        if self._model_folders is not None:
            return self._model_folders
        return local_models.webui_folders()

    def image_dir(self) -> Path:
        """A private folder for downloaded job images (made on first use)."""
        with self._lock:
            if self._image_dir is None:
                self._image_dir = Path(tempfile.mkdtemp(prefix="esd-cloud-images-"))
            self._image_dir.mkdir(parents=True, exist_ok=True)
            return self._image_dir


def holds(permissions: Iterable[str], resource: str, action: str = "all") -> bool:
    """The middleware's rule: `resource:all` grants every action; `list` and `create` only themselves."""
    granted = set(permissions)
    return f"{resource}:all" in granted or (action != "all" and f"{resource}:{action}" in granted)


def visibility(session: CloudSession) -> dict[str, bool]:
    """Which guarded sections to show, by `SECTIONS` key."""
    return {section: session.can(section) for section in SECTIONS}


def identify(session: CloudSession) -> str:
    """Find the user's roles and permissions (login, else the user list); returns a note for the UI."""
    client = session.client()
    connection = session.connection
    assert connection is not None
    user: dict[str, Any] | None = None
    note = ""
    if connection.password and connection.username:
        try:
            user = client.login(connection.username, connection.password)
        except ApiError as exc:
            if exc.status != 403 or exc.message == NO_SUCH_ROUTE:
                raise
            note = "this key cannot check passwords"
    if user is None and connection.username:
        try:
            user = next((item for item in client.iter_users() if item.get("username") == connection.username), None)
        except ApiError as exc:
            if exc.status != 403 or "no permissions" not in exc.message:
                raise
        if user is None:
            note = "permissions unknown (save the password to let the tabs show only what you may use)"
    with session._lock:
        session.user = user
        session.permissions = frozenset(user.get("permissions") or []) if user else None
        session.api_version = client.last_api_version
        session.note = note
    return note


def session_summary(session: CloudSession) -> str:
    """One Markdown line: where the tabs are connected and as whom."""
    connection = session.connection
    if connection is None:
        return "**Not connected.** Enter the API URL, key and user in the Connection tab."
    who = f"**{connection.username}**" if connection.username else "no user"
    parts = [f"Connected to `{connection.api_url}` as {who}"]
    if session.user:
        roles = ", ".join(session.user.get("roles") or []) or "none"
        parts.append(f"roles: {roles}")
    if session.api_version:
        parts.append(f"API {session.api_version}")
    if session.note:
        parts.append(session.note)
    return SEPARATOR.join(parts)


def refresh_session(session: CloudSession) -> str:
    """The tab's load event: (re)read who the user is; the summary line, or why it failed."""
    try:
        session.client()
        identify(session)
    except NotConnected:
        return session_summary(session)
    except ApiError as exc:
        return f"{session_summary(session)}{SEPARATOR}✗ {exc.message}"
    return session_summary(session)


# -- connection --------------------------------------------------------------------------------


def connection_form(session: CloudSession) -> ConnectionForm:
    """The form's initial values (no network): the session's or saved connection, without secrets."""
    connection = session.connection
    note = ""
    if connection is None:
        try:
            connection = config.load_connection()
        except config.ConfigError as exc:
            note = f"✗ {exc}"
    if connection is None:
        return ConnectionForm("", "", False, False, note or "No connection saved yet.")
    return ConnectionForm(
        connection.api_url, connection.username or "", bool(connection.api_key), bool(connection.password), note
    )


def _form_connection(session: CloudSession, api_url: str, api_key: str, username: str, password: str) -> Any:
    """The connection the form describes; an empty key or password keeps the current one."""
    current = session.connection
    if current is None:
        with contextlib.suppress(config.ConfigError):
            current = config.load_connection()
    key = (api_key or "").strip() or (current.api_key if current else "")
    user = (username or "").strip() or None
    same_user = current is not None and current.username == user
    secret = password or (current.password if current and same_user else None)
    if not key:
        raise config.ConfigError("enter the API key (the deployment's key or a personal access token)")
    return config.Connection(api_url, key, user, secret).normalized()


def check_report(report: Any) -> str:
    """A connection check as Markdown: one line per step, the failed one said first."""
    marks = {True: "✓", False: "✗", None: "–"}
    lines = []
    failed = report.failed
    if failed is not None:
        lines.append(f"**✗ {failed.name} failed:** {failed.detail}\n")
    else:
        lines.append("**✓ Connection works.**\n")
    lines += [f"- {marks[check.ok]} **{check.name}**: {check.detail}" for check in report.checks]
    return "\n".join(lines)


def test_connection(session: CloudSession, api_url: str, api_key: str, username: str, password: str) -> str:
    """Check the form's connection (ping, key, version, user) without saving it."""
    try:
        connection = _form_connection(session, api_url, api_key, username, password)
    except config.ConfigError as exc:
        return f"✗ {exc}"
    client = MiddlewareClient.from_connection(connection)
    try:
        return check_report(client.check_connection(connection.password))
    finally:
        client.close()


def save_and_sign_in(session: CloudSession, api_url: str, api_key: str, username: str, password: str) -> str:
    """Check the form's connection; if it works, save it (mode 0600), use it and load the user's permissions."""
    try:
        connection = _form_connection(session, api_url, api_key, username, password)
    except config.ConfigError as exc:
        return f"✗ {exc}"
    client = MiddlewareClient.from_connection(connection)
    report = client.check_connection(connection.password)
    text = check_report(report)
    if not report.ok:
        client.close()
        return text + "\n\nNothing was saved."
    try:
        path = config.save_connection(connection)
    except (OSError, config.ConfigError) as exc:
        client.close()
        return text + f"\n\n✗ could not save the connection: {exc}"
    session.use(connection, client)
    try:
        identify(session)
    except ApiError as exc:
        return text + f"\n\nSaved to `{path}`, but the user's permissions could not be read: {exc.message}"
    return text + f"\n\nSaved to `{path}` (readable by its owner only).\n\n{session_summary(session)}"


def forget_connection(session: CloudSession) -> str:
    """Delete the saved connection and disconnect the tabs."""
    removed = config.forget_connection()
    session.forget()
    return "✓ The saved connection was deleted." if removed else "No connection was saved."


# -- embedded middleware -----------------------------------------------------------------------


def embedded_status(session: CloudSession) -> str:
    """Whether the UI's embedded middleware runs, and where."""
    from aws_extension import embedded

    middleware = embedded.shared()
    if middleware is None or not middleware.running:
        folder = session.embedded_dir or str(embedded.default_data_dir())
        return f"The embedded middleware is not running. Its data would go to `{folder}`."
    return f"✓ The embedded middleware runs on `{middleware.url}` (data in `{middleware.data_dir}`)."


def start_embedded(session: CloudSession, engine_url: str, *, poll_s: float = 0.5) -> Iterator[str]:
    """Start the embedded middleware (making its Python environment on first use), then connect to it."""
    from aws_extension import embedded

    messages: list[str] = []
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["middleware"] = embedded.start_shared(
                session.embedded_dir,
                engine_url=(engine_url or session.engine_url or embedded.DEFAULT_ENGINE_URL).strip(),
                report=messages.append,
                **session.embedded_options,
            )
        except Exception as exc:  # shown to the user
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="esd-embedded-start", daemon=True)
    worker.start()
    shown = 0
    yield "Starting the embedded middleware …"
    while worker.is_alive():
        worker.join(poll_s)
        if len(messages) > shown:
            shown = len(messages)
            yield messages[-1] + " …"
    if "error" in outcome:
        yield f"✗ {outcome['error']}"
        return
    middleware = outcome["middleware"]
    connection = middleware.connection()
    session.use(connection)
    try:
        identify(session)
    except ApiError as exc:
        yield f"✓ Started on `{middleware.url}`, but signing in failed: {exc.message}"
        return
    yield (
        f"✓ The embedded middleware runs on `{middleware.url}`; connected as **{connection.username}** "
        f"(the connection is saved). Local endpoints call the engine at `{middleware.engine_url}`."
    )


def stop_embedded(session: CloudSession) -> str:
    """Stop the embedded middleware the UI started."""
    from aws_extension import embedded

    middleware = embedded.shared()
    url = middleware.url if middleware else None
    if not embedded.stop_shared():
        return "The embedded middleware was not running."
    if session.connection is not None and url and session.connection.api_url == url:
        session.forget()
    return "✓ The embedded middleware stopped."


# -- shared helpers ----------------------------------------------------------------------------


def _failure(exc: BaseException) -> str:
    """The message of a failed action, with the middleware's own reason."""
    if isinstance(exc, ApiError):
        if exc.message == NO_SUCH_ROUTE:
            return f"✗ this middleware has no such route ({exc.method} {exc.where}): it may be an older version"
        return f"✗ {exc.message}"
    return f"✗ {exc}"


HANDLED = (ApiError, NotConnected, Denied, config.ConfigError, ValueError)


def _empty(headers: list[str], message: str, pager: Pager | None = None) -> ListView:
    return ListView(TableView(headers, []), [], message, pager)


def _id_of(label: str) -> str:
    """The id at the end of a selection label (`name · type · id`), or the label itself."""
    return str(label).rsplit(SEPARATOR, 1)[-1].strip()


def _ids(selected: Sequence[str] | str | None) -> list[str]:
    if not selected:
        return []
    values = [selected] if isinstance(selected, str) else list(selected)
    return [_id_of(value) for value in values if value]


def _when(value: Any) -> str:
    """An epoch number or the API's time text as `YYYY-MM-DD HH:MM:SS` (UTC)."""
    if value in (None, ""):
        return ""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return str(value).split(".")[0]
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    with contextlib.suppress(TypeError, ValueError):
        return datetime.fromtimestamp(float(value), tz=timezone.utc)
    for pattern in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S"):
        with contextlib.suppress(ValueError):
            return datetime.strptime(str(value).rstrip("Z"), pattern).replace(tzinfo=timezone.utc)
    return None


def _seconds_between(start: Any, end: Any) -> str:
    first, last = _parse_time(start), _parse_time(end)
    if first is None or last is None:
        return ""
    return f"{(last - first).total_seconds():.1f}"


def _names(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(item) for item in value)
    return "" if value is None else str(value)


def _size(count: float) -> str:
    return f"{count / MiB:.1f} MiB" if count >= MiB / 10 else f"{count / 1024:.1f} KiB"


def _page_info(pager: Pager, count: int) -> str:
    more = " · more on the next page" if pager.next_cursor else ""
    return f"Page {pager.page} · {count} shown{more}"


# -- checkpoints -------------------------------------------------------------------------------

CHECKPOINT_HEADERS = ["Name", "Type", "Status", "Created (UTC)", "Roles", "Id"]


def list_checkpoints(
    session: CloudSession,
    types: Sequence[str] | None = None,
    statuses: Sequence[str] | None = None,
    page_size: float | int = 20,
    pager: Pager | None = None,
    move: str = "first",
) -> ListView:
    """One page of checkpoints of the chosen types and statuses (none chosen: all); `move` pages through."""

    def fetch(limit: int, cursor: str | None) -> Any:
        return session.client().list_checkpoints(list(types or []), list(statuses or []), limit=limit, cursor=cursor)

    def row_of(item: dict[str, Any]) -> tuple[list[str], str]:
        name = _names(item.get("name"))
        status = str(item.get("status", ""))
        if item.get("error"):
            status += f" ({item['error']})"
        kind, checkpoint_id = str(item.get("type", "")), str(item.get("id", ""))
        roles = _names(item.get("allowed_roles_or_users"))
        row = [name, kind, status, _when(item.get("created")), roles, checkpoint_id]
        return row, SEPARATOR.join([name or "(no name)", kind, checkpoint_id])

    return _paged(session, "checkpoints.list", CHECKPOINT_HEADERS, page_size, pager, move, fetch, row_of)


def _paged(
    session: CloudSession,
    permission: str,
    headers: list[str],
    page_size: float | int,
    pager: Pager | None,
    move: str,
    fetch: Callable[[int, str | None], Any],
    row_of: Callable[[dict[str, Any]], tuple[list[str], str]],
) -> ListView:
    """One page of a paged list: `fetch(limit, cursor)` a `Page`, each item made a table row and a choice."""
    pager = (pager or Pager()).target(move)
    try:
        session.require(permission)
        page = fetch(max(1, int(page_size or 20)), pager.cursors[-1])
    except HANDLED as exc:
        return _empty(headers, _failure(exc), pager)
    pager = pager.after(page)
    rows, choices = [], []
    for item in page.items:
        row, choice = row_of(item)
        rows.append(row)
        choices.append(choice)
    return ListView(TableView(headers, rows), choices, _page_info(pager, len(rows)), pager, page.items)


def local_model_files(session: CloudSession, checkpoint_type: str) -> tuple[list[str], str]:
    """The model files of a type in this WebUI's folders (names relative to the folder), and a note."""
    folders = session.model_folders()
    if checkpoint_type not in folders:
        known = ", ".join(sorted(folders)) or "none"
        return [], f"No {checkpoint_type} folder is known here (folders found for: {known})."
    files = list(local_models.list_files(folders, checkpoint_type))
    where = ", ".join(f"`{folder}`" for folder in folders[checkpoint_type])
    return files, f"{len(files)} {checkpoint_type} files in {where}."


def upload_local_checkpoint(
    session: CloudSession,
    checkpoint_type: str,
    file_name: str,
    *,
    poll_s: float = 0.25,
    upload_options: Mapping[str, Any] | None = None,
) -> Iterator[Step]:
    """Upload one of the listed local model files as a new checkpoint, reporting progress as it goes.

    Closing the iterator before it ends (the UI's Cancel) cancels the upload: the
    checkpoint is deleted.
    """
    from aws_extension.upload import UploadCancelled, UploadError, upload_file

    try:
        session.require("checkpoints.upload")
        if checkpoint_type not in CHECKPOINT_TYPES:
            raise ValueError(f"choose a checkpoint type ({', '.join(CHECKPOINT_TYPES)})")
        if not file_name:
            raise ValueError("choose a file to upload (🔄 lists the folder's files)")
        path = local_models.list_files(session.model_folders(), checkpoint_type).get(file_name)
        if path is None:
            raise ValueError(f"{file_name} is not a {checkpoint_type} file of this WebUI's model folders")
        client = session.client()
        size = path.stat().st_size
    except (*HANDLED, OSError) as exc:
        yield Step(None, _failure(exc), done=True, ok=False)
        return
    name = path.name
    progress = {"done": 0, "total": max(size, 1)}
    stop = threading.Event()
    outcome: dict[str, Any] = {}
    started = time.monotonic()

    def report(done: int, total: int) -> None:
        progress["done"], progress["total"] = done, max(total, 1)

    def run() -> None:
        try:
            outcome["checkpoint"] = upload_file(
                client, path, checkpoint_type, progress=report, should_stop=stop.is_set, **dict(upload_options or {})
            )
        except Exception as exc:  # reported below
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="esd-ui-upload", daemon=True)
    worker.start()
    try:
        yield Step(0.0, f"Uploading {name} ({_size(size)}) as {checkpoint_type} …")
        while worker.is_alive():
            worker.join(poll_s)
            done, total = progress["done"], progress["total"]
            elapsed = max(time.monotonic() - started, 1e-6)
            rate = f" · {_size(done / elapsed)}/s" if done else ""
            yield Step(done / total, f"Uploading {name}: {_size(done)} of {_size(total)} ({done / total:.0%}){rate}")
    finally:
        if worker.is_alive():  # the iterator was closed: cancel (the checkpoint is deleted)
            stop.set()
    error = outcome.get("error")
    if isinstance(error, UploadCancelled):
        yield Step(None, f"Upload of {name} cancelled; its checkpoint was deleted.", done=True, ok=False)
    elif isinstance(error, UploadError):
        yield Step(None, f"✗ {error.message}", done=True, ok=False)
    elif error is not None:
        yield Step(None, _failure(error), done=True, ok=False)
    else:
        checkpoint = outcome["checkpoint"]
        seconds = time.monotonic() - started
        yield Step(
            1.0,
            f"✓ Uploaded {name} ({_size(size)} in {seconds:.1f} s): checkpoint {checkpoint.get('id', '?')} "
            f"is {checkpoint.get('status', 'Active')}.",
            done=True,
            ok=True,
        )


def upload_checkpoint_urls(session: CloudSession, checkpoint_type: str, urls: str, message: str = "") -> str:
    """Create a checkpoint the middleware downloads from the URLs (one a line)."""
    links = [line.strip() for line in (urls or "").splitlines() if line.strip()]
    try:
        session.require("checkpoints.url")
        if not links:
            raise ValueError("enter at least one URL (one a line)")
        if checkpoint_type not in CHECKPOINT_TYPES:
            raise ValueError(f"choose a checkpoint type ({', '.join(CHECKPOINT_TYPES)})")
        checkpoint = session.client().create_checkpoint_from_urls(checkpoint_type, links, message or "")
    except HANDLED as exc:
        return _failure(exc)
    return (
        f"✓ Checkpoint {checkpoint.get('id', '?')} is being downloaded by the middleware "
        f"({checkpoint.get('status', 'Initial')}); refresh the list to see it Active."
    )


def rename_checkpoint(session: CloudSession, selected: Sequence[str] | str | None, new_name: str) -> str:
    """Rename the one selected (one-file, Active) checkpoint."""
    ids = _ids(selected)
    try:
        session.require("checkpoints.manage")
        if len(ids) != 1:
            raise ValueError("select exactly one checkpoint to rename")
        if not (new_name or "").strip():
            raise ValueError("enter the new file name")
        checkpoint = session.client().rename_checkpoint(ids[0], new_name.strip())
    except HANDLED as exc:
        return _failure(exc)
    return f"✓ Checkpoint {ids[0]} renamed to {_names(checkpoint.get('name')) or new_name.strip()}."


def delete_checkpoints(session: CloudSession, selected: Sequence[str] | str | None) -> str:
    """Delete the selected checkpoints with their files."""
    ids = _ids(selected)
    try:
        session.require("checkpoints.manage")
        if not ids:
            raise ValueError("select the checkpoints to delete")
        session.client().delete_checkpoints(ids)
    except HANDLED as exc:
        return _failure(exc)
    return f"✓ Deleted {len(ids)} checkpoint(s)."


# -- endpoints ---------------------------------------------------------------------------------

ENDPOINT_HEADERS = [
    "Name",
    "Type",
    "Status",
    "Instance type",
    "Instances",
    "Autoscaling",
    "Min–max",
    "Roles",
    "Started (UTC)",
    "Error",
]


def list_endpoints(session: CloudSession) -> ListView:
    """Every endpoint the user's roles may use, newest first, with its live status."""
    try:
        session.require("endpoints.list")
        items = list(session.client().iter_endpoints())
    except HANDLED as exc:
        return _empty(ENDPOINT_HEADERS, _failure(exc))
    rows = [
        [
            str(item.get("endpoint_name", "")),
            str(item.get("endpoint_type", "")),
            str(item.get("endpoint_status", "")),
            str(item.get("instance_type", "")),
            str(item.get("current_instance_count", "")),
            "yes" if item.get("autoscaling") else "no",
            f"{item.get('min_instance_number', '')}–{item.get('max_instance_number', '')}",
            _names(item.get("owner_group_or_role")),
            _when(item.get("startTime")),
            str(item.get("error") or ""),
        ]
        for item in items
    ]
    choices = [str(item.get("endpoint_name", "")) for item in items]
    settling = sum(1 for item in items if item.get("endpoint_status") in ENDPOINT_SETTLING)
    info = f"{len(items)} endpoint(s)" + (f" · {settling} changing state" if settling else "")
    return ListView(TableView(ENDPOINT_HEADERS, rows), choices, info, None, items)


def watch_endpoints(session: CloudSession, *, poll_s: float = 2.0, timeout_s: float = 900.0) -> Iterator[ListView]:
    """The endpoint list again and again until no endpoint is changing state (or `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    while True:
        view = list_endpoints(session)
        settling = any(item.get("endpoint_status") in ENDPOINT_SETTLING for item in view.items)
        if not settling or view.info.startswith("✗") or time.monotonic() >= deadline:
            suffix = "" if not settling or view.info.startswith("✗") else " · stopped watching (time limit)"
            yield replace(view, info=view.info + suffix + (" · all settled" if not settling and view.items else ""))
            return
        changing = ", ".join(
            f"{item.get('endpoint_name')} {item.get('endpoint_status')}"
            for item in view.items
            if item.get("endpoint_status") in ENDPOINT_SETTLING
        )
        yield replace(view, info=f"{view.info} · watching: {changing} …")
        time.sleep(poll_s)


def deploy_endpoint(
    session: CloudSession,
    endpoint_type: str,
    name: str,
    instance_type: str,
    initial_count: float | int | None,
    autoscaling: bool,
    min_count: float | int | None,
    max_count: float | int | None,
    roles: Sequence[str] | None,
) -> str:
    """Deploy an endpoint for the chosen roles."""
    try:
        session.require("endpoints.deploy")
        if not roles:
            raise ValueError("choose the roles that may use the endpoint (🔄 lists the roles)")
        created = session.client().create_endpoint(
            endpoint_type or "Async",
            roles=list(roles),
            name=(name or "").strip() or None,
            instance_type=(instance_type or INSTANCE_TYPES[0]).strip(),
            initial_instance_count=int(initial_count or 1),
            autoscaling=bool(autoscaling),
            min_instances=int(min_count) if autoscaling and min_count is not None else None,
            max_instances=int(max_count) if autoscaling and max_count is not None else None,
        )
    except HANDLED as exc:
        return _failure(exc)
    name = created.get("endpoint_name", "?")
    return f"✓ Deploying {name} ({created.get('endpoint_status', 'Creating')}); the list follows its status."


def delete_endpoints(session: CloudSession, selected: Sequence[str] | str | None) -> str:
    """Delete the selected endpoints."""
    names = _ids(selected)
    try:
        session.require("endpoints.delete")
        if not names:
            raise ValueError("select the endpoints to delete")
        session.client().delete_endpoints(names)
    except HANDLED as exc:
        return _failure(exc)
    return f"✓ Deleting {', '.join(names)}."


# -- roles and users ---------------------------------------------------------------------------

ROLE_HEADERS = ["Role", "Permissions", "Creator"]
USER_HEADERS = ["User", "Roles", "Permissions", "Creator"]


def list_roles(session: CloudSession) -> ListView:
    """The roles the user may see."""
    try:
        session.require("roles.list")
        items = list(session.client().iter_roles())
    except HANDLED as exc:
        return _empty(ROLE_HEADERS, _failure(exc))
    rows = [
        [str(item.get("role_name", "")), _names(item.get("permissions")), str(item.get("creator", ""))]
        for item in items
    ]
    return ListView(TableView(ROLE_HEADERS, rows), [row[0] for row in rows], f"{len(rows)} role(s)", None, items)


def role_names(session: CloudSession) -> tuple[list[str], str]:
    """Role names for the endpoint and user forms, and a note if they could not be listed."""
    view = list_roles(session)
    return view.choices, view.info if view.info.startswith("✗") else ""


def save_role(session: CloudSession, role_name: str, permissions: Sequence[str] | None) -> str:
    """Create a role, or set an existing one's permissions."""
    try:
        session.require("roles.edit")
        if not (role_name or "").strip():
            raise ValueError("enter the role's name")
        envelope = session.client().create_role(role_name.strip(), list(permissions or []))
    except HANDLED as exc:
        return _failure(exc)
    verb = "updated" if envelope.get("statusCode") == 200 else "created"
    return f"✓ Role {role_name.strip()} {verb} with {len(permissions or [])} permission(s)."


def delete_roles(session: CloudSession, selected: Sequence[str] | str | None) -> str:
    """Delete the selected roles (they are taken from every user holding them)."""
    names = [name for name in ([selected] if isinstance(selected, str) else list(selected or [])) if name]
    try:
        session.require("roles.delete")
        if not names:
            raise ValueError("select the roles to delete")
        session.client().delete_roles(names)
    except HANDLED as exc:
        return _failure(exc)
    return f"✓ Deleted role(s) {', '.join(names)}."


def list_users(session: CloudSession) -> ListView:
    """The users the user may see (passwords are never shown)."""
    try:
        session.require("users.list")
        items = list(session.client().iter_users())
    except HANDLED as exc:
        return _empty(USER_HEADERS, _failure(exc))
    rows = [
        [
            str(item.get("username", "")),
            _names(item.get("roles")),
            _names(item.get("permissions")),
            str(item.get("creator", "")),
        ]
        for item in items
    ]
    return ListView(TableView(USER_HEADERS, rows), [row[0] for row in rows], f"{len(rows)} user(s)", None, items)


def save_user(session: CloudSession, username: str, password: str, roles: Sequence[str] | None) -> str:
    """Create a user, or set an existing one's roles (and password, when one is entered)."""
    try:
        session.require("users.edit")
        if not (username or "").strip():
            raise ValueError("enter the user's name")
        envelope = session.client().create_user(username.strip(), password or None, list(roles or []))
    except HANDLED as exc:
        return _failure(exc)
    verb = "updated" if envelope.get("statusCode") == 200 else "created"
    return f"✓ User {username.strip()} {verb} with role(s) {', '.join(roles or []) or 'none'}."


def delete_users(session: CloudSession, selected: Sequence[str] | str | None) -> str:
    """Delete the selected users."""
    names = [name for name in ([selected] if isinstance(selected, str) else list(selected or [])) if name]
    try:
        session.require("users.delete")
        if not names:
            raise ValueError("select the users to delete")
        session.client().delete_users(names)
    except HANDLED as exc:
        return _failure(exc)
    return f"✓ Deleted user(s) {', '.join(names)}."


# -- datasets and trainings --------------------------------------------------------------------

DATASET_HEADERS = ["Dataset", "Status", "Created (UTC)", "Description", "Location"]
TRAINING_HEADERS = ["LoRA", "Status", "Step", "Created (UTC)", "Error", "Id"]


def list_datasets(session: CloudSession) -> ListView:
    """The datasets the user may see, newest first."""
    try:
        session.require("train.list")
        items = list(session.client().iter_datasets())
    except HANDLED as exc:
        return _empty(DATASET_HEADERS, _failure(exc))
    rows = [
        [
            str(item.get("datasetName", item.get("dataset_name", ""))),
            str(item.get("status", "")),
            _when(item.get("timestamp")),
            str(item.get("description", "")),
            str(item.get("s3", "")),
        ]
        for item in items
    ]
    return ListView(TableView(DATASET_HEADERS, rows), [row[0] for row in rows], f"{len(rows)} dataset(s)", None, items)


def dataset_files(paths: Iterable[Any]) -> tuple[list[tuple[str, Path, str]], list[str]]:
    """The images and captions among uploaded files: `(file name, path, type)`, and the names left out.

    `paths` are file paths, or gradio 3's file objects (with `.name`).
    """
    chosen: dict[str, tuple[str, Path, str]] = {}
    skipped: list[str] = []
    for value in paths or []:
        path = Path(getattr(value, "name", value))
        name = path.name
        suffix = path.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            kind = "image"
        elif suffix in CAPTION_SUFFIXES:
            kind = "text"
        else:
            skipped.append(name)
            continue
        if name in chosen:
            skipped.append(f"{name} (twice)")
            continue
        chosen[name] = (name, path, kind)
    return sorted(chosen.values()), skipped


def upload_dataset(
    session: CloudSession, dataset_name: str, description: str, files: Iterable[Any], prefix: str = ""
) -> Iterator[Step]:
    """Upload images with their captions (`a.png` + `a.txt`) as a new dataset, then enable it."""
    try:
        session.require("train.datasets")
        name = (dataset_name or "").strip()
        if not name:
            raise ValueError("enter the dataset's name")
        chosen, skipped = dataset_files(files)
        if not any(kind == "image" for _, _, kind in chosen):
            raise ValueError("choose the dataset's images (and their .txt captions)")
        client = session.client()
        sizes = {file_name: path.stat().st_size for file_name, path, _ in chosen}
        created = client.create_dataset(
            name, [(file_name, kind) for file_name, _, kind in chosen], description or "", (prefix or "").strip()
        )
    except (*HANDLED, OSError) as exc:
        yield Step(None, _failure(exc), done=True, ok=False)
        return
    urls = created.get("s3PresignUrl") or {}
    total = max(sum(sizes.values()), 1)
    sent = 0
    images = sum(1 for _, _, kind in chosen if kind == "image")
    captions = len(chosen) - images
    yield Step(0.0, f"Uploading {images} image(s) and {captions} caption(s) to dataset {name} …")
    for index, (file_name, path, _) in enumerate(chosen, start=1):
        url = urls.get(file_name)
        try:
            if not url:
                raise ValueError(f"the middleware gave no upload URL for {file_name}")
            client.put_presigned(url, path.read_bytes())
        except (*HANDLED, OSError) as exc:
            yield Step(None, f"{_failure(exc)} (file {file_name}; dataset {name} stays Initialed)", True, False)
            return
        sent += sizes[file_name]
        yield Step(sent / total, f"Uploaded {index} of {len(chosen)} files ({_size(sent)} of {_size(total)})")
    try:
        client.complete_dataset(name)
    except HANDLED as exc:
        yield Step(None, f"{_failure(exc)} (enabling dataset {name})", True, False)
        return
    note = f"; left out: {', '.join(skipped)}" if skipped else ""
    yield Step(1.0, f"✓ Dataset {name} is ready: {images} image(s), {captions} caption(s){note}.", True, True)


def delete_datasets(session: CloudSession, selected: Sequence[str] | str | None) -> str:
    """Delete the selected datasets."""
    names = [name for name in ([selected] if isinstance(selected, str) else list(selected or [])) if name]
    try:
        session.require("train.datasets")
        if not names:
            raise ValueError("select the datasets to delete")
        session.client().delete_datasets(names)
    except HANDLED as exc:
        return _failure(exc)
    return f"✓ Deleted dataset(s) {', '.join(names)}."


def training_choices(session: CloudSession) -> tuple[list[str], list[str], str]:
    """Base models (Active Stable-diffusion checkpoints) and Enabled datasets for the training form."""
    try:
        session.require("train.list")
        client = session.client()
        models = []
        for item in client.iter_checkpoints(["Stable-diffusion"], ["Active"]):
            models += [name for name in item.get("name") or [] if name not in models]
        datasets = [
            str(item.get("datasetName", item.get("dataset_name", "")))
            for item in client.iter_datasets()
            if item.get("status", "Enabled") == "Enabled"
        ]
    except HANDLED as exc:
        return [], [], _failure(exc)
    return models, datasets, f"{len(models)} base model(s), {len(datasets)} dataset(s)"


def list_trainings(session: CloudSession) -> ListView:
    """The training jobs the user may see, newest first."""
    try:
        session.require("train.list")
        items = list(session.client().iter_trainings())
    except HANDLED as exc:
        return _empty(TRAINING_HEADERS, _failure(exc))
    rows = [
        [
            _lora_name(item),
            str(item.get("job_status", item.get("status", ""))),
            str(item.get("secondary_status") or ""),
            _when(item.get("created", item.get("timestamp"))),
            str(item.get("error") or ""),
            str(item.get("id", "")),
        ]
        for item in items
    ]
    choices = [SEPARATOR.join([row[0] or "(unnamed)", row[1], row[-1]]) for row in rows]
    return ListView(TableView(TRAINING_HEADERS, rows), choices, f"{len(rows)} training job(s)", None, items)


def _lora_name(job: Mapping[str, Any]) -> str:
    names = job.get("checkpoint_names") or []
    if names:
        return _names(names)
    output = job.get("output_name") or job.get("modelName") or job.get("model_name")
    return f"{output}.safetensors" if output and not str(output).endswith(".safetensors") else str(output or "")


def start_training(
    session: CloudSession,
    model: str,
    dataset: str,
    fm_type: str,
    instance_type: str,
    output_name: str,
    max_epochs: float | int | None,
    save_every: float | int | None,
) -> str:
    """Start a LoRA training of `model` on `dataset`; the finished LoRA becomes a checkpoint."""
    try:
        session.require("train.start")
        if not model or not dataset:
            raise ValueError("choose the base model and the dataset (🔄 lists them)")
        training: dict[str, Any] = {}
        if (output_name or "").strip():
            training["output_name"] = output_name.strip()
        if max_epochs:
            training["max_train_epochs"] = int(max_epochs)
        if save_every:
            training["save_every_n_epochs"] = int(save_every)
        job = session.client().create_training(
            model=model,
            dataset=dataset,
            fm_type=fm_type or FM_TYPES[0],
            instance_type=(instance_type or INSTANCE_TYPES[0]).strip(),
            training=training,
        )
    except HANDLED as exc:
        return _failure(exc)
    return f"✓ Training {job.get('id', '?')} started ({job.get('status', job.get('job_status', 'Initial'))})."


def follow_training(
    session: CloudSession, selected: str, *, poll_s: float = 5.0, timeout_s: float = 6 * 3600
) -> Iterator[str]:
    """A training job's status, again and again until it ends; a finished LoRA names its checkpoint."""
    training_id = _id_of(selected or "")
    if not training_id:
        yield "✗ select a training job (or enter its id)"
        return
    deadline = time.monotonic() + timeout_s
    last = ""
    while True:
        try:
            session.require("train.list")
            job = session.client().get_training(training_id)
        except HANDLED as exc:
            yield _failure(exc)
            return
        status = str(job.get("job_status", job.get("status", "?")))
        if status in TRAINING_DONE:
            if status == "Completed" and not job.get("error"):
                checkpoint = job.get("checkpoint_id")
                name = _lora_name(job)
                where = f": the LoRA {name} is checkpoint {checkpoint} (see Checkpoints)" if checkpoint else ""
                yield f"✓ Training {training_id} Completed{where}."
            else:
                reason = job.get("error") or job.get("reason") or ""
                yield f"✗ Training {training_id} {status}" + (f": {reason}" if reason else ".")
            return
        if time.monotonic() >= deadline:
            yield f"Training {training_id} is still {status}; stopped following it (time limit)."
            return
        step = job.get("secondary_status")
        logs = [line for line in job.get("logs") or [] if str(line).strip()]
        text = f"Training {training_id}: {status}" + (f" ({step})" if step and step != status else "")
        if logs:
            text += f"\n\n`{str(logs[-1]).strip()[:300]}`"
        if text != last:
            last = text
            yield text + "\n\nfollowing …"
        time.sleep(poll_s)


# -- inference history -------------------------------------------------------------------------

JOB_HEADERS = ["Created (UTC)", "Task", "Type", "Status", "Endpoint", "Duration (s)", "Images", "Error", "Id"]


def list_jobs(
    session: CloudSession,
    statuses: Sequence[str] | None = None,
    task_types: Sequence[str] | None = None,
    page_size: float | int = 20,
    pager: Pager | None = None,
    move: str = "first",
) -> ListView:
    """One page of the user's jobs, newest first, with status and timing."""

    def fetch(limit: int, cursor: str | None) -> Any:
        client = session.client()
        return client.list_inferences(list(statuses or []), list(task_types or []), limit=limit, cursor=cursor)

    def row_of(item: dict[str, Any]) -> tuple[list[str], str]:
        job_id = str(item.get("InferenceJobId", item.get("id", "")))
        created = _when(item.get("createTime"))
        duration = _seconds_between(item.get("startTime") or item.get("createTime"), item.get("completeTime"))
        task, status = str(item.get("taskType", "")), str(item.get("status", ""))
        row = [
            created,
            task,
            str(item.get("inference_type", "")),
            status,
            str(item.get("endpoint_name", "")),
            duration,
            str(len(item.get("image_names") or [])),
            str(item.get("error") or ""),
            job_id,
        ]
        return row, SEPARATOR.join([created, task, status, job_id])

    return _paged(session, "jobs.list", JOB_HEADERS, page_size, pager, move, fetch, row_of)


def open_job(session: CloudSession, selected: str) -> JobView:
    """A job's images (downloaded into a private temporary folder) and a description of it."""
    job_id = _id_of(selected or "")
    if not job_id:
        return JobView([], "✗ select a job (or enter its id)")
    try:
        session.require("jobs.list")
        client = session.client()
        job = client.get_inference(job_id)
        images = [client.get_presigned(url) for url in job.get("img_presigned_urls") or []]
        output: dict[str, Any] = {}
        outputs = job.get("output_presigned_urls") or []
        if outputs:
            with contextlib.suppress(ValueError):
                loaded = json.loads(client.get_presigned(outputs[0]))
                output = loaded if isinstance(loaded, dict) else {}
    except HANDLED as exc:
        return JobView([], _failure(exc))
    folder = _job_folder(session, job_id)
    paths = []
    for index, data in enumerate(images, start=1):
        path = folder / f"{job_id}-{index}.png"
        path.write_bytes(data)
        paths.append(str(path))
    return JobView(paths, _job_text(job, output, len(paths)))


def _job_folder(session: CloudSession, job_id: str) -> Path:
    root = session.image_dir()
    folder = root / "".join(ch for ch in job_id if ch.isalnum() or ch in "-_")[:80]
    if folder.exists():
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    older = sorted((path for path in root.iterdir() if path.is_dir()), key=lambda path: path.stat().st_mtime)
    for stale in older[:-KEPT_JOB_FOLDERS]:
        shutil.rmtree(stale, ignore_errors=True)
    return folder


def _job_text(job: Mapping[str, Any], output: Mapping[str, Any], count: int) -> str:
    job_id = job.get("InferenceJobId", job.get("id", "?"))
    models = (job.get("params") or {}).get("used_models") or {}
    used = "; ".join(
        f"{kind}: {', '.join(str(model.get('model_name', '')) for model in entries)}"
        for kind, entries in models.items()
        if isinstance(entries, list)
    )
    lines = [
        f"**Job {job_id}** · {job.get('taskType', '')} · {job.get('inference_type', '')} · **{job.get('status', '')}**",
        f"- endpoint: {job.get('endpoint_name', '')}",
        f"- created {_when(job.get('createTime'))}, started {_when(job.get('startTime')) or '–'}, "
        f"completed {_when(job.get('completeTime')) or '–'} (UTC)",
    ]
    duration = _seconds_between(job.get("startTime") or job.get("createTime"), job.get("completeTime"))
    if duration:
        lines.append(f"- took {duration} s")
    if used:
        lines.append(f"- models: {used}")
    lines.append(f"- images: {count}")
    if job.get("error") or job.get("status") == "failed":
        lines.append(f"- error: {job.get('error') or job.get('sagemakerRaw') or 'none given'}")
    info = output.get("info")
    if isinstance(info, str) and info:
        with contextlib.suppress(ValueError):
            parsed = json.loads(info)
            texts = parsed.get("infotexts") if isinstance(parsed, dict) else None
            info = texts[0] if isinstance(texts, list) and texts else info
        lines.append(f"\n```\n{str(info)[:2000]}\n```")
    return "\n".join(lines)


def delete_jobs(session: CloudSession, selected: Sequence[str] | str | None) -> str:
    """Delete the selected jobs with their payloads and images."""
    ids = _ids(selected)
    try:
        session.require("jobs.delete")
        if not ids:
            raise ValueError("select the jobs to delete")
        session.client().delete_inferences(ids)
    except HANDLED as exc:
        return _failure(exc)
    return f"✓ Deleted {len(ids)} job(s)."
