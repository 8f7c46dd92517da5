"""Datasets: training images (and their captions) uploaded through presigned URLs, for LoRA training.

A dataset is one item of the datasets table plus one item per file in the dataset
items table, and its files in the store under `dataset/{name}/[{prefix}/]{filename}`
(a prefix such as `10_lego` is the `{repeats}_{concept}` folder kohya trains on).
It is `Initialed` until `PUT /datasets/{name}` `{status: Enabled}` finds every file
uploaded; only an `Enabled` dataset can be trained on (`Disabled` sets it aside).
Items are written one by one, so a dataset's size is not bound by a batch limit.
"""

from __future__ import annotations

import json
import time
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from middleware_api import schema
from middleware_api.ports.blobs import Blobs
from middleware_api.ports.tables import ConditionFailed, Item, Page, Table, query_all
from middleware_api.services.errors import BadRequest, NotFound
from middleware_api.services.permissions import Actor

INITIALED, ENABLED, DISABLED = "Initialed", "Enabled", "Disabled"
STATUSES = (INITIALED, ENABLED, DISABLED)
SETTABLE_STATUSES = (ENABLED, DISABLED)
ROOT = "dataset/"
MAX_FILES = 1000
MAX_NAME_CHARS = 128
MAX_SEGMENT_BYTES = 255
MAX_PARAMS_BYTES = 4096
MAX_SHOWN_MISSING = 10


