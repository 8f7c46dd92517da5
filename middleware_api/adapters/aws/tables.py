"""`Tables` on DynamoDB: one table per `TableSpec`, a global secondary index per `Index`.

Items are stored as DynamoDB maps of their JSON values; numbers travel as
`Decimal` and come back as `int` when integral, else `float`. Behaves like
`SqliteTable`: consistent reads of the table, conditional writes, and pages
that are only short when they are the last.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from middleware_api.ports.tables import (
    BadCursor,
    ConditionFailed,
    Item,
    Page,
    TableSpec,
    Where,
    decode_cursor,
    encode_cursor,
)
from middleware_api.schema import ALL_TABLES

NUMBER_ATTRIBUTES = frozenset({"created"})
"""Key and index-key attributes declared as numbers (`N`); every other key attribute is a string (`S`).

The one place that types key attributes: `create_tables`, `table_definition`,
and the key and cursor checks of `DynamoTable` all read it.
"""

_SERIALIZER = TypeSerializer()
_DESERIALIZER = TypeDeserializer()


def attribute_type(name: str) -> str:
    """The DynamoDB type (`N` or `S`) of a key or index-key attribute."""
    return "N" if name in NUMBER_ATTRIBUTES else "S"


def table_definition(spec: TableSpec, table_name: str) -> dict[str, Any]:
    """The `CreateTable` arguments of a spec: on-demand billing, every index projecting all attributes."""
    key_names = [spec.partition] + ([spec.sort] if spec.sort else [])
    key_schema = [{"AttributeName": spec.partition, "KeyType": "HASH"}]
    if spec.sort:
        key_schema.append({"AttributeName": spec.sort, "KeyType": "RANGE"})
    definition: dict[str, Any] = {"TableName": table_name, "KeySchema": key_schema, "BillingMode": "PAY_PER_REQUEST"}
    indexes = []
    for index in spec.indexes:
        key_names += [index.partition, index.sort]
        indexes.append(
            {
                "IndexName": index.name,
                "KeySchema": [
                    {"AttributeName": index.partition, "KeyType": "HASH"},
                    {"AttributeName": index.sort, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        )
    definition["AttributeDefinitions"] = [
        {"AttributeName": name, "AttributeType": attribute_type(name)} for name in dict.fromkeys(key_names)
    ]
    if indexes:
        definition["GlobalSecondaryIndexes"] = indexes
    return definition


def create_tables(client: Any, prefix: str, specs: Iterable[TableSpec] = ALL_TABLES) -> None:
    """Create the table `prefix + spec.name` of every spec unless it exists, then wait until all are active.

    `client` is a boto3 `dynamodb` client (or resource).
    """
    client = _low_level(client)
    existing: set[str] = set()
    for page in client.get_paginator("list_tables").paginate():
        existing.update(page["TableNames"])
    names = []
    for spec in specs:
        name = prefix + spec.name
        names.append(name)
        if name in existing:
            continue
        try:
            client.create_table(**table_definition(spec, name))
        except ClientError as error:
            if _code(error) != "ResourceInUseException":
                raise
    waiter = client.get_waiter("table_exists")
    for name in names:
        waiter.wait(TableName=name, WaiterConfig={"Delay": 2, "MaxAttempts": 150})


class DynamoTable:
    """A `Table` backed by one DynamoDB table made by `create_tables`."""

    def __init__(self, client: Any, table_name: str, spec: TableSpec) -> None:
        """`client` is a boto3 `dynamodb` client or resource; `table_name` the physical name."""
        self.client = _low_level(client)
        # a resource's client (de)serializes attribute values itself; a plain client needs them in wire form
        self._codec = _RESOURCE_CODEC if self.client is not client else _WIRE_CODEC
        self.table_name = table_name
        self.spec = spec
        self._key_names = [spec.partition] + ([spec.sort] if spec.sort else [])
        self._index_names = {name for index in spec.indexes for name in (index.partition, index.sort)}

    # -- Table ------------------------------------------------------------------

    def get(self, key: Mapping[str, Any]) -> Item | None:
        """The item with this primary key, or None (a strongly consistent read)."""
        response = self._call("get_item", Key=self._key(key), ConsistentRead=True)
        return self._codec.plain(response["Item"]) if "Item" in response else None

    def put(self, item: Item, *, must_not_exist: bool = False) -> None:
        """Write `item` whole; ConditionFailed if `must_not_exist` and it exists.

        ValueError if an index key attribute holds a value DynamoDB cannot index
        (wrong type, empty string, null): SqliteTable would leave it out of the index.
        """
        self._key(item)
        self._check_index_values({name: item[name] for name in self._index_names if name in item})
        options: dict[str, Any] = {}
        if must_not_exist:
            options = {
                "ConditionExpression": "attribute_not_exists(#p)",
                "ExpressionAttributeNames": {"#p": self.spec.partition},
            }
        self._call("put_item", Item={name: self._codec.encode(value) for name, value in item.items()}, **options)

    def update(
        self, key: Mapping[str, Any], changes: Mapping[str, Any], *, expect: Mapping[str, Any] | None = None
    ) -> Item:
        """Set top-level attributes (None removes one) on an existing item; returns the item after.

        ConditionFailed if the item is missing or an attribute in `expect`
        differs (an expected None means the attribute is absent). A key
        attribute may only be "changed" to its current value.
        """
        dynamo_key = self._key(key)
        changes = self._non_key_changes(key, changes)
        self._check_index_values({name: value for name, value in changes.items() if value is not None})
        if not changes:
            item = self.get(key)
            _check(item, expect, self.spec)
            assert item is not None
            return item
        expression = _Expression(self._codec)
        sets = [f"{expression.name(n)} = {expression.value(v)}" for n, v in changes.items() if v is not None]
        removes = [expression.name(n) for n, v in changes.items() if v is None]
        clauses = (["SET " + ", ".join(sets)] if sets else []) + (["REMOVE " + ", ".join(removes)] if removes else [])
        condition = self._condition(expression, expect)
        response = self._call(
            "update_item",
            Key=dynamo_key,
            UpdateExpression=" ".join(clauses),
            ConditionExpression=condition,
            ReturnValues="ALL_NEW",
            **expression.arguments(),
        )
        return self._codec.plain(response["Attributes"])

    def delete(self, key: Mapping[str, Any], *, expect: Mapping[str, Any] | None = None) -> bool:
        """Delete the item; False if it was not there. ConditionFailed as in update."""
        options: dict[str, Any] = {}
        if expect:
            expression = _Expression(self._codec)
            options = {"ConditionExpression": self._condition(expression, expect), **expression.arguments()}
        response = self._call("delete_item", Key=self._key(key), ReturnValues="ALL_OLD", **options)
        return "Attributes" in response

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
        are the last. The cursor holds the key (table and index attributes) of
        the last item returned; BadCursor if `cursor` was not issued by this query.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if index is None:
            partition_name, position_names = self.spec.partition, self._key_names
        else:
            spec_index = self.spec.index(index)
            partition_name = spec_index.partition
            position_names = list(dict.fromkeys([spec_index.partition, spec_index.sort, *self._key_names]))
        start = self._start_key(cursor, position_names, partition_name, partition_value) if cursor else None
        _scalar(partition_value)
        if not _valid_key_value(partition_name, partition_value):
            return Page([], None)  # no item can hold such a key value, as in SqliteTable
        expression = _Expression(self._codec)
        request: dict[str, Any] = {
            "KeyConditionExpression": f"{expression.name(partition_name)} = {expression.value(partition_value)}",
            "ScanIndexForward": not descending,
            "Limit": max(limit + 1, 100),
            **expression.arguments(),
        }
        if index is None:
            request["ConsistentRead"] = True
        else:
            request["IndexName"] = index
        matched: list[Item] = []
        while len(matched) <= limit:
            if start is not None:
                request["ExclusiveStartKey"] = start
            try:
                response = self.client.query(TableName=self.table_name, **request)
            except ClientError as error:
                if start is not None and _code(error) == "ValidationException":
                    raise BadCursor("exclusive_start_key is not a valid cursor") from error
                raise _translated(error) from error
            for raw in response["Items"]:
                item = self._codec.plain(raw)
                if where is None or where(item):
                    matched.append(item)
                    if len(matched) > limit:
                        break
            start = response.get("LastEvaluatedKey")
            if start is None:
                break
        if len(matched) > limit:
            last = matched[limit - 1]
            return Page(matched[:limit], encode_cursor({name: last[name] for name in position_names}))
        return Page(matched, None)

    # -- helpers ----------------------------------------------------------------

    def _call(self, operation: str, **arguments: Any) -> dict[str, Any]:
        try:
            return getattr(self.client, operation)(TableName=self.table_name, **arguments)
        except ClientError as error:
            raise _translated(error, self.spec) from error

    def _key(self, key: Mapping[str, Any]) -> dict[str, Any]:
        values = {}
        for name in self._key_names:
            if name not in key:
                raise ValueError(f"{self.spec.name}: key attribute '{name}' missing")
            _scalar(key[name])
            if not _valid_key_value(name, key[name]):
                kind = "a number" if attribute_type(name) == "N" else "a non-empty string"
                raise ValueError(f"{self.spec.name}: key attribute '{name}' must be {kind}")
            values[name] = self._codec.encode(key[name])
        return values

    def _check_index_values(self, values: Mapping[str, Any]) -> None:
        for name, value in values.items():
            if name in self._index_names and not _valid_key_value(name, value):
                kind = "a number" if attribute_type(name) == "N" else "a non-empty string"
                raise ValueError(f"{self.spec.name}: index key attribute '{name}' must be {kind}, not {value!r}")

    def _non_key_changes(self, key: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
        kept = {}
        for name, value in changes.items():
            if name in self._key_names:
                if value != key[name]:
                    raise ValueError(f"{self.spec.name}: key attribute '{name}' cannot change")
                continue
            kept[name] = value
        return kept

    def _start_key(self, cursor: str, names: list[str], partition_name: str, partition_value: Any) -> dict[str, Any]:
        position = decode_cursor(cursor)
        if set(position) != set(names) or position[partition_name] != partition_value:
            raise BadCursor("exclusive_start_key is not a valid cursor")
        if not all(_valid_key_value(name, position[name]) for name in names):
            raise BadCursor("exclusive_start_key is not a valid cursor")
        return {name: self._codec.encode(position[name]) for name in names}

    def _condition(self, expression: _Expression, expect: Mapping[str, Any] | None) -> str:
        parts = [f"attribute_exists({expression.name(self.spec.partition)})"]
        for name, value in (expect or {}).items():
            placeholder = expression.name(name)
            if value is None:
                parts.append(f"(attribute_not_exists({placeholder}) OR {placeholder} = {expression.value(None)})")
            else:
                parts.append(f"{placeholder} = {expression.value(value)}")
        return " AND ".join(parts)


class _Expression:
    """Placeholders for the names and values of one request's expressions."""

    def __init__(self, codec: _Codec) -> None:
        self.codec = codec
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}
        self._placeholders: dict[str, str] = {}

    def name(self, attribute: str) -> str:
        if attribute not in self._placeholders:
            placeholder = f"#n{len(self._placeholders)}"
            self._placeholders[attribute] = placeholder
            self.names[placeholder] = attribute
        return self._placeholders[attribute]

    def value(self, value: Any) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = self.codec.encode(value)
        return placeholder

    def arguments(self) -> dict[str, Any]:
        arguments: dict[str, Any] = {}
        if self.names:
            arguments["ExpressionAttributeNames"] = self.names
        if self.values:
            arguments["ExpressionAttributeValues"] = self.values
        return arguments


