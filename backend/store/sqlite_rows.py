"""The store's task-run statements on SQLite, through the driver's own cursor.

Every task run appends its events, updates its execution row, records its task and
input artifacts (insert-or-ignore) and lineage, and a cache hit reads one cache entry.
Each ``Connection.execute`` of a prebuilt SQLAlchemy statement still costs 30-50 µs of
parameter processing and result set-up, several times what SQLite takes to run it, and
an inline task's whole budget is a few hundred µs; and a fresh kernel whose tasks are
all cache hits need not import SQLAlchemy at all (``repo.Store.transaction``). These
functions run the same statements inside the caller's transaction, on either a
SQLAlchemy ``Connection`` or the driver's ``sqlite3.Connection``, with JSON serialized
as SQLAlchemy's ``JSON`` type does it (``json.dumps``), so what they write reads back
through the tables in ``schema.py`` like any other row.

The statements name the columns the database itself has (``PRAGMA table_info``, read
once per process): the store only runs them on a database at the schema's head, whose
tables are ``schema.py``'s (a test holds the two equal). Importing ``schema.py`` here
would import SQLAlchemy.
"""

from __future__ import annotations

import json
import json.encoder
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import chain
from operator import attrgetter, itemgetter
from typing import Any


def dbapi(conn: Any) -> sqlite3.Connection | None:
    """The driver connection under ``conn`` when it is SQLite's, else None."""
    if isinstance(conn, sqlite3.Connection):
        return conn
    if conn.dialect.name == "sqlite":
        return conn.connection.dbapi_connection  # type: ignore[no-any-return]
    return None


def applies(conn: Any) -> bool:
    return dbapi(conn) is not None


#: JSON texts that decode to a new empty value, without the decoder's set-up (most
#: cache entries have no references or display).
_EMPTY: dict[str, Any] = {"{}": dict, "[]": list, "null": lambda: None}


def _loads(text: str | None) -> Any:
    """A JSON column's value, as SQLAlchemy's ``JSON`` type reads it (NULL stays None)."""
    if text is None:
        return None
    make = _EMPTY.get(text)
    return make() if make is not None else json.loads(text)


