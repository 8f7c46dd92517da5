"""The `Table` contract, run against both adapters: SQLite and DynamoDB (on moto, through a client and a resource)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from middleware_api.adapters.aws.tables import DynamoTable, attribute_type, create_tables
from middleware_api.ports.tables import BadCursor, ConditionFailed, Table, TableSpec, encode_cursor, query_all
from middleware_api.schema import ALL_TABLES, CHECKPOINTS, LISTING, USERS

MakeTable = Callable[[TableSpec], Table]


@pytest.fixture
def users(make_table: MakeTable) -> Table:
    return make_table(USERS)


@pytest.fixture
def checkpoints(make_table: MakeTable) -> Table:
    return make_table(CHECKPOINTS)


def user(sort_key: str, /, **extra: object) -> dict:
    return {"kind": "user", "sort_key": sort_key, **extra}


def fill(table: Table, count: int) -> list[str]:
    names = [f"u{number:03d}" for number in range(count)]
    for number, name in enumerate(names):
        table.put(user(name, number=number))
    return names


def pages(table: Table, partition: str, limit: int, **options: object) -> list[list[dict]]:
    result, cursor = [], None
    while True:
        page = table.query(partition, limit=limit, cursor=cursor, **options)
        result.append(page.items)
        if page.cursor is None:
            return result
        cursor = page.cursor


# -- get / put -----------------------------------------------------------------


def test_get_missing_is_none(users: Table) -> None:
    assert users.get({"kind": "user", "sort_key": "nobody"}) is None


def test_put_then_get_round_trips_json_values(users: Table) -> None:
    item = user(
        "alice",
        ratio=0.1,
        big=12345678901234,
        negative=-2.5,
        flag=True,
        off=False,
        nothing=None,
        empty="",
        roles=["IT Operator", "byoc"],
        nested={"a": [1, 2.25, "x", None, {"b": [], "c": {}}], "deep": {"list": [[1, 2], [3.5]]}},
    )
    users.put(item)
    got = users.get({"kind": "user", "sort_key": "alice"})
    assert got == item
    assert isinstance(got["ratio"], float) and isinstance(got["big"], int) and got["flag"] is True
    assert isinstance(got["nested"]["a"][0], int) and isinstance(got["nested"]["a"][1], float)


def test_put_replaces_the_whole_item(users: Table) -> None:
    users.put(user("alice", a=1, b=2))
    users.put(user("alice", a=3))
    assert users.get(user("alice")) == user("alice", a=3)


def test_put_must_not_exist(users: Table) -> None:
    users.put(user("alice", a=1), must_not_exist=True)
    with pytest.raises(ConditionFailed):
        users.put(user("alice", a=2), must_not_exist=True)
    assert users.get(user("alice")) == user("alice", a=1)


def test_key_attribute_missing_is_a_value_error(users: Table) -> None:
    with pytest.raises(ValueError):
        users.get({"kind": "user"})
    with pytest.raises(ValueError):
        users.put({"sort_key": "x"})


# -- update --------------------------------------------------------------------


def test_update_sets_and_removes(users: Table) -> None:
    users.put(user("alice", a=1, b=2))
    after = users.update(user("alice"), {"a": 10, "c": {"x": [1.5]}, "b": None, "absent": None})
    assert after == user("alice", a=10, c={"x": [1.5]})
    assert users.get(user("alice")) == after


def test_update_names_that_are_reserved_or_odd(users: Table) -> None:
    users.put(user("alice"))
    changes = {"name": "n", "status": "s", "my attr": 1, "a-b.c": 2, "#x": 3, ":y": 4}
    assert users.update(user("alice"), changes, expect={"status": None, "my attr": None}) == user("alice", **changes)
    assert users.update(user("alice"), {"name": None}, expect={"status": "s", "a-b.c": 2}) == user(
        "alice", **{k: v for k, v in changes.items() if k != "name"}
    )


def test_update_expect(users: Table) -> None:
    users.put(user("alice", status="pending", count=1, tags=["a"]))
    after = users.update(user("alice"), {"status": "done"}, expect={"status": "pending", "count": 1, "tags": ["a"]})
    assert after["status"] == "done"
    with pytest.raises(ConditionFailed):
        users.update(user("alice"), {"status": "again"}, expect={"status": "pending"})
    with pytest.raises(ConditionFailed):
        users.update(user("alice"), {"status": "again"}, expect={"count": 2})
    assert users.get(user("alice"))["status"] == "done"


def test_update_expect_none_means_absent(users: Table) -> None:
    users.put(user("alice", owner="bob"))
    assert users.update(user("alice"), {"lock": "me"}, expect={"lock": None})["lock"] == "me"
    with pytest.raises(ConditionFailed):
        users.update(user("alice"), {"lock": "you"}, expect={"lock": None})
    assert users.get(user("alice"))["lock"] == "me"


def test_update_missing_item_fails(users: Table) -> None:
    with pytest.raises(ConditionFailed):
        users.update(user("ghost"), {"a": 1})
    with pytest.raises(ConditionFailed):
        users.update(user("ghost"), {})
    assert users.get(user("ghost")) is None


def test_update_without_changes_checks_and_returns_the_item(users: Table) -> None:
    users.put(user("alice", a=1))
    assert users.update(user("alice"), {}, expect={"a": 1}) == user("alice", a=1)
    with pytest.raises(ConditionFailed):
        users.update(user("alice"), {}, expect={"a": 2})


# -- delete --------------------------------------------------------------------


def test_delete(users: Table) -> None:
    users.put(user("alice"))
    assert users.delete(user("alice")) is True
    assert users.get(user("alice")) is None
    assert users.delete(user("alice")) is False


def test_conditional_delete(users: Table) -> None:
    users.put(user("alice", status="done"))
    with pytest.raises(ConditionFailed):
        users.delete(user("alice"), expect={"status": "pending"})
    assert users.get(user("alice")) is not None
    assert users.delete(user("alice"), expect={"status": "done", "lock": None}) is True
    with pytest.raises(ConditionFailed):
        users.delete(user("alice"), expect={"status": "done"})


# -- query ---------------------------------------------------------------------


def test_query_table_partition_in_sort_order(users: Table) -> None:
    for name in ["carol", "alice", "bob"]:
        users.put(user(name))
    users.put({"kind": "role", "sort_key": "admin"})
    ascending = users.query("user")
    assert [item["sort_key"] for item in ascending.items] == ["alice", "bob", "carol"]
    assert ascending.cursor is None
    descending = users.query("user", descending=True)
    assert [item["sort_key"] for item in descending.items] == ["carol", "bob", "alice"]
    assert [item["sort_key"] for item in users.query("role").items] == ["admin"]
    assert users.query("token") == type(ascending)([], None)


def test_query_index_in_numeric_order_and_sparse(checkpoints: Table) -> None:
    for number, created in enumerate([30.5, 2, 100, 1e9]):
        checkpoints.put({"id": f"c{number}", "listing": LISTING, "created": created, "name_key": f"n{number % 2}"})
    checkpoints.put({"id": "no-created", "listing": LISTING})
    checkpoints.put({"id": "no-listing", "created": 5})
    ascending = checkpoints.query(LISTING, index="by_created")
    assert [item["id"] for item in ascending.items] == ["c1", "c0", "c2", "c3"]
    assert ascending.items[0] == {"id": "c1", "listing": LISTING, "created": 2, "name_key": "n1"}
    descending = checkpoints.query(LISTING, index="by_created", descending=True)
    assert [item["id"] for item in descending.items] == ["c3", "c2", "c0", "c1"]
    assert [item["id"] for item in checkpoints.query("n0", index="by_name").items] == ["c0", "c2"]


def test_index_follows_updates(checkpoints: Table) -> None:
    checkpoints.put({"id": "c", "created": 1})
    assert checkpoints.query(LISTING, index="by_created").items == []
    checkpoints.update({"id": "c"}, {"listing": LISTING})
    assert [item["id"] for item in checkpoints.query(LISTING, index="by_created").items] == ["c"]
    checkpoints.update({"id": "c"}, {"listing": None})
    assert checkpoints.query(LISTING, index="by_created").items == []


@pytest.mark.parametrize("descending", [False, True])
def test_pagination_covers_everything_once(users: Table, descending: bool) -> None:
    names = fill(users, 25)
    result = pages(users, "user", 10, descending=descending)
    assert [len(page) for page in result] == [10, 10, 5]
    assert [item["sort_key"] for page in result for item in page] == sorted(names, reverse=descending)


def test_pagination_exact_multiple_has_no_empty_last_page(users: Table) -> None:
    fill(users, 20)
    assert [len(page) for page in pages(users, "user", 10)] == [10, 10]


@pytest.mark.parametrize("descending", [False, True])
def test_pagination_on_an_index(checkpoints: Table, descending: bool) -> None:
    for number in range(25):
        checkpoints.put({"id": f"c{number:02d}", "listing": LISTING, "created": 1000 - number * 0.5})
    result = pages(checkpoints, LISTING, 10, index="by_created", descending=descending)
    assert [len(page) for page in result] == [10, 10, 5]
    created = [item["created"] for page in result for item in page]
    assert created == sorted(created, reverse=descending) and len(set(created)) == 25


def test_pagination_on_an_index_with_equal_sort_values(checkpoints: Table) -> None:
    for number in range(25):
        checkpoints.put({"id": f"c{number:02d}", "listing": LISTING, "created": number // 4})
    result = pages(checkpoints, LISTING, 10, index="by_created")
    assert [len(page) for page in result] == [10, 10, 5]
    ids = [item["id"] for page in result for item in page]
    assert sorted(ids) == [f"c{number:02d}" for number in range(25)]
    created = [item["created"] for page in result for item in page]
    assert created == sorted(created)


def test_where_counts_filtered_items(users: Table) -> None:
    fill(users, 25)
    result = pages(users, "user", 4, where=lambda item: item["number"] % 2 == 0)
    assert [len(page) for page in result] == [4, 4, 4, 1]
    assert [item["number"] for page in result for item in page] == list(range(0, 25, 2))


def test_where_across_read_batches(users: Table) -> None:
    fill(users, 250)
    result = pages(users, "user", 3, where=lambda item: item["number"] % 100 == 7)
    assert [[item["number"] for item in page] for page in result] == [[7, 107, 207]]
    result = pages(users, "user", 2, where=lambda item: item["number"] % 100 == 7)
    assert [[item["number"] for item in page] for page in result] == [[7, 107], [207]]


def test_where_matching_nothing(users: Table) -> None:
    fill(users, 25)
    page = users.query("user", limit=10, where=lambda item: False)
    assert page.items == [] and page.cursor is None


@pytest.mark.parametrize("cursor", ["!!!not-base64!!!", encode_cursor({"x": 1}), "W10", encode_cursor({})])
def test_garbage_cursor(users: Table, cursor: str) -> None:
    fill(users, 3)
    with pytest.raises(BadCursor):
        users.query("user", cursor=cursor)


def test_limit_must_be_positive(users: Table) -> None:
    with pytest.raises(ValueError):
        users.query("user", limit=0)


def test_unknown_index(users: Table) -> None:
    with pytest.raises(KeyError):
        users.query("x", index="by_nothing")


def test_query_all(users: Table) -> None:
    names = fill(users, 25)
    users.put({"kind": "role", "sort_key": "r"})
    assert [item["sort_key"] for item in query_all(users, "user")] == names
    assert [item["sort_key"] for item in query_all(users, "user", descending=True)] == names[::-1]


def test_expect_none_matches_a_stored_null(users: Table) -> None:
    users.put(user("alice", lock=None))
    assert users.update(user("alice"), {"lock": "me"}, expect={"lock": None})["lock"] == "me"


# -- DynamoDB specifics --------------------------------------------------------


def test_create_tables_types_keys_and_is_idempotent(dynamodb: Any) -> None:
    create_tables(dynamodb, "p-")
    create_tables(dynamodb, "p-")
    names = dynamodb.list_tables()["TableNames"]
    assert sorted(names) == sorted(f"p-{spec.name}" for spec in ALL_TABLES)
    described = dynamodb.describe_table(TableName="p-checkpoints")["Table"]
    types = {entry["AttributeName"]: entry["AttributeType"] for entry in described["AttributeDefinitions"]}
    assert types == {"id": "S", "listing": "S", "created": "N", "name_key": "S", "checkpoint_status": "S"}
    assert described["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert {index["Projection"]["ProjectionType"] for index in described["GlobalSecondaryIndexes"]} == {"ALL"}
    assert attribute_type("created") == "N" and attribute_type("startTime") == "S"


def test_dynamo_cursor_is_bound_to_its_query(dynamodb: Any) -> None:
    create_tables(dynamodb, "c-", [USERS, CHECKPOINTS])
    users = DynamoTable(dynamodb, "c-users", USERS)
    fill(users, 5)
    cursor = users.query("user", limit=2).cursor
    assert cursor is not None
    assert [item["sort_key"] for item in users.query("user", limit=2, cursor=cursor).items] == ["u002", "u003"]
    with pytest.raises(BadCursor):
        users.query("role", cursor=cursor)
    with pytest.raises(BadCursor):
        users.query("user", index="by_owner", cursor=cursor)
    with pytest.raises(BadCursor):
        users.query("user", cursor=encode_cursor({"kind": "user", "sort_key": 5}))
    checkpoints = DynamoTable(dynamodb, "c-checkpoints", CHECKPOINTS)
    with pytest.raises(ValueError):
        checkpoints.put({"id": "c", "listing": LISTING, "created": "yesterday"})
    with pytest.raises(ValueError):
        checkpoints.update({"id": "x"}, {"id": "y"})
