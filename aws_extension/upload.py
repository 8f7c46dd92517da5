"""Upload a model file as a new checkpoint: parallel part PUTs straight from the file.

No copy and no tar: each part is read from its offset (`os.pread`) right before it is
sent, by one of `concurrency` worker threads, so at most `concurrency` parts are in
memory at once. A part that fails (connection error, timeout, 5xx, 408, 429) is retried
on its own with exponential backoff (0.5 s, 1 s, 2 s … capped at 8 s, ±20 % jitter);
a 403 (the part's presigned URL expired or was refused) or another 4xx ends it at once.
When a part still fails, the upload stops and `UploadError` names the part; the
checkpoint stays `Initial` and `UploadError.state` lets `resume_upload` send only the
parts still missing while the part URLs are valid (an hour by default). Cancelling
through `should_stop` deletes the checkpoint.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aws_extension.client import ApiError, MiddlewareClient

log = logging.getLogger("aws_extension.upload")

MiB = 1 << 20
DEFAULT_PART_SIZE = 8 * MiB
MIN_PART_SIZE = 5 * MiB  # S3's minimum for every part but the last
MAX_PARTS = 10_000  # S3's and the middleware's limit per upload
BACKOFF_CAP_S = 8.0
PART_TIMEOUT_S = 120.0  # per socket operation of one part PUT, not the whole transfer
# The slowest the middleware is assumed to join the parts when completing (the embedded one copies the file and
# fsyncs it before it answers): the wait for that answer grows with the size, past the client's 30 s from 600 MiB.
COMPLETE_MIN_BYTES_PER_S = 20 * MiB
STOP_POLL_S = 0.2

Progress = Callable[[int, int], None]


class UploadError(Exception):
    """The upload could not finish; `part_number` names the part that failed (None: not a part's fault).

    `state` (when the checkpoint was created) is what `resume_upload` needs to finish it.
    """

    def __init__(self, message: str, *, part_number: int | None = None, state: UploadState | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.part_number = part_number
        self.state = state


class UploadCancelled(Exception):
    """`should_stop` asked to stop; the checkpoint was deleted."""

    def __init__(self, checkpoint_id: str) -> None:
        super().__init__(f"upload cancelled; checkpoint {checkpoint_id} was deleted")
        self.checkpoint_id = checkpoint_id


@dataclass
class UploadState:
    """An upload in progress: its checkpoint, its file, its part URLs and the ETags of the parts sent."""

    checkpoint_id: str
    name: str
    path: str
    size: int
    mtime_ns: int
    part_size: int
    urls: list[str] = field(repr=False)
    etags: dict[int, str] = field(default_factory=dict)

    @property
    def parts_number(self) -> int:
        """How many parts the file has."""
        return len(self.urls)

    def part_range(self, number: int) -> tuple[int, int]:
        """(offset, length) of part `number` (1-based)."""
        offset = (number - 1) * self.part_size
        return offset, max(0, min(self.part_size, self.size - offset))

    def missing_parts(self) -> list[int]:
        """The numbers of the parts not sent yet, ascending."""
        return [number for number in range(1, self.parts_number + 1) if number not in self.etags]

    def done_bytes(self) -> int:
        """How many bytes the parts already sent hold."""
        return sum(self.part_range(number)[1] for number in self.etags)


def parts_for(size: int, part_size: int = DEFAULT_PART_SIZE) -> tuple[int, int]:
    """(part size, parts number) for a file of `size` bytes: `part_size` grown if it would need over 10 000 parts."""
    if part_size < 1:
        raise ValueError("part_size must be positive")
    part_size = max(part_size, math.ceil(size / MAX_PARTS))
    return part_size, max(1, math.ceil(size / part_size))


def upload_file(
    client: MiddlewareClient,
    path: str | os.PathLike[str],
    checkpoint_type: str,
    *,
    part_size: int = DEFAULT_PART_SIZE,
    concurrency: int = 4,
    retries: int = 4,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    message: str = "",
    name: str | None = None,
    backoff_s: float = 0.5,
) -> dict[str, Any]:
    """Upload the file at `path` as a new checkpoint of `checkpoint_type`; returns the completed (Active) checkpoint.

    `name` is the checkpoint's file name (default: the file's own). `progress(done_bytes,
    total_bytes)` is called once at the start and then from worker threads as parts
    finish, one call at a time with growing values. `should_stop()` is polled about
    five times a second from the calling thread; True cancels the upload (UploadCancelled).
    Parts are `part_size` bytes (grown if the file would need more than 10 000 parts).
    A part failing after `retries` retries raises UploadError with the part's number.
    """
    source = Path(path)
    if concurrency < 1 or retries < 0:
        raise ValueError("concurrency must be ≥ 1 and retries ≥ 0")
    try:
        stat = source.stat()
    except OSError as exc:
        raise UploadError(f"cannot read {source}: {exc.strerror or exc}") from None
    if not source.is_file():
        raise UploadError(f"{source} is not a regular file")
    file_name = name or source.name
    part_size, parts = parts_for(stat.st_size, part_size)
    if parts > 1 and part_size < MIN_PART_SIZE:
        minimum = MIN_PART_SIZE // MiB
        raise ValueError(f"part_size must be at least {minimum} MiB (S3's minimum for every part but the last)")
    try:
        created = client.create_checkpoint_upload(checkpoint_type, [(file_name, parts)], message)
    except ApiError as exc:
        raise UploadError(f"the middleware refused the upload of {file_name}: {exc.message}") from exc
    checkpoint_id = str((created.get("checkpoint") or {}).get("id", ""))
    urls = list((created.get("s3PresignUrl") or {}).get(file_name) or [])
    if not checkpoint_id or len(urls) != parts:
        raise UploadError(f"the middleware answered {len(urls)} part URLs for {file_name}, not {parts}")
    state = UploadState(checkpoint_id, file_name, str(source), stat.st_size, stat.st_mtime_ns, part_size, urls)
    log.info("uploading %s (%d bytes) as checkpoint %s in %d parts", source, stat.st_size, checkpoint_id, parts)
    return _send_and_complete(client, state, concurrency, retries, progress, should_stop, backoff_s)


def resume_upload(
    client: MiddlewareClient,
    state: UploadState,
    *,
    concurrency: int = 4,
    retries: int = 4,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    backoff_s: float = 0.5,
) -> dict[str, Any]:
    """Finish an upload that raised UploadError (`error.state`): send only the missing parts, then complete.

    The file must be unchanged, and the part URLs still valid (they expire, an hour by default).
    """
    try:
        stat = os.stat(state.path)
    except OSError as exc:
        raise UploadError(f"cannot read {state.path}: {exc.strerror or exc}", state=state) from None
    if (stat.st_size, stat.st_mtime_ns) != (state.size, state.mtime_ns):
        raise UploadError(f"{state.path} changed since its upload started: upload it again", state=state)
    return _send_and_complete(client, state, concurrency, retries, progress, should_stop, backoff_s)


def _send_and_complete(
    client: MiddlewareClient,
    state: UploadState,
    concurrency: int,
    retries: int,
    progress: Progress | None,
    should_stop: Callable[[], bool] | None,
    backoff_s: float,
) -> dict[str, Any]:
    sender = _PartSender(client, state, retries, progress, backoff_s)
    sender.run(concurrency, should_stop)
    if sender.cancelled:
        try:
            client.delete_checkpoints([state.checkpoint_id])
        except ApiError as exc:
            log.warning("cancelled upload: could not delete checkpoint %s: %s", state.checkpoint_id, exc)
        raise UploadCancelled(state.checkpoint_id)
    if sender.failure is not None:
        number, reason = sender.failure
        what = f"part {number} of {state.parts_number} of {state.name}" if number else f"the upload of {state.name}"
        raise UploadError(
            f"{what} failed: {reason}. "
            f"Checkpoint {state.checkpoint_id} stays Initial; resume_upload can send the missing parts",
            part_number=number,
            state=state,
        )
    tags = [{"ETag": state.etags[number], "PartNumber": number} for number in sorted(state.etags)]
    try:
        timeout = max(client.timeout, state.size / COMPLETE_MIN_BYTES_PER_S)
        return client.complete_checkpoint(state.checkpoint_id, {state.name: tags}, timeout=timeout)
    except ApiError as exc:
        raise UploadError(f"completing the upload of {state.name} failed: {exc.message}", state=state) from exc


class _PartFailed(Exception):
    def __init__(self, number: int, reason: str) -> None:
        super().__init__(reason)
        self.number = number
        self.reason = reason


class _PartSender:
    """Sends the missing parts of `state` with a thread pool; records ETags, progress, the first failure."""

    def __init__(
        self,
        client: MiddlewareClient,
        state: UploadState,
        retries: int,
        progress: Progress | None,
        backoff_s: float,
    ) -> None:
        self.client = client
        self.state = state
        self.retries = retries
        self.progress = progress
        self.backoff_s = backoff_s
        self.stop = threading.Event()  # set on a failure or a cancel: queued parts are skipped, retries end
        self.lock = threading.Lock()
        self.done = state.done_bytes()
        self.failure: tuple[int | None, str] | None = None  # (part number or None, reason)
        self.cancelled = False

    def run(self, concurrency: int, should_stop: Callable[[], bool] | None) -> None:
        self._report(self.done)
        missing = self.state.missing_parts()
        if not missing:
            return
        try:
            fd = os.open(self.state.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except OSError as exc:
            self._fail(None, f"cannot read {self.state.path}: {exc.strerror or exc}")
            return
        pool = ThreadPoolExecutor(max_workers=min(concurrency, len(missing)), thread_name_prefix="esd-upload")
        try:
            pending: set[Future[None]] = {pool.submit(self._send, fd, number) for number in missing}
            while pending:
                finished, pending = wait(pending, timeout=STOP_POLL_S, return_when=FIRST_COMPLETED)
                for future in finished:
                    error = None if future.cancelled() else future.exception()
                    if isinstance(error, _PartFailed):
                        self._fail(error.number, error.reason)
                    elif error is not None:
                        self._fail(None, f"{type(error).__name__}: {error}")
                if not self.stop.is_set() and should_stop is not None and should_stop():
                    self.cancelled = True
                    self.stop.set()
                if self.stop.is_set():
                    for future in pending:
                        future.cancel()
            if self.failure is None and not self.cancelled:
                self._check_unchanged(fd)
        finally:
            self.stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            os.close(fd)

    def _send(self, fd: int, number: int) -> None:
        if self.stop.is_set():
            return
        offset, length = self.state.part_range(number)
        try:
            data = _read(fd, self.state.path, offset, length)
        except OSError as exc:
            raise _PartFailed(number, f"cannot read it from {self.state.path}: {exc.strerror or exc}") from None
        url = self.state.urls[number - 1]
        attempt = 0
        while True:
            try:
                etag = self.client.put_presigned(url, data, timeout=max(self.client.timeout, PART_TIMEOUT_S))
            except ApiError as exc:
                if exc.status == 403:
                    reason = f"its upload URL was refused ({exc.message}); it may have expired"
                    raise _PartFailed(number, reason) from None
                retryable = exc.status == 0 or exc.status >= 500 or exc.status in (408, 429)
                if not retryable:
                    raise _PartFailed(number, f"{exc.message} (HTTP {exc.status})") from None
                if attempt >= self.retries:
                    raise _PartFailed(number, f"{exc} after {attempt + 1} attempts") from None
                log.info("part %d: %s; retrying", number, exc)
                if self.stop.wait(self._backoff(attempt)):
                    return  # another part failed or the upload was cancelled meanwhile
                attempt += 1
                continue
            if not etag:
                raise _PartFailed(number, "the blob store answered without an ETag")
            break
        del data  # the part leaves memory before the progress callback runs
        with self.lock:
            self.state.etags[number] = etag
            self.done += length
            self._report(self.done)

    def _backoff(self, attempt: int) -> float:
        return min(BACKOFF_CAP_S, self.backoff_s * 2**attempt) * random.uniform(0.8, 1.2)

    def _report(self, done: int) -> None:
        """Call `progress`; callers hold the lock (or run before any worker), so calls never overlap or go back."""
        if self.progress is None:
            return
        try:
            self.progress(done, self.state.size)
        except Exception:  # a UI callback must not break the upload
            log.exception("upload progress callback failed")

    def _fail(self, number: int | None, reason: str) -> None:
        if self.failure is None:
            self.failure = (number, reason)
        self.stop.set()

    def _check_unchanged(self, fd: int) -> None:
        stat = os.fstat(fd)
        if (stat.st_size, stat.st_mtime_ns) != (self.state.size, self.state.mtime_ns):
            self.state.etags.clear()  # what was sent mixes old and new content
            self._fail(None, f"{self.state.path} changed while it was uploading: upload it again")


def _read(fd: int, path: str, offset: int, length: int) -> bytes:
    """`length` bytes at `offset`: `os.pread` where there is one (no shared file position), else an own handle."""
    if hasattr(os, "pread"):
        chunks: list[bytes] = []
        got = 0
        while got < length:
            chunk = os.pread(fd, length - got, offset + got)
            if not chunk:
                raise OSError(f"the file ended early at {offset + got} bytes: it changed while it was uploading")
            chunks.append(chunk)
            got += len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    with open(path, "rb") as file:
        file.seek(offset)
        data = file.read(length)
    if len(data) != length:
        raise OSError(f"the file ended early at {offset + len(data)} bytes: it changed while it was uploading")
    return data


__all__ = [
    "DEFAULT_PART_SIZE",
    "UploadCancelled",
    "UploadError",
    "UploadState",
    "parts_for",
    "resume_upload",
    "upload_file",
]
