"""`Tables` on SQLite (WAL): one SQL table per `TableSpec`, items as JSON, indexes as columns.

Each spec becomes `t_{name}(pk, sk, doc, i_{index}_p, i_{index}_s...)` with an
SQL index per secondary index, so every query is an index range read in key
order (keyset pagination), never a scan.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

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

_SCALARS = (str, int, float)


class SqliteDatabase:
    """One SQLite file holding every table; a connection per thread."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self.connection().execute("PRAGMA journal_mode=WAL")

    def connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA busy_timeout=30000")
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def table(self, spec: TableSpec) -> SqliteTable:
        return SqliteTable(self, spec)

    def close(self) -> None:
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()
        self._local = threading.local()


class SqliteTable:
    """A `Table` backed by one SQL table."""

    def __init__(self, database: SqliteDatabase, spec: TableSpec) -> None:
        self.database = database
        self.spec = spec
        self._sql_name = f"t_{spec.name}"
        self._create()

    # -- schema -----------------------------------------------------------------

    def _index_columns(self) -> list[str]:
        return [column for index in self.spec.indexes for column in (f"i_{index.name}_p", f"i_{index.name}_s")]

    def _create(self) -> None:
        db = self.database.connection()
        db.execute(
            f"CREATE TABLE IF NOT EXISTS {self._sql_name}"
            " (pk NOT NULL, sk NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (pk, sk))"
        )
        existing = {row[1] for row in db.execute(f"PRAGMA table_info({self._sql_name})")}
        added = [column for column in self._index_columns() if column not in existing]
        for column in added:
            db.execute(f"ALTER TABLE {self._sql_name} ADD COLUMN {column}")
        for index in self.spec.indexes:
            db.execute(
                f"CREATE INDEX IF NOT EXISTS {self._sql_name}_{index.name} ON {self._sql_name}"
                f" (i_{index.name}_p, i_{index.name}_s, pk, sk)"
            )
        if added:  # an index added in a later version: fill it from the stored items
            rows = db.execute(f"SELECT doc FROM {self._sql_name}").fetchall()
            with _transaction(db):
                for (doc,) in rows:
                    self._write(db, json.loads(doc))

    # -- rows -------------------------------------------------------------------

    def _row_key(self, key: Mapping[str, Any]) -> tuple[Any, Any]:
        try:
            partition = key[self.spec.partition]
            sort = key[self.spec.sort] if self.spec.sort else ""
        except KeyError as error:
            raise ValueError(f"{self.spec.name}: key attribute {error} missing") from error
        return _scalar(partition), _scalar(sort)

    def _index_values(self, item: Mapping[str, Any]) -> list[Any]:
        values: list[Any] = []
        for index in self.spec.indexes:
            partition, sort = item.get(index.partition), item.get(index.sort)
            if isinstance(partition, _SCALARS) and isinstance(sort, _SCALARS):
                values += [partition, sort]
            else:  # like a DynamoDB GSI: an item lacking an index attribute is not in it
                values += [None, None]
        return values

    def _write(self, db: sqlite3.Connection, item: Mapping[str, Any]) -> None:
        columns = ["pk", "sk", "doc", *self._index_columns()]
        values = [*self._row_key(item), json.dumps(item, ensure_ascii=False), *self._index_values(item)]
        marks = ", ".join("?" for _ in columns)
        db.execute(f"INSERT OR REPLACE INTO {self._sql_name} ({', '.join(columns)}) VALUES ({marks})", values)

    def _read(self, db: sqlite3.Connection, key: Mapping[str, Any]) -> Item | None:
        row = db.execute(f"SELECT doc FROM {self._sql_name} WHERE pk = ? AND sk = ?", self._row_key(key)).fetchone()
        return json.loads(row[0]) if row else None

    # -- Table ------------------------------------------------------------------

    def get(self, key: Mapping[str, Any]) -> Item | None:
        return self._read(self.database.connection(), key)

    def put(self, item: Item, *, must_not_exist: bool = False) -> None:
        db = self.database.connection()
        with _transaction(db):
            if must_not_exist and self._read(db, item) is not None:
                raise ConditionFailed(f"{self.spec.name}: item exists")
            self._write(db, item)

    def update(
        self, key: Mapping[str, Any], changes: Mapping[str, Any], *, expect: Mapping[str, Any] | None = None
    ) -> Item:
        db = self.database.connection()
        with _transaction(db):
            item = self._read(db, key)
            _check(item, expect, self.spec)
            assert item is not None
            for name, value in changes.items():
                if value is None:
                    item.pop(name, None)
                else:
                    item[name] = value
            self._write(db, item)
            return item

    def delete(self, key: Mapping[str, Any], *, expect: Mapping[str, Any] | None = None) -> bool:
        db = self.database.connection()
        with _transaction(db):
            item = self._read(db, key)
            if item is None and not expect:
                return False
            _check(item, expect, self.spec)
            db.execute(f"DELETE FROM {self._sql_name} WHERE pk = ? AND sk = ?", self._row_key(key))
            return True

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
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if index is None:
            partition_column, sort_column = "pk", "sk"
        else:
            self.spec.index(index)
            partition_column, sort_column = f"i_{index}_p", f"i_{index}_s"
        # a cursor names the query it came from, so one of another list or partition is refused as on DynamoDB
        origin = [self.spec.name, index or "", partition_value]
        position = _decode_position(cursor, origin) if cursor else None
        order = "DESC" if descending else "ASC"
        beyond = "<" if descending else ">"
        batch = max(limit + 1, 100)
        matched: list[tuple[Item, tuple[Any, Any, Any]]] = []
        db = self.database.connection()
        while len(matched) <= limit:
            sql = f"SELECT doc, {sort_column}, pk, sk FROM {self._sql_name} WHERE {partition_column} = ?"
            params: list[Any] = [_scalar(partition_value)]
            if position is not None:
                sql += f" AND ({sort_column}, pk, sk) {beyond} (?, ?, ?)"
                params += list(position)
            sql += f" ORDER BY {sort_column} {order}, pk {order}, sk {order} LIMIT ?"
            rows = db.execute(sql, [*params, batch]).fetchall()
            for doc, sort_value, pk, sk in rows:
                item = json.loads(doc)
                position = (sort_value, pk, sk)
                if where is None or where(item):
                    matched.append((item, position))
                    if len(matched) > limit:
                        break
            if len(rows) < batch:
                break
        if len(matched) > limit:
            last_position = matched[limit - 1][1]
            return Page(
                [item for item, _ in matched[:limit]],
                encode_cursor({**dict(zip("spk", last_position, strict=True)), "q": origin}),
            )
        return Page([item for item, _ in matched], None)


class _transaction:
    """BEGIN IMMEDIATE … COMMIT (ROLLBACK on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if kind else "COMMIT")


def _check(item: Item | None, expect: Mapping[str, Any] | None, spec: TableSpec) -> None:
    if item is None:
        raise ConditionFailed(f"{spec.name}: item not found")
    for name, value in (expect or {}).items():
        if item.get(name) != value:
            raise ConditionFailed(f"{spec.name}: {name} is not {value!r}")


def _scalar(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, _SCALARS):
        raise ValueError(f"key values must be strings or numbers, not {type(value).__name__}")
    return value


def _decode_position(cursor: str, origin: list[Any]) -> tuple[Any, Any, Any]:
    position = decode_cursor(cursor)
    values: Iterable[Any] = (position.get("s"), position.get("p"), position.get("k"))
    values = tuple(values)
    scalars = all(isinstance(value, _SCALARS) and not isinstance(value, bool) for value in values)
    if position.get("q") != origin or not scalars:
        raise BadCursor("exclusive_start_key is not a valid cursor")
    return values  # type: ignore[return-value]
