"""Roles: named sets of permissions; `IT Operator` and `byoc` exist from the first start."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterable

from middleware_api.ports.tables import ConditionFailed, Item, Page, Table, query_all
from middleware_api.services.errors import BadRequest, Conflict, Forbidden
from middleware_api.services.permissions import ALL_PERMISSIONS, Actor, is_permission

ADMIN_ROLE = "IT Operator"
DEFAULT_ROLES = (ADMIN_ROLE, "byoc")
ROLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.@+-]{0,63}$")
KIND = "role"
USER_KIND = "user"
_RETRIES = 5


class RoleService:
    """Create, list and delete roles in the users table."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def ensure_defaults(self) -> None:
        """Create the default roles if missing (safe to call at every start)."""
        for name in DEFAULT_ROLES:
            with contextlib.suppress(ConditionFailed):
                self.table.put(_role_item(name, "system", list(ALL_PERMISSIONS)), must_not_exist=True)

    def get(self, name: str) -> Item | None:
        return self.table.get({"kind": KIND, "sort_key": name})

    def permissions_of(self, role_names: Iterable[str]) -> frozenset[str]:
        """The union of the permissions of existing roles (deleted ones grant nothing)."""
        return frozenset().union(*self.permissions_by_role(role_names).values())

    def permissions_by_role(self, role_names: Iterable[str]) -> dict[str, frozenset[str]]:
        """Each distinct role's permissions, read once (a deleted role grants nothing)."""
        by_role: dict[str, frozenset[str]] = {}
        for name in role_names:
            if name not in by_role:
                role = self.get(name)
                by_role[name] = frozenset(role.get("permissions", [])) if role else frozenset()
        return by_role

    def require_existing(self, role_names: list[str]) -> None:
        """BadRequest naming the first role that does not exist."""
        for name in role_names:
            if self.get(name) is None:
                raise BadRequest(f'user roles "{name}" not exist')

    def create(self, actor: Actor, name: str, permissions: list[str]) -> bool:
        """Create a role, or replace an existing role's permissions; True if created."""
        actor.require("role", "create")
        if not ROLE_NAME.match(name):
            raise BadRequest("role_name must be 1-64 letters, digits, spaces or _.@+- and start with a letter or digit")
        invalid = [permission for permission in permissions if not is_permission(permission)]
        if invalid:
            raise BadRequest(f"invalid permissions: {json.dumps(invalid)}")
        missing = actor.missing_permissions(permissions)
        if missing:
            raise Forbidden(f"User {actor.username} cannot grant permissions it does not hold: {json.dumps(missing)}")
        permissions = sorted(set(permissions))
        for _ in range(_RETRIES):
            try:
                self.table.put(_role_item(name, actor.username, permissions), must_not_exist=True)
                return True
            except ConditionFailed:
                pass
            actor.require("role", "all")
            if name == ADMIN_ROLE:
                raise BadRequest("cannot modify default role")
            try:
                self.table.update({"kind": KIND, "sort_key": name}, {"permissions": permissions})
                return False
            except ConditionFailed:
                continue  # deleted meanwhile: create it again
        raise Conflict(f"role {name} is being changed by other requests, please retry")

    def list(self, actor: Actor, limit: int, cursor: str | None) -> Page:
        """Roles the actor may see: all with `role:all`, else those it created or holds."""
        actor.require("role", "list")
        where = None
        if not actor.holds("role", "all"):

            def where(role: Item) -> bool:
                return role.get("creator") == actor.username or role["role_name"] in actor.roles

        page = self.table.query(KIND, limit=limit, cursor=cursor, where=where)
        return Page([public_role(role) for role in page.items], page.cursor)

    def delete(self, actor: Actor, names: list[str]) -> None:
        """Delete roles and take them away from every user holding them."""
        actor.require("role", "all")
        if ADMIN_ROLE in names:
            raise BadRequest("cannot delete default role")
        for name in names:
            if self.table.delete({"kind": KIND, "sort_key": name}):
                self._take_from_users(name)

    def _take_from_users(self, name: str) -> None:
        for user in query_all(self.table, USER_KIND, where=lambda user: name in user.get("roles", [])):
            key = {"kind": USER_KIND, "sort_key": user["sort_key"]}
            while True:  # re-read on a concurrent change so no other edit is lost
                current = self.table.get(key)
                if current is None or name not in current.get("roles", []):
                    break
                roles = current["roles"]
                try:
                    self.table.update(key, {"roles": [r for r in roles if r != name]}, expect={"roles": roles})
                    break
                except ConditionFailed:
                    continue


def _role_item(name: str, creator: str, permissions: list[str]) -> Item:
    return {
        "kind": KIND,
        "sort_key": name,
        "role_name": name,
        "creator": creator,
        "permissions": permissions,
        "created": time.time(),
    }


def public_role(role: Item) -> Item:
    return {
        "role_name": role["role_name"],
        "creator": role.get("creator", ""),
        "permissions": role.get("permissions", []),
    }
