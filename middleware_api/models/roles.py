"""Request bodies of the roles routes."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from middleware_api.models.common import Name, NameList, Request


class CreateRole(Request):
    role_name: Name
    permissions: Annotated[list[Name], Field(max_length=64)]
    creator: str | None = None  # sent by old clients; the acting user is the creator


class DeleteRoles(Request):
    role_name_list: NameList
