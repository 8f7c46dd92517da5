"""Checkpoints: model files uploaded in parts through presigned URLs, or downloaded from URLs.

A checkpoint is one item of the checkpoints table plus its files in the bucket
under `{type}/checkpoint/custom/{id}/`. It starts `Initial` and becomes
`Active` once its files are complete (multipart upload finished, or the
background download succeeded); a failed download ends `Failed` with an
`error`. `name_key` (`{type}/{first file name}`) indexes live checkpoints by
file name, so inference can resolve them; a name guard (`services/names.py`)
on it keeps names unique per type, even for creates that race.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
import socket
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import requests
import urllib3

from middleware_api import schema
from middleware_api.ports.background import Background, TaskHandler
from middleware_api.ports.blobs import BlobError, Blobs, Part
from middleware_api.ports.tables import ConditionFailed, Item, Page, Table, query_all
from middleware_api.services.errors import ApiError, BadRequest, Conflict, NotFound
from middleware_api.services.names import NameGuards, is_guard
from middleware_api.services.permissions import Actor

log = logging.getLogger("middleware_api.checkpoints")

CHECKPOINT_TYPES = ("Stable-diffusion", "embeddings", "Lora", "hypernetworks", "ControlNet", "VAE")
INITIAL, ACTIVE, DISABLED, FAILED = "Initial", "Active", "Disabled", "Failed"
STATUSES = (INITIAL, ACTIVE, DISABLED, FAILED)
LIVE_STATUSES = (INITIAL, ACTIVE)  # statuses whose file names are taken
DOWNLOAD_TASK = "checkpoints.download"
MAX_FILES = 20
MAX_PARTS = 10_000
MAX_FILE_NAME_BYTES = 255  # a file name on most file systems, and an S3 key segment of the embedded store
MAX_ID_LENGTH = 128
MAX_REDIRECTS = 10
DOWNLOAD_TIMEOUT_S = (10, 60)  # (connect, between bytes)
FORBIDDEN_HOSTS = frozenset({"metadata.google.internal"})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_DISPOSITION_EXTENDED = re.compile(r"filename\*\s*=\s*([^;]+)", re.IGNORECASE)
_DISPOSITION_PLAIN = re.compile(r'filename\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))', re.IGNORECASE)

Resolver = Callable[..., list[tuple[Any, ...]]]


@dataclass
class Created:
    """A new checkpoint (in the create response's shape) and, for an upload, each file's part URLs."""

    checkpoint: Item
    presigned_urls: dict[str, list[str]] | None  # None: created from URLs, downloaded in the background


class DownloadFailed(Exception):
    """A download that cannot succeed; `reason` is safe to show (no URL query strings or credentials)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CheckpointService:
    """Create (upload or download), complete, rename, list, get and delete checkpoints."""

    def __init__(
        self, table: Table, blobs: Blobs, background: Background, resolve: Resolver = socket.getaddrinfo
    ) -> None:
        self.table = table
        self.blobs = blobs
        self.background = background
        self.resolve = resolve
        self.names = NameGuards(table, self._holds_name)

    def task_handlers(self) -> dict[str, TaskHandler]:
        """The background tasks this service runs, by name."""
        return {DOWNLOAD_TASK: self.download}

    # -- create -----------------------------------------------------------------

    def create(
        self,
        actor: Actor,
        checkpoint_type: str,
        message: str | None,
        *,
        urls: list[str] | None = None,
        files: list[tuple[str, int]] | None = None,
    ) -> Created:
        """Create a checkpoint from `urls` (downloaded in the background) or `files` ((name, parts) to upload).

        Exactly one of `urls` and `files` must be given.
        """
        actor.require("checkpoint", "create")
        _check_type(checkpoint_type)
        if urls is not None and files is not None:
            raise BadRequest("provide either urls or filenames, not both")
        if urls is None and files is None:
            raise BadRequest(
                'object has missing required properties (["urls"]): give urls to download or filenames to upload'
            )
        if files is not None:
            return self._create_upload(actor, checkpoint_type, message or "", files)
        return self._create_download(actor, checkpoint_type, message or "", urls or [])

    def _create_upload(self, actor: Actor, checkpoint_type: str, message: str, files: list[tuple[str, int]]) -> Created:
        _check_count("filenames", files)
        names = [check_file_name(name) for name, _ in files]
        _check_unique(names)
        for name, parts in files:
            if isinstance(parts, bool) or not isinstance(parts, int) or not 1 <= parts <= MAX_PARTS:
                raise BadRequest(f"parts_number of {name} must be 1..{MAX_PARTS} (required minimum: 1)")
        if sum(parts for _, parts in files) > MAX_PARTS:
            raise BadRequest(f"at most {MAX_PARTS} parts in all per checkpoint: use larger parts")
        item = self._new_item(actor, checkpoint_type, message, names)
        self.claim_name(checkpoint_type, names[0], item["id"])  # the name the checkpoint is known by
        for name in names[1:]:
            try:
                self._require_free(checkpoint_type, name)
            except BadRequest:
                self.release_name(item)
                raise
        uploads: dict[str, dict[str, str]] = {}
        presigned: dict[str, list[str]] = {}
        try:
            for name, parts in files:
                key = self._file_key(item, name)
                upload_id = self.blobs.start_multipart(key)
                uploads[name] = {"upload_id": upload_id, "bucket": self.blobs.bucket, "key": key}
                presigned[name] = [self.blobs.presign_part(key, upload_id, number) for number in range(1, parts + 1)]
            item["params"]["multipart_upload"] = uploads
            self.table.put(item, must_not_exist=True)
        except Exception:
            for upload in uploads.values():
                self._quietly(self.blobs.abort_multipart, upload["key"], upload["upload_id"])
            self.release_name(item)
            raise
        return Created(checkpoint_view(item), presigned)

    def _create_download(self, actor: Actor, checkpoint_type: str, message: str, urls: list[str]) -> Created:
        _check_count("urls", urls)
        urls = [check_url(url, self.resolve) for url in urls]
        item = self._new_item(actor, checkpoint_type, message, [])
        item["source_urls"] = urls
        self.table.put(item, must_not_exist=True)
        try:
            self.background.submit(DOWNLOAD_TASK, {"id": item["id"]})
        except Exception as exc:
            log.exception("cannot queue the download of checkpoint %s", item["id"])
            self._finish(item["id"], {"checkpoint_status": FAILED, "error": "the download could not be started"})
            raise ApiError("the download could not be started, please retry later", 503) from exc
        return Created(checkpoint_view(item), None)

    def _new_item(self, actor: Actor, checkpoint_type: str, message: str, names: list[str]) -> Item:
        checkpoint_id = str(uuid.uuid4())
        created = time.time()
        item: Item = {
            "id": checkpoint_id,
            "checkpoint_type": checkpoint_type,
            "checkpoint_status": INITIAL,
            "checkpoint_names": names,
            "s3_location": self.blobs.uri(f"{checkpoint_type}/checkpoint/custom/{checkpoint_id}"),
            "created": created,
            "listing": schema.LISTING,
            "allowed_roles_or_users": list(actor.roles) or [actor.username],
            "params": {
                "message": message,
                "creator": actor.username,
                "created": datetime.fromtimestamp(created, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f"),
            },
        }
        if names:
            item["name_key"] = _name_key(checkpoint_type, names[0])
        return item

    # -- background download ----------------------------------------------------

    def download(self, payload: Mapping[str, Any]) -> None:
        """The `checkpoints.download` task: fetch an `Initial` checkpoint's URLs, then mark it Active or Failed."""
        checkpoint_id = str(payload.get("id", ""))
        item = self.table.get({"id": checkpoint_id}) if checkpoint_id else None
        if item is None or item.get("checkpoint_status") != INITIAL or not item.get("source_urls"):
            return  # deleted meanwhile, already handled (a task delivered twice), or not a URL creation
        shown_urls = [redact_url(url) for url in item["source_urls"]]
        try:
            names = self._fetch_all(item)
            try:
                self.claim_name(item["checkpoint_type"], names[0], checkpoint_id)
            except BadRequest as exc:
                raise DownloadFailed(exc.message) from None
        except Exception as exc:  # whatever went wrong, the checkpoint must not stay Initial
            reason = exc.reason if isinstance(exc, DownloadFailed) else f"download failed: {type(exc).__name__}"
            log.warning("checkpoint %s: %s", checkpoint_id, reason)
            self._quietly(self.blobs.delete_prefix, _prefix(item))
            self._finish(checkpoint_id, {"checkpoint_status": FAILED, "error": reason, "source_urls": shown_urls})
            return
        changes = {
            "checkpoint_status": ACTIVE,
            "checkpoint_names": names,
            "name_key": _name_key(item["checkpoint_type"], names[0]),
            "source_urls": shown_urls,  # the task is over: keep no tokens from query strings
        }
        if not self._finish(checkpoint_id, changes):
            self.release_name({**item, **changes})
            self._quietly(self.blobs.delete_prefix, _prefix(item))  # deleted while downloading

    def fail_interrupted_downloads(self, reason: str) -> int:
        """Mark every checkpoint still downloading from its URLs `Failed` with `reason`; returns how many.

        For the embedded server at start: its downloads ran on threads of the previous server
        process and died with it. What they had written is deleted. Multipart uploads, also
        `Initial`, are left alone: their parts are kept and the client can send the rest.
        """

        def downloading(item: Item) -> bool:
            return item.get("checkpoint_status") == INITIAL and bool(item.get("source_urls"))

        interrupted = list(query_all(self.table, schema.LISTING, index="by_created", where=downloading))
        for item in interrupted:
            self._quietly(self.blobs.delete_prefix, _prefix(item))
            shown_urls = [redact_url(url) for url in item["source_urls"]]
            self._finish(item["id"], {"checkpoint_status": FAILED, "error": reason, "source_urls": shown_urls})
        return len(interrupted)

    def _finish(self, checkpoint_id: str, changes: Mapping[str, Any]) -> bool:
        """Apply `changes` to a still-Initial checkpoint; False if it was deleted or changed meanwhile."""
        try:
            self.table.update({"id": checkpoint_id}, changes, expect={"checkpoint_status": INITIAL})
            return True
        except ConditionFailed:
            return False

    def _fetch_all(self, item: Item) -> list[str]:
        names: list[str] = []
        with requests.Session() as session:
            for url in item["source_urls"]:
                names.append(self._fetch(session, item, url, names))
        return names

    def _fetch(self, session: requests.Session, item: Item, url: str, earlier: list[str]) -> str:
        """Stream one URL into the checkpoint's folder; returns the file name it got."""
        shown = redact_url(url)
        try:
            response, final_url = self._open(session, url)
            with response:
                name = file_name_for(response.headers.get("Content-Disposition"), final_url, item["id"])
                if name in earlier:
                    raise DownloadFailed(f"two urls give the same file name {name}")
                if self._name_taken(item["checkpoint_type"], name, except_id=item["id"]):
                    raise DownloadFailed(f"{name} already exists, please use another or rename/delete exists")
                response.raw.decode_content = True
                size = self.blobs.write_stream(self._file_key(item, name), response.raw)
                expected = response.headers.get("Content-Length", "")
                if expected.isdigit() and not response.headers.get("Content-Encoding") and int(expected) != size:
                    raise DownloadFailed(f"download of {shown} failed: got {size} of {expected} bytes")
                return name
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise DownloadFailed(f"download of {shown} failed: {_describe(exc)}") from exc
        except BlobError as exc:
            raise DownloadFailed(f"download of {shown} could not be stored: {exc}") from exc

    def _open(self, session: requests.Session, url: str) -> tuple[requests.Response, str]:
        """The response to GET `url`, following redirects only to hosts `check_url` allows."""
        shown = redact_url(url)
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            try:
                check_url(current, self.resolve)
            except BadRequest as exc:
                raise DownloadFailed(f"download of {shown} failed: {exc.message}") from exc
            response = session.get(current, stream=True, timeout=DOWNLOAD_TIMEOUT_S, allow_redirects=False)
            target = session.get_redirect_target(response)
            if target is None:
                if response.status_code >= 400:
                    reason = f"{response.status_code} {(response.reason or '')[:100]}".strip()
                    response.close()
                    raise DownloadFailed(f"download of {shown} failed: {reason}")
                return response, current
            response.close()
            current = urljoin(current, target)
        raise DownloadFailed(f"download of {shown} failed: more than {MAX_REDIRECTS} redirects")

    # -- update: complete an upload, rename ------------------------------------

    def update(
        self,
        actor: Actor,
        checkpoint_id: str,
        *,
        status: str | None = None,
        multi_parts_tags: Mapping[str, list[Part]] | None = None,
        name: str | None = None,
    ) -> Item:
        """Complete a multipart upload (`status` Active + `multi_parts_tags`) or rename a one-file checkpoint (`name`).

        Returns the checkpoint in the update response's shape.
        """
        actor.require("checkpoint", "all")
        item = self._visible(actor, checkpoint_id)
        if status is not None and status != ACTIVE:
            raise BadRequest(f'status can only be set to "{ACTIVE}", not {status!r}')
        if name is not None:
            if multi_parts_tags is not None:
                raise BadRequest("provide either name or multi_parts_tags, not both")
            return self._rename(item, name)
        if multi_parts_tags is None:
            missing = ["multi_parts_tags"] if status else ["status", "multi_parts_tags"]
            raise BadRequest(f"object has missing required properties ({_json_list(missing)})")
        if status is None:
            raise BadRequest('object has missing required properties (["status"])')
        return self._complete(item, multi_parts_tags)

    def _complete(self, item: Item, tags: Mapping[str, list[Part]]) -> Item:
        checkpoint_id = item["id"]
        if item["checkpoint_status"] != INITIAL:
            status = item["checkpoint_status"]
            raise BadRequest(f"checkpoint {checkpoint_id} is {status}: only an Initial upload can be completed")
        params = dict(item.get("params") or {})
        uploads: dict[str, dict[str, str]] = params.get("multipart_upload") or {}
        if not uploads:
            raise BadRequest(f"checkpoint {checkpoint_id} was not created by a multipart upload")
        unknown = [name for name in tags if name not in item.get("checkpoint_names", [])]
        if unknown:
            raise BadRequest(f"multi_parts_tags names a file checkpoint {checkpoint_id} does not have: {unknown[0]}")
        missing = [name for name in uploads if not tags.get(name)]
        if missing:
            raise BadRequest(f"multi_parts_tags has no parts for {missing[0]}")
        parts = {name: _sorted_parts(name, tags[name]) for name in uploads}
        completed: list[str] = []
        try:
            for name, upload in uploads.items():
                try:
                    self.blobs.complete_multipart(upload["key"], upload["upload_id"], parts[name])
                except BlobError as exc:
                    raise BadRequest(f"cannot complete the upload of {name}: {exc}") from exc
                completed.append(name)
        finally:
            if completed and len(completed) < len(uploads):
                # a retry must only complete the files still unfinished: their uploads are all that is left
                remaining = {name: upload for name, upload in uploads.items() if name not in completed}
                with contextlib.suppress(ConditionFailed):
                    self.table.update(
                        {"id": checkpoint_id},
                        {"params": {**params, "multipart_upload": remaining}},
                        expect={"checkpoint_status": INITIAL},
                    )
        params.pop("multipart_upload", None)
        try:
            updated = self.table.update(
                {"id": checkpoint_id},
                {"checkpoint_status": ACTIVE, "params": params},
                expect={"checkpoint_status": INITIAL},
            )
        except ConditionFailed:
            raise self._changed(checkpoint_id) from None
        return checkpoint_view(updated)

    def _rename(self, item: Item, new_name: str) -> Item:
        checkpoint_id = item["id"]
        checkpoint_type = item["checkpoint_type"]
        if item["checkpoint_status"] != ACTIVE:
            status = item["checkpoint_status"]
            raise BadRequest(f"checkpoint {checkpoint_id} is {status}: only an Active checkpoint can be renamed")
        names = item.get("checkpoint_names") or []
        if len(names) != 1:
            count = len(names)
            raise BadRequest(f"checkpoint {checkpoint_id} has {count} files: only a one-file checkpoint can be renamed")
        new_name = check_file_name(new_name)
        old_name = names[0]
        if new_name == old_name:
            return checkpoint_view(item)
        self.claim_name(checkpoint_type, new_name, checkpoint_id)
        renamed = {**item, "name_key": _name_key(checkpoint_type, new_name)}
        old_key, new_key = self._file_key(item, old_name), self._file_key(item, new_name)
        try:
            self.blobs.copy(old_key, new_key)
        except BlobError as exc:
            self.release_name(renamed)
            raise BadRequest(f"cannot rename {old_name}: {exc}") from exc
        try:
            updated = self.table.update(
                {"id": checkpoint_id},
                {"checkpoint_names": [new_name], "name_key": renamed["name_key"]},
                expect={"checkpoint_status": ACTIVE, "name_key": _name_key(checkpoint_type, old_name)},
            )
        except ConditionFailed:
            self.release_name(renamed)
            self._quietly(self.blobs.delete, new_key)
            raise self._changed(checkpoint_id) from None
        self.release_name(item)
        self.blobs.delete(old_key)
        return checkpoint_view(updated)

    def _changed(self, checkpoint_id: str) -> ApiError:
        if self.table.get({"id": checkpoint_id}) is None:
            return NotFound(f"checkpoint not found with id {checkpoint_id}")
        return Conflict(f"checkpoint {checkpoint_id} was changed meanwhile")

    # -- read ---------------------------------------------------------------------

    def list(
        self,
        actor: Actor,
        *,
        statuses: Iterable[str] | None = None,
        types: Iterable[str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        """The checkpoints the actor may see, newest first, optionally only of some statuses and types."""
        actor.require("checkpoint", "list")
        wanted_statuses = _check_values("status", statuses, STATUSES)
        wanted_types = _check_values("type", types, CHECKPOINT_TYPES)

        def where(item: Item) -> bool:
            return (
                actor.can_see(item.get("allowed_roles_or_users"))
                and (not wanted_statuses or item.get("checkpoint_status") in wanted_statuses)
                and (not wanted_types or item.get("checkpoint_type") in wanted_types)
            )

        # one status (the WebUI asks for Active ones) reads only that status's checkpoints
        partition, index = (
            (next(iter(wanted_statuses)), "by_status") if len(wanted_statuses) == 1 else (schema.LISTING, "by_created")
        )
        page = self.table.query(partition, index=index, limit=limit, cursor=cursor, where=where, descending=True)
        return Page([public_checkpoint(item) for item in page.items], page.cursor)

    def get(self, actor: Actor, checkpoint_id: str) -> Item:
        """One checkpoint the actor may see; NotFound otherwise."""
        actor.require("checkpoint", "list")
        return public_checkpoint(self._visible(actor, checkpoint_id))

    def find_by_name(self, checkpoint_type: str, name: str, actor: Actor | None = None) -> Item | None:
        """The newest Active checkpoint of a type with this (first) file name, visible to `actor` if given."""

        def where(item: Item) -> bool:
            return item.get("checkpoint_status") == ACTIVE and (
                actor is None or actor.can_see(item.get("allowed_roles_or_users"))
            )

        key = _name_key(checkpoint_type, name)
        page = self.table.query(key, index="by_name", limit=1, where=where, descending=True)
        return page.items[0] if page.items else None

    # -- delete -------------------------------------------------------------------

    def delete(self, actor: Actor, checkpoint_ids: list[str]) -> None:
        """Delete checkpoints and their files; NotFound (and nothing deleted) if any is absent or hidden."""
        actor.require("checkpoint", "all")
        items = [self._visible(actor, checkpoint_id) for checkpoint_id in dict.fromkeys(checkpoint_ids)]
        for item in items:
            self.blobs.delete_prefix(_prefix(item))  # also aborts unfinished multipart uploads
            self.delete_record(item)

    def delete_record(self, item: Item | None) -> None:
        """Delete a checkpoint's record, then free its name (re-read if a download or rename changed it meanwhile)."""
        while item is not None:
            try:
                self.table.delete({"id": item["id"]}, expect={"name_key": item.get("name_key")})
            except ConditionFailed:
                item = self.table.get({"id": item["id"]})
                continue
            self.release_name(item)
            return

    # -- helpers ------------------------------------------------------------------

    def _visible(self, actor: Actor, checkpoint_id: str) -> Item:
        item = None
        if isinstance(checkpoint_id, str) and 0 < len(checkpoint_id) <= MAX_ID_LENGTH:
            item = self.table.get({"id": checkpoint_id})
        if item is None or is_guard(item) or not actor.can_see(item.get("allowed_roles_or_users")):
            raise NotFound(f"checkpoint not found with id {checkpoint_id}")
        return item

    def _name_taken(self, checkpoint_type: str, name: str, except_id: str | None = None) -> bool:
        def where(item: Item) -> bool:
            return item.get("checkpoint_status") in LIVE_STATUSES and item.get("id") != except_id

        return bool(self.table.query(_name_key(checkpoint_type, name), index="by_name", limit=1, where=where).items)

    def _require_free(self, checkpoint_type: str, name: str, except_id: str | None = None) -> None:
        if self._name_taken(checkpoint_type, name, except_id):
            raise BadRequest(f"{name} already exists, please use another or rename/delete exists")

    def claim_name(self, checkpoint_type: str, name: str, checkpoint_id: str) -> None:
        """Take a file name of a type for a checkpoint, atomically; BadRequest if another live checkpoint has it.

        Call before writing the name onto the checkpoint, and `release_name` when it stops holding it.
        """
        key = _name_key(checkpoint_type, name)
        if not self.names.claim(key, checkpoint_id):
            raise BadRequest(f"{name} already exists, please use another or rename/delete exists")
        if self._name_taken(checkpoint_type, name, except_id=checkpoint_id):  # one stored before name guards
            self.names.release(key, checkpoint_id)
            raise BadRequest(f"{name} already exists, please use another or rename/delete exists")

    def release_name(self, item: Item) -> None:
        """Free the name a checkpoint holds (`item` as it was while holding it): deleted, failed or renamed."""
        if item.get("name_key"):
            self.names.release(item["name_key"], item["id"])

    def _holds_name(self, checkpoint_id: str, name_key: str) -> bool:
        item = self.table.get({"id": checkpoint_id})
        return item is not None and item.get("name_key") == name_key and item.get("checkpoint_status") in LIVE_STATUSES

    @staticmethod
    def _file_key(item: Item, name: str) -> str:
        return _prefix(item) + name

    @staticmethod
    def _quietly(action: Callable[..., Any], *args: Any) -> None:
        """Clean-up that must not hide the error being handled."""
        try:
            action(*args)
        except Exception:
            log.exception("clean-up %s%r failed", getattr(action, "__name__", action), args)


# -- shapes ---------------------------------------------------------------------


def public_checkpoint(item: Item) -> Item:
    """A checkpoint as list and get return it (the Data Schema "Checkpoint"), without upload ids."""
    params = {name: value for name, value in (item.get("params") or {}).items() if name != "multipart_upload"}
    return {
        "id": item["id"],
        "s3Location": item.get("s3_location", ""),
        "type": item.get("checkpoint_type", ""),
        "status": item.get("checkpoint_status", ""),
        "name": list(item.get("checkpoint_names") or []),
        "created": float(item.get("created") or 0),
        "allowed_roles_or_users": list(item.get("allowed_roles_or_users") or []),
        "params": params,
        "error": item.get("error"),
    }


def checkpoint_view(item: Item) -> Item:
    """A checkpoint as create and update return it (the API page's shape)."""
    return {
        "id": item["id"],
        "type": item.get("checkpoint_type", ""),
        "s3_location": item.get("s3_location", ""),
        "status": item.get("checkpoint_status", ""),
        "params": dict(item.get("params") or {}),
    }


# -- names and URLs ---------------------------------------------------------------


def check_file_name(name: str) -> str:
    """`name` if it is a plain file name, else BadRequest saying why."""
    if not isinstance(name, str) or not name.strip():
        raise BadRequest("filename must not be empty")
    shown = repr(name[:100])
    if "/" in name or "\\" in name or ".." in name:
        raise BadRequest(f"filename {shown} must be a plain file name (no /, \\ or ..)")
    if any(unicodedata.category(char) == "Cc" for char in name):
        raise BadRequest(f"filename {shown} has a control character")
    if name.startswith("."):
        raise BadRequest(f"filename {shown} must not start with a dot")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise BadRequest(f"filename {shown} is not valid Unicode") from None
    if size > MAX_FILE_NAME_BYTES:
        raise BadRequest(f"filename {shown} is longer than {MAX_FILE_NAME_BYTES} bytes")
    return name


def file_name_for(disposition: str | None, url: str, checkpoint_id: str) -> str:
    """The file name of a download: from Content-Disposition, else the URL's last path segment, made safe."""
    candidates = [_name_from_disposition(disposition or ""), unquote(urlsplit(url).path.rpartition("/")[2])]
    for candidate in candidates:
        name = _sanitize(candidate)
        if name:
            return name
    return f"{checkpoint_id}.safetensors"


def _name_from_disposition(header: str) -> str | None:
    """The file name of a Content-Disposition header; RFC 6266's `filename*` wins over `filename`."""
    extended = _DISPOSITION_EXTENDED.search(header)
    if extended:
        charset, _, rest = extended.group(1).strip().strip('"').partition("'")
        _, quote_found, encoded = rest.partition("'")
        if quote_found:
            try:
                return unquote(encoded, encoding=charset or "utf-8", errors="strict")
            except (LookupError, UnicodeDecodeError):
                pass
    plain = _DISPOSITION_PLAIN.search(header)
    if plain:
        if plain.group(1) is not None:
            return re.sub(r"\\(.)", r"\1", plain.group(1))
        return plain.group(2).strip()
    return None


def _sanitize(raw: str | None) -> str | None:
    """A valid file name made from `raw`, or None if nothing usable is left."""
    if not raw:
        return None
    name = re.split(r"[/\\]", raw)[-1]
    name = "".join(char for char in name if unicodedata.category(char) not in ("Cc", "Cs"))
    while ".." in name:
        name = name.replace("..", ".")
    name = name.strip().lstrip(".").strip()
    if len(name.encode("utf-8")) > MAX_FILE_NAME_BYTES:
        stem, dot, extension = name.rpartition(".")
        if not dot or len(extension) > 16:
            stem, dot, extension = name, "", ""
        budget = MAX_FILE_NAME_BYTES - len((dot + extension).encode("utf-8"))
        name = stem.encode("utf-8")[:budget].decode("utf-8", "ignore") + dot + extension
    try:
        return check_file_name(name)
    except BadRequest:
        return None


def check_url(url: str, resolve: Resolver = socket.getaddrinfo) -> str:
    """`url` if it is an http(s) URL whose host resolves to no link-local address; BadRequest otherwise."""
    if not isinstance(url, str) or not url.strip():
        raise BadRequest("url must not be empty")
    url = url.strip()
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        raise BadRequest(f"url {shown} is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise BadRequest(f"url {shown} must use http or https")
    if not host:
        raise BadRequest(f"url {shown} has no host")
    host = host.rstrip(".").lower()
    if host in FORBIDDEN_HOSTS:
        raise BadRequest(f"url {shown} points at a cloud metadata service")
    try:
        addresses = [str(ipaddress.ip_address(host.split("%", 1)[0]))]
    except ValueError:  # a name, not an address literal
        try:
            infos = resolve(host, port or (443 if scheme == "https" else 80), proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError, ValueError):
            raise BadRequest(f"the host of url {shown} cannot be resolved") from None
        addresses = [str(info[4][0]) for info in infos]
    if any(_is_link_local(address) for address in addresses):
        raise BadRequest(f"url {shown} points at a link-local address")
    return url


def _is_link_local(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return True  # unknown: refuse rather than guess
    if ip.is_link_local:
        return True
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped.is_link_local
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF).is_link_local
    return False


def redact_url(url: str) -> str:
    """`url` without credentials, query string or fragment, for messages and logs."""
    try:
        parts = urlsplit(str(url).strip())
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return "(invalid url)"
    netloc = f"[{host}]" if ":" in host else host
    if port:
        netloc += f":{port}"
    shown = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return shown if len(shown) <= 200 else shown[:197] + "..."


# -- small rules -------------------------------------------------------------------


def _check_type(checkpoint_type: str) -> None:
    if checkpoint_type not in CHECKPOINT_TYPES:
        raise BadRequest(f"checkpoint_type must be one of {', '.join(CHECKPOINT_TYPES)}, not {checkpoint_type!r}")


def _check_count(field: str, values: list[Any]) -> None:
    if not 1 <= len(values) <= MAX_FILES:
        raise BadRequest(f"{field} must have 1..{MAX_FILES} entries")


def _check_unique(names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise BadRequest(f"filename {name} is given twice")
        seen.add(name)


def _check_values(field: str, values: Iterable[str] | None, allowed: tuple[str, ...]) -> set[str]:
    wanted = set(values or ())
    unknown = sorted(wanted - set(allowed))
    if unknown:
        raise BadRequest(f"unknown {field} {unknown[0]!r}: use one of {', '.join(allowed)}")
    return wanted


def _sorted_parts(name: str, tags: Iterable[Mapping[str, Any]]) -> list[Part]:
    parts: dict[int, Part] = {}
    for tag in tags:
        number, etag = tag.get("PartNumber"), tag.get("ETag")
        if isinstance(number, bool) or not isinstance(number, int) or not isinstance(etag, str):
            raise BadRequest(f"multi_parts_tags of {name} needs an ETag and a PartNumber in each part")
        if number in parts:
            raise BadRequest(f"multi_parts_tags of {name} gives part {number} twice")
        parts[number] = {"PartNumber": number, "ETag": etag}
    return [parts[number] for number in sorted(parts)]


def _prefix(item: Item) -> str:
    return f"{item['checkpoint_type']}/checkpoint/custom/{item['id']}/"


def _name_key(checkpoint_type: str, name: str) -> str:
    return f"{checkpoint_type}/{name}"


def _json_list(values: list[str]) -> str:
    return "[" + ",".join(f'"{value}"' for value in values) + "]"


def _describe(exc: BaseException) -> str:
    """A short reason for a network error, never its text (which may hold the URL's query string)."""
    if isinstance(exc, (requests.Timeout, urllib3.exceptions.TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(exc, (requests.ConnectionError, urllib3.exceptions.ProtocolError, ConnectionError)):
        return "connection failed"
    if isinstance(exc, requests.TooManyRedirects):
        return "too many redirects"
    return type(exc).__name__
