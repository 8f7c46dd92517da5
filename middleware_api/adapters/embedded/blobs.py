"""`Blobs` on a local folder, with HMAC-signed URLs that the app itself serves.

Layout under `root`:

    objects/<key>                          the objects, one file per key
    uploads/<upload_id>/upload.json        an unfinished multipart upload: {"key", "created"}
    uploads/<upload_id>/part-00001         its parts, each with a `part-00001.etag` (MD5 hex)

Every write goes to a temp file in the target's folder, is fsynced, then renamed
over the target (`os.replace`), so a crash or a concurrent writer never leaves a
half-written object under a real key; of two concurrent writes the last rename wins.
Nothing here holds a whole object in memory except `put`/`get`, which the port
reserves for small objects.
"""

from __future__ import annotations

import builtins
import contextvars
import errno
import hashlib
import hmac
import json
import mimetypes
import os
import re
import shutil
import stat
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, urlencode

from middleware_api.ports.blobs import DEFAULT_URL_TTL_S, BlobError, BlobNotFound, Part

BASE_URL: contextvars.ContextVar[str | None] = contextvars.ContextVar("esd_blobs_base_url", default=None)
"""The public base URL (`scheme://host[:port]`) of the request being served; presigned URLs start with it."""

DEFAULT_BASE_URL = "http://127.0.0.1:8080"
EXPIRES_PARAM = "X-Esd-Expires"
SIGNATURE_PARAM = "X-Esd-Signature"
UPLOAD_ID_PARAM = "uploadId"
PART_NUMBER_PARAM = "partNumber"
MAX_PART_NUMBER = 10_000
MAX_KEY_BYTES = 1024  # S3's limit
MAX_UPLOAD_BYTES = 5 << 30  # S3's limit on one PUT, whole object or part; the uploader's parts stay far below
CHUNK_BYTES = 1 << 20
COPY_BUFFER_BYTES = 4 << 20

_TMP_PREFIX = ".esd-tmp-"
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
_PART_FILE = re.compile(r"part-([0-9]{5})")
_EXPIRES = re.compile(r"[0-9]{1,12}")
_NAME_MAX = 255
# errors that mean "copy_file_range cannot do this pair of files", so fall back to read/write
_NO_COPY_FILE_RANGE = {errno.ENOSYS, errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP}


class UrlSigner:
    """HMAC-SHA256 signatures over (method, key, expiry, extra fields) for presigned URLs."""

    def __init__(self, secret: bytes) -> None:
        if not isinstance(secret, bytes) or not secret:
            raise ValueError("the URL signing secret must be non-empty bytes")
        self._secret = secret

    def sign(self, method: str, key: str, expires: int, extra: Mapping[str, str] | None = None) -> str:
        """The hex signature of a URL for `method` on `key`, valid until the epoch second `expires`."""
        return hmac.new(self._secret, _message(method, key, expires, extra), hashlib.sha256).hexdigest()

    def matches(
        self, method: str, key: str, expires: int, signature: str, extra: Mapping[str, str] | None = None
    ) -> bool:
        """Whether the signature is right for these fields, expiry aside (constant-time)."""
        expected = self.sign(method, key, expires, extra).encode("ascii")
        return hmac.compare_digest(expected, signature.encode("utf-8", "surrogatepass"))

    def verify(
        self, method: str, key: str, expires: int, signature: str, extra: Mapping[str, str] | None = None
    ) -> bool:
        """Whether the signature is right for these fields and `expires` has not passed."""
        return self.matches(method, key, expires, signature, extra) and not expired(expires)


def expired(expires: int) -> bool:
    """Whether the epoch second `expires` is in the past."""
    return expires < time.time()


