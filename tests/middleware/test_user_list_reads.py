"""Listing users reads each distinct role once per request, not once per user holding it (both backends)."""

from __future__ import annotations

from typing import Any

import pytest
from support import Api

ROLES = {"painter": ["checkpoint:all"], "viewer": ["inference:list", "checkpoint:list"]}
USERS = 20
# the caller's own lookup: resolving the acting admin reads its role (`IT Operator`) once
CALLER_ROLE_READS = 1


def count_role_reads(api: Api, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the roles read from the users table from now on (a spy on its `get`)."""
    table = api.services.roles.table
    read = table.get
    names: list[str] = []

    def spy(key: dict[str, Any]) -> Any:
        if key.get("kind") == "role":
            names.append(key["sort_key"])
        return read(key)

    monkeypatch.setattr(table, "get", spy)
    return names


def test_listing_users_reads_each_role_once(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, permissions in ROLES.items():
        api.make_role(name, permissions)
    for number in range(USERS):
        api.make_user(f"user{number:02}", list(ROLES))
    reads = count_role_reads(api, monkeypatch)
    response = api.get("/users", params={"limit": 50})
    assert response.status_code == 200, response.text
    users = {user["username"]: user for user in response.json()["data"]["users"]}
    assert len(users) == USERS + 1  # and the admin, holding `IT Operator`
    distinct_roles = len(ROLES) + 1
    assert len(reads) <= distinct_roles + CALLER_ROLE_READS, reads
    assert sorted(set(reads)) == sorted([*ROLES, "IT Operator"])
    assert users["user07"]["permissions"] == ["checkpoint:all", "checkpoint:list", "inference:list"]
    assert users["user07"]["roles"] == list(ROLES)


def test_a_deleted_role_grants_nothing_in_the_list(api: Api) -> None:
    api.make_role("temp", ["checkpoint:all"])
    api.make_user("tess", ["temp"])
    assert api.services.roles.table.delete({"kind": "role", "sort_key": "temp"})  # gone, still held by tess
    users = {user["username"]: user for user in api.get("/users").json()["data"]["users"]}
    assert users["tess"]["roles"] == ["temp"] and users["tess"]["permissions"] == []
