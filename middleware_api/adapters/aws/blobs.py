"""`Blobs` on S3: one bucket, managed transfers for large objects, presigned URLs for clients."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO
from urllib.parse import urlparse

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from middleware_api.ports.blobs import DEFAULT_URL_TTL_S, BlobError, BlobNotFound, Part

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_MULTIPART_ERRORS = {
    "InvalidPart": "a part is missing or its ETag does not match",
    "InvalidPartOrder": "the parts are not in ascending part-number order",
    "NoSuchUpload": "no such multipart upload (completed, aborted or never started)",
    "EntityTooSmall": "a part other than the last is smaller than 5 MiB",
}


def s3_client(region: str | None = None, endpoint_url: str | None = None, session: Any = None) -> Any:
    """A boto3 `s3` client that presigns with SigV4 (botocore presigns with SigV2 unless told otherwise).

    With `endpoint_url` (moto, MinIO) it addresses buckets by path. `session`
    is a `boto3.session.Session` (default: boto3's default session).
    """
    s3_config = {"addressing_style": "path"} if endpoint_url else {}
    config = Config(signature_version="s3v4", s3=s3_config)
    return (session or boto3).client("s3", region_name=region, endpoint_url=endpoint_url, config=config)


class S3Blobs:
    """A `Blobs` store in one S3 bucket."""

    def __init__(self, client: Any, bucket: str) -> None:
        """`client` is a boto3 `s3` client, preferably from `s3_client` (SigV4 URLs); `bucket` must exist."""
        self.client = client
        self.bucket = bucket

    def uri(self, key: str) -> str:
        """The object's `s3://bucket/key` location."""
        return f"s3://{self.bucket}/{key}"

    def key_of(self, uri: str) -> str:
        """The key of an `s3://bucket/key` location in this bucket; BlobError otherwise."""
        parsed = urlparse(uri)
        key = parsed.path.lstrip("/")
        if parsed.scheme != "s3" or parsed.netloc != self.bucket or not key:
            raise BlobError(f"{uri!r} is not an object of s3://{self.bucket}")
        return key

    def read_location(self, uri: str) -> bytes:
        """A small object at an `s3://bucket/key` location in any bucket the credentials may read."""
        parsed = urlparse(uri)
        key = parsed.path.lstrip("/")
        if parsed.scheme != "s3" or not parsed.netloc or not key:
            raise BlobError(f"{uri!r} is not an s3:// object location")
        try:
            body = self.client.get_object(Bucket=parsed.netloc, Key=key)["Body"]
        except ClientError as error:
            if _code(error) in _NOT_FOUND:
                raise BlobNotFound(uri) from error
            raise
        try:
            return body.read()
        finally:
            body.close()

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        """Store a small object whole."""
        options = {"ContentType": content_type} if content_type else {}
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data, **options)

    def get(self, key: str) -> bytes:
        """A small object whole; BlobNotFound if absent."""
        body = self._body(key)
        try:
            return body.read()
        finally:
            body.close()

    def write_stream(self, key: str, stream: BinaryIO) -> int:
        """Store an object of any size from a stream (multipart beyond 8 MiB); returns its size."""
        self.client.upload_fileobj(stream, self.bucket, key)
        size = self.size(key)
        if size is None:
            raise BlobError(f"{key}: uploaded object not found")
        return size

    def read_stream(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """An object's bytes in chunks; BlobNotFound (raised at once) if absent."""
        return _chunks(self._body(key), chunk_size)

    def size(self, key: str) -> int | None:
        """The object's size in bytes, or None if absent."""
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except ClientError as error:
            if _code(error) in _NOT_FOUND:
                return None
            raise

    def list(self, prefix: str) -> list[str]:
        """The keys under a prefix, in key order."""
        return [key for page in self._pages(prefix) for key in page]

    def copy(self, source: str, target: str) -> None:
        """Copy an object to another key (a managed, multipart copy when large); BlobNotFound if absent."""
        try:
            self.client.copy({"Bucket": self.bucket, "Key": source}, self.bucket, target)
        except ClientError as error:
            if _code(error) in _NOT_FOUND:
                raise BlobNotFound(source) from error
            raise

    def delete(self, key: str) -> None:
        """Delete one object (no error if absent)."""
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under a non-empty prefix and abort its unfinished uploads; returns the objects' count."""
        if not prefix:
            raise BlobError("refusing to delete a whole bucket: the prefix is empty")
        count = 0
        for keys in self._pages(prefix):
            if not keys:
                continue
            response = self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": key} for key in keys], "Quiet": False}
            )
            if response.get("Errors"):
                first = response["Errors"][0]
                raise BlobError(f"{first.get('Key')}: {first.get('Code')} {first.get('Message', '')}".strip())
            count += len(response.get("Deleted", []))
        paginator = self.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for upload in page.get("Uploads", []):
                self.abort_multipart(upload["Key"], upload["UploadId"])
        return count

    def presign_get(self, key: str, expires_s: int = DEFAULT_URL_TTL_S) -> str:
        """A URL that reads the object until it expires."""
        return self._presign("get_object", {"Key": key}, expires_s)

    def presign_put(self, key: str, expires_s: int = DEFAULT_URL_TTL_S) -> str:
        """A URL that writes the object (HTTP PUT of the body) until it expires."""
        return self._presign("put_object", {"Key": key}, expires_s)

    def start_multipart(self, key: str) -> str:
        """Begin a multipart upload; returns its upload id."""
        return str(self.client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"])

    def presign_part(self, key: str, upload_id: str, part_number: int, expires_s: int = DEFAULT_URL_TTL_S) -> str:
        """A URL that PUTs one part (1-based); the response carries the part's `ETag` header."""
        if not 1 <= part_number <= 10000:
            raise BlobError(f"part number {part_number} is outside 1..10000")
        return self._presign("upload_part", {"Key": key, "UploadId": upload_id, "PartNumber": part_number}, expires_s)

    def list_parts(self, key: str, upload_id: str) -> list[Part]:
        """The parts received so far, by part number; BlobError if the upload is unknown."""
        parts: list[Part] = []
        try:
            for page in self.client.get_paginator("list_parts").paginate(
                Bucket=self.bucket, Key=key, UploadId=upload_id
            ):
                parts += [Part(PartNumber=part["PartNumber"], ETag=part["ETag"]) for part in page.get("Parts", [])]
        except ClientError as error:
            raise _multipart_error(error, key) from error
        return sorted(parts, key=lambda part: part["PartNumber"])

    def complete_multipart(self, key: str, upload_id: str, parts: list[Part]) -> None:
        """Assemble the parts in order into the object; BlobError on a missing or mismatched part."""
        if not parts:
            raise BlobError(f"{key}: a multipart upload needs at least one part")
        ordered = sorted(
            ({"PartNumber": int(part["PartNumber"]), "ETag": part["ETag"]} for part in parts),
            key=lambda part: part["PartNumber"],
        )
        try:
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": ordered}
            )
        except ClientError as error:
            raise _multipart_error(error, key) from error

    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Drop an unfinished upload and its parts (no error if already gone)."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except ClientError as error:
            if _code(error) not in {"NoSuchUpload", "404"}:
                raise

    # -- helpers ----------------------------------------------------------------

    def _body(self, key: str) -> Any:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except ClientError as error:
            if _code(error) in _NOT_FOUND:
                raise BlobNotFound(key) from error
            raise

    def _pages(self, prefix: str) -> Iterator[list[str]]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            yield [entry["Key"] for entry in page.get("Contents", [])]

    def _presign(self, operation: str, params: dict[str, Any], expires_s: int) -> str:
        return str(
            self.client.generate_presigned_url(
                operation, Params={"Bucket": self.bucket, **params}, ExpiresIn=int(expires_s)
            )
        )


def _chunks(body: Any, chunk_size: int) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(chunk_size)
    finally:
        body.close()


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _multipart_error(error: ClientError, key: str) -> Exception:
    code = _code(error)
    if code in _MULTIPART_ERRORS:
        return BlobError(f"{key}: {_MULTIPART_ERRORS[code]} ({code})")
    return error