class Incoming:
    """An object or part being received: `write` chunks, then `commit` (or `abort`).

    The bytes go to a temp file next to the target; `commit` fsyncs it and renames it over the
    target, so readers see the old content or the new one whole, never a mix. `abort` is safe
    to call in any state, also after `commit`.
    """

    def __init__(
        self,
        target: Path,
        tmp: Path,
        file: BinaryIO,
        gone: str,
        before_replace: Callable[[], None] | None = None,
        on_commit: Callable[[str], None] | None = None,
    ) -> None:
        self.target = target
        self.file = file  # the raw temp file; writing to it directly bypasses `size` and the MD5
        self.size = 0
        self._tmp = tmp
        self._gone = gone
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._before_replace = before_replace
        self._on_commit = on_commit

    def write(self, chunk: bytes | bytearray) -> None:
        """Append a chunk."""
        self._md5.update(chunk)
        _write_all(self.file, chunk)
        self.size += len(chunk)

    def commit(self) -> str:
        """Make the bytes received the target's content; returns their quoted MD5 ETag."""
        digest = self._md5.hexdigest()
        try:
            os.fsync(self.file.fileno())
            self.file.close()
            if self._before_replace is not None:
                self._before_replace()
            os.replace(self._tmp, self.target)
            if self._on_commit is not None:
                self._on_commit(digest)
        except IsADirectoryError as exc:
            raise BlobError("InvalidKey: the key is a prefix of other objects") from exc
        except FileNotFoundError as exc:  # the folder went away meanwhile (an aborted or completed upload)
            raise BlobNotFound(self._gone) from exc
        finally:
            self.abort()
        return f'"{digest}"'

    def abort(self) -> None:
        """Drop the bytes received (no effect after `commit`)."""
        self.file.close()
        self._tmp.unlink(missing_ok=True)


def _message(method: str, key: str, expires: int, extra: Mapping[str, str] | None) -> bytes:
    # JSON keeps the fields unambiguous: no separator inside a key can shift one field into another
    fields = sorted((str(name), str(value)) for name, value in (extra or {}).items())
    return json.dumps([method.upper(), key, int(expires), fields], separators=(",", ":")).encode("utf-8")


