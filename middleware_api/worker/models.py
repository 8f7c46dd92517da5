"""The worker's model cache: model files fetched on demand into the WebUI's folders, within a size budget.

Only files the cache downloaded count against the budget and may be evicted; files
that were there before (baked into the image, put there by hand) are used and never
touched. The downloaded files and their last-used times live in a small JSON index
in the models folder, written atomically, so the cache survives a worker restart.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

log = logging.getLogger("esd.worker.models")

INDEX_NAME = ".esd-model-cache.json"
CHUNK_BYTES = 1 << 20
# Model type (ESD's checkpoint types) → folder under the WebUI's `models` folder.
TYPE_FOLDERS = {
    "Stable-diffusion": "Stable-diffusion",
    "Lora": "Lora",
    "VAE": "VAE",
    "ControlNet": "ControlNet",
    "hypernetworks": "hypernetworks",
}
EMBEDDINGS = "embeddings"
MODEL_TYPES = (*TYPE_FOLDERS, EMBEDDINGS)


class ModelError(Exception):
    """A model request the worker cannot serve; `client_error` tells a bad request from a failed fetch."""

    def __init__(self, message: str, client_error: bool = False) -> None:
        super().__init__(message)
        self.client_error = client_error


def check_model_name(name: str) -> None:
    """Raise ModelError (a client error) unless `name` is a plain file name."""
    if not name or name.startswith(".") or ".." in name or any(sep in name for sep in ("/", "\\", "\0")):
        raise ModelError(f"model name {name!r} must be a plain file name", client_error=True)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of `s3://bucket/key`; ModelError (a client error) otherwise."""
    bucket, _, key = uri[5:].partition("/")
    if not uri.startswith("s3://") or not bucket:
        raise ModelError(f"not an s3:// URI: {uri!r}", client_error=True)
    return bucket, key


