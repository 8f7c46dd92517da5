"""Request bodies of the inference routes."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from middleware_api.models.common import Name, NameList, Request


class CreateInference(Request):
    inference_type: Annotated[str, Field(max_length=32)]
    task_type: Annotated[str, Field(max_length=32)]
    models: dict[Annotated[str, Field(max_length=32)], Annotated[list[Name], Field(max_length=64)]]
    endpoint_name: Annotated[str, Field(max_length=128)] | None = None
    payload_string: Annotated[str, Field(max_length=20_000_000)] | None = None
    # `user_id` and `filters` of old clients are ignored: the acting user owns the job


class DeleteInferences(Request):
    inference_id_list: NameList