class LocalBlobs:
    """The `Blobs` port on a folder; presigned URLs point at the app's `/prod/blobs` routes."""

    def __init__(
        self,
        root: Path,
        signer: UrlSigner,
        bucket: str = "esd-local",
        public_url: str | None = None,
        url_prefix: str = "/prod/blobs",
    ) -> None:
        self.root = Path(root).resolve()
        self.signer = signer
        self.bucket = bucket
        self.public_url = public_url
        self.url_prefix = "/" + url_prefix.strip("/")
        self.max_upload_bytes = MAX_UPLOAD_BYTES  # the most one presigned PUT may carry
        self._objects = self.root / "objects"
        self._uploads = self.root / "uploads"
        self._objects.mkdir(parents=True, exist_ok=True)
        self._uploads.mkdir(parents=True, exist_ok=True)

    # locations

    def uri(self, key: str) -> str:
        """The `s3://bucket/key` location of an object (or of a prefix, such as a model's folder)."""
        return f"s3://{self.bucket}/{check_prefix(key)}"

    def key_of(self, uri: str) -> str:
        """The key (or prefix) of an `s3://bucket/key` location in this store; BlobError otherwise."""
        head = f"s3://{self.bucket}/"
        if not isinstance(uri, str) or not uri.startswith(head) or uri == head:
            raise BlobError(f"{uri!r} is not an object of s3://{self.bucket}")
        return check_prefix(uri[len(head) :])

    def object_path(self, key: str) -> Path:
        """The file holding the object; BlobNotFound if absent, BlobError for an invalid key."""
        path = self._path(key)
        if not path.is_file():
            raise BlobNotFound(f"NoSuchKey: {key}")
        return path

    # whole objects

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        """Store a small object whole (the content type is not kept: reads guess it from the name)."""
        with self._atomic(self._path(key)) as incoming:
            incoming.write(data)

    def read_location(self, uri: str) -> bytes:
        """A small object at an `s3://bucket/key` location of this store."""
        return self.get(self.key_of(uri))

    def get(self, key: str) -> bytes:
        """A small object whole; BlobNotFound if absent."""
        try:
            return self.object_path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise BlobNotFound(f"NoSuchKey: {key}") from exc

    def write_stream(self, key: str, stream: BinaryIO) -> int:
        """Store an object of any size from a stream, chunk by chunk; returns its size."""
        incoming = self.begin_object(key)
        _pump(stream, incoming)
        return incoming.size

    def receive_object(self, key: str, stream: BinaryIO) -> str:
        """Store an object from a stream (a presigned PUT); returns its quoted MD5 ETag."""
        return _pump(stream, self.begin_object(key))

    def begin_object(self, key: str) -> Incoming:
        """Start receiving an object chunk by chunk; nothing shows under the key until `commit`."""
        return self._incoming(self._path(key), True, f"NoSuchKey: {key}")

    def read_stream(self, key: str, chunk_size: int = CHUNK_BYTES) -> Iterator[bytes]:
        """An object's bytes in chunks; BlobNotFound if absent (raised by this call, not on iteration)."""
        try:
            file = open(self.object_path(key), "rb")  # noqa: SIM115 - closed by the generator
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise BlobNotFound(f"NoSuchKey: {key}") from exc
        return _chunks(file, chunk_size)

    def size(self, key: str) -> int | None:
        """The object's size in bytes, or None if absent."""
        try:
            info = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return info.st_size if stat.S_ISREG(info.st_mode) else None

    def list(self, prefix: str) -> list[str]:
        """The keys under a prefix (a plain string prefix, as in S3), sorted."""
        check_prefix(prefix)
        folder, _, _ = prefix.rpartition("/")
        start = self._objects / folder if folder else self._objects
        if not start.resolve().is_relative_to(self._objects) or not start.is_dir():
            return []
        keys: builtins.list[str] = []
        for directory, subdirs, files in os.walk(start):
            relative = Path(directory).relative_to(self._objects).as_posix()
            base = "" if relative == "." else relative + "/"
            # descend only where keys can still match: the folder is inside the prefix or the prefix inside it
            subdirs[:] = [name for name in subdirs if _overlaps(base + name + "/", prefix)]
            keys.extend(
                base + name for name in files if not name.startswith(_TMP_PREFIX) and (base + name).startswith(prefix)
            )
        # S3 lists in UTF-8 byte order
        return sorted(keys, key=lambda key: key.encode("utf-8"))

    def copy(self, source: str, target: str) -> None:
        """Copy an object to another key (streamed); BlobNotFound if the source is absent."""
        source_path = self._path(source)
        target_path = self._path(target)
        if source_path == target_path:
            self.object_path(source)
            return
        try:
            src = open(source_path, "rb", buffering=0)  # noqa: SIM115 - closed below
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise BlobNotFound(f"NoSuchKey: {source}") from exc
        with src, self._atomic(target_path) as dst:
            _append(src, dst.file)

    def delete(self, key: str) -> None:
        """Delete one object (no error if absent)."""
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        self._prune(path.parent)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under a non-empty prefix and the unfinished uploads to keys under it.

        Returns the number of objects deleted. An empty prefix is refused (BlobError): it would
        wipe the store, which is never what a caller means.
        """
        check_prefix(prefix)
        if not prefix:
            raise BlobError("refusing to delete every object: the prefix is empty")
        count = 0
        for key in self.list(prefix):
            path = self._path(key)
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            count += 1
            self._prune(path.parent)
        for upload in self._uploads.iterdir():
            if upload.name.startswith(_TMP_PREFIX):
                continue
            meta = _read_upload(upload)
            if meta is not None and meta["key"].startswith(prefix):
                self._drop_upload(upload)
        return count

    # presigned URLs

    def presign_get(self, key: str, expires_s: int = DEFAULT_URL_TTL_S) -> str:
        """A URL that reads the object until it expires."""
        return self._presign("GET", key, expires_s, {})

    def presign_put(self, key: str, expires_s: int = DEFAULT_URL_TTL_S) -> str:
        """A URL that writes the object (HTTP PUT of the body) until it expires."""
        return self._presign("PUT", key, expires_s, {})

    def presign_part(self, key: str, upload_id: str, part_number: int, expires_s: int = DEFAULT_URL_TTL_S) -> str:
        """A URL that PUTs one part (1-based); BlobNotFound if the upload is not one to this key."""
        _check_part_number(part_number)
        self._upload_dir(key, upload_id)
        extra = {UPLOAD_ID_PARAM: upload_id, PART_NUMBER_PARAM: str(part_number)}
        return self._presign("PUT", key, expires_s, extra)

    def authorize(self, method: str, key: str, query: Mapping[str, str]) -> str | None:
        """Why a request on a presigned URL is refused, or None if its signature is good and current.

        For PUT the part fields (`uploadId`, `partNumber`) present in the query are covered by the
        signature, so a part URL cannot be replayed for another part, upload or the whole object.
        """
        expires_text = query.get(EXPIRES_PARAM)
        signature = query.get(SIGNATURE_PARAM)
        if not expires_text or not signature:
            return "the URL is not signed"
        if not _EXPIRES.fullmatch(expires_text):
            return "signature does not match"
        expires = int(expires_text)
        extra: dict[str, str] = {}
        if method.upper() == "PUT":
            extra = {name: query[name] for name in (UPLOAD_ID_PARAM, PART_NUMBER_PARAM) if name in query}
        # the signature is checked before the expiry so a forger learns nothing from the answer
        if not self.signer.matches(method, key, expires, signature, extra):
            return "signature does not match"
        if expired(expires):
            return "URL expired"
        return None

    def _presign(self, method: str, key: str, expires_s: int, extra: dict[str, str]) -> str:
        check_key(key)
        expires = int(time.time()) + int(expires_s)
        query = dict(extra)
        query[EXPIRES_PARAM] = str(expires)
        query[SIGNATURE_PARAM] = self.signer.sign(method, key, expires, extra)
        base = (self.public_url or BASE_URL.get() or DEFAULT_BASE_URL).rstrip("/")
        return f"{base}{self.url_prefix}/{quote(key, safe='/')}?{urlencode(query)}"

    # multipart uploads

    def start_multipart(self, key: str) -> str:
        """Begin a multipart upload; returns its upload id."""
        check_key(key)
        upload_id = uuid.uuid4().hex
        folder = self._uploads / upload_id
        folder.mkdir()
        with self._atomic(folder / "upload.json", make_parents=False) as incoming:
            incoming.write(json.dumps({"key": key, "created": time.time()}).encode("utf-8"))
        return upload_id

    def receive_part(self, key: str, upload_id: str, part_number: int, stream: BinaryIO) -> str:
        """Store one part from a stream (a presigned part PUT); returns its quoted MD5 ETag.

        BlobError for a part number outside 1..10000, BlobNotFound if the upload is not one to this key.
        """
        return _pump(stream, self.begin_part(key, upload_id, part_number))

    def begin_part(self, key: str, upload_id: str, part_number: int) -> Incoming:
        """Start receiving one part chunk by chunk; same refusals as `receive_part`."""
        _check_part_number(part_number)
        folder = self._upload_dir(key, upload_id)
        part = folder / f"part-{part_number:05d}"
        etag_file = part.with_name(part.name + ".etag")
        gone = f"NoSuchUpload: {upload_id}"

        def forget_etag() -> None:
            # a part being replaced shows as missing until its new ETag is written, never with the old one
            etag_file.unlink(missing_ok=True)

        def record_etag(digest: str) -> None:
            with self._atomic(etag_file, make_parents=False, gone=gone) as incoming:
                incoming.write(digest.encode("ascii"))

        return self._incoming(part, False, gone, forget_etag, record_etag)

    def list_parts(self, key: str, upload_id: str) -> builtins.list[Part]:
        """The parts received so far, by part number; BlobNotFound if the upload is unknown."""
        folder = self._upload_dir(key, upload_id)
        return [{"PartNumber": number, "ETag": f'"{etag}"'} for number, (_, etag) in sorted(_parts(folder).items())]

    def complete_multipart(self, key: str, upload_id: str, parts: builtins.list[Part]) -> None:
        """Assemble the parts in order into the object, then drop the upload.

        BlobError (`InvalidPart`/`InvalidPartOrder`) if a part is missing, its ETag differs or the
        part numbers do not ascend; BlobNotFound if the upload is not one to this key.
        """
        target = self._path(key)
        folder = self._upload_dir(key, upload_id)
        if not parts:
            raise BlobError("InvalidPart: at least one part is required")
        stored = _parts(folder)
        previous = 0
        files: builtins.list[Path] = []
        for part in parts:
            number = part.get("PartNumber")
            if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= MAX_PART_NUMBER:
                raise BlobError(f"InvalidPart: bad part number {number!r}")
            if number <= previous:
                raise BlobError("InvalidPartOrder: part numbers must be in ascending order")
            previous = number
            if number not in stored:
                raise BlobError(f"InvalidPart: part {number} was not uploaded")
            path, etag = stored[number]
            if str(part.get("ETag", "")).strip().strip('"') != etag:
                raise BlobError(f"InvalidPart: the ETag of part {number} does not match")
            files.append(path)
        expected = 0
        try:
            with self._atomic(target) as dst:
                for path in files:
                    with open(path, "rb", buffering=0) as src:
                        expected += os.fstat(src.fileno()).st_size
                        _append(src, dst.file)
                if os.fstat(dst.file.fileno()).st_size != expected:
                    raise BlobError("InvalidPart: a part changed while the upload was completed")
        except FileNotFoundError as exc:
            raise BlobError("InvalidPart: a part disappeared while the upload was completed") from exc
        self._drop_upload(folder)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Drop an unfinished upload and its parts (no error if already gone or not one to this key)."""
        try:
            folder = self._upload_dir(key, upload_id)
        except BlobError:
            return
        self._drop_upload(folder)

    # maintenance

    def remove_temp_files(self) -> int:
        """Delete what writes cut short left behind (temp files, half-made or half-dropped uploads); returns how many.

        Only for a store no write is using, such as at server start: a server killed while
        receiving an object or a part leaves its temp file, which nothing else would remove.
        Parts already received are kept.
        """
        removed = 0
        for directory, _, files in os.walk(self._objects):
            for name in files:
                if name.startswith(_TMP_PREFIX):
                    (Path(directory) / name).unlink(missing_ok=True)
                    removed += 1
                    self._prune(Path(directory))
        for entry in self._uploads.iterdir():
            if not entry.is_dir():
                continue
            if entry.name.startswith(_TMP_PREFIX) or _read_upload(entry) is None:  # dropped, or never made whole
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
                continue
            for tmp in entry.glob(f"{_TMP_PREFIX}*"):
                tmp.unlink(missing_ok=True)
                removed += 1
        return removed

    # internals

    def _path(self, key: str) -> Path:
        path = self._objects / check_key(key)
        # resolve() follows symlinks: a key must not reach outside the objects folder even through one
        if not path.resolve().is_relative_to(self._objects):
            raise BlobError(f"InvalidKey: {key!r} leaves the store")
        return path

    def _upload_dir(self, key: str, upload_id: str) -> Path:
        check_key(key)
        if not isinstance(upload_id, str) or not _UPLOAD_ID.fullmatch(upload_id):
            raise BlobNotFound(f"NoSuchUpload: {upload_id!r}")
        folder = self._uploads / upload_id
        meta = _read_upload(folder)
        if meta is None or meta.get("key") != key:
            raise BlobNotFound(f"NoSuchUpload: {upload_id}")
        return folder

    def _drop_upload(self, folder: Path) -> None:
        # rename first so the upload vanishes at once even if removing its files takes a while
        trash = self._uploads / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
        try:
            os.replace(folder, trash)
        except FileNotFoundError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    @contextmanager
    def _atomic(self, path: Path, make_parents: bool = True, gone: str = "NoSuchKey") -> Iterator[Incoming]:
        """An `Incoming` for `path`, committed when the block ends normally, aborted otherwise."""
        incoming = self._incoming(path, make_parents, gone)
        try:
            yield incoming
            incoming.commit()
        finally:
            incoming.abort()

    def _incoming(
        self,
        path: Path,
        make_parents: bool,
        gone: str,
        before_replace: Callable[[], None] | None = None,
        on_commit: Callable[[str], None] | None = None,
    ) -> Incoming:
        tmp = path.with_name(f"{_TMP_PREFIX}{uuid.uuid4().hex}")
        try:
            file = self._open_tmp_making_parents(tmp) if make_parents else _open_tmp(tmp)
        except FileNotFoundError as exc:
            raise BlobNotFound(gone) from exc
        return Incoming(path, tmp, file, gone, before_replace, on_commit)

    def _open_tmp_making_parents(self, tmp: Path) -> BinaryIO:
        for attempt in range(3):
            try:
                tmp.parent.mkdir(parents=True, exist_ok=True)
                return _open_tmp(tmp)
            except (FileExistsError, NotADirectoryError) as exc:
                raise BlobError("InvalidKey: a folder of the key is an existing object") from exc
            except FileNotFoundError:
                # a concurrent delete pruned the empty folder between mkdir and open: try again
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _prune(self, folder: Path) -> None:
        """Remove empty folders from `folder` up to (not including) the objects folder."""
        while folder != self._objects and folder.is_relative_to(self._objects):
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent


