"""The store's hottest statements on SQLite, through the driver's own cursor.

Every task run appends its events, updates its execution row and records lineage. Each
``Connection.execute`` of a prebuilt SQLAlchemy statement still costs 30-50 µs of
parameter processing and result set-up, several times what SQLite takes to run it, and
an inline task's whole budget is a few hundred µs. These functions run the same
statements on the same connection, inside the caller's transaction, with JSON
serialized as SQLAlchemy's ``JSON`` type does it (``json.dumps``), so what they write
reads back through the tables in ``schema.py`` like any other row.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import sqlalchemy as sa

from .schema import artifacts, cache_entries, events, executions, lineage


def _columns(table: sa.Table, *skip: str) -> tuple[str, ...]:
    """The table's columns in schema order, less the generated ones: the statements
    below follow ``schema.py`` rather than restating it."""
    return tuple(c.name for c in table.columns if c.name not in skip)


def _insert(table: sa.Table, columns: tuple[str, ...]) -> str:
    names = ", ".join(f'"{c}"' for c in columns)
    return f"INSERT INTO {table.name} ({names}) VALUES ({', '.join('?' * len(columns))})"


_EXECUTION_COLUMNS = _columns(executions)
_INSERT_EXECUTION = _insert(executions, _EXECUTION_COLUMNS)
#: The event tuples callers pass are in this order (the table's, without ``seq``).
_EVENT_COLUMNS = _columns(events, "seq")
_INSERT_EVENT = _insert(events, _EVENT_COLUMNS)
_UPDATE_EXECUTION = "UPDATE executions SET status = ?, ended_at = ?, last_seq = ? WHERE id = ?"
_LINEAGE_COLUMNS = _columns(lineage, "id", "inputs", "created_at")
_INSERT_LINEAGE = _insert(lineage, (*_LINEAGE_COLUMNS, "inputs", "created_at"))
_lineage_plain = itemgetter(*_LINEAGE_COLUMNS)  # (a map inserts a row per element)


def applies(conn: sa.Connection) -> bool:
    return conn.dialect.name == "sqlite"


def append(
    conn: sa.Connection,
    execution_row: dict[str, Any] | None,
    events: Sequence[tuple[str, str, int, str, float, Any]],
    projection: tuple[str, float | None, str],
) -> list[int]:
    """Insert the execution row (when new) and the events; return the events' ``seq``.

    The caller's transaction holds SQLite's write lock from its first insert on, so the
    rows of one ``executemany`` take consecutive rowids ending at ``last_insert_rowid()``
    (events are never deleted, and ``seq`` is the rowid). ``projection`` is the
    execution's (status, ended_at, id), written with the last ``seq``.
    """
    cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if execution_row is not None:
            cur.execute(_INSERT_EXECUTION, tuple(execution_row[c] for c in _EXECUTION_COLUMNS))
        cur.executemany(
            _INSERT_EVENT, [(e, n, a, k, ts, json.dumps(p)) for e, n, a, k, ts, p in events]
        )
        last = cur.execute("SELECT last_insert_rowid()").fetchone()[0]
        status, ended_at, execution_id = projection
        cur.execute(_UPDATE_EXECUTION, (status, ended_at, last, execution_id))
    finally:
        cur.close()
    return list(range(last - len(events) + 1, last + 1))


def put_lineage(conn: sa.Connection, rows: list[dict[str, Any]], now: float) -> None:
    cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cur.executemany(
            _INSERT_LINEAGE,
            [(*_lineage_plain(r), json.dumps(r["inputs"]), r.get("created_at", now)) for r in rows],
        )
    finally:
        cur.close()


_CACHE_COLUMNS = _columns(cache_entries)
_SELECT_CACHE = (
    "SELECT "
    + ", ".join(f'"{c}"' for c in _CACHE_COLUMNS)
    + " FROM cache_entries WHERE key = ? AND project = ? AND domain = ?"
)
_JSON_COLUMNS = frozenset(c.name for c in cache_entries.columns if isinstance(c.type, sa.JSON))


def cache_get(conn: sa.Connection, key: str, project: str, domain: str) -> dict[str, Any] | None:
    """A cache entry as ``Store.cache_get`` returns it (JSON columns decoded). On a
    connection outside a transaction (the reading connection between ``read`` blocks)
    the one statement is its own snapshot; inside one, it reads in it."""
    cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        row = cur.execute(_SELECT_CACHE, (key, project, domain)).fetchone()
    finally:
        cur.close()
    if row is None:
        return None
    return {
        c: (json.loads(v) if c in _JSON_COLUMNS and v is not None else v)
        for c, v in zip(_CACHE_COLUMNS, row)
    }


_ARTIFACT_COLUMNS = _columns(artifacts)
_INSERT_ARTIFACTS = _insert(artifacts, _ARTIFACT_COLUMNS) + " ON CONFLICT DO NOTHING"


def put_artifacts(conn: sa.Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert artifact rows, leaving rows already there as they are (an artifact's row
    never changes: its id fixes its value)."""
    cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cur.executemany(_INSERT_ARTIFACTS, [tuple(r[c] for c in _ARTIFACT_COLUMNS) for r in rows])
    finally:
        cur.close()


_CACHE_KEY = ("key", "project", "domain")
#: The upsert's columns: plain ones, then JSON ones, then ``created_at`` (the row tuples
#: are built in that order: ``itemgetter`` and three ``json.dumps``, no per-column test).
_CACHE_PLAIN = tuple(c for c in _CACHE_COLUMNS if c not in _JSON_COLUMNS and c != "created_at")
_CACHE_JSON = tuple(c for c in _CACHE_COLUMNS if c in _JSON_COLUMNS)
_UPSERT_CACHE = (
    _insert(cache_entries, (*_CACHE_PLAIN, *_CACHE_JSON, "created_at"))
    + f" ON CONFLICT ({', '.join(_CACHE_KEY)}) DO UPDATE SET "
    + ", ".join(f'"{c}" = excluded."{c}"' for c in _CACHE_COLUMNS if c not in _CACHE_KEY)
)
_cache_plain = itemgetter(*_CACHE_PLAIN)
#: JSON texts that decode to a new empty value, without the decoder's set-up.
_EMPTY: dict[str, Any] = {"{}": dict, "[]": list, "null": lambda: None}


def cache_put_many(conn: sa.Connection, rows: Sequence[dict[str, Any]], now: float) -> None:
    """Insert or replace cache entries (``Store.cache_put_many``'s statement)."""
    dumps = json.dumps
    cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cur.executemany(
            _UPSERT_CACHE,
            [(*_cache_plain(r), *[dumps(r.get(c)) for c in _CACHE_JSON], now) for r in rows],
        )
    finally:
        cur.close()


def cache_get_many(
    conn: sa.Connection, keys: Sequence[str], project: str, domain: str
) -> dict[str, dict[str, Any]]:
    """Entries for ``keys`` (JSON columns decoded), in one statement per 500 keys."""
    found: dict[str, dict[str, Any]] = {}
    cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            query = _SELECT_CACHE.replace("key = ?", f"key IN ({', '.join('?' * len(chunk))})")
            for row in cur.execute(query, (*chunk, project, domain)):
                entry = dict(zip(_CACHE_COLUMNS, row))
                for c in _CACHE_JSON:
                    v = entry[c]
                    if v is not None:
                        make = _EMPTY.get(v)  # most entries have no references or display
                        entry[c] = make() if make is not None else json.loads(v)
                found[entry["key"]] = entry
    finally:
        cur.close()
    return found
