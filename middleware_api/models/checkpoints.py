"""Request bodies of the checkpoints routes."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from middleware_api.models.common import Name, NameList, Request

MAX_FILES = 20
MAX_PARTS = 10_000

FileName = Annotated[str, StringConstraints(min_length=1, max_length=255)]
Url = Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class CheckpointParams(Request):
    message: Annotated[str, StringConstraints(max_length=4096)] | None = None
    # `creator` and anything else old clients send are ignored: the creator is the acting user


class FileToUpload(Request):
    filename: FileName
    parts_number: Annotated[int, Field(ge=1, le=MAX_PARTS)]


class CreateCheckpoint(Request):
    checkpoint_type: Name
    params: CheckpointParams
    urls: Annotated[list[Url], Field(min_length=1, max_length=MAX_FILES)] | None = None
    filenames: Annotated[list[FileToUpload], Field(min_length=1, max_length=MAX_FILES)] | None = None


class PartTag(Request):
    ETag: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    PartNumber: Annotated[int, Field(ge=1, le=MAX_PARTS)]


class UpdateCheckpoint(Request):
    status: Annotated[str, StringConstraints(max_length=64)] | None = None
    multi_parts_tags: Annotated[dict[FileName, list[PartTag]], Field(max_length=MAX_FILES)] | None = None
    name: FileName | None = None
    # `checkpoint_id` of old clients is ignored: the path names the checkpoint


class DeleteCheckpoints(Request):
    checkpoint_id_list: NameList
