"""Presigned URLs handed out by the API: expired, tampered or replayed ones are refused and write nothing.

The signature checks run on the embedded backend only: there the signer and the server
that checks it are ours (`UrlSigner`, the `/prod/blobs` routes). On aws the URLs are S3's,
checked by S3 itself; moto, which stands in for S3 here, verifies neither SigV4
signatures nor expiry by default, so a refusal there would prove nothing. What our code
decides on both backends is tested on both: a URL names only the keys of the item just
created (never another's), with the part and upload it is for, and expires in an hour.
The URL signer's own unit tests (`unit/test_local_blobs.py`) forge URLs against the bare
router; these go through the whole app, with URLs the routes hand out.
"""

from __future__ import annotations

import calendar
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
from support import Api

from middleware_api.adapters.embedded import blobs as local_blobs
from middleware_api.ports.blobs import DEFAULT_URL_TTL_S

embedded_only = pytest.mark.parametrize("services", ["embedded"], indirect=True)


# -- helpers ------------------------------------------------------------------------


def create_upload(api: Api, files: dict[str, int]) -> dict[str, Any]:
    """A new Lora checkpoint awaiting `files` ({name: parts}); the create response's data."""
    filenames = [{"filename": name, "parts_number": parts} for name, parts in files.items()]
    created = api.post("/checkpoints", {"checkpoint_type": "Lora", "params": {}, "filenames": filenames})
    assert created.status_code == 201, created.text
    return created.json()["data"]


def create_dataset(api: Api, name: str, files: list[str]) -> dict[str, str]:
    """A new dataset awaiting `files`; its PUT URLs by file name."""
    content = [{"filename": file} for file in files]
    created = api.post("/datasets", {"dataset_name": name, "content": content})
    assert created.status_code == 201, created.text
    return created.json()["data"]["s3PresignUrl"]


def query_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def with_query(url: str, drop: tuple[str, ...] = (), **changes: str) -> str:
    parts = urlsplit(url)
    query = {name: value for name, value in query_of(url).items() if name not in drop}
    return urlunsplit(parts._replace(query=urlencode({**query, **changes})))


def with_path_of(url: str, other: str) -> str:
    """`url`'s signature and query on `other`'s path: a URL for one key replayed against another."""
    return urlunsplit(urlsplit(url)._replace(path=urlsplit(other).path))


def flipped(signature: str) -> str:
    return ("0" if signature[0] != "0" else "1") + signature[1:]


def blob_files(api: Api) -> dict[str, tuple[int, int]]:
    """Every file of the embedded store, with its size and modification time."""
    root = Path(api.services.blobs.root)
    return {str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns) for path in root.rglob("*")}


# -- embedded: forged and stale URLs ------------------------------------------------

# each case: (what it does, how to make the URL from the two files' part URLs) -> the refusal's reason
Forge = Callable[[dict[str, list[str]]], str]
FORGED: list[tuple[str, Forge, str]] = [
    (
        "signature changed",
        lambda urls: with_query(
            urls["a"][0], **{"X-Esd-Signature": flipped(query_of(urls["a"][0])["X-Esd-Signature"])}
        ),
        "signature does not match",
    ),
    (
        "signature cut short",
        lambda urls: with_query(urls["a"][0], **{"X-Esd-Signature": query_of(urls["a"][0])["X-Esd-Signature"][:32]}),
        "signature does not match",
    ),
    (
        "expiry pushed later",
        lambda urls: with_query(
            urls["a"][0], **{"X-Esd-Expires": str(int(query_of(urls["a"][0])["X-Esd-Expires"]) + 1)}
        ),
        "signature does not match",
    ),
    ("part number changed", lambda urls: with_query(urls["a"][0], partNumber="2"), "signature does not match"),
    (
        "upload id of the other file",
        lambda urls: with_query(urls["a"][0], uploadId=query_of(urls["b"][0])["uploadId"]),
        "signature does not match",
    ),
    (
        "part fields dropped (a whole-object PUT)",
        lambda urls: with_query(urls["a"][0], drop=("uploadId", "partNumber")),
        "signature does not match",
    ),
    ("key A's URL on key B", lambda urls: with_path_of(urls["a"][0], urls["b"][0]), "signature does not match"),
    (
        "key A's URL on a path climbing out",
        lambda urls: with_path_of(urls["a"][0], "/prod/blobs/Lora/checkpoint/custom/%2e%2e/%2e%2e/x.safetensors"),
        "signature does not match",
    ),
    ("signature removed", lambda urls: with_query(urls["a"][0], drop=("X-Esd-Signature",)), "the URL is not signed"),
    (
        "expiry negative",
        lambda urls: with_query(urls["a"][0], **{"X-Esd-Expires": "-1"}),
        "signature does not match",
    ),
]