class ModelCache:
    """Downloaded model files under `models_dir`, kept within `budget_bytes` by evicting the least recently used."""

    def __init__(
        self,
        models_dir: Path,
        budget_bytes: int,
        embeddings_dir: Path | None = None,
        s3_client_factory: Callable[[], Any] | None = None,
        http_timeout_s: float = 60.0,
    ) -> None:
        self.models_dir = Path(models_dir)
        self.embeddings_dir = Path(embeddings_dir) if embeddings_dir else self.models_dir.parent / EMBEDDINGS
        self.budget_bytes = budget_bytes
        self.http_timeout_s = http_timeout_s
        self._s3_client_factory = s3_client_factory
        self._s3: Any = None
        self._lock = threading.Lock()
        self._file_locks: dict[str, threading.Lock] = {}
        self._downloading: set[str] = set()
        self._index_path = self.models_dir / INDEX_NAME
        self._entries: dict[str, dict[str, Any]] = self._load_index()

    # --- paths and index ---

    def folder(self, model_type: str) -> Path:
        """The WebUI folder that holds models of `model_type`; ModelError (client) for an unknown type."""
        if model_type == EMBEDDINGS:
            return self.embeddings_dir
        if model_type not in TYPE_FOLDERS:
            raise ModelError(f"unknown model type {model_type!r}; known: {', '.join(MODEL_TYPES)}", client_error=True)
        return self.models_dir / TYPE_FOLDERS[model_type]

    def path(self, model_type: str, name: str) -> Path:
        """Where the model file `name` of `model_type` lives."""
        check_model_name(name)
        return self.folder(model_type) / name

    @staticmethod
    def key(model_type: str, name: str) -> str:
        """The index key of a model."""
        return f"{model_type}/{name}"

    def _key_path(self, key: str) -> Path:
        model_type, _, name = key.partition("/")
        return self.folder(model_type) / name

    def _load_index(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self._index_path.read_text())
            entries = data.get("files", {}) if isinstance(data, dict) else {}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            log.warning("model cache index %s unreadable, starting empty: %s", self._index_path, error)
            return {}
        kept = {}
        for key, entry in entries.items():
            try:
                if isinstance(entry, dict) and self._key_path(key).is_file():
                    kept[key] = {"size": int(entry.get("size", 0)), "last_used": float(entry.get("last_used", 0))}
            except (ModelError, ValueError, TypeError):
                continue
        return kept

    def _save_index(self) -> None:
        self.models_dir.mkdir(parents=True, exist_ok=True)
        temporary = self._index_path.with_name(f"{INDEX_NAME}.{uuid.uuid4().hex}.tmp")
        temporary.write_text(json.dumps({"files": self._entries}, indent=1, sort_keys=True))
        os.replace(temporary, self._index_path)

    def cached(self) -> dict[str, dict[str, Any]]:
        """A copy of the index: `{"{type}/{name}": {"size", "last_used"}}` of the files the cache downloaded."""
        with self._lock:
            return {key: dict(entry) for key, entry in self._entries.items()}

    def used_bytes(self) -> int:
        """Bytes held by downloaded files."""
        with self._lock:
            return sum(entry["size"] for entry in self._entries.values())

    # --- the public operation ---

    def ensure(
        self,
        model_type: str,
        name: str,
        *,
        url: str | None = None,
        s3: str | None = None,
        protect: Collection[str] = (),
    ) -> bool:
        """Make sure model `name` of `model_type` is on disk; True when it had to be downloaded.

        Fetches from `url` (an HTTP GET, e.g. a presigned URL) or else from `s3` (the
        model's folder, `s3://bucket/prefix`; the file is `prefix/name`). Files keyed in
        `protect` (this invocation's models) are never evicted to make room.
        """
        target = self.path(model_type, name)
        key = self.key(model_type, name)
        with self._lock:
            file_lock = self._file_locks.setdefault(key, threading.Lock())
        with file_lock:
            if target.is_file():
                self._touch(key)
                return False
            if not url and not s3:
                raise ModelError(
                    f"model {name} ({model_type}) is not on this worker and has no url or s3 location",
                    client_error=True,
                )
            with self._lock:
                self._downloading.add(key)
            try:
                self._download(key, target, url, s3, set(protect) | {key})
            finally:
                with self._lock:
                    self._downloading.discard(key)
            return True

    def _touch(self, key: str) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry["last_used"] = time.time()
                self._save_index()

    def _make_room(self, needed: int, protect: set[str]) -> None:
        """Evict least recently used downloaded files until `needed` more bytes fit the budget. Holds the lock."""
        used = sum(entry["size"] for entry in self._entries.values())
        candidates = sorted(
            (entry["last_used"], key)
            for key, entry in self._entries.items()
            if key not in protect and key not in self._downloading
        )
        evicted = False
        for _, key in candidates:
            if used + needed <= self.budget_bytes:
                break
            size = self._entries.pop(key)["size"]
            try:
                self._key_path(key).unlink()
            except FileNotFoundError:
                pass
            except OSError as error:
                log.warning("could not evict %s: %s", key, error)
                self._entries[key] = {"size": size, "last_used": 0.0}
                continue
            used -= size
            evicted = True
            log.info("evicted %s (%d bytes) from the model cache", key, size)
        if evicted:
            self._save_index()
        if used + needed > self.budget_bytes:
            log.warning(
                "model cache over budget: %d bytes in use + %d needed > %d (the rest is in use)",
                used,
                needed,
                self.budget_bytes,
            )

    def _download(self, key: str, target: Path, url: str | None, s3: str | None, protect: set[str]) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")

        def before_write(size: int | None) -> None:
            if size is not None:
                with self._lock:
                    self._make_room(size, protect)

        try:
            if url:
                self._fetch_url(url, temporary, before_write)
            else:
                self._fetch_s3(str(s3), target.name, temporary, before_write)
            size = temporary.stat().st_size
            os.replace(temporary, target)
        except ModelError as error:
            if error.client_error:
                raise
            raise ModelError(f"could not fetch model {target.name}: {error}") from error
        except Exception as error:
            raise ModelError(f"could not fetch model {target.name}: {error}") from error
        finally:
            temporary.unlink(missing_ok=True)
        with self._lock:
            self._entries[key] = {"size": size, "last_used": time.time()}
            # When the size was not known beforehand this is the first chance to fit the budget.
            self._make_room(0, protect)
            self._save_index()
        log.info("downloaded %s (%d bytes)", key, size)

    def _fetch_url(self, url: str, temporary: Path, before_write: Callable[[int | None], None]) -> None:
        import requests

        with requests.get(url, stream=True, timeout=(10, self.http_timeout_s)) as response:
            if response.status_code >= 400:
                raise ModelError(f"its url answered {response.status_code}")
            length = response.headers.get("Content-Length")
            before_write(int(length) if length and length.isdigit() else None)
            with temporary.open("wb") as out:
                for chunk in response.iter_content(CHUNK_BYTES):
                    out.write(chunk)

    def _fetch_s3(self, uri: str, name: str, temporary: Path, before_write: Callable[[int | None], None]) -> None:
        bucket, prefix = parse_s3_uri(uri)
        key = f"{prefix.rstrip('/')}/{name}" if prefix.strip("/") else name
        client = self._s3_client()
        size = client.head_object(Bucket=bucket, Key=key).get("ContentLength")
        before_write(int(size) if size is not None else None)
        client.download_file(bucket, key, str(temporary))

    def _s3_client(self) -> Any:
        if self._s3 is None:
            if self._s3_client_factory is not None:
                self._s3 = self._s3_client_factory()
            else:
                import boto3  # only present (and needed) in the SageMaker image

                self._s3 = boto3.client("s3")
        return self._s3
