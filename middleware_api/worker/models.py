"""The worker's model cache: model files fetched on demand into the WebUI's folders, within a size budget.

Only files the cache downloaded count against the budget and may be evicted; files
that were there before (baked into the image, put there by hand) are used and never
touched. The downloaded files, their last-used times and the files each running
invocation uses ("pins") live in a small JSON index in the models folder, written
atomically. Several worker processes may share one models folder (the embedded
backend runs an endpoint's instances that way): every change of the index happens
under an exclusive `flock` on a lock file and re-reads the index first, a download
holds a per-file `flock`, and a file pinned by any live process is never evicted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: only the in-process locks apply
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("esd.worker.models")

INDEX_NAME = ".esd-model-cache.json"
LOCK_DIR = ".esd-model-locks"
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


def _pid_alive(owner: str) -> bool:
    try:
        pid = int(owner.split("-", 1)[0])
    except ValueError:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive `flock` on `path` (created if missing); nothing where flock does not exist."""
    if fcntl is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class _Index:
    """The index as read from disk: downloaded files and pins per owner (`{pid}-{cache id}`)."""

    def __init__(self, files: dict[str, dict[str, Any]], pins: dict[str, list[str]]) -> None:
        self.files = files
        self.pins = pins

    def pinned(self) -> set[str]:
        return {key for keys in self.pins.values() for key in keys}

    def to_json(self) -> str:
        return json.dumps({"files": self.files, "pins": self.pins}, indent=1, sort_keys=True)


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
        self._owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._lock = threading.RLock()
        self._file_locks: dict[str, threading.Lock] = {}
        self._pins: Counter[str] = Counter()
        self._index_path = self.models_dir / INDEX_NAME
        self._lock_dir = self.models_dir / LOCK_DIR

    # --- paths ---

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
        return self.path(model_type, name)

    # --- the index, always read and written under both locks ---

    @contextlib.contextmanager
    def _index(self, write: bool = True) -> Iterator[_Index]:
        with self._lock, _file_lock(self._lock_dir / "index.lock"):
            index = self._read()
            yield index
            if write:
                self._write(index)

    def _read(self) -> _Index:
        try:
            data = json.loads(self._index_path.read_text())
        except FileNotFoundError:
            data = {}
        except (OSError, ValueError) as error:
            log.warning("model cache index %s unreadable, starting empty: %s", self._index_path, error)
            data = {}
        if not isinstance(data, dict):
            data = {}
        files = {}
        for key, entry in (data.get("files") or {}).items():
            try:
                if isinstance(entry, dict) and self._key_path(key).is_file():
                    files[key] = {"size": int(entry.get("size", 0)), "last_used": float(entry.get("last_used", 0))}
            except (ModelError, ValueError, TypeError):
                continue
        pins = {
            owner: [str(key) for key in keys]
            for owner, keys in (data.get("pins") or {}).items()
            if isinstance(keys, list) and owner != self._owner and _pid_alive(owner)
        }
        index = _Index(files, pins)
        self._sync_pins(index)
        return index

    def _write(self, index: _Index) -> None:
        self.models_dir.mkdir(parents=True, exist_ok=True)
        temporary = self._index_path.with_name(f"{INDEX_NAME}.{uuid.uuid4().hex}.tmp")
        temporary.write_text(index.to_json())
        os.replace(temporary, self._index_path)

    def cached(self) -> dict[str, dict[str, Any]]:
        """The files the cache downloaded: `{"{type}/{name}": {"size", "last_used"}}`."""
        with self._index(write=False) as index:
            return {key: dict(entry) for key, entry in index.files.items()}

    def used_bytes(self) -> int:
        """Bytes held by downloaded files."""
        with self._index(write=False) as index:
            return sum(entry["size"] for entry in index.files.values())

    # --- the public operations ---

    @contextlib.contextmanager
    def pinned(self, keys: Collection[str]) -> Iterator[None]:
        """Keep the files of `keys` (`{type}/{name}`) from eviction, by any process sharing the folder, meanwhile."""
        keys = list(keys)
        if not keys:
            yield
            return
        with self._index() as index:
            self._pins.update(keys)
            self._sync_pins(index)
        try:
            yield
        finally:
            with self._index() as index:
                self._pins.subtract(keys)
                self._pins = +self._pins  # drops the keys no longer pinned
                self._sync_pins(index)

    def _sync_pins(self, index: _Index) -> None:
        if self._pins:
            index.pins[self._owner] = sorted(self._pins)
        else:
            index.pins.pop(self._owner, None)

    def ensure(self, model_type: str, name: str, *, url: str | None = None, s3: str | None = None) -> bool:
        """Make sure model `name` of `model_type` is on disk; True when it had to be downloaded.

        Fetches from `url` (an HTTP GET, e.g. a presigned URL) or else from `s3` (the
        model's folder, `s3://bucket/prefix`; the file is `prefix/name`). Evicts the least
        recently used downloaded files to fit the budget, never a pinned one.
        """
        target = self.path(model_type, name)
        key = self.key(model_type, name)
        with self._lock:
            file_lock = self._file_locks.setdefault(key, threading.Lock())
        with file_lock, _file_lock(self._lock_dir / f"{model_type}.{name}.lock"):
            if target.is_file():
                self._touch(key)
                return False
            if not url and not s3:
                raise ModelError(
                    f"model {name} ({model_type}) is not on this worker and has no url or s3 location",
                    client_error=True,
                )
            with self.pinned([key]):
                self._download(key, target, url, s3)
            return True

    def _touch(self, key: str) -> None:
        with self._index() as index:
            entry = index.files.get(key)
            if entry is not None:
                entry["last_used"] = time.time()

    def _make_room(self, index: _Index, needed: int) -> None:
        """Evict least recently used unpinned downloaded files until `needed` more bytes fit the budget."""
        used = sum(entry["size"] for entry in index.files.values())
        pinned = index.pinned()
        candidates = sorted((entry["last_used"], key) for key, entry in index.files.items() if key not in pinned)
        for _, key in candidates:
            if used + needed <= self.budget_bytes:
                break
            try:
                self._key_path(key).unlink(missing_ok=True)
            except OSError as error:
                log.warning("could not evict %s: %s", key, error)
                continue
            used -= index.files.pop(key)["size"]
            log.info("evicted %s from the model cache", key)
        if used + needed > self.budget_bytes:
            log.warning(
                "model cache over budget: %d bytes kept + %d needed > %d (the rest is in use)",
                used,
                needed,
                self.budget_bytes,
            )

    def _download(self, key: str, target: Path, url: str | None, s3: str | None) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")

        def before_write(size: int | None) -> None:
            if size is not None:
                with self._index() as index:
                    self._make_room(index, size)

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
        with self._index() as index:
            index.files[key] = {"size": size, "last_used": time.time()}
            # When the size was not known beforehand, this is the first chance to fit the budget.
            self._make_room(index, 0)
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
