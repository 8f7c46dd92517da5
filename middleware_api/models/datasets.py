"""Request bodies of the datasets routes."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StringConstraints

from middleware_api.models.common import Name, NameList, Request

MAX_FILES = 1000

Text = Annotated[str, StringConstraints(max_length=4096)]
FileName = Annotated[str, StringConstraints(min_length=1, max_length=255)]


class DatasetFile(Request):
    filename: FileName
    name: Annotated[str, StringConstraints(max_length=255)] | None = None
    type: Annotated[str, StringConstraints(max_length=64)] | None = None
    params: dict[str, Any] | None = None


class DatasetParams(Request):
    description: Text | None = None


class CreateDataset(Request):
    dataset_name: Name
    content: Annotated[list[DatasetFile], Field(min_length=1, max_length=MAX_FILES)]
    prefix: Annotated[str, StringConstraints(max_length=255)] | None = None
    description: Text | None = None
    params: DatasetParams | None = None
    # `creator` of old clients is ignored: the acting user creates the dataset


class UpdateDataset(Request):
    status: Annotated[str, StringConstraints(max_length=64)]
    # `dataset_name` of old clients is ignored: the path names the dataset


class DeleteDatasets(Request):
    dataset_name_list: NameList