@embedded_only
@pytest.mark.parametrize(("forge", "reason"), [case[1:] for case in FORGED], ids=[case[0] for case in FORGED])
def test_forged_part_urls_are_refused_and_write_nothing(api: Api, forge: Forge, reason: str) -> None:
    created = create_upload(api, {"a.safetensors": 2, "b.safetensors": 2})
    urls = {name[0]: part_urls for name, part_urls in created["s3PresignUrl"].items()}
    uploads = created["checkpoint"]["params"]["multipart_upload"]
    before = blob_files(api)

    refused = api.put_url(forge(urls), b"evil bytes")

    assert refused.status_code == 403, refused.text
    assert refused.json()["message"] == f"Forbidden: {reason}"
    assert blob_files(api) == before
    for upload in uploads.values():
        assert api.services.blobs.list_parts(upload["key"], upload["upload_id"]) == []
        assert api.services.blobs.size(upload["key"]) is None
    # the genuine URL still works: the refusal came from the forgery, not from a broken upload
    assert api.put_url(urls["a"][0], b"good").status_code == 200


@embedded_only
def test_expired_urls_are_refused_and_write_nothing(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    part_url = create_upload(api, {"a.safetensors": 1})["s3PresignUrl"]["a.safetensors"][0]
    put_url = create_dataset(api, "late", ["a.png"])["a.png"]
    before = blob_files(api)
    later = time.time() + DEFAULT_URL_TTL_S + 5
    monkeypatch.setattr(local_blobs, "time", types.SimpleNamespace(time=lambda: later))  # the server's clock only

    for url in (part_url, put_url):
        refused = api.put_url(url, b"too late")
        assert refused.status_code == 403, refused.text
        assert refused.json()["message"] == "Forbidden: URL expired"
    assert blob_files(api) == before
    monkeypatch.undo()
    assert api.put("/datasets/late", {"status": "Enabled"}).status_code == 400  # its file never arrived
    assert api.put_url(put_url, b"in time").status_code == 200  # the same URL, before its expiry


@embedded_only
def test_urls_are_bound_to_their_method_and_item(api: Api) -> None:
    first = create_dataset(api, "first", ["a.png", "b.png"])
    second = create_dataset(api, "second", ["a.png"])
    assert api.put_url(first["a.png"], b"a").status_code == 200
    preview = api.get("/datasets/first").json()["data"]["data"][0]["preview_url"]
    before = blob_files(api)

    replays = {
        "a GET URL used for PUT": preview,
        "file a's URL on file b": with_path_of(first["a.png"], first["b.png"]),
        "dataset first's URL on dataset second": with_path_of(first["a.png"], second["a.png"]),
        "a whole-object URL given part fields": with_query(first["b.png"], uploadId="0" * 32, partNumber="1"),
    }
    for what, url in replays.items():
        refused = api.put_url(url, b"evil")
        assert refused.status_code == 403, what
        assert refused.json()["message"] == "Forbidden: signature does not match", what
    assert blob_files(api) == before
    assert api.get_url(first["a.png"]).status_code == 403  # a PUT URL used for GET
    assert api.get_url(preview).content == b"a"
    assert api.put("/datasets/second", {"status": "Enabled"}).status_code == 400


# -- both backends: what the URLs name and how long they last -------------------------


def _expiry(url: str, backend: str) -> float:
    """The epoch second a URL stops working."""
    query = query_of(url)
    if backend == "embedded":
        return int(query["X-Esd-Expires"])
    signed_at = calendar.timegm(time.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ"))
    return signed_at + int(query["X-Amz-Expires"])


def test_urls_name_only_the_new_items_keys_and_expire_in_an_hour(api: Api) -> None:
    backend = api.services.settings.backend
    created = create_upload(api, {"a.safetensors": 3})
    checkpoint_id = created["checkpoint"]["id"]
    upload = created["checkpoint"]["params"]["multipart_upload"]["a.safetensors"]
    part_urls = created["s3PresignUrl"]["a.safetensors"]
    dataset_urls = create_dataset(api, "kept", ["a.png"])
    now = time.time()

    assert upload["key"] == f"Lora/checkpoint/custom/{checkpoint_id}/a.safetensors"
    for number, url in enumerate(part_urls, start=1):
        assert urlsplit(url).path.endswith(f"/{upload['key']}")
        query = query_of(url)
        assert (query["uploadId"], query["partNumber"]) == (upload["upload_id"], str(number))
        assert now + DEFAULT_URL_TTL_S - 60 <= _expiry(url, backend) <= now + DEFAULT_URL_TTL_S + 1
    assert urlsplit(dataset_urls["a.png"]).path.endswith("/dataset/kept/a.png")
    if backend == "aws":
        assert query_of(dataset_urls["a.png"])["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"

    # another user asking for the same dataset name gets no URL for the first one's files
    api.make_role("trainers", ["train:all"])
    api.make_user("mallory", ["trainers"])
    again = api.post("/datasets", {"dataset_name": "kept", "content": [{"filename": "a.png"}]}, user="mallory")
    assert again.status_code == 400 and "already exists" in again.json()["message"]
    assert "s3PresignUrl" not in again.text
