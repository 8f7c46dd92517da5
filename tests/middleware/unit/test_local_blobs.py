"""`LocalBlobs` (the embedded `Blobs`) and the router serving its signed URLs."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import threading
import time
import tracemalloc
import types
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from middleware_api.adapters.embedded.blobs import BASE_URL, LocalBlobs, UrlSigner
from middleware_api.ports.blobs import BlobError, BlobNotFound
from middleware_api.routes.blobs import router

MiB = 1 << 20
_PATTERN = bytes(range(251)) * (MiB // 251 + 2)  # byte i of a generated stream is (i + seed) % 251


@pytest.fixture
def blobs(tmp_path: Path) -> LocalBlobs:
    return LocalBlobs(tmp_path / "store", UrlSigner(b"test-secret"), public_url="http://testserver")


@pytest.fixture
def client(blobs: LocalBlobs) -> Iterator[TestClient]:
    app = FastAPI()
    app.state.services = types.SimpleNamespace(blobs=blobs)
    app.include_router(router, prefix="/prod")
    with TestClient(app) as test_client:
        yield test_client


def files_under(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


class GeneratedStream:
    """A non-seekable stream of `size` deterministic bytes, made on demand in small pieces."""

    def __init__(self, size: int, seed: int = 0, piece: int = 64 * 1024) -> None:
        self.remaining = size
        self.seed = seed
        self.piece = piece
        self.offset = 0

    def _bytes(self, count: int) -> bytes:
        start = (self.offset + self.seed) % 251
        return _PATTERN[start : start + count]

    def read(self, size: int = -1) -> bytes:
        count = min(self.remaining, self.piece if size < 0 else min(size, self.piece))
        data = self._bytes(count)
        self.offset += count
        self.remaining -= count
        return data

    def seekable(self) -> bool:
        return False


def generated_md5(size: int, seed: int = 0) -> str:
    stream = GeneratedStream(size, seed)
    digest = hashlib.md5()
    while chunk := stream.read(MiB):
        digest.update(chunk)
    return digest.hexdigest()


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(changes)
    return parts._replace(query=urlencode(query)).geturl()


# objects


def test_put_get_size_list_copy_delete(blobs: LocalBlobs) -> None:
    blobs.put("Lora/checkpoint/custom/1/a.safetensors", b"alpha", "application/octet-stream")
    blobs.put("Lora/checkpoint/custom/2/b.bin", b"beta")
    blobs.put("Lora/other.txt", b"gamma")
    blobs.put("top.txt", b"t")

    assert blobs.get("Lora/checkpoint/custom/1/a.safetensors") == b"alpha"
    assert blobs.size("Lora/checkpoint/custom/2/b.bin") == 4
    assert blobs.size("missing") is None
    assert blobs.size("Lora/checkpoint") is None  # a folder is not an object
    with pytest.raises(BlobNotFound):
        blobs.get("missing")
    with pytest.raises(BlobNotFound):
        blobs.read_stream("missing")
    assert b"".join(blobs.read_stream("Lora/other.txt", chunk_size=2)) == b"gamma"

    assert blobs.list("Lora/checkpoint/") == [
        "Lora/checkpoint/custom/1/a.safetensors",
        "Lora/checkpoint/custom/2/b.bin",
    ]
    assert blobs.list("Lora/check") == ["Lora/checkpoint/custom/1/a.safetensors", "Lora/checkpoint/custom/2/b.bin"]
    assert blobs.list("Lora/o") == ["Lora/other.txt"]
    assert blobs.list("nothing/") == []
    assert blobs.list("") == [
        "Lora/checkpoint/custom/1/a.safetensors",
        "Lora/checkpoint/custom/2/b.bin",
        "Lora/other.txt",
        "top.txt",
    ]

    blobs.copy("Lora/other.txt", "copies/other.txt")
    assert blobs.get("copies/other.txt") == b"gamma"
    with pytest.raises(BlobNotFound):
        blobs.copy("missing", "copies/x")

    blobs.put("top.txt", b"replaced")
    assert blobs.get("top.txt") == b"replaced"
    blobs.delete("top.txt")
    blobs.delete("top.txt")  # no error when absent
    assert blobs.size("top.txt") is None

    blobs.delete("copies/other.txt")
    assert not (blobs.root / "objects" / "copies").exists()  # empty folders are pruned


def test_uri_and_key_of(blobs: LocalBlobs) -> None:
    assert blobs.uri("a/b.txt") == "s3://esd-local/a/b.txt"
    assert blobs.key_of("s3://esd-local/a/b.txt") == "a/b.txt"
    assert blobs.uri("Lora/checkpoint/custom/1/") == "s3://esd-local/Lora/checkpoint/custom/1/"
    assert blobs.key_of("s3://esd-local/Lora/checkpoint/custom/1/") == "Lora/checkpoint/custom/1/"
    with pytest.raises(BlobError):
        blobs.uri("../x")
    for uri in ("s3://other/a/b.txt", "https://esd-local/a", "s3://esd-local/", "s3://esd-local/../x"):
        with pytest.raises(BlobError):
            blobs.key_of(uri)


def test_delete_prefix_includes_unfinished_uploads(blobs: LocalBlobs) -> None:
    blobs.put("models/1/a", b"a")
    blobs.put("models/1/sub/b", b"b")
    blobs.put("models/10/c", b"c")
    blobs.put("other/d", b"d")
    inside = blobs.start_multipart("models/1/big")
    outside = blobs.start_multipart("other/big")

    assert blobs.delete_prefix("models/1/") == 2
    assert blobs.list("") == ["models/10/c", "other/d"]
    with pytest.raises(BlobNotFound):
        blobs.list_parts("models/1/big", inside)
    assert blobs.list_parts("other/big", outside) == []
    with pytest.raises(BlobError):
        blobs.delete_prefix("")


def test_a_key_cannot_be_both_object_and_folder(blobs: LocalBlobs) -> None:
    blobs.put("a/b", b"x")
    with pytest.raises(BlobError):
        blobs.put("a", b"y")
    with pytest.raises(BlobError):
        blobs.put("a/b/c", b"z")
    assert blobs.get("a/b") == b"x"
    assert [path.name for path in files_under(blobs.root)] == ["b"]


@pytest.mark.parametrize(
    "key",
    ["", "../x", "/abs", "a/../../b", "a/..", "a\\b", "..\\x", "a\x00b", "a\nb", "a//b", "a/./b", "a/", "x" * 1025],
)
def test_unsafe_keys_are_refused(blobs: LocalBlobs, tmp_path: Path, key: str) -> None:
    before = files_under(tmp_path)
    for action in (
        lambda: blobs.put(key, b"evil"),
        lambda: blobs.write_stream(key, io.BytesIO(b"evil")),
        lambda: blobs.get(key),
        lambda: blobs.size(key),
        lambda: blobs.copy("x", key),
        lambda: blobs.delete(key),
        lambda: blobs.presign_put(key),
        lambda: blobs.start_multipart(key),
    ):
        with pytest.raises(BlobError):
            action()
    assert files_under(tmp_path) == before


def test_a_symlink_cannot_lead_outside(blobs: LocalBlobs, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (blobs.root / "objects" / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(BlobError):
        blobs.put("link/x", b"evil")
    assert list(outside.iterdir()) == []


def test_write_stream_from_a_non_seekable_stream_in_bounded_memory(blobs: LocalBlobs) -> None:
    size = 20 * MiB
    tracemalloc.start()
    try:
        written = blobs.write_stream("big/file.bin", GeneratedStream(size))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert written == size
    assert peak < 8 * MiB
    assert blobs.size("big/file.bin") == size
    digest = hashlib.md5()
    for chunk in blobs.read_stream("big/file.bin"):
        digest.update(chunk)
    assert digest.hexdigest() == generated_md5(size)


def test_a_failed_write_leaves_the_old_object_whole(blobs: LocalBlobs) -> None:
    class Failing(GeneratedStream):
        def read(self, size: int = -1) -> bytes:
            if self.offset >= MiB:
                raise OSError("connection lost")
            return super().read(size)

    blobs.put("k", b"old")
    with pytest.raises(OSError):
        blobs.write_stream("k", Failing(4 * MiB))
    assert blobs.get("k") == b"old"
    assert [path.name for path in files_under(blobs.root)] == ["k"]


def test_concurrent_writes_to_one_key_last_wins_whole(blobs: LocalBlobs) -> None:
    size = 3 * MiB
    first_started = threading.Event()
    second_done = threading.Event()

    class Slow(GeneratedStream):
        def read(self, size: int = -1) -> bytes:
            if self.offset >= MiB:
                first_started.set()
                assert second_done.wait(10)
            return super().read(size)

    first = threading.Thread(target=blobs.write_stream, args=("same/key", Slow(size, seed=1)))
    first.start()
    assert first_started.wait(10)
    blobs.write_stream("same/key", GeneratedStream(size, seed=2))
    assert hashlib.md5(blobs.get("same/key")).hexdigest() == generated_md5(size, seed=2)
    second_done.set()
    first.join(10)
    # the first writer renamed last, so its object is the one kept, and whole
    assert hashlib.md5(blobs.get("same/key")).hexdigest() == generated_md5(size, seed=1)
    assert [path.name for path in files_under(blobs.root)] == ["key"]


# signed URLs


def test_signer_covers_every_field() -> None:
    signer = UrlSigner(b"secret")
    expires = int(time.time()) + 60
    extra = {"uploadId": "u", "partNumber": "1"}
    signature = signer.sign("PUT", "a/b", expires, extra)
    assert signer.verify("PUT", "a/b", expires, signature, extra)
    assert not signer.verify("GET", "a/b", expires, signature, extra)
    assert not signer.verify("PUT", "a/c", expires, signature, extra)
    assert not signer.verify("PUT", "a/b", expires + 1, signature, extra)
    assert not signer.verify("PUT", "a/b", expires, signature, {"uploadId": "u", "partNumber": "2"})
    assert not signer.verify("PUT", "a/b", expires, signature, {})
    assert not signer.verify("PUT", "a/b", expires, "\u00e9" + signature[1:], extra)
    assert not UrlSigner(b"other").verify("PUT", "a/b", expires, signature, extra)
    past = int(time.time()) - 1
    assert not signer.verify("PUT", "a/b", past, signer.sign("PUT", "a/b", past, extra), extra)
    with pytest.raises(ValueError):
        UrlSigner(b"")


def test_presigned_url_shape_and_base_url(tmp_path: Path) -> None:
    signer = UrlSigner(b"s")
    blobs = LocalBlobs(tmp_path, signer)
    assert blobs.presign_get("a b/c.txt").startswith("http://127.0.0.1:8080/prod/blobs/a%20b/c.txt?X-Esd-Expires=")
    token = BASE_URL.set("https://esd.example:9000/")
    try:
        url = blobs.presign_put("k")
    finally:
        BASE_URL.reset(token)
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "esd.example:9000", "/prod/blobs/k")
    query = dict(parse_qsl(parts.query))
    assert set(query) == {"X-Esd-Expires", "X-Esd-Signature"}
    assert signer.verify("PUT", "k", int(query["X-Esd-Expires"]), query["X-Esd-Signature"])
    fixed = LocalBlobs(tmp_path, signer, public_url="http://fixed", url_prefix="/x/")
    assert fixed.presign_get("k").startswith("http://fixed/x/k?")


def test_put_and_get_through_presigned_urls(blobs: LocalBlobs, client: TestClient) -> None:
    key = "Stable-diffusion/checkpoint/custom/1/model name+v2.safetensors"
    answer = client.put(blobs.presign_put(key), content=b"weights")
    assert answer.status_code == 200, answer.text
    assert answer.headers["ETag"] == f'"{hashlib.md5(b"weights").hexdigest()}"'
    assert "ETag" in answer.headers["Access-Control-Expose-Headers"]
    assert answer.content == b""
    assert blobs.get(key) == b"weights"

    got = client.get(blobs.presign_get(key))
    assert got.status_code == 200
    assert got.content == b"weights"
    ranged = client.get(blobs.presign_get(key), headers={"Range": "bytes=1-3"})
    assert ranged.status_code == 206 and ranged.content == b"eig"
    head = client.head(blobs.presign_get(key))
    assert head.status_code == 200 and head.headers["content-length"] == "7"
    assert client.get(blobs.presign_get("a/picture.png")).status_code == 404

    blobs.put("a/picture.png", b"png")
    assert client.get(blobs.presign_get("a/picture.png")).headers["content-type"] == "image/png"


def test_streamed_put_through_the_router(blobs: LocalBlobs, client: TestClient) -> None:
    size = 6 * MiB + 123

    def body() -> Iterator[bytes]:
        stream = GeneratedStream(size, seed=7)
        while chunk := stream.read(256 * 1024):
            yield chunk

    answer = client.put(blobs.presign_put("big.bin"), content=body())
    assert answer.status_code == 200, answer.text
    assert answer.headers["ETag"] == f'"{generated_md5(size, seed=7)}"'
    assert blobs.size("big.bin") == size


def test_multipart_through_presigned_urls(blobs: LocalBlobs, client: TestClient) -> None:
    key = "Lora/checkpoint/custom/9/lora.safetensors"
    upload_id = blobs.start_multipart(key)
    bodies = [os.urandom(MiB + 17), os.urandom(MiB), os.urandom(12345)]
    parts = []
    for number, body in enumerate(bodies, start=1):
        answer = client.put(blobs.presign_part(key, upload_id, number), content=body)
        assert answer.status_code == 200, answer.text
        assert answer.headers["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
        parts.append({"PartNumber": number, "ETag": answer.headers["ETag"]})
        if number == 2:
            assert blobs.list_parts(key, upload_id) == parts
    assert blobs.size(key) is None  # nothing under the key before completing

    blobs.complete_multipart(key, upload_id, parts)
    assert blobs.get(key) == b"".join(bodies)
    assert list((blobs.root / "uploads").iterdir()) == []
    with pytest.raises(BlobNotFound):
        blobs.list_parts(key, upload_id)


def test_complete_multipart_checks_the_parts(blobs: LocalBlobs) -> None:
    key = "k/model.bin"
    upload_id = blobs.start_multipart(key)
    etags = [blobs.receive_part(key, upload_id, number, io.BytesIO(bytes([number]) * 100)) for number in (1, 2, 3)]

    def parts(*pairs: tuple[int, str]) -> list:
        return [{"PartNumber": number, "ETag": etag} for number, etag in pairs]

    refused = [
        parts((1, etags[0]), (2, '"' + "0" * 32 + '"'), (3, etags[2])),  # wrong ETag
        parts((1, etags[0]), (4, etags[2])),  # missing part
        parts((2, etags[1]), (1, etags[0])),  # out of order
        parts((1, etags[0]), (1, etags[0])),  # repeated
        parts((0, etags[0])),
        [],
    ]
    for bad in refused:
        with pytest.raises(BlobError):
            blobs.complete_multipart(key, upload_id, bad)
    assert blobs.size(key) is None

    with pytest.raises(BlobNotFound):
        blobs.complete_multipart("other/key", upload_id, parts((1, etags[0])))
    # quotes are optional and a part may be left out
    blobs.complete_multipart(key, upload_id, parts((1, etags[0].strip('"')), (3, etags[2])))
    assert blobs.get(key) == b"\x01" * 100 + b"\x03" * 100


def test_part_numbers_and_uploads_are_checked(blobs: LocalBlobs) -> None:
    upload_id = blobs.start_multipart("k")
    for number in (0, 10001, -1):
        with pytest.raises(BlobError):
            blobs.receive_part("k", upload_id, number, io.BytesIO(b"x"))
        with pytest.raises(BlobError):
            blobs.presign_part("k", upload_id, number)
    with pytest.raises(BlobNotFound):
        blobs.receive_part("other", upload_id, 1, io.BytesIO(b"x"))
    with pytest.raises(BlobNotFound):
        blobs.receive_part("k", "../../objects", 1, io.BytesIO(b"x"))
    with pytest.raises(BlobNotFound):
        blobs.list_parts("k", "0" * 32)
    blobs.receive_part("k", upload_id, 10000, io.BytesIO(b"x"))
    assert [part["PartNumber"] for part in blobs.list_parts("k", upload_id)] == [10000]

    blobs.abort_multipart("k", upload_id)
    blobs.abort_multipart("k", upload_id)  # no error when gone
    with pytest.raises(BlobNotFound):
        blobs.receive_part("k", upload_id, 1, io.BytesIO(b"x"))
    assert list((blobs.root / "uploads").iterdir()) == []


def test_abort_ignores_an_upload_of_another_key(blobs: LocalBlobs) -> None:
    upload_id = blobs.start_multipart("k")
    blobs.abort_multipart("other", upload_id)
    assert blobs.list_parts("k", upload_id) == []


def test_forged_or_stale_urls_are_refused_before_writing(blobs: LocalBlobs, client: TestClient) -> None:
    key = "Lora/x.safetensors"
    upload_id = blobs.start_multipart(key)
    part_url = blobs.presign_part(key, upload_id, 1)
    put_url = blobs.presign_put(key)
    signature = dict(parse_qsl(urlsplit(put_url).query))["X-Esd-Signature"]
    before = files_under(blobs.root)

    forged = [
        with_query(put_url, **{"X-Esd-Signature": ("0" if signature[0] != "0" else "1") + signature[1:]}),
        put_url.replace("/Lora/x.safetensors", "/Lora/y.safetensors"),
        with_query(part_url, partNumber="2"),
        with_query(part_url, uploadId="0" * 32),
        with_query(put_url, uploadId=upload_id, partNumber="1"),  # whole-object URL reused for a part
        blobs.presign_get(key),  # a GET URL used for PUT
        blobs.presign_put(key, expires_s=-10),  # expired
        put_url.split("?")[0],  # unsigned
        with_query(put_url, **{"X-Esd-Expires": "soon"}),
    ]
    for url in forged:
        answer = client.put(url, content=b"evil")
        assert answer.status_code == 403, url
        assert answer.json()["message"].startswith("Forbidden")
    assert "expired" in client.put(blobs.presign_put(key, expires_s=-10), content=b"x").json()["message"]
    assert files_under(blobs.root) == before
    assert blobs.list_parts(key, upload_id) == []

    blobs.put(key, b"secret")
    assert client.get(put_url).status_code == 403  # a PUT URL used for GET
    assert client.get(blobs.presign_get(key, expires_s=-10)).status_code == 403
    assert client.get(blobs.presign_get(key)).content == b"secret"


def test_part_url_for_an_aborted_upload(blobs: LocalBlobs, client: TestClient) -> None:
    upload_id = blobs.start_multipart("k")
    url = blobs.presign_part("k", upload_id, 1)
    blobs.abort_multipart("k", upload_id)
    answer = client.put(url, content=b"late")
    assert answer.status_code == 404
    assert list((blobs.root / "uploads").iterdir()) == []


@pytest.mark.parametrize("failure", ["at once", "after a partial copy"])
def test_complete_falls_back_when_the_kernel_cannot_copy(
    blobs: LocalBlobs, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    real = getattr(os, "copy_file_range", None)
    calls: list[int] = []

    def refusing(src: int, dst: int, count: int) -> int:
        calls.append(count)
        if failure == "after a partial copy" and len(calls) == 1 and real is not None:
            return real(src, dst, 10)
        raise OSError(errno.EXDEV, "cross-device")

    monkeypatch.setattr(os, "copy_file_range", refusing, raising=False)
    upload_id = blobs.start_multipart("k")
    bodies = [os.urandom(100_000), os.urandom(5000)]
    parts = [
        {"PartNumber": number, "ETag": blobs.receive_part("k", upload_id, number, io.BytesIO(body))}
        for number, body in enumerate(bodies, start=1)
    ]
    blobs.complete_multipart("k", upload_id, parts)
    assert blobs.get("k") == b"".join(bodies)
    assert calls


def test_an_incoming_object_shows_only_when_committed(blobs: LocalBlobs) -> None:
    incoming = blobs.begin_object("a/b")
    incoming.write(b"half")
    assert blobs.size("a/b") is None
    assert blobs.list("a/") == []
    incoming.abort()
    assert blobs.size("a/b") is None

    incoming = blobs.begin_object("a/b")
    incoming.write(b"whole")
    assert incoming.commit() == f'"{hashlib.md5(b"whole").hexdigest()}"'
    incoming.abort()  # harmless after commit
    assert blobs.get("a/b") == b"whole"
    assert [path.name for path in files_under(blobs.root)] == ["b"]


def test_unusual_keys_round_trip_through_urls(blobs: LocalBlobs, client: TestClient) -> None:
    for key in ("dir/caf\u00e9 100%.txt", "q/what?#x&y=z.bin", "plus/a+b c.safetensors"):
        assert client.put(blobs.presign_put(key), content=key.encode()).status_code == 200, key
        assert blobs.get(key) == key.encode()
        assert client.get(blobs.presign_get(key)).content == key.encode()


def test_a_part_uploaded_again_replaces_the_first(blobs: LocalBlobs) -> None:
    upload_id = blobs.start_multipart("k")
    old = blobs.receive_part("k", upload_id, 1, io.BytesIO(b"old"))
    new = blobs.receive_part("k", upload_id, 1, io.BytesIO(b"new!"))
    assert blobs.list_parts("k", upload_id) == [{"PartNumber": 1, "ETag": new}]
    with pytest.raises(BlobError):
        blobs.complete_multipart("k", upload_id, [{"PartNumber": 1, "ETag": old}])
    blobs.complete_multipart("k", upload_id, [{"PartNumber": 1, "ETag": new}])
    assert blobs.get("k") == b"new!"
