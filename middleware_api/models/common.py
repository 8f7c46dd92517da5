"""Pieces shared by the request models: field limits and the base model."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

MAX_BATCH = 100


class Request(BaseModel):
    """A request body: unknown extra fields are ignored, as API Gateway's validator does."""

    model_config = ConfigDict(extra="ignore")


Name = Annotated[str, StringConstraints(min_length=1, max_length=128)]
NameList = Annotated[list[Name], Field(min_length=1, max_length=MAX_BATCH)]