def check_key(key: str) -> str:
    """`key` if it is a safe S3-like relative key, else BlobError.

    Refused: empty keys, a leading `/`, empty, `.` or `..` segments, backslashes, control
    characters (NUL included), more than 1024 UTF-8 bytes or a segment over 255.
    """
    _check_text(key, "key")
    if not key:
        raise BlobError("InvalidKey: the key is empty")
    for segment in key.split("/"):
        _check_segment(key, segment)
    return key


def check_prefix(prefix: str) -> str:
    """`prefix` if it is a safe listing prefix (empty allowed; the last segment may be partial), else BlobError."""
    _check_text(prefix, "prefix")
    folder, _, _ = prefix.rpartition("/")
    if folder:
        for segment in folder.split("/"):
            _check_segment(prefix, segment)
    return prefix


def _check_text(value: str, what: str) -> None:
    if not isinstance(value, str):
        raise BlobError(f"InvalidKey: the {what} must be a string")
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BlobError(f"InvalidKey: the {what} is not valid Unicode") from exc
    if len(encoded) > MAX_KEY_BYTES:
        raise BlobError(f"InvalidKey: the {what} is longer than {MAX_KEY_BYTES} bytes")
    if "\\" in value:
        raise BlobError(f"InvalidKey: {value!r} has a backslash")
    if any(unicodedata.category(char) == "Cc" for char in value):
        raise BlobError(f"InvalidKey: {value!r} has a control character")
    if value.startswith("/"):
        raise BlobError(f"InvalidKey: {value!r} is absolute")


