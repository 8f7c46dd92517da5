"""Unique names held by guard items, so that two creates of one name cannot both win.

A name index (a GSI) only tells whether a name was taken when it was read: two requests can
both read "free" and both write. A guard item keyed by the name, written with a conditional put,
makes taking a name atomic on both backends. Guards live in their owners' own table under a key
no real item has (`#name/…`) and without index attributes, so no list or index query shows them.

A guard holds its owner's id. One left behind (a crash between writing the guard and the owner,
or between deleting the owner and its guard) is taken over once it is older than `STALE_AFTER_S`
and its owner no longer holds the name.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from middleware_api.ports.tables import ConditionFailed, Item, Table

GUARD_PREFIX = "#name/"
OWNER = "guard_owner"
CLAIMED = "guard_claimed"
STALE_AFTER_S = 600.0

Holds = Callable[[str, str], bool]
"""`holds(owner_id, name)`: whether the owner item exists and still holds the name."""


class NameGuards:
    """Claim, release and look up unique names kept as guard items in one table."""

    def __init__(self, table: Table, holds: Holds) -> None:
        if table.spec.sort:
            raise ValueError(f"name guards need a table keyed by one attribute, not {table.spec.name}")
        self.table = table
        self.holds = holds

    def claim(self, name: str, owner: str) -> bool:
        """Take `name` for `owner`; False if another owner holds it (claiming one's own name is a no-op)."""
        key = self._key(name)
        for _ in range(5):
            try:
                self.table.put({**key, OWNER: owner, CLAIMED: time.time()}, must_not_exist=True)
                return True
            except ConditionFailed:
                pass
            guard = self.table.get(key)
            if guard is None:
                continue  # released meanwhile
            holder = guard.get(OWNER)
            if holder == owner:
                return True
            if time.time() - guard.get(CLAIMED, 0) < STALE_AFTER_S or self.holds(str(holder), name):
                return False
            try:  # left behind by a crash: take it over, unless someone else just did
                self.table.update(key, {OWNER: owner, CLAIMED: time.time()}, expect={OWNER: holder})
                return True
            except ConditionFailed:
                continue
        return False

    def release(self, name: str, owner: str) -> None:
        """Free `name` if `owner` holds it (never another owner's guard)."""
        with contextlib.suppress(ConditionFailed):
            self.table.delete(self._key(name), expect={OWNER: owner})

    def holder(self, name: str) -> str | None:
        """The id of the owner holding `name`, or None."""
        guard = self.table.get(self._key(name))
        return None if guard is None else guard.get(OWNER)

    def _key(self, name: str) -> Item:
        return {self.table.spec.partition: GUARD_PREFIX + name}


def is_guard(item: Item) -> bool:
    """Whether an item read by key is a name guard rather than a record."""
    return OWNER in item
