"""Request bodies of the users, login and token routes."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from middleware_api.models.common import Name, NameList, Request

Password = Annotated[str, Field(min_length=1, max_length=256)]


class CreateUser(Request):
    username: Name
    roles: Annotated[list[Name], Field(min_length=1, max_length=64)]
    password: Password | None = None
    initial: bool = False
    # `permissions` and `creator` of old clients are ignored: permissions come from roles,
    # the creator is the acting user.


class DeleteUsers(Request):
    user_name_list: NameList


class Login(Request):
    username: Name
    password: Password


class CreateToken(Request):
    name: Name
    expires_in_days: Annotated[int, Field(ge=1, le=3650)] | None = None


class DeleteTokens(Request):
    token_id_list: NameList
