"""Who may do what: permissions as `resource:action`, and the ownership rule for items.

A permission `checkpoint:all` allows every action on checkpoints; the legacy
actions `list` and `create` allow only list and create routes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from middleware_api.services.errors import Forbidden

RESOURCES = ("role", "user", "checkpoint", "sagemaker_endpoint", "inference", "train")
ACTIONS = ("all", "list", "create")
ALL_PERMISSIONS = tuple(f"{resource}:all" for resource in RESOURCES)
EVERYONE = "*"


def is_permission(text: str) -> bool:
    resource, _, action = text.partition(":")
    return resource in RESOURCES and action in ACTIONS


@dataclass(frozen=True)
class Actor:
    """The user a request acts for, with the permissions its roles grant."""

    username: str
    roles: tuple[str, ...] = ()
    permissions: frozenset[str] = field(default_factory=frozenset)

    def holds(self, resource: str, action: str = "all") -> bool:
        """True if the actor may perform `action` on `resource`."""
        if f"{resource}:all" in self.permissions:
            return True
        return action != "all" and f"{resource}:{action}" in self.permissions

    def require(self, resource: str, action: str = "all") -> None:
        """Forbidden unless the actor holds the permission."""
        if not self.holds(resource, action):
            needed = [f"{resource}:all"] + ([f"{resource}:{action}"] if action != "all" else [])
            raise Forbidden(f"User {self.username} has no permissions: {json.dumps(needed)}")

    def can_see(self, owners: Iterable[str] | None) -> bool:
        """The ownership rule: an item is visible when its owner list is empty,
        holds `*`, holds the actor's name or one of the actor's roles."""
        owners = list(owners or [])
        if not owners or EVERYONE in owners or self.username in owners:
            return True
        return any(role in owners for role in self.roles)

    def missing_permissions(self, permissions: Iterable[str]) -> list[str]:
        """The permissions in `permissions` the actor could not grant (it lacks them)."""
        missing = []
        for permission in permissions:
            resource, _, action = permission.partition(":")
            if not self.holds(resource, action):
                missing.append(permission)
        return missing