@dataclass(frozen=True)
class Table:
    """A table's columns as the database declares them."""

    name: str
    columns: tuple[str, ...]
    json: frozenset[str]

    def insert(self, columns: Sequence[str], conflict: str = "", rows: int = 1) -> str:
        """``INSERT`` of ``rows`` rows of ``columns`` (one ``VALUES`` group each)."""
        kind = "insert" + conflict if rows == 1 else f"insert{conflict}*{rows}"
        key = (self.name, tuple(columns), kind)
        sql = _statements.get(key)
        if sql is None:
            names = ", ".join(f'"{c}"' for c in columns)
            marks = "(" + ", ".join("?" * len(columns)) + ")"
            values = ", ".join([marks] * rows)
            sql = f"INSERT INTO {self.name} ({names}) VALUES {values}{conflict}"
            _statements[key] = sql
        return sql

    def select(self, columns: tuple[str, ...], where: str) -> str:
        key = (self.name, columns, where)
        sql = _statements.get(key)
        if sql is None:
            names = ", ".join(f'"{c}"' for c in columns)
            sql = _statements[key] = f"SELECT {names} FROM {self.name} WHERE {where}"
        return sql

    def upsert(self, keys: tuple[str, ...], columns: tuple[str, ...] | None = None) -> str:
        """Insert (``columns``, in that order; all by default), or on a conflict over
        ``keys`` replace the other columns."""
        columns = self.columns if columns is None else columns
        key = (self.name, keys + ("/",) + columns, "upsert")
        sql = _statements.get(key)
        if sql is None:
            update = ", ".join(f'"{c}" = excluded."{c}"' for c in self.columns if c not in keys)
            conflict = f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {update}"
            sql = _statements[key] = self.insert(columns, conflict)
        return sql

    def row(self, values: dict[str, Any], columns: Sequence[str]) -> tuple[Any, ...]:
        """``values`` in ``columns``' order, JSON columns serialized."""
        return tuple(json_text(values[c]) if c in self.json else values[c] for c in columns)

    def rows(
        self,
        values: Iterable[dict[str, Any]],
        columns: tuple[str, ...],
        *tail: Any,
        encoded: bool = False,
    ) -> list[list[Any]]:
        """``row`` of each of ``values``, then the constants ``tail`` (a batch's
        ``created_at``, given once rather than copied into every dict). A map writes
        thousands of rows per commit: one ``itemgetter`` call per row, then only the
        JSON columns are touched. ``encoded``: the JSON columns hold ``json_text``'s
        text already."""
        get = itemgetter(*columns)
        if encoded:
            return [[*get(value), *tail] for value in values]
        at = [i for i, c in enumerate(columns) if c in self.json]
        found = []
        for value in values:
            row = [*get(value), *tail]
            for i in at:
                row[i] = json_text(row[i])
            found.append(row)
        return found

    def decode(self, columns: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
        return {c: (_loads(v) if c in self.json else v) for c, v in zip(columns, row)}

    @cached_property
    def insert_all(self) -> str:
        return self.insert(self.columns)

    @cached_property
    def insert_ignore(self) -> str:
        return self.insert(self.columns, " ON CONFLICT DO NOTHING")

    @cached_property
    def but_created(self) -> tuple[str, ...]:
        return tuple(c for c in self.columns if c != "created_at")

    @cached_property
    def but_generated(self) -> tuple[str, ...]:
        """The columns an insert names: all but an autoincremented ``id``."""
        return tuple(c for c in self.columns if c != "id")

    @cached_property
    def but_generated_created(self) -> tuple[str, ...]:
        """``but_generated`` less ``created_at`` (which a batch gives once)."""
        return tuple(c for c in self.but_generated if c != "created_at")


_tables: dict[str, Table] = {}
_statements: dict[tuple[str, tuple[str, ...], str], str] = {}
_tables_lock = threading.Lock()


#: Rows per multi-row ``INSERT``: a full batch binds at most 999 parameters (SQLite's
#: limit before 3.32) with the widest table's columns.
_BATCH_ROWS = 64


def insert_rows(
    cur: sqlite3.Cursor,
    t: Table,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
) -> None:
    """What ``cur.executemany(t.insert(columns), rows)`` does, with each full batch of
    ``_BATCH_ROWS`` rows in one multi-row ``INSERT`` instead of one reset and step per
    row; the rest (and a small flush's few rows: a single task's) in one
    ``executemany``, where a second statement would cost more than it saves. Rows are
    inserted in order: the rowids they take are consecutive, as with ``executemany``.

    Used for events, whose inserts only append (to the table and to its index by
    execution): 2,000 of a map's events take 1.8 ms instead of 3.2. Measured slower
    (by ~25%) for the tables whose rows go into an index at random places (artifacts,
    lineage, cache entries), which keep ``executemany``."""
    n = len(rows)
    full = n - n % _BATCH_ROWS
    if full:
        sql = t.insert(columns, rows=_BATCH_ROWS)
        flat = chain.from_iterable
        for start in range(0, full, _BATCH_ROWS):
            cur.execute(sql, list(flat(rows[start : start + _BATCH_ROWS])))
    if full < n:
        cur.executemany(t.insert(columns), rows[full:] if full else rows)


def table(conn: sqlite3.Connection, name: str) -> Table:
    found = _tables.get(name)
    if found is not None:
        return found
    rows = conn.execute(f"PRAGMA table_info({name})").fetchall()
    if not rows:
        raise sqlite3.OperationalError(f"no table {name!r} in the database")
    # (cid, name, type, notnull, default, pk), in the table's order
    columns = tuple(r[1] for r in rows)
    json_columns = frozenset(r[1] for r in rows if r[2].upper() == "JSON")
    found = Table(name, columns, json_columns)
    with _tables_lock:
        _tables.setdefault(name, found)
    return found


def _cursor(conn: Any) -> sqlite3.Cursor:
    raw = dbapi(conn)
    assert raw is not None, "a SQLite connection"
    return raw.cursor()


#: The event tuples ``append`` takes, field by field.
EVENT_FIELDS = ("execution_id", "node", "attempt", "kind", "ts", "payload")
_UPDATE_EXECUTION = "UPDATE executions SET status = ?, ended_at = ?, last_seq = ? WHERE id = ?"


def append(
    conn: Any,
    execution_row: dict[str, Any] | None,
    events: Sequence[tuple[str, str, int, str, float, str]],
    projection: tuple[str, float | None, str],
) -> list[int]:
    """Insert the execution row (when new) and the events (``EVENT_FIELDS``, the payload
    as JSON text: ``json_text``); return the events' ``seq``.

    The caller's transaction holds SQLite's write lock from its first insert on, so the
    rows of one ``executemany`` take consecutive rowids ending at ``last_insert_rowid()``
    (events are never deleted, and ``seq`` is the rowid). ``projection`` is the
    execution's (status, ended_at, id), written with the last ``seq``.
    """
    cur = _cursor(conn)
    try:
        raw = cur.connection
        if execution_row is not None:
            t = table(raw, "executions")
            cur.execute(t.insert_all, t.row(execution_row, t.columns))
        insert_rows(cur, table(raw, "events"), EVENT_FIELDS, events)
        last = cur.execute("SELECT last_insert_rowid()").fetchone()[0]
        status, ended_at, execution_id = projection
        cur.execute(_UPDATE_EXECUTION, (status, ended_at, last, execution_id))
    finally:
        cur.close()
    return list(range(last - len(events) + 1, last + 1))


#: ``json.dumps``'s text for the value ``_one_shot_encoder`` tries its encoder on (a
#: constant, not ``json.dumps(probe)``: that goes through the same C encoder).
_PROBE_TEXT = '{"a": [1, 2.5, null, true, "\\u00e9\\n"], "b": {"c": Infinity}, "d": ""}'


def _one_shot_encoder() -> Callable[[Any, int], list[str]] | None:
    """The C encoder ``json.dumps(value)`` builds anew at each call (``JSONEncoder.
    iterencode``), built once with the same arguments: ``json.dumps``'s defaults
    (ASCII, ``", "`` and ``": "``, NaN and infinities allowed, keys unsorted). Without
    the circular-reference markers: a dict shared between threads would need a lock,
    and the C encoder leaves its markers behind when it fails; a circular value fails
    by recursion instead, and ``json_text`` then lets ``json.dumps`` raise its own
    error. None where the interpreter has no C encoder, or one that is called otherwise
    or writes other text than ``json.dumps`` (it is not a documented API): then every
    value goes to ``json.dumps``."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # (an interpreter without ``_json``)
        return None
    default = json.JSONEncoder().default
    try:
        ascii_str = json.encoder.encode_basestring_ascii
        encode = make(None, default, ascii_str, None, ": ", ", ", False, False, True)
        probe = {"a": [1, 2.5, None, True, "é\n"], "b": {"c": float("inf")}, "d": ""}
        if "".join(encode(probe, 0)) != _PROBE_TEXT:
            return None
    except Exception:
        return None
    return encode  # type: ignore[no-any-return]


_encode = _one_shot_encoder()


def json_text(value: Any) -> str:
    """A JSON column's text, exactly as ``json.dumps`` writes it. Most of a task run's
    JSON is empty (an event's payload, a cache entry's references, its display): no
    encoder for those. The rest goes through one encoder built once (``json.dumps``
    spends half of a small payload's time building it); a value that encoder cannot
    write (not JSON, circular) goes to ``json.dumps``, which raises its usual error."""
    if not value:
        if value is None:
            return "null"
        kind = type(value)
        if kind is dict:
            return "{}"
        if kind is list:
            return "[]"
    if _encode is not None:
        try:
            return "".join(_encode(value, 0))
        except Exception:
            pass
    return json.dumps(value)


def put_lineage(conn: Any, rows: list[dict[str, Any]], now: float, encoded: bool = False) -> None:
    """Lineage rows, each created ``now`` (``encoded``: their JSON as text already)."""
    cur = _cursor(conn)
    try:
        t = table(cur.connection, "lineage")
        columns = t.but_generated_created
        params = t.rows(rows, columns, now, encoded=encoded)
        cur.executemany(t.insert((*columns, "created_at")), params)
    finally:
        cur.close()


#: ``ArtifactRef``'s fields, in the order ``put_artifacts`` writes them.
ARTIFACT_FIELDS = ("id", "hash", "uri", "size", "serializer", "python_type", "preview")


def cut(text: str, width: int) -> str:
    """Text shown, never parsed, cut to a column's width (PostgreSQL enforces the widths
    SQLite ignores, so they are cut on every database)."""
    return text[: width - 1] + "…"


def put_artifacts(
    conn: Any, refs: Iterable[Any], now: float, widths: dict[str, int], scope: str = ""
) -> None:
    """Insert-or-ignore artifact rows straight from ``ArtifactRef``s (``ARTIFACT_FIELDS``,
    then ``created_at`` and ``scope``), ``python_type`` and ``preview`` cut to ``widths``
    (no dict per row: a map records two artifacts per element)."""
    get = attrgetter(*ARTIFACT_FIELDS)
    seen: set[str] = set()
    params = []
    type_width, preview_width = widths["python_type"], widths["preview"]
    for ref in refs:
        if ref.id in seen:
            continue
        seen.add(ref.id)
        row = [*get(ref), now, scope]
        if len(row[5]) > type_width:
            row[5] = cut(row[5], type_width)
        if len(row[6]) > preview_width:
            row[6] = cut(row[6], preview_width)
        params.append(row)
    if not params:
        return
    cur = _cursor(conn)
    try:
        t = table(cur.connection, "artifacts")
        sql = t.insert((*ARTIFACT_FIELDS, "created_at", "scope"), " ON CONFLICT DO NOTHING")
        cur.executemany(sql, params)
    finally:
        cur.close()


def insert_ignore(conn: Any, name: str, rows: list[dict[str, Any]]) -> None:
    """``INSERT ... ON CONFLICT DO NOTHING`` of whole rows (content-addressed ones: a
    task, an artifact, a scope), as ``repo._insert_ignore`` does through SQLAlchemy."""
    cur = _cursor(conn)
    try:
        t = table(cur.connection, name)
        cur.executemany(t.insert_ignore, [t.row(r, t.columns) for r in rows])
    finally:
        cur.close()


def cache_put(conn: Any, rows: list[dict[str, Any]], now: float, encoded: bool = False) -> None:
    """Insert or replace cache entries (an upsert on the key, project and domain), each
    created ``now`` (``encoded``: their JSON as text already)."""
    cur = _cursor(conn)
    try:
        t = table(cur.connection, "cache_entries")
        columns = t.but_created
        sql = t.upsert(("key", "project", "domain"), (*columns, "created_at"))
        cur.executemany(sql, t.rows(rows, columns, now, encoded=encoded))
    finally:
        cur.close()


def cache_get(conn: Any, key: str, project: str, domain: str) -> dict[str, Any] | None:
    """A cache entry as ``Store.cache_get`` returns it (JSON columns decoded). On a
    connection outside a transaction (the reading connection between ``read`` blocks)
    the one statement is its own snapshot; inside one, it reads in it."""
    cur = _cursor(conn)
    try:
        t = table(cur.connection, "cache_entries")
        where = "key = ? AND project = ? AND domain = ?"
        row = cur.execute(t.select(t.columns, where), (key, project, domain)).fetchone()
    finally:
        cur.close()
    return t.decode(t.columns, row) if row is not None else None


def artifact(conn: Any, artifact_id: str, scope: str = "") -> dict[str, Any] | None:
    """An artifact row of ``scope`` (or, failing that, one recorded before scopes:
    ``''``), as ``ArtifactRef`` takes it."""
    cur = _cursor(conn)
    try:
        t = table(cur.connection, "artifacts")
        if scope:
            where = "id = ? AND scope IN (?, '') ORDER BY scope DESC LIMIT 1"
            row = cur.execute(t.select(ARTIFACT_FIELDS, where), (artifact_id, scope)).fetchone()
        else:
            where = "id = ? AND scope = ''"
            row = cur.execute(t.select(ARTIFACT_FIELDS, where), (artifact_id,)).fetchone()
    finally:
        cur.close()
    return t.decode(ARTIFACT_FIELDS, row) if row is not None else None


def cache_get_many(
    conn: Any, keys: Sequence[str], project: str, domain: str
) -> dict[str, dict[str, Any]]:
    """Entries for ``keys`` (a map's elements; JSON columns decoded), in one statement
    per 500 keys."""
    found: dict[str, dict[str, Any]] = {}
    cur = _cursor(conn)
    try:
        t = table(cur.connection, "cache_entries")
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            where = f"key IN ({', '.join('?' * len(chunk))}) AND project = ? AND domain = ?"
            for row in cur.execute(t.select(t.columns, where), (*chunk, project, domain)):
                entry = t.decode(t.columns, row)
                found[entry["key"]] = entry
    finally:
        cur.close()
    return found