class DatasetService:
    """Create (with upload URLs), enable, list, get and delete datasets."""

    def __init__(self, table: Table, items: Table, blobs: Blobs) -> None:
        self.table = table
        self.items = items
        self.blobs = blobs

    # -- create -------------------------------------------------------------------

    def create(
        self,
        actor: Actor,
        name: str,
        files: Sequence[Mapping[str, Any]],
        *,
        prefix: str | None = None,
        description: str | None = None,
    ) -> Item:
        """Record an `Initialed` dataset and its files; the response's data, with a PUT URL per file.

        Each file is `{filename, name?, type?, params?}`.
        """
        actor.require("train", "create")
        check_name("dataset_name", name, MAX_NAME_CHARS)
        folder = _clean_prefix(prefix)
        if not files:
            raise BadRequest("content: array is too short: required minimum: 1 elements")
        if len(files) > MAX_FILES:
            raise BadRequest(f"content: array is too long: allowed maximum: {MAX_FILES} elements")
        entries: list[Item] = []
        seen: set[str] = set()
        for file in files:
            filename = check_name("filename", file.get("filename"))
            if filename in seen:
                raise BadRequest(f"filename {filename} is given twice")
            seen.add(filename)
            params = file.get("params") or {}
            try:
                size = len(json.dumps(params, allow_nan=False, default=str))
            except ValueError:
                raise BadRequest(f"params of {filename} must be plain JSON (no NaN or infinite numbers)") from None
            if size > MAX_PARAMS_BYTES:
                raise BadRequest(f"params of {filename} are larger than {MAX_PARAMS_BYTES} bytes")
            if not _storable(params):
                raise BadRequest(f"params of {filename} hold a number out of range (more than 1e100 or 30 digits)")
            entries.append(
                {
                    "dataset_name": name,
                    "sort_key": f"{folder}{filename}",
                    "name": str(file.get("name") or filename),
                    "type": str(file.get("type") or "image"),
                    "params": dict(params),
                }
            )
        created = time.time()
        info: Item = {
            "dataset_name": name,
            "dataset_status": INITIALED,
            "prefix": folder.rstrip("/"),
            "created": created,
            "timestamp": created,
            "listing": schema.LISTING,
            "allowed_roles_or_users": list(actor.roles) or [actor.username],
            "creator": actor.username,
            "file_count": len(entries),
            "params": {
                "description": description or "",
                "created": datetime.fromtimestamp(created, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f"),
            },
        }
        try:
            self.table.put(info, must_not_exist=True)
        except ConditionFailed:
            raise BadRequest(f"{name} already exists, please use another or rename/delete exists") from None
        try:
            for entry in entries:
                self.items.put(entry)
        except Exception:
            self._drop_records(name)
            raise
        urls = {entry["sort_key"].removeprefix(folder): self.blobs.presign_put(self._key(entry)) for entry in entries}
        return {"datasetName": name, "dataset_name": name, "status": INITIALED, "s3PresignUrl": urls}

    # -- update ---------------------------------------------------------------------

    def update(self, actor: Actor, name: str, status: str) -> Item:
        """Enable a dataset whose files are all uploaded (BadRequest naming the missing ones), or disable it."""
        actor.require("train", "all")
        info = self.visible(actor, name)
        if status not in SETTABLE_STATUSES:
            raise BadRequest(f"status must be one of {', '.join(SETTABLE_STATUSES)}, not {status!r}")
        if status == ENABLED:
            stored = set(self.blobs.list(self._folder(name)))
            missing = [item["sort_key"] for item in self._files(name) if self._key(item) not in stored]
            if missing:
                shown = ", ".join(missing[:MAX_SHOWN_MISSING])
                more = f" and {len(missing) - MAX_SHOWN_MISSING} more" if len(missing) > MAX_SHOWN_MISSING else ""
                raise BadRequest(f"dataset {name} is missing {len(missing)} uploaded file(s): {shown}{more}")
        try:
            self.table.update(
                {"dataset_name": name}, {"dataset_status": status}, expect={"dataset_status": info["dataset_status"]}
            )
        except ConditionFailed:
            if self.table.get({"dataset_name": name}) is None:
                raise NotFound(f"dataset {name} is not found") from None
            raise BadRequest(f"dataset {name} was changed meanwhile, please retry") from None
        return {"dataset_name": name, "datasetName": name, "status": status}

    # -- read -------------------------------------------------------------------------

    def list(self, actor: Actor, limit: int, cursor: str | None) -> Page:
        """The datasets the actor may see, newest first."""
        actor.require("train", "list")
        page = self.table.query(
            schema.LISTING,
            index="by_created",
            limit=limit,
            cursor=cursor,
            where=lambda info: actor.can_see(info.get("allowed_roles_or_users")),
            descending=True,
        )
        return Page([self._summary(info) for info in page.items], page.cursor)

    def get(self, actor: Actor, name: str) -> Item:
        """One dataset with its files, each with a URL to preview it."""
        actor.require("train", "list")
        info = self.visible(actor, name)
        files = [
            {
                "key": item["sort_key"],
                "name": item.get("name", ""),
                "type": item.get("type", ""),
                "preview_url": self.blobs.presign_get(self._key(item)),
                "dataStatus": info["dataset_status"],
                "params": item.get("params") or {},
            }
            for item in self._files(name)
        ]
        return {**self._summary(info), "dataset_name": name, "data": files}

    def visible(self, actor: Actor, name: str) -> Item:
        """The dataset `name` if the actor may see it; NotFound otherwise."""
        info = None
        if isinstance(name, str) and 0 < len(name) <= MAX_NAME_CHARS:
            info = self.table.get({"dataset_name": name})
        if info is None or not actor.can_see(info.get("allowed_roles_or_users")):
            raise NotFound(f"dataset {name} is not found")
        return info

    def location(self, name: str) -> str:
        """The `s3://` folder of a dataset's files (kohya's `train_data_dir`)."""
        return self.blobs.uri(self._folder(name).rstrip("/"))

    # -- delete -----------------------------------------------------------------------

    def delete(self, actor: Actor, names: list[str]) -> None:
        """Delete datasets, their items and files; NotFound (and nothing deleted) if any is absent or hidden."""
        actor.require("train", "all")
        found = [self.visible(actor, name) for name in dict.fromkeys(names)]
        for info in found:
            name = info["dataset_name"]
            self.blobs.delete_prefix(self._folder(name))
            self._drop_records(name)

    # -- helpers ----------------------------------------------------------------------

    def _files(self, name: str) -> list[Item]:
        return list(query_all(self.items, name))

    def _drop_records(self, name: str) -> None:
        for item in self._files(name):
            self.items.delete({"dataset_name": name, "sort_key": item["sort_key"]})
        self.table.delete({"dataset_name": name})

    def _summary(self, info: Item) -> Item:
        name = info["dataset_name"]
        params = info.get("params") or {}
        return {
            "datasetName": name,
            "s3": self.location(name),
            "status": info["dataset_status"],
            "timestamp": info.get("timestamp"),
            "prefix": info.get("prefix", ""),
            "file_count": info.get("file_count", 0),
            "allowed_roles_or_users": list(info.get("allowed_roles_or_users") or []),
            **params,
        }

    @staticmethod
    def _folder(name: str) -> str:
        return f"{ROOT}{name}/"

    def _key(self, item: Item) -> str:
        return f"{self._folder(item['dataset_name'])}{item['sort_key']}"


def check_name(field: str, value: Any, max_chars: int | None = None) -> str:
    """`value` if it can be one segment of a key (no `/`, `\\`, `..`, control characters or leading dot)."""
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{field} must not be empty")
    shown = repr(value[:100])
    if "/" in value or "\\" in value or ".." in value:
        raise BadRequest(f"{field} {shown} must be a plain name (no /, \\ or ..)")
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in value):
        raise BadRequest(f"{field} {shown} has a control character")
    if value.startswith("."):
        raise BadRequest(f"{field} {shown} must not start with a dot")
    if value != value.strip():
        raise BadRequest(f"{field} {shown} must not start or end with a space")
    if max_chars is not None and len(value) > max_chars:
        raise BadRequest(f"{field} {shown} is longer than {max_chars} characters")
    if len(value.encode("utf-8")) > MAX_SEGMENT_BYTES:
        raise BadRequest(f"{field} {shown} is longer than {MAX_SEGMENT_BYTES} bytes")
    return value


def _storable(value: Any) -> bool:
    """Whether every number in `value` fits both tables (DynamoDB keeps 38 digits, up to 1e125)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return True
    if isinstance(value, int):
        return abs(value) < 10**30
    if isinstance(value, float):
        return value == 0 or 1e-100 <= abs(value) <= 1e100
    if isinstance(value, dict):
        return all(_storable(inner) for inner in value.values())
    if isinstance(value, list):
        return all(_storable(inner) for inner in value)
    return False


def _clean_prefix(prefix: str | None) -> str:
    """The prefix as a folder path ending in `/` (empty when none), each segment checked."""
    if prefix is None or not prefix.strip("/"):
        return ""
    if len(prefix.encode("utf-8", "replace")) > MAX_SEGMENT_BYTES:
        raise BadRequest(f"prefix is longer than {MAX_SEGMENT_BYTES} bytes")
    segments = [check_name("prefix", segment) for segment in prefix.strip("/").split("/")]
    return "/".join(segments) + "/"
