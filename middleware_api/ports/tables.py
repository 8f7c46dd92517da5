"""The `Tables` port: keyed JSON items with secondary indexes, DynamoDB's model.

Both adapters (SQLite and DynamoDB) implement `Table`. Items are plain dicts
of JSON values; a table is declared by a `TableSpec` in `schema.py`.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

Item = dict[str, Any]
Where = Callable[[Item], bool]


@dataclass(frozen=True)
class Index:
    """A secondary index: items holding both attributes appear in it."""

    name: str
    partition: str
    sort: str


@dataclass(frozen=True)
class TableSpec:
    """A table's logical name, primary key and secondary indexes."""

    name: str
    partition: str
    sort: str | None = None
    indexes: tuple[Index, ...] = ()

    def key_of(self, item: Mapping[str, Any]) -> Item:
        """The primary key attributes of `item`."""
        names = [self.partition] + ([self.sort] if self.sort else [])
        return {name: item[name] for name in names}

    def index(self, name: str) -> Index:
        for index in self.indexes:
            if index.name == name:
                return index
        raise KeyError(f"table {self.name} has no index {name}")


@dataclass
class Page:
    """One page of a query; `cursor` is None on the last page."""

    items: list[Item]
    cursor: str | None


class ConditionFailed(Exception):
    """A conditional write found the item not as expected."""


class BadCursor(ValueError):
    """A pagination cursor that this table did not issue."""


class Table(Protocol):
    """Keyed items with conditional writes and paginated index queries."""

    spec: TableSpec

    def get(self, key: Mapping[str, Any]) -> Item | None:
        """The item with this primary key, or None."""

    def put(self, item: Item, *, must_not_exist: bool = False) -> None:
        """Write `item` whole; ConditionFailed if `must_not_exist` and it exists."""

    def update(
        self, key: Mapping[str, Any], changes: Mapping[str, Any], *, expect: Mapping[str, Any] | None = None
    ) -> Item:
        """Set top-level attributes (None removes one) on an existing item.

        ConditionFailed if the item is missing or an attribute in `expect`
        differs (an expected None means the attribute is absent).
        Returns the item after the update.
        """

    def delete(self, key: Mapping[str, Any], *, expect: Mapping[str, Any] | None = None) -> bool:
        """Delete the item; False if it was not there. ConditionFailed as in update."""

    def query(
        self,
        partition_value: Any,
        *,
        index: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        where: Where | None = None,
        descending: bool = False,
    ) -> Page:
        """Items of one partition (of the table or of `index`) in sort order.

        `limit` counts items after `where`: pages are never short unless they
        are the last. BadCursor if `cursor` was not issued by this query.
        """


def query_all(table: Table, partition_value: Any, **options: Any) -> Iterator[Item]:
    """Every item of a partition, page by page (for admin work, not hot paths)."""
    cursor = None
    while True:
        page = table.query(partition_value, cursor=cursor, limit=500, **options)
        yield from page.items
        if page.cursor is None:
            return
        cursor = page.cursor


def encode_cursor(key: Mapping[str, Any]) -> str:
    """An opaque, URL-safe cursor for a position in a query."""
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Item:
    """The position in a cursor made by `encode_cursor`; BadCursor if malformed."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError) as error:
        raise BadCursor("exclusive_start_key is not a valid cursor") from error
    if not isinstance(key, dict):
        raise BadCursor("exclusive_start_key is not a valid cursor")
    return key
