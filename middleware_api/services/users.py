"""Users: who they are (hashed passwords), which roles they hold, and who acts in a request."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Mapping

from middleware_api.ports.tables import ConditionFailed, Item, Page, Table, query_all
from middleware_api.services.errors import BadRequest, Conflict, Forbidden, Unauthorized
from middleware_api.services.passwords import hash_password, verify_password
from middleware_api.services.permissions import Actor
from middleware_api.services.roles import ADMIN_ROLE, RoleService

KIND = "user"
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}$")
MIN_PASSWORD_LENGTH = 8
MASKED_PASSWORD = "********"
_BOOTSTRAP_GUARD = {"kind": "meta", "sort_key": "bootstrapped"}
_RETRIES = 5


class UserService:
    """Create, update, list and delete users; resolve the acting user of a request."""

    def __init__(self, table: Table, roles: RoleService) -> None:
        self.table = table
        self.roles = roles

    def get(self, username: str) -> Item | None:
        return self.table.get({"kind": KIND, "sort_key": username})

    def actor(self, username: str | None) -> Actor:
        """The acting user named by a request; Unauthorized if missing or unknown."""
        user = self.get(username) if username else None
        if user is None:
            raise Unauthorized("Unauthorized")
        return self._actor_of(user)

    def _actor_of(self, user: Item) -> Actor:
        roles = tuple(user.get("roles", []))
        return Actor(user["username"], roles, self.roles.permissions_of(list(roles)))

    def check_credentials(self, username: str, password: str) -> Actor:
        """The user if the password is right; Unauthorized (without saying which part was wrong) if not."""
        user = self.get(username) if USERNAME.match(username) else None
        if not verify_password(password, user.get("password_hash") if user else None) or user is None:
            raise Unauthorized("invalid username or password")
        return self._actor_of(user)

    def has_users(self) -> bool:
        return bool(self.table.query(KIND, limit=1).items)

    def bootstrap(self, username: str, password: str, roles: list[str]) -> None:
        """Create the first user of an empty deployment; Forbidden once any user exists."""
        if self.has_users():
            raise Forbidden("initial user can only be created in a deployment without users")
        _validate(username, password)
        roles = roles or [ADMIN_ROLE]
        self.roles.require_existing(roles)
        try:
            self.table.put({**_BOOTSTRAP_GUARD, "created": time.time()}, must_not_exist=True)
        except ConditionFailed:
            raise Forbidden("initial user can only be created in a deployment without users") from None
        self.table.put(_user_item(username, "system", roles, hash_password(password)))

    def create_or_update(self, actor: Actor, username: str, password: str | None, roles: list[str]) -> bool:
        """Create a user, or update an existing one's roles and password; True if created.

        The actor may only give roles whose permissions it holds itself; a user
        may always change its own password. A user deleted while being updated
        is decided again (and so created, if a password is given).
        """
        for _ in range(_RETRIES):
            created = self._create_or_update(actor, username, password, roles)
            if created is not None:
                self._drop_roles_deleted_meanwhile(username)
                return created
        raise Conflict(f"user {username} is being changed by other requests, please retry")

    def _create_or_update(self, actor: Actor, username: str, password: str | None, roles: list[str]) -> bool | None:
        """One try of `create_or_update`: True if created, False if updated, None if deleted meanwhile."""
        existing = self.get(username)
        changing_own_password = existing is not None and username == actor.username and roles == existing["roles"]
        if not changing_own_password:
            actor.require("user", "create" if existing is None else "all")
        _validate(username, password, require_password=existing is None)
        self.roles.require_existing(roles)
        missing = actor.missing_permissions(self.roles.permissions_of(roles))
        if missing:
            raise Forbidden(
                f"User {actor.username} cannot grant permissions it does not hold: {json.dumps(sorted(missing))}"
            )
        if existing is None:
            try:
                self.table.put(
                    _user_item(username, actor.username, roles, hash_password(password or "")), must_not_exist=True
                )
            except ConditionFailed:
                raise BadRequest(f"{username} already exists, please use another or rename/delete exists") from None
            return True
        changes: dict[str, object] = {"roles": roles}
        if password:
            changes["password_hash"] = hash_password(password)
        try:  # roles and password in one write: racing edits leave one of them whole, never a mix
            self.table.update({"kind": KIND, "sort_key": username}, changes)
        except ConditionFailed:
            return None
        return False

    def _drop_roles_deleted_meanwhile(self, username: str) -> None:
        """Take from a user just written every role it holds that no longer exists.

        `RoleService.delete` takes a role from the users it finds holding it after deleting it; a user
        written after that look is fixed here. Each write removes roles from what is stored, expecting
        it unchanged, and re-reads if not: another edit is never overwritten, and a role removal racing
        this one (which keeps the other roles as they are) cannot bring back a dead role.
        """
        key = {"kind": KIND, "sort_key": username}
        for _ in range(_RETRIES * 4):
            user = self.get(username)
            if user is None:
                return
            held = user.get("roles", [])
            alive = [role for role in held if self.roles.get(role) is not None]
            if alive == held:
                return
            with contextlib.suppress(ConditionFailed):  # changed meanwhile: read again
                self.table.update(key, {"roles": alive}, expect={"roles": held})
                return
        raise Conflict(f"user {username} is being changed by other requests, please retry")

    def list(self, actor: Actor, limit: int, cursor: str | None) -> Page:
        """Users the actor may see: all with `user:all`, else those it created and itself."""
        actor.require("user", "list")
        where = None
        if not actor.holds("user", "all"):

            def where(user: Item) -> bool:
                return user.get("creator") == actor.username or user["username"] == actor.username

        page = self.table.query(KIND, limit=limit, cursor=cursor, where=where)
        # each distinct role read once for the page, not once per user holding it
        by_role = self.roles.permissions_by_role(role for user in page.items for role in user.get("roles", []))
        return Page([public_user(user, by_role) for user in page.items], page.cursor)

    def delete(self, actor: Actor, usernames: list[str]) -> list[str]:
        """Delete users (not oneself); returns those that existed."""
        actor.require("user", "all")
        if actor.username in usernames:
            raise BadRequest("cannot delete yourself")
        deleted = [name for name in usernames if self.table.delete({"kind": KIND, "sort_key": name})]
        for name in deleted:
            for token in query_all(self.table, name, index="by_owner"):
                self.table.delete(self.table.spec.key_of(token))
        return deleted


def _validate(username: str, password: str | None, require_password: bool = True) -> None:
    if not USERNAME.match(username):
        raise BadRequest("username must be 1-64 letters, digits or _.@+- and start with a letter or digit")
    if password is None:
        if require_password:
            raise BadRequest('object has missing required properties (["password"])')
        return
    if len(password) < MIN_PASSWORD_LENGTH:
        raise BadRequest(f"password must be at least {MIN_PASSWORD_LENGTH} characters")


def public_user(user: Item, permissions_by_role: Mapping[str, frozenset[str]]) -> Item:
    """A user as the API shows it: its roles' permissions (from `RoleService.permissions_by_role`), password masked."""
    roles = user.get("roles", [])
    permissions = frozenset().union(*(permissions_by_role.get(role, frozenset()) for role in roles))
    return {
        "username": user["username"],
        "roles": roles,
        "creator": user.get("creator", ""),
        "permissions": sorted(permissions),
        "password": MASKED_PASSWORD,
    }


def _user_item(username: str, creator: str, roles: list[str], password_hash: str) -> Item:
    return {
        "kind": KIND,
        "sort_key": username,
        "username": username,
        "creator": creator,
        "roles": roles,
        "password_hash": password_hash,
        "created": time.time(),
    }
