"""`S3Blobs` against a local moto server, presigned URLs exercised with real HTTP."""

from __future__ import annotations

import io
import os
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from middleware_api.adapters.aws.blobs import S3Blobs
from middleware_api.ports.blobs import BlobError, BlobNotFound

MIB = 1 << 20


@pytest.fixture
def blobs(s3_bucket: tuple[object, str]) -> S3Blobs:
    client, bucket = s3_bucket
    return S3Blobs(client, bucket)


def test_uri_and_key_of(blobs: S3Blobs) -> None:
    uri = blobs.uri("Lora/checkpoint/custom/1/a b.safetensors")
    assert uri == f"s3://{blobs.bucket}/Lora/checkpoint/custom/1/a b.safetensors"
    assert blobs.key_of(uri) == "Lora/checkpoint/custom/1/a b.safetensors"
    for other in ["s3://another-bucket/x", f"https://{blobs.bucket}/x", f"s3://{blobs.bucket}/", "x"]:
        with pytest.raises(BlobError):
            blobs.key_of(other)


def test_put_get_size_delete(blobs: S3Blobs) -> None:
    blobs.put("a/b.json", b'{"x": 1}', content_type="application/json")
    assert blobs.get("a/b.json") == b'{"x": 1}'
    assert blobs.size("a/b.json") == 8
    assert blobs.size("a/missing") is None
    with pytest.raises(BlobNotFound):
        blobs.get("a/missing")
    with pytest.raises(BlobNotFound):
        blobs.read_stream("a/missing")
    blobs.delete("a/b.json")
    blobs.delete("a/b.json")
    assert blobs.size("a/b.json") is None


def test_list_and_copy(blobs: S3Blobs) -> None:
    for key in ["p/2", "p/1", "p/sub/3", "q/4"]:
        blobs.put(key, key.encode())
    assert blobs.list("p/") == ["p/1", "p/2", "p/sub/3"]
    assert blobs.list("none/") == []
    blobs.copy("p/1", "q/copy")
    assert blobs.get("q/copy") == b"p/1"
    with pytest.raises(BlobNotFound):
        blobs.copy("p/missing", "q/x")


def test_list_pages_beyond_a_thousand(blobs: S3Blobs) -> None:
    client = blobs.client
    for number in range(1005):
        client.put_object(Bucket=blobs.bucket, Key=f"many/{number:04d}", Body=b"")
    assert blobs.list("many/") == [f"many/{number:04d}" for number in range(1005)]
    assert blobs.delete_prefix("many/") == 1005
    assert blobs.list("many/") == []


def test_delete_prefix_aborts_unfinished_uploads(blobs: S3Blobs) -> None:
    for key in ["d/1", "d/2/3", "keep/1"]:
        blobs.put(key, b"x")
    upload_id = blobs.start_multipart("d/big")
    other_id = blobs.start_multipart("keep/big")
    assert blobs.delete_prefix("d/") == 2
    assert blobs.list("d/") == []
    assert blobs.list("keep/") == ["keep/1"]
    uploads = blobs.client.list_multipart_uploads(Bucket=blobs.bucket).get("Uploads", [])
    assert [(upload["Key"], upload["UploadId"]) for upload in uploads] == [("keep/big", other_id)]
    with pytest.raises(BlobError):
        blobs.list_parts("d/big", upload_id)
    with pytest.raises(BlobError):
        blobs.delete_prefix("")


def test_write_and_read_streams(blobs: S3Blobs) -> None:
    data = os.urandom(3 * MIB + 123)
    assert blobs.write_stream("s/blob", io.BytesIO(data)) == len(data)
    chunks = list(blobs.read_stream("s/blob", chunk_size=MIB))
    assert b"".join(chunks) == data
    assert max(len(chunk) for chunk in chunks) <= MIB


def test_write_stream_multipart_from_unseekable_stream(blobs: S3Blobs) -> None:
    data = os.urandom(9 * MIB)

    class Unseekable(io.RawIOBase):
        def __init__(self) -> None:
            self.stream = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            return self.stream.read(size)

    assert blobs.write_stream("s/big", Unseekable()) == len(data)
    assert blobs.get("s/big") == data


