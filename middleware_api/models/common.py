"""Pieces shared by the request models: field limits and the base model."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

MAX_BATCH = 100


class Request(BaseModel):
    """A request body, checked as API Gateway's JSON schema validator does.

    Unknown extra fields are ignored; types are strict, so `"2"` is not an integer
    nor `"yes"` a boolean (a number is still a valid float).
    """

    model_config = ConfigDict(extra="ignore", strict=True)


Name = Annotated[str, StringConstraints(min_length=1, max_length=128)]
NameList = Annotated[list[Name], Field(min_length=1, max_length=MAX_BATCH)]