def _low_level(client: Any) -> Any:
    """The low-level client of a boto3 resource, or the client itself."""
    return getattr(getattr(client, "meta", None), "client", client)


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _translated(error: ClientError, spec: TableSpec | None = None) -> Exception:
    code = _code(error)
    message = error.response.get("Error", {}).get("Message", str(error))
    prefix = f"{spec.name}: " if spec else ""
    if code == "ConditionalCheckFailedException":
        return ConditionFailed(f"{prefix}item not as expected")
    if code == "ValidationException":
        return ValueError(f"{prefix}{message}")
    return error


def _check(item: Item | None, expect: Mapping[str, Any] | None, spec: TableSpec) -> None:
    if item is None:
        raise ConditionFailed(f"{spec.name}: item not found")
    for name, value in (expect or {}).items():
        if item.get(name) != value:
            raise ConditionFailed(f"{spec.name}: {name} is not {value!r}")


def _scalar(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"key values must be strings or numbers, not {type(value).__name__}")


def _valid_key_value(name: str, value: Any) -> bool:
    if attribute_type(name) == "N":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, str) and value != ""


def _to_dynamo(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"DynamoDB cannot store the number {value}")
        return Decimal(repr(value))
    if isinstance(value, Mapping):
        return {str(name): _to_dynamo(inner) for name, inner in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_dynamo(inner) for inner in value]
    return value


def _from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {name: _from_dynamo(inner) for name, inner in value.items()}
    if isinstance(value, (list, set)):
        return [_from_dynamo(inner) for inner in value]
    return value


class _Codec:
    """Plain JSON values to request attribute values and back, on the wire or through a resource's client."""

    def __init__(self, wire: bool) -> None:
        self.wire = wire

    def encode(self, value: Any) -> Any:
        value = _to_dynamo(value)
        return _SERIALIZER.serialize(value) if self.wire else value

    def plain(self, attributes: Mapping[str, Any]) -> Item:
        if self.wire:
            return {name: _from_dynamo(_DESERIALIZER.deserialize(value)) for name, value in attributes.items()}
        return {name: _from_dynamo(value) for name, value in attributes.items()}


_WIRE_CODEC = _Codec(wire=True)
_RESOURCE_CODEC = _Codec(wire=False)
