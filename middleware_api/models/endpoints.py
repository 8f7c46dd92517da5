"""Request bodies of the endpoints routes."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from middleware_api.models.common import Name, NameList, Request

Count = Annotated[int, Field(ge=0, le=1000)]


class CreateEndpoint(Request):
    endpoint_name: Annotated[str, Field(max_length=64)] | None = None
    endpoint_type: Annotated[str, Field(max_length=32)] = "Async"
    instance_type: Annotated[str, Field(max_length=64)] = "ml.g5.2xlarge"
    initial_instance_count: Annotated[int, Field(ge=1, le=1000)] = 1
    autoscaling_enabled: bool = True
    assign_to_roles: Annotated[list[Name], Field(min_length=1, max_length=64)]
    min_instance_number: Count | None = None
    max_instance_number: Count | None = None
    # `creator` of old clients is ignored: the acting user creates the endpoint


class DeleteEndpoints(Request):
    endpoint_name_list: NameList