def test_presigned_get_and_put(blobs: S3Blobs) -> None:
    url = blobs.presign_put("up/file.bin", expires_s=600)
    query = parse_qs(urlparse(url).query)
    assert query["X-Amz-Expires"] == ["600"]
    assert urlparse(url).path == f"/{blobs.bucket}/up/file.bin"
    assert requests.put(url, data=b"hello", timeout=10).status_code == 200
    assert blobs.get("up/file.bin") == b"hello"
    response = requests.get(blobs.presign_get("up/file.bin"), timeout=10)
    assert response.status_code == 200 and response.content == b"hello"


def upload_part(blobs: S3Blobs, key: str, upload_id: str, number: int, data: bytes) -> str:
    response = requests.put(blobs.presign_part(key, upload_id, number), data=data, timeout=30)
    assert response.status_code == 200
    return response.headers["ETag"]


def test_presigned_multipart_upload(blobs: S3Blobs) -> None:
    key = "Lora/checkpoint/custom/1/model.safetensors"
    parts_data = [os.urandom(5 * MIB), os.urandom(5 * MIB), b"tail"]
    upload_id = blobs.start_multipart(key)
    etags = [upload_part(blobs, key, upload_id, number, data) for number, data in enumerate(parts_data, 1)]
    assert [part["PartNumber"] for part in blobs.list_parts(key, upload_id)] == [1, 2, 3]
    assert [part["ETag"] for part in blobs.list_parts(key, upload_id)] == etags
    shuffled = [{"PartNumber": number, "ETag": etag} for number, etag in enumerate(etags, 1)][::-1]
    blobs.complete_multipart(key, upload_id, shuffled)
    assert blobs.get(key) == b"".join(parts_data)
    assert blobs.size(key) == sum(len(data) for data in parts_data)


def test_list_parts_after_two_parts(blobs: S3Blobs) -> None:
    upload_id = blobs.start_multipart("m/key")
    first = upload_part(blobs, "m/key", upload_id, 1, os.urandom(5 * MIB))
    second = upload_part(blobs, "m/key", upload_id, 2, b"end")
    assert blobs.list_parts("m/key", upload_id) == [{"PartNumber": 1, "ETag": first}, {"PartNumber": 2, "ETag": second}]


def test_complete_with_a_wrong_etag_fails(blobs: S3Blobs) -> None:
    upload_id = blobs.start_multipart("m/key")
    first = upload_part(blobs, "m/key", upload_id, 1, os.urandom(5 * MIB))
    upload_part(blobs, "m/key", upload_id, 2, b"end")
    with pytest.raises(BlobError, match="ETag"):
        blobs.complete_multipart(
            "m/key", upload_id, [{"PartNumber": 1, "ETag": first}, {"PartNumber": 2, "ETag": '"0" * 32'}]
        )
    assert blobs.size("m/key") is None


def test_complete_with_a_small_first_part_fails(blobs: S3Blobs) -> None:
    upload_id = blobs.start_multipart("m/small")
    first = upload_part(blobs, "m/small", upload_id, 1, b"small")
    second = upload_part(blobs, "m/small", upload_id, 2, b"end")
    with pytest.raises(BlobError, match="5 MiB"):
        blobs.complete_multipart(
            "m/small", upload_id, [{"PartNumber": 1, "ETag": first}, {"PartNumber": 2, "ETag": second}]
        )


def test_unknown_or_aborted_upload(blobs: S3Blobs) -> None:
    upload_id = blobs.start_multipart("m/gone")
    blobs.abort_multipart("m/gone", upload_id)
    blobs.abort_multipart("m/gone", upload_id)
    with pytest.raises(BlobError):
        blobs.list_parts("m/gone", upload_id)
    with pytest.raises(BlobError):
        blobs.complete_multipart("m/gone", upload_id, [])
