"""The embedded backend's presigned URLs: `PUT`/`GET /blobs/{key}`, authorized by their signature alone.

Mounted under `/prod`, outside the OpenAPI schema and outside the API key check. Bodies
are streamed to disk chunk by chunk, each write in a worker thread, so an upload of any
size holds about 1 MiB in memory, never blocks the event loop on a file write and holds
no thread while it waits on the network. A body over `LocalBlobs.max_upload_bytes` (S3's
5 GiB) gets 413 and leaves nothing behind.
"""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from starlette.requests import ClientDisconnect

from middleware_api.adapters.embedded.blobs import (
    CHUNK_BYTES,
    PART_NUMBER_PARAM,
    UPLOAD_ID_PARAM,
    Incoming,
    LocalBlobs,
    guess_type,
)
from middleware_api.ports.blobs import BlobError, BlobNotFound
from middleware_api.routes.envelope import error

router = APIRouter()


def _blobs(request: Request) -> LocalBlobs:
    return request.app.state.services.blobs


@router.put("/blobs/{key:path}", include_in_schema=False)
async def put_blob(key: str, request: Request) -> Response:
    """Store the body as the object, or as one part when the URL names `uploadId` and `partNumber`."""
    blobs = _blobs(request)
    query = request.query_params
    denied = blobs.authorize("PUT", key, query)
    if denied:
        return error(403, f"Forbidden: {denied}")
    limit = blobs.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        return _too_large(limit)
    upload_id = query.get(UPLOAD_ID_PARAM)
    part_number = query.get(PART_NUMBER_PARAM)
    try:
        if upload_id is None and part_number is None:
            incoming = await anyio.to_thread.run_sync(blobs.begin_object, key)
        elif upload_id is None or part_number is None or not part_number.isascii() or not part_number.isdigit():
            return error(400, "InvalidArgument: a part needs both uploadId and a numeric partNumber")
        else:
            incoming = await anyio.to_thread.run_sync(blobs.begin_part, key, upload_id, int(part_number))
        try:
            etag = await _receive(request, incoming, limit)
        finally:
            incoming.abort()  # a no-op after commit; quick, so fine on the event loop
    except _TooLarge:
        return _too_large(limit)
    except BlobNotFound as exc:
        return error(404, str(exc))
    except BlobError as exc:
        return error(400, str(exc))
    except ClientDisconnect:
        return error(400, "IncompleteBody: the client went away before the body ended")
    return Response(status_code=200, headers={"ETag": etag, "Access-Control-Expose-Headers": "ETag"})


class _TooLarge(Exception):
    """The body went past the upload limit."""


def _too_large(limit: int) -> Response:
    return error(413, f"EntityTooLarge: the body is larger than {limit} bytes")


async def _receive(request: Request, incoming: Incoming, limit: int) -> str:
    """Write the body to `incoming` and commit it; the file work runs in worker threads.

    Network chunks (often 64 KiB) are gathered up to 1 MiB before each write, so a large
    upload costs few thread hops yet holds at most about 1 MiB in memory. _TooLarge once
    more than `limit` bytes came, whatever the declared length said.
    """
    buffer = bytearray()
    async for chunk in request.stream():
        buffer += chunk
        if incoming.size + len(buffer) > limit:
            raise _TooLarge
        if len(buffer) >= CHUNK_BYTES:
            full, buffer = buffer, bytearray()
            await anyio.to_thread.run_sync(incoming.write, full)
    if buffer:
        await anyio.to_thread.run_sync(incoming.write, buffer)
    return await anyio.to_thread.run_sync(incoming.commit)


@router.api_route("/blobs/{key:path}", methods=["GET", "HEAD"], include_in_schema=False)
async def get_blob(key: str, request: Request) -> Response:
    """Send the object (ranges supported); HEAD answers with its headers only."""
    blobs = _blobs(request)
    denied = blobs.authorize("GET", key, request.query_params)
    if denied:
        return error(403, f"Forbidden: {denied}")
    try:
        path = blobs.object_path(key)
    except BlobNotFound as exc:
        return error(404, str(exc))
    except BlobError as exc:
        return error(400, str(exc))
    return FileResponse(path, media_type=guess_type(key))
