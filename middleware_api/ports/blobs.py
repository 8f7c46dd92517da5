"""The `Blobs` port: objects under keys, presigned URLs and multipart uploads, S3's model.

Adapters: a local folder served by the app through signed URLs (embedded) and
S3 (aws). Keys look like S3 keys (`Lora/checkpoint/custom/{id}/file.safetensors`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO, Protocol, TypedDict

DEFAULT_URL_TTL_S = 3600


class Part(TypedDict):
    """A finished part of a multipart upload, as S3 names its fields."""

    PartNumber: int
    ETag: str


class BlobError(Exception):
    """A blob operation refused for a reason the caller can fix (bad part, missing upload)."""


class BlobNotFound(BlobError):
    """No object under that key."""


class Blobs(Protocol):
    """Object storage with presigned access."""

    bucket: str

    def uri(self, key: str) -> str:
        """The object's `s3://bucket/key` location."""

    def key_of(self, uri: str) -> str:
        """The key of an `s3://bucket/key` location in this store; BlobError otherwise."""

    def read_location(self, uri: str) -> bytes:
        """A small object at an `s3://bucket/key` location, in this store or (S3) another readable bucket.

        For outputs a provider writes where it chooses (SageMaker async results).
        """

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        """Store a small object whole."""

    def get(self, key: str) -> bytes:
        """A small object whole; BlobNotFound if absent."""

    def write_stream(self, key: str, stream: BinaryIO) -> int:
        """Store an object of any size from a stream, never holding it whole; returns its size."""

    def read_stream(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """An object's bytes in chunks; BlobNotFound if absent."""

    def size(self, key: str) -> int | None:
        """The object's size in bytes, or None if absent."""

    def list(self, prefix: str) -> list[str]:
        """The keys under a prefix."""

    def copy(self, source: str, target: str) -> None:
        """Copy an object to another key."""

    def delete(self, key: str) -> None:
        """Delete one object (no error if absent)."""

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under a prefix, unfinished multipart uploads included; returns the count."""

    def presign_get(self, key: str, expires_s: int = DEFAULT_URL_TTL_S) -> str:
        """A URL that reads the object until it expires."""

    def presign_put(self, key: str, expires_s: int = DEFAULT_URL_TTL_S) -> str:
        """A URL that writes the object (HTTP PUT of the body) until it expires."""

    def start_multipart(self, key: str) -> str:
        """Begin a multipart upload; returns its upload id."""

    def presign_part(self, key: str, upload_id: str, part_number: int, expires_s: int = DEFAULT_URL_TTL_S) -> str:
        """A URL that PUTs one part (1-based); the response carries the part's `ETag` header."""

    def list_parts(self, key: str, upload_id: str) -> list[Part]:
        """The parts received so far, by part number; BlobError if the upload is unknown."""

    def complete_multipart(self, key: str, upload_id: str, parts: list[Part]) -> None:
        """Assemble the parts in order into the object; BlobError on a missing or mismatched part."""

    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Drop an unfinished upload and its parts (no error if already gone)."""
