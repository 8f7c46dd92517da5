"""HTTP client of the ESD middleware API (1.x): one method per route the extension uses.

Every API request carries `x-api-key` and, when a user is set, `username`. Methods return
plain data: the envelope's `data` for routes that have one (list routes as a `Page`), the
envelope itself for routes that answer with a message only, and None for deletes (204).
A refusal raises `ApiError` with the middleware's own `message`; a network failure raises
`NetworkError`, an `ApiError` with status 0.

Presigned URLs (payloads, images, checkpoint parts) are absolute URLs of the blob store;
they go through `blob_session`, a second session that never carries the API key.
API requests do not follow redirects, so the key is never re-sent to another host.

`requests` is imported on first use: importing this module stays fast and does no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

if TYPE_CHECKING:
    import requests

API_MAJOR_VERSION = 1
VERSION_HEADER = "x-api-version"
DEFAULT_TIMEOUT_S = 30.0
START_TIMEOUT_S = 60.0  # a Real-time start waits up to 25 s on the server before it answers
BLOB_POOL_SIZE = 32  # connections kept per blob host: enough for parallel part uploads
FORBIDDEN = "Forbidden"
MISSING_TOKEN = "Missing Authentication Token"
KEY_REFUSED = "the API key was refused"
NO_SUCH_ROUTE = "no such route at this URL (Missing Authentication Token): check the API URL and its stage, e.g. …/prod"
_XML_FIELD = re.compile(r"<(Code|Message)>([^<]{0,300})</\1>")


class ApiError(Exception):
    """A request the middleware (or the blob store) refused; `message` is its own reason."""

    def __init__(self, status: int, message: str, *, method: str = "", where: str = "") -> None:
        self.status = status
        self.message = message
        self.method = method
        self.where = where  # the API path, or a presigned URL without its query string
        super().__init__(str(self))

    def __str__(self) -> str:
        request = f" on {self.method} {self.where}".rstrip() if self.method or self.where else ""
        status = f"HTTP {self.status}" if self.status else "network error"
        return f"{self.message} ({status}{request})"


class NetworkError(ApiError):
    """The request got no HTTP answer: connection refused, DNS failure, timeout."""

    def __init__(self, message: str, *, method: str = "", where: str = "") -> None:
        super().__init__(0, message, method=method, where=where)


@dataclass(frozen=True)
class Page:
    """One page of a list route; `cursor` is passed back for the next page, None on the last."""

    items: list[dict[str, Any]]
    cursor: str | None = None


@dataclass(frozen=True)
class Check:
    """One step of `check_connection`: `ok` is None when an earlier step failed and this one was not run."""

    name: str
    ok: bool | None
    detail: str


@dataclass(frozen=True)
class ConnectionReport:
    """The steps of a connection check, in order: reach, api key, version, user."""

    checks: tuple[Check, ...]
    api_version: str | None = None

    @property
    def ok(self) -> bool:
        """True when every step passed."""
        return all(check.ok for check in self.checks)

    @property
    def failed(self) -> Check | None:
        """The first step that failed (what to fix), or None."""
        return next((check for check in self.checks if check.ok is False), None)

    def step(self, name: str) -> Check:
        """The step called `name` (one of CHECK_STEPS)."""
        return next(check for check in self.checks if check.name == name)

    def summary(self) -> str:
        """One line for the UI: what works, or which step failed and why."""
        failed = self.failed
        if failed is not None:
            return f"{failed.name} failed: {failed.detail}"
        return "connected: " + "; ".join(f"{check.name}: {check.detail}" for check in self.checks)


CHECK_STEPS = ("reach", "api key", "version", "user")


class MiddlewareClient:
    """The ESD middleware API at `api_url` (the base URL with its stage, e.g. `http://127.0.0.1:8080/prod`).

    `session` carries API calls (the key is added per request, never stored on it);
    `blob_session` carries presigned-URL transfers and never sees the key. Both may be
    given (tests mount adapters on them); each is made when not given.
    """

    def __init__(
        self,
        api_url: str,
        api_key: str,
        username: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        session: requests.Session | None = None,
        blob_session: requests.Session | None = None,
    ) -> None:
        import requests

        self.api_url = api_url.rstrip("/")
        self._api_key = api_key
        self.username = username or None
        self.timeout = timeout
        self.session = session if session is not None else requests.Session()
        if blob_session is None:
            blob_session = requests.Session()
            adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=BLOB_POOL_SIZE)
            blob_session.mount("http://", adapter)
            blob_session.mount("https://", adapter)
        self.blob_session = blob_session
        self.last_api_version: str | None = None

    def __repr__(self) -> str:
        return f"MiddlewareClient({self.api_url!r}, username={self.username!r})"

    @classmethod
    def from_connection(cls, connection: Any, **options: Any) -> MiddlewareClient:
        """A client for a saved `config.Connection`."""
        return cls(connection.api_url, connection.api_key, connection.username, **options)

    def close(self) -> None:
        """Close both sessions' connections."""
        self.session.close()
        self.blob_session.close()

    # -- transport --------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        timeout: float | None = None,
    ) -> requests.Response:
        """The raw answer to an API request; NetworkError when there is none."""
        import requests

        headers = {"x-api-key": self._api_key, "Accept": "application/json"}
        if self.username:
            headers["username"] = self.username
        try:
            response = self.session.request(
                method,
                self.api_url + path,
                params=params,
                json=body,
                headers=headers,
                timeout=timeout or self.timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            reason = _network_reason(exc, self.api_url, timeout or self.timeout)
            raise NetworkError(reason, method=method, where=path) from exc
        version = response.headers.get(VERSION_HEADER)
        if version:
            self.last_api_version = version
        return response

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """The envelope of a successful API request; ApiError with the middleware's message otherwise."""
        response = self._send(method, path, params=params, body=body, timeout=timeout)
        if 300 <= response.status_code < 400:
            target = _redact(response.headers.get("Location", "?"))
            raise ApiError(
                response.status_code,
                f"the API answered with a redirect to {target}: set the API URL to the address it names",
                method=method,
                where=path,
            )
        envelope = _json_object(response)
        if response.status_code >= 400:
            message = _api_message(response, envelope)
            if response.status_code == 401 and message == "Unauthorized":
                who = f"user {self.username} is unknown to this deployment" if self.username else "no username is set"
                message = f"Unauthorized: {who}"
            raise ApiError(response.status_code, message, method=method, where=path)
        if not envelope and response.status_code != 204:
            raise ApiError(
                response.status_code,
                "the answer is not an ESD API envelope (JSON with statusCode and message): check the API URL",
                method=method,
                where=path,
            )
        return envelope

    def _data(self, method: str, path: str, **options: Any) -> dict[str, Any]:
        data = self._call(method, path, **options).get("data")
        return data if isinstance(data, dict) else {}

    def _page(self, path: str, key: str, params: dict[str, Any]) -> Page:
        data = self._data("GET", path, params={name: value for name, value in params.items() if value is not None})
        items = data.get(key)
        cursor = data.get("last_evaluated_key")
        if not isinstance(cursor, str) or cursor in ("", "not_applicable"):  # the API page's example: one page only
            cursor = None
        return Page(list(items) if isinstance(items, list) else [], cursor)

    @staticmethod
    def _iterate(fetch: Callable[[str | None], Page]) -> Iterator[dict[str, Any]]:
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            page = fetch(cursor)
            yield from page.items
            if not page.cursor or page.cursor in seen:  # a repeated cursor would loop forever
                return
            seen.add(page.cursor)
            cursor = page.cursor

    # -- presigned URLs (no API key) -----------------------------------------------------

    def put_presigned(self, url: str, data: bytes, *, timeout: float | None = None) -> str:
        """PUT `data` to a presigned URL; returns the ETag it answered with ("" if none)."""
        response = self._blob("PUT", url, data=data, timeout=timeout)
        return response.headers.get("ETag", "")

    def get_presigned(self, url: str, *, timeout: float | None = None) -> bytes:
        """The bytes behind a presigned GET URL."""
        return self._blob("GET", url, timeout=timeout).content

    def _blob(self, method: str, url: str, *, data: bytes | None = None, timeout: float | None = None) -> Any:
        import requests

        shown = _redact(url)
        try:
            response = self.blob_session.request(method, url, data=data, timeout=timeout or self.timeout)
        except requests.RequestException as exc:
            reason = _network_reason(exc, url, timeout or self.timeout)
            # from None: the cause's text holds the full URL with its signature
            raise NetworkError(reason, method=method, where=shown) from None
        if response.status_code >= 300:
            raise ApiError(response.status_code, _blob_message(response), method=method, where=shown)
        return response

    # -- connection ----------------------------------------------------------------------

    def ping(self) -> dict[str, Any]:
        """`GET /ping`: `{"statusCode": 200, "message": "pong"}` when the URL and the key are right."""
        return self._call("GET", "/ping")

    def api_version(self) -> str | None:
        """The middleware's `x-api-version` (from a ping)."""
        self.ping()
        return self.last_api_version

    def login(self, username: str, password: str) -> dict[str, Any]:
        """Check a username and password; returns the user (`username`, `roles`, `permissions`)."""
        user = self._data("POST", "/login", body={"username": username, "password": password}).get("user")
        return user if isinstance(user, dict) else {}

    def check_connection(self, password: str | None = None) -> ConnectionReport:
        """Check, in order, that the URL answers, the key is accepted, the API is 1.x and the user exists.

        With `password` the user is checked by logging in; without it, by listing one user
        (401 means the user is unknown). A step after a failed one is reported as not run.
        """
        checks: list[Check] = []
        version: str | None = None

        def finish(*failed: Check) -> ConnectionReport:
            checks.extend(failed)
            done = {check.name for check in checks}
            skipped = [Check(name, None, "not checked") for name in CHECK_STEPS if name not in done]
            return ConnectionReport(tuple(checks + skipped), version)

        try:
            response = self._send("GET", "/ping")
        except NetworkError as exc:
            return finish(
                Check("reach", False, f"cannot reach {self.api_url}: {exc.message}; check the URL and the network")
            )
        envelope = _json_object(response)
        message = str(envelope.get("message", ""))
        if response.status_code == 403 and message == MISSING_TOKEN:
            return finish(
                Check("reach", False, f"{self.api_url} answers, but has no ESD API there: check the stage (…/prod)")
            )
        if response.status_code == 403 and message == FORBIDDEN:
            checks.append(Check("reach", True, f"{self.api_url} answers"))
            return finish(Check("api key", False, f"{KEY_REFUSED}: copy the key of this deployment again"))
        if response.status_code != 200 or message != "pong":
            what = f"HTTP {response.status_code}" + (f" ({message})" if message else "")
            return finish(Check("reach", False, f"{self.api_url} answered {what}, not an ESD API's pong"))
        checks.append(Check("reach", True, f"{self.api_url} answers"))
        checks.append(Check("api key", True, "accepted"))

        version = response.headers.get(VERSION_HEADER)
        if not version:
            return finish(Check("version", False, f"no {VERSION_HEADER} header: this is not an ESD 1.x middleware"))
        if _major(version) != API_MAJOR_VERSION:
            return finish(Check("version", False, f"API version {version} is not supported: this extension needs 1.x"))
        checks.append(Check("version", True, version))
        return finish(self._check_user(password))

    def _check_user(self, password: str | None) -> Check:
        username = self.username
        if not username:
            return Check("user", False, "no username set: enter the ESD user to act as")
        if password:
            try:
                user = self.login(username, password)
                return Check("user", True, f"signed in as {username} (roles: {', '.join(user.get('roles', []))})")
            except ApiError as exc:
                if exc.status == 401:
                    return Check("user", False, f"wrong username or password for {username}")
                if exc.status != 403 or exc.message == KEY_REFUSED:
                    return Check("user", False, exc.message)
                # 403 from /login: a personal access token cannot check passwords; still check the user exists
        try:
            self._call("GET", "/users", params={"limit": 1})
            return Check("user", True, f"user {username} exists")
        except ApiError as exc:
            if exc.status == 401:
                return Check("user", False, f"user {username} does not exist on this deployment")
            if exc.status == 403 and exc.message != KEY_REFUSED:
                return Check("user", True, f"user {username} exists (it may not list users)")
            return Check("user", False, exc.message)

    # -- users, roles, tokens ----------------------------------------------------------

    def list_users(self, limit: int = 50, cursor: str | None = None) -> Page:
        """One page of the users the acting user may see (passwords masked)."""
        return self._page("/users", "users", {"limit": limit, "exclusive_start_key": cursor})

    def iter_users(self, page_size: int = 100) -> Iterator[dict[str, Any]]:
        """Every user the acting user may see, page after page."""
        return self._iterate(lambda cursor: self.list_users(page_size, cursor))

    def create_user(self, username: str, password: str | None, roles: list[str]) -> dict[str, Any]:
        """Create a user, or update one's roles (and password when given); the envelope (201 or 200)."""
        body: dict[str, Any] = {"username": username, "roles": list(roles)}
        if password:
            body["password"] = password
        return self._call("POST", "/users", body=body)

    def delete_users(self, usernames: Iterable[str]) -> None:
        """Delete users (and their tokens); not the acting user."""
        self._call("DELETE", "/users", body={"user_name_list": list(usernames)})

    def list_roles(self, limit: int = 50, cursor: str | None = None) -> Page:
        """One page of the roles the acting user may see."""
        return self._page("/roles", "roles", {"limit": limit, "exclusive_start_key": cursor})

    def iter_roles(self, page_size: int = 100) -> Iterator[dict[str, Any]]:
        """Every role the acting user may see, page after page."""
        return self._iterate(lambda cursor: self.list_roles(page_size, cursor))

    def create_role(self, role_name: str, permissions: list[str]) -> dict[str, Any]:
        """Create a role, or set an existing one's permissions; the envelope (201 or 200)."""
        return self._call("POST", "/roles", body={"role_name": role_name, "permissions": list(permissions)})

    def delete_roles(self, role_names: Iterable[str]) -> None:
        """Delete roles and take them from the users holding them."""
        self._call("DELETE", "/roles", body={"role_name_list": list(role_names)})

    def create_token(self, name: str, expires_in_days: int | None = None) -> dict[str, Any]:
        """A personal access token of the acting user; its secret (`token`) is shown this once."""
        body: dict[str, Any] = {"name": name}
        if expires_in_days is not None:
            body["expires_in_days"] = expires_in_days
        token = self._data("POST", "/tokens", body=body).get("token")
        return token if isinstance(token, dict) else {}

    def list_tokens(self, limit: int = 50, cursor: str | None = None) -> Page:
        """One page of the acting user's tokens (never their secrets)."""
        return self._page("/tokens", "tokens", {"limit": limit, "exclusive_start_key": cursor})

    def delete_tokens(self, token_ids: Iterable[str]) -> None:
        """Revoke the acting user's tokens with these ids."""
        self._call("DELETE", "/tokens", body={"token_id_list": list(token_ids)})

    # -- checkpoints -----------------------------------------------------------------------

    def list_checkpoints(
        self,
        types: Iterable[str] | None = None,
        statuses: Iterable[str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        """One page of checkpoints, newest first, optionally only of some types and statuses."""
        params = {
            "types": list(types) if types else None,
            "status": list(statuses) if statuses else None,
            "limit": limit,
            "exclusive_start_key": cursor,
        }
        return self._page("/checkpoints", "checkpoints", params)

    def iter_checkpoints(
        self, types: Iterable[str] | None = None, statuses: Iterable[str] | None = None, page_size: int = 100
    ) -> Iterator[dict[str, Any]]:
        """Every checkpoint matching, page after page."""
        types, statuses = list(types or []), list(statuses or [])
        return self._iterate(lambda cursor: self.list_checkpoints(types, statuses, page_size, cursor))

    def get_checkpoint(self, checkpoint_id: str) -> dict[str, Any]:
        """One checkpoint (`id`, `type`, `status`, `name`: its file names, …)."""
        return self._data("GET", f"/checkpoints/{_segment(checkpoint_id)}").get("checkpoint") or {}

    def create_checkpoint_upload(
        self, checkpoint_type: str, files: list[tuple[str, int]], message: str = ""
    ) -> dict[str, Any]:
        """Start a multipart upload of `files` ((name, parts_number) each).

        Returns `{"checkpoint": {...}, "s3PresignUrl": {name: [part URL, …]}}`.
        """
        body = {
            "checkpoint_type": checkpoint_type,
            "filenames": [{"filename": name, "parts_number": parts} for name, parts in files],
            "params": {"message": message},
        }
        return self._data("POST", "/checkpoints", body=body)

    def complete_checkpoint(
        self, checkpoint_id: str, tags: dict[str, list[dict[str, Any]]], *, timeout: float | None = None
    ) -> dict[str, Any]:
        """Complete an upload with each file's `[{"ETag", "PartNumber"}]`; returns the now Active checkpoint.

        The middleware joins the parts before it answers (the embedded one copies every byte), so a large
        file needs a `timeout` (seconds to wait for the answer) longer than the client's: `upload_file` sizes it.
        """
        body = {"status": "Active", "multi_parts_tags": tags}
        path = f"/checkpoints/{_segment(checkpoint_id)}"
        return self._data("PUT", path, body=body, timeout=timeout).get("checkpoint") or {}

    def create_checkpoint_from_urls(self, checkpoint_type: str, urls: list[str], message: str = "") -> dict[str, Any]:
        """A checkpoint the middleware downloads from `urls` in the background (Initial until done)."""
        body = {"checkpoint_type": checkpoint_type, "urls": list(urls), "params": {"message": message}}
        return self._data("POST", "/checkpoints", body=body).get("checkpoint") or {}

    def rename_checkpoint(self, checkpoint_id: str, name: str) -> dict[str, Any]:
        """Rename a one-file Active checkpoint; returns it."""
        return self._data("PUT", f"/checkpoints/{_segment(checkpoint_id)}", body={"name": name}).get("checkpoint") or {}

    def delete_checkpoints(self, checkpoint_ids: Iterable[str]) -> None:
        """Delete checkpoints with their files (an unfinished upload is aborted)."""
        self._call("DELETE", "/checkpoints", body={"checkpoint_id_list": list(checkpoint_ids)})

    # -- endpoints -------------------------------------------------------------------------

    def list_endpoints(self, limit: int = 50, cursor: str | None = None) -> Page:
        """One page of the endpoints the acting user's roles may use, newest first."""
        return self._page("/endpoints", "endpoints", {"limit": limit, "exclusive_start_key": cursor})

    def iter_endpoints(self, page_size: int = 100) -> Iterator[dict[str, Any]]:
        """Every endpoint the acting user may use, page after page."""
        return self._iterate(lambda cursor: self.list_endpoints(page_size, cursor))

    def create_endpoint(
        self,
        endpoint_type: str = "Async",
        *,
        roles: list[str],
        name: str | None = None,
        instance_type: str = "ml.g5.2xlarge",
        initial_instance_count: int = 1,
        autoscaling: bool = True,
        min_instances: int | None = None,
        max_instances: int | None = None,
    ) -> dict[str, Any]:
        """Deploy an endpoint (`esd-{async|real-time}-{name}`); returns it, `Creating`."""
        body: dict[str, Any] = {
            "endpoint_type": endpoint_type,
            "instance_type": instance_type,
            "initial_instance_count": initial_instance_count,
            "autoscaling_enabled": autoscaling,
            "assign_to_roles": list(roles),
        }
        if name:
            body["endpoint_name"] = name
        if min_instances is not None:
            body["min_instance_number"] = min_instances
        if max_instances is not None:
            body["max_instance_number"] = max_instances
        return self._data("POST", "/endpoints", body=body)

    def delete_endpoints(self, endpoint_names: Iterable[str]) -> None:
        """Delete endpoints by their full names (`esd-async-…`)."""
        self._call("DELETE", "/endpoints", body={"endpoint_name_list": list(endpoint_names)})

    # -- inferences ------------------------------------------------------------------------

    def create_inference(
        self,
        task_type: str,
        models: dict[str, list[str]],
        *,
        inference_type: str = "Async",
        endpoint_name: str | None = None,
        payload_string: str | None = None,
    ) -> dict[str, Any]:
        """Create a job; returns its `inference` (`id`, `api_params_s3_upload_url`, …).

        With `payload_string` the middleware stores the payload and starts the job at once.
        """
        body: dict[str, Any] = {"inference_type": inference_type, "task_type": task_type, "models": models}
        if endpoint_name:
            body["endpoint_name"] = endpoint_name
        if payload_string is not None:
            body["payload_string"] = payload_string
        timeout = max(self.timeout, START_TIMEOUT_S) if payload_string is not None else None
        return self._data("POST", "/inferences", body=body, timeout=timeout).get("inference") or {}

    def upload_payload(self, url: str, payload: dict[str, Any]) -> None:
        """PUT a job's payload (JSON) to its presigned `api_params_s3_upload_url`."""
        self.put_presigned(url, json.dumps(payload).encode("utf-8"))

    def start_inference(self, inference_id: str) -> dict[str, Any]:
        """Start a created job; returns its `inference` (`status`; a finished Real-time job's full view)."""
        path = f"/inferences/{_segment(inference_id)}/start"
        return self._data("PUT", path, timeout=max(self.timeout, START_TIMEOUT_S)).get("inference") or {}

    def get_inference(self, inference_id: str, wait_s: float = 0) -> dict[str, Any]:
        """A job with its images' URLs; with `wait_s` (≤ 25) the middleware answers as soon as it ends."""
        params = {"wait_s": wait_s} if wait_s > 0 else None
        return self._data(
            "GET", f"/inferences/{_segment(inference_id)}", params=params, timeout=self.timeout + max(wait_s, 0)
        )

    def list_inferences(
        self,
        statuses: Iterable[str] | None = None,
        task_types: Iterable[str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        """One page of the acting user's jobs, newest first."""
        params = {
            "status": list(statuses) if statuses else None,
            "task_type": list(task_types) if task_types else None,
            "limit": limit,
            "exclusive_start_key": cursor,
        }
        return self._page("/inferences", "inferences", params)

    def delete_inferences(self, inference_ids: Iterable[str]) -> None:
        """Delete jobs with their payloads and images."""
        self._call("DELETE", "/inferences", body={"inference_id_list": list(inference_ids)})

    # -- datasets and trainings ----------------------------------------------------------------

    def list_datasets(self, limit: int = 50, cursor: str | None = None, status: str | None = None) -> Page:
        """One page of the datasets the acting user may see (`datasetName`, `status`, `s3`, `timestamp`, …)."""
        params = {"limit": limit, "exclusive_start_key": cursor, "dataset_status": status}
        return self._page("/datasets", "datasets", params)

    def iter_datasets(self, page_size: int = 100) -> Iterator[dict[str, Any]]:
        return self._iterate(lambda cursor: self.list_datasets(page_size, cursor))

    def get_dataset(self, name: str) -> dict[str, Any]:
        """One dataset with its items (`data`: `name`, `type`, `preview_url`, …)."""
        return self._data("GET", f"/datasets/{_segment(name)}")

    def create_dataset(
        self, name: str, files: list[tuple[str, str]], description: str = "", prefix: str = ""
    ) -> dict[str, Any]:
        """Start a dataset of `files` ((file name, type: "image" or "text") each); it stays Initialed.

        Returns `{"datasetName": …, "s3PresignUrl": {file name: PUT URL}}`; `complete_dataset` enables it.
        """
        body = {
            "dataset_name": name,
            "content": [{"filename": file, "name": file, "type": kind, "params": {}} for file, kind in files],
            "params": {"description": description},
            "prefix": prefix,
        }
        return self._data("POST", "/datasets", body=body)

    def complete_dataset(self, name: str, status: str = "Enabled") -> dict[str, Any]:
        """Set a dataset's status (Enabled once its files are uploaded); returns `{datasetName, status}`."""
        return self._data("PUT", f"/datasets/{_segment(name)}", body={"status": status})

    def delete_datasets(self, names: Iterable[str]) -> None:
        self._call("DELETE", "/datasets", body={"dataset_name_list": list(names)})

    def create_training(
        self,
        *,
        model: str,
        dataset: str,
        fm_type: str = "sd_1_5",
        instance_type: str = "ml.g5.2xlarge",
        training: dict[str, Any] | None = None,
        s3_model_path: str | None = None,
        s3_data_path: str | None = None,
    ) -> dict[str, Any]:
        """Start a kohya LoRA training of checkpoint `model` on dataset `dataset` (names); returns the job.

        `training` goes to `config_params.training` (`output_name`, `max_train_epochs`, …).
        """
        training_params: dict[str, Any] = {
            "training_instance_type": instance_type,
            "fm_type": fm_type,
            "model": model,
            "dataset": dataset,
        }
        if s3_model_path:
            training_params["s3_model_path"] = s3_model_path
        if s3_data_path:
            training_params["s3_data_path"] = s3_data_path
        params: dict[str, Any] = {"training_params": training_params}
        if training:
            params["config_params"] = {"training": dict(training)}
        return self._data("POST", "/trainings", body={"lora_train_type": "kohya", "params": params})

    def get_training(self, training_id: str) -> dict[str, Any]:
        """A training job (`job_status`; `checkpoint_id` of its LoRA once Completed)."""
        return self._data("GET", f"/trainings/{_segment(training_id)}")

    def list_trainings(self, limit: int = 50, cursor: str | None = None) -> Page:
        """One page of the training jobs the acting user may see, newest first."""
        return self._page("/trainings", "trainings", {"limit": limit, "exclusive_start_key": cursor})

    def iter_trainings(self, page_size: int = 100) -> Iterator[dict[str, Any]]:
        return self._iterate(lambda cursor: self.list_trainings(page_size, cursor))

    def delete_trainings(self, training_ids: Iterable[str]) -> None:
        self._call("DELETE", "/trainings", body={"training_id_list": list(training_ids)})


# -- helpers ---------------------------------------------------------------------------------


def _json_object(response: Any) -> dict[str, Any]:
    if response.status_code == 204 or not response.content:
        return {}
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _api_message(response: Any, envelope: dict[str, Any]) -> str:
    message = envelope.get("message")
    if response.status_code == 403 and message == FORBIDDEN:
        return KEY_REFUSED
    if response.status_code == 403 and message == MISSING_TOKEN:
        return NO_SUCH_ROUTE
    if isinstance(message, str) and message:
        return message
    text = (response.text or "").strip().replace("\n", " ")
    return f"{response.reason or 'error'}: {text[:200]}" if text else (response.reason or "error")


def _blob_message(response: Any) -> str:
    """The blob store's reason: the embedded store's JSON `message`, or S3's XML `Code: Message`."""
    envelope = _json_object(response)
    if isinstance(envelope.get("message"), str):
        return envelope["message"]
    fields = dict(_XML_FIELD.findall(response.text or ""))
    if fields:
        return ": ".join(value for value in (fields.get("Code"), fields.get("Message")) if value)
    return response.reason or f"HTTP {response.status_code}"


def _network_reason(exc: Exception, url: str, timeout: float) -> str:
    """A short reason for a failed request, without the URL's query string (it may hold a signature)."""
    import requests

    host = urlsplit(url).netloc or url
    if isinstance(exc, requests.Timeout):
        return f"{host} did not answer within {timeout:g} s"
    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS failed with {host}"
    if isinstance(exc, requests.ConnectionError):
        return f"cannot connect to {host}"
    return f"request to {host} failed: {type(exc).__name__}"


def _redact(url: str) -> str:
    """`url` without query string or fragment (presigned URLs carry their signature there)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(invalid url)"
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _segment(value: str) -> str:
    return quote(str(value), safe="")


def _major(version: str) -> int | None:
    head = version.strip().lstrip("vV").split(".", 1)[0]
    return int(head) if head.isdigit() else None


__all__ = [
    "ApiError",
    "Check",
    "ConnectionReport",
    "MiddlewareClient",
    "NetworkError",
    "Page",
]