def _check_segment(key: str, segment: str) -> None:
    if segment in ("", ".", ".."):
        raise BlobError(f"InvalidKey: {key!r} has an empty, '.' or '..' segment")
    if segment.startswith(_TMP_PREFIX):
        raise BlobError(f"InvalidKey: {key!r} uses a reserved name")
    if len(segment.encode("utf-8")) > _NAME_MAX:
        raise BlobError(f"InvalidKey: a segment of {key!r} is longer than {_NAME_MAX} bytes")


def _overlaps(folder: str, prefix: str) -> bool:
    return folder.startswith(prefix) or prefix.startswith(folder)


def _open_tmp(tmp: Path) -> BinaryIO:
    return open(tmp, "xb", buffering=0)  # noqa: SIM115 - closed by Incoming


def _check_part_number(part_number: int) -> None:
    if not isinstance(part_number, int) or isinstance(part_number, bool) or not 1 <= part_number <= MAX_PART_NUMBER:
        raise BlobError(f"InvalidArgument: the part number must be 1..{MAX_PART_NUMBER}, not {part_number!r}")


def _read_upload(folder: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((folder / "upload.json").read_bytes())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and isinstance(meta.get("key"), str) else None


def _parts(folder: Path) -> dict[int, tuple[Path, str]]:
    """The stored parts of an upload: number -> (data file, MD5 hex)."""
    found: dict[int, tuple[Path, str]] = {}
    for path in folder.iterdir():
        match = _PART_FILE.fullmatch(path.name)
        if not match:
            continue
        try:
            etag = path.with_name(path.name + ".etag").read_text("ascii").strip()
        except (OSError, ValueError):
            continue  # the part is still being written
        found[int(match.group(1))] = (path, etag)
    return found


def _chunks(file: BinaryIO, chunk_size: int) -> Iterator[bytes]:
    with file:
        while chunk := file.read(chunk_size):
            yield chunk


def _pump(stream: BinaryIO, incoming: Incoming) -> str:
    """Copy a stream into `incoming` chunk by chunk and commit it; aborts it on any failure."""
    try:
        while chunk := stream.read(CHUNK_BYTES):
            incoming.write(chunk)
        return incoming.commit()
    finally:
        incoming.abort()


def _write_all(file: BinaryIO, data: bytes | bytearray) -> None:
    """Write everything to a raw file, whose `write` may take less than it is given."""
    view = memoryview(data)
    while view:
        written = file.write(view)
        view = view[written:]


def _append(src: BinaryIO, dst: BinaryIO) -> None:
    """Copy the rest of raw file `src` onto the end of raw file `dst`, in the kernel where it can."""
    if hasattr(os, "copy_file_range"):
        try:
            while os.copy_file_range(src.fileno(), dst.fileno(), COPY_BUFFER_BYTES * 16):
                pass
            return
        except OSError as exc:
            if exc.errno not in _NO_COPY_FILE_RANGE:
                raise
            # both offsets moved past what was copied, so the plain copy below carries on from there
    while chunk := src.read(COPY_BUFFER_BYTES):
        _write_all(dst, chunk)


def guess_type(key: str) -> str:
    """The content type for a key, from its name."""
    return mimetypes.guess_type(key.rpartition("/")[2])[0] or "application/octet-stream"
