"""Queries over the metadata tables. The engine never writes SQL itself.

SQLAlchemy (and ``schema.py``, built on it) is imported by the methods that use it, not
with this module: on a SQLite file at the schema's head, what a task run needs (reading
an artifact or a cache entry, one write transaction for its task, artifacts, lineage,
cache entry and events) runs on the driver (``sqlite_rows``), and a fresh kernel whose
tasks are all cache hits never imports SQLAlchemy. Everything else, and PostgreSQL
always, goes through SQLAlchemy.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ..model import ArtifactRef, Event, EventColumns, EventKind, ExecutionState
from ..projection import replay
from . import db, sqlite_rows

if TYPE_CHECKING:
    import sqlalchemy as sa


def _insert_ignore(conn: Any, name: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    if sqlite_rows.applies(conn):
        sqlite_rows.insert_ignore(conn, name, rows)
        return
    from sqlalchemy.dialects.postgresql import insert

    from .schema import metadata

    if conn.dialect.name != "postgresql":  # pragma: no cover
        raise NotImplementedError(conn.dialect.name)
    conn.execute(insert(metadata.tables[name]).on_conflict_do_nothing(), rows)


#: The widths of ``schema.artifacts``' columns that hold text for people, which are cut to
#: fit on every database (a test holds them equal to the schema's).
SHOWN_WIDTHS = {"preview": 200, "python_type": 200}


@functools.cache
def _statements() -> dict[str, Any]:
    """The hot path's statements off SQLite, built once: constructing a statement per
    call costs more than executing it."""
    import sqlalchemy as sa

    from .schema import cache_entries, events, executions

    return {
        "insert_execution": executions.insert(),
        "insert_events": events.insert().returning(events.c.seq, sort_by_parameter_order=True),
        "update_execution": executions.update()
        .where(executions.c.id == sa.bindparam("eid"))
        .values(
            status=sa.bindparam("status"),
            ended_at=sa.bindparam("ended_at"),
            last_seq=sa.bindparam("last_seq"),
        ),
        "select_cache": sa.select(cache_entries).where(
            cache_entries.c.key == sa.bindparam("k"),
            cache_entries.c.project == sa.bindparam("p"),
            cache_entries.c.domain == sa.bindparam("d"),
        ),
    }


def _decoded(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> list[dict[str, Any]]:
    """``rows`` with their JSON text in ``columns`` decoded, for a driver that encodes
    JSON itself (SQLAlchemy's ``JSON`` type)."""
    return [{**r, **{c: json.loads(r[c]) for c in columns}} for r in rows]


class Store:
    """Queries, with one reading and one writing connection per thread.

    Checking a connection out of the pool and resetting it costs more than a small
    transaction on SQLite, and a task run makes several; so each thread keeps its own
    pair for as long as it lives. Every ``read`` and ``write`` still ends its
    transaction, so no snapshot or lock outlives the block. A server has many threads
    (a request pool, one per running execution): the pairs of threads that have ended
    go back to the pool, and beyond ``PINNED_THREADS`` live threads the others borrow
    a connection from the pool for each block, so the pool is never drained by pins.
    On a SQLite file the same goes for the driver's own pair (``transaction`` and the
    task run's reads), opened outside SQLAlchemy's pool; borrowed ones are closed after
    their block.
    """

    #: How many threads at once may keep their own connections (``db.POOL`` has room).
    PINNED_THREADS = db.PINNED_THREADS

    def __init__(self, url: str) -> None:
        self.url = url
        #: The SQLite file whose task-run statements go to the driver (``transaction``),
        #: or None: everything through SQLAlchemy.
        self._file = db.sqlite_file(url)
        self._engine: sa.Engine | None = None
        self._cache_upserts: dict[str, Any] = {}
        self._local = threading.local()
        #: Connections kept by threads, with the thread that keeps each.
        self._open: list[tuple[threading.Thread, Any]] = []
        self._lock = threading.RLock()  # (``engine`` is created under it, from ``_conn``)
        # Every read is one statement, or several over immutable rows: on PostgreSQL
        # they need no transaction, which saves a BEGIN and a ROLLBACK round trip each.
        self._read_options: dict[str, Any] = (
            {"isolation_level": "AUTOCOMMIT"} if url.startswith("postgres") else {}
        )
        try:
            self._open_schema()
        except BaseException:
            self.close()  # (a store too new for us, or unreachable: no connection is left open)
            raise

    def _open_schema(self) -> None:
        if self._file is None:
            db.ensure_schema(self.engine)
        else:
            reader = self._conn("raw_reader")
            assert reader is not None  # (the first thread always gets its own)
            revision = db.sqlite_revision(reader)
            if revision != db.SCHEMA_HEAD:
                db.check_not_newer(revision, self._file)
                db.upgrade(self.engine)  # Alembic, through SQLAlchemy

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine, created on first use (on a SQLite file, a task run that
        only hits the cache never needs it)."""
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    self._engine = db.create_engine(self.url)
        return self._engine

    def close(self) -> None:
        with self._lock:
            for _, conn in self._open:
                with contextlib.suppress(Exception):
                    conn.close()
            self._open.clear()
            self._local = threading.local()
        if self._engine is not None:
            self._engine.dispose()

    def _connect(self, write: bool) -> sa.Connection:
        conn = self.engine.connect()
        if write:
            return conn.execution_options(papercrane_write=True)
        if self._read_options:
            return conn.execution_options(**self._read_options)
        return conn

    def _open_connection(self, kind: str) -> Any:
        if kind.startswith("raw_"):
            assert self._file is not None
            return db.connect_sqlite(self._file)
        return self._connect(write=kind == "writer")

    def _conn(self, kind: str) -> Any:
        """This thread's own connection of a kind ("reader", "writer": SQLAlchemy's;
        "raw_reader", "raw_writer": the driver's, on a SQLite file); None if too many
        live threads have theirs."""
        conn = getattr(self._local, kind, None)
        if conn is not None and not getattr(conn, "closed", False):
            return conn
        me = threading.current_thread()
        with self._lock:
            # Connections of threads that have ended go back to the pool.
            ended = [(t, c) for t, c in self._open if not t.is_alive()]
            if ended:
                self._open = [(t, c) for t, c in self._open if t.is_alive()]
                for _, c in ended:
                    with contextlib.suppress(Exception):
                        c.close()
            owners = {t for t, _ in self._open}
            if me not in owners and len(owners) >= self.PINNED_THREADS:
                return None
            conn = self._open_connection(kind)
            self._open.append((me, conn))
        setattr(self._local, kind, conn)
        return conn

    @contextlib.contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """One write transaction, one writer at a time: ``BEGIN IMMEDIATE`` on SQLite,
        an advisory lock on PostgreSQL (``db.py``)."""
        conn = self._conn("writer")
        if conn is None:
            with self._connect(write=True) as borrowed, borrowed.begin():
                yield borrowed
            return
        with conn.begin():
            yield conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """A write transaction for this store's own methods that take a connection
        (``put_task``, ``put_workflow``, ``put_artifacts``, ``put_lineage``,
        ``cache_put_many``, ``append``). On a SQLite file it is the driver's connection
        (``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any error), so a task run
        does not need SQLAlchemy; elsewhere it is ``write()``. For statements built
        with SQLAlchemy, use ``write()``."""
        if self._file is None:
            with self.write() as conn:
                yield conn
            return
        conn = self._conn("raw_writer")
        borrowed = conn is None
        if borrowed:
            conn = db.connect_sqlite(self._file)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            if borrowed:
                conn.close()

    @contextlib.contextmanager
    def read(self) -> Iterator[sa.Connection]:
        conn = self._conn("reader")
        if conn is None:
            with self._connect(write=False) as borrowed:
                yield borrowed  # closing it ends its transaction
            return
        try:
            yield conn
        finally:
            conn.rollback()

    def _read_one(self, query: Callable[[sqlite3.Connection], Any]) -> Any:
        """``query`` on this thread's driver connection, outside any transaction: one
        statement, its own snapshot (on a SQLite file only).

        It runs on this thread's writing connection when that is open and between
        transactions: SQLite drops a connection's whole page cache when it begins a read
        and finds the database changed by another connection since its last one, which
        after every task's commit made the reading connection read each page of the
        lookup again (a cache hit's one SELECT cost 2-4 times what it costs on the
        connection that wrote those pages). The statement sees the same snapshot (the
        last commit) on either."""
        writer = getattr(self._local, "raw_writer", None)
        if writer is not None and not writer.in_transaction:
            return query(writer)
        conn = self._conn("raw_reader")
        if conn is not None:
            return query(conn)
        assert self._file is not None
        borrowed = db.connect_sqlite(self._file)
        try:
            return query(borrowed)
        finally:
            borrowed.close()

    # -- events and the execution projection ------------------------------------------------
    def append(self, conn: sa.Connection, batch: list[Event], state: ExecutionState) -> list[Event]:
        """Append events and bring the execution's projection row up to date.

        Returns the events with their sequence numbers. ``state`` must already have the
        events applied (the engine folds them as it goes).
        """
        columns = EventColumns.of(batch)
        return list(columns.numbered(self.append_seqs(conn, columns, state)))

    def append_seqs(self, conn: Any, batch: EventColumns, state: ExecutionState) -> list[int]:
        """``append`` of events kept as columns (a scheduler's pending ones), returning
        only the sequence numbers (in ``batch``'s order): a caller that hands the
        numbered events on one at a time (``EventColumns.numbered``) does not keep
        thousands of them alive at once."""
        created = batch.has(EventKind.EXECUTION_CREATED)
        if sqlite_rows.applies(conn):
            seqs = sqlite_rows.append(
                conn,
                self._projection_row(state) if created else None,
                batch.rows(sqlite_rows.json_text),
                (state.status.value, state.ended_at, state.id),
            )
            state.last_seq = seqs[-1]
            return seqs
        rows = [
            dict(zip(sqlite_rows.EVENT_FIELDS, row)) for row in batch.rows(lambda payload: payload)
        ]
        sql = _statements()
        if created:
            conn.execute(sql["insert_execution"], self._projection_row(state))
        seqs = [r.seq for r in conn.execute(sql["insert_events"], rows)]
        state.last_seq = max(seqs)
        conn.execute(
            sql["update_execution"],
            {
                "eid": state.id,
                "status": state.status.value,
                "ended_at": state.ended_at,
                "last_seq": state.last_seq,
            },
        )
        return seqs

    @staticmethod
    def _projection_row(state: ExecutionState) -> dict[str, Any]:
        return {
            "id": state.id,
            "project": state.project,
            "domain": state.domain,
            "name": state.name,
            "task_version": state.task_version,
            "kind": state.kind,
            "workflow_version": state.workflow_version,
            "status": state.status.value,
            "created_at": state.created_at,
            "ended_at": state.ended_at,
            "last_seq": state.last_seq,
        }

    def events(self, execution_id: str, after: int = 0) -> list[Event]:
        from .schema import events, sa

        with self.read() as conn:
            rows = conn.execute(
                sa.select(events)
                .where(events.c.execution_id == execution_id, events.c.seq > after)
                .order_by(events.c.seq)
            ).all()
        return [
            Event(r.execution_id, EventKind(r.kind), r.node, r.attempt, r.payload, r.ts, r.seq)
            for r in rows
        ]

    def runner(self, execution_id: str) -> dict[str, Any]:
        """The process its creation names as running it (``owner``), read from that
        first event alone: {} if none is named."""
        from .schema import events, sa

        with self.read() as conn:
            payload = conn.execute(
                sa.select(events.c.payload)
                .where(events.c.execution_id == execution_id)
                .order_by(events.c.seq)
                .limit(1)
            ).scalar()
        return dict((payload or {}).get("runner") or {})

    def execution_exists(self, execution_id: str) -> bool:
        from .schema import executions, sa

        with self.read() as conn:
            return (
                conn.execute(
                    sa.select(executions.c.id).where(executions.c.id == execution_id)
                ).first()
                is not None
            )

    def execution(self, execution_id: str) -> ExecutionState | None:
        evs = self.events(execution_id)
        if not evs:
            return None
        return replay(execution_id, evs)

    def list_executions(
        self,
        project: str | None = None,
        domain: str | None = None,
        status: str | None = None,
        limit: int | None = 50,
        before: float | None = None,
        name: str | None = None,
        id_prefix: str | None = None,
    ) -> list[dict[str, Any]]:
        from .schema import executions, sa

        query = sa.select(executions).order_by(executions.c.created_at.desc()).limit(limit)
        if project:
            query = query.where(executions.c.project == project)
        if domain:
            query = query.where(executions.c.domain == domain)
        if status:
            query = query.where(executions.c.status == status)
        if name:
            query = query.where(executions.c.name == name)
        if before is not None:
            query = query.where(executions.c.created_at < before)
        if id_prefix:
            # Ids are lowercase hex; SQLite's LIKE ignores case and PostgreSQL's does not.
            query = query.where(executions.c.id.startswith(id_prefix.lower(), autoescape=True))
        with self.read() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def rebuild_projections(self) -> int:
        """Recompute every execution row from its events (they are the truth)."""
        from .schema import executions, sa

        with self.read() as conn:
            ids = [r.id for r in conn.execute(sa.select(executions.c.id))]
        for execution_id in ids:
            state = self.execution(execution_id)
            if state is None:
                continue
            with self.write() as conn:
                conn.execute(
                    executions.update()
                    .where(executions.c.id == execution_id)
                    .values(**self._projection_row(state))
                )
        return len(ids)

    # -- tasks ------------------------------------------------------------------------------
    def task_exists(self, version: str) -> bool:
        from .schema import sa, tasks

        with self.read() as conn:
            row = conn.execute(sa.select(tasks.c.version).where(tasks.c.version == version))
            return row.first() is not None

    def put_task(self, conn: sa.Connection, row: dict[str, Any]) -> None:
        now = time.time()
        _insert_ignore(conn, "tasks", [{**row, "created_at": now}])
        self._scope(conn, "task_scopes", row, now)

    @staticmethod
    def _scope(conn: Any, table: str, row: dict[str, Any], now: float) -> None:
        scope = {"version": row["version"], "project": row["project"], "domain": row["domain"]}
        _insert_ignore(conn, table, [{**scope, "created_at": now}])

    def in_scope(self, kind: str, version: str, project: str, domain: str) -> bool:
        """Did this project and domain register that task (or workflow) version?"""
        from .schema import sa, task_scopes, workflow_scopes

        table = task_scopes if kind == "task" else workflow_scopes
        with self.read() as conn:
            found = conn.execute(
                sa.select(table.c.version).where(
                    table.c.version == version,
                    table.c.project == project,
                    table.c.domain == domain,
                )
            ).first()
        return found is not None

    def task(self, version: str) -> dict[str, Any] | None:
        from .schema import sa, tasks

        with self.read() as conn:
            row = conn.execute(sa.select(tasks).where(tasks.c.version == version)).first()
        return dict(row._mapping) if row else None

    # -- artifacts ----------------------------------------------------------------------------
    # An artifact row belongs to a storage (``scope``: '' where a store's projects share
    # one, "project/domain" for a server's engines; revision 0008). A scoped read falls
    # back to the rows recorded before scopes ('').
    def put_artifacts(self, conn: Any, refs: Iterable[ArtifactRef], scope: str = "") -> None:
        now = time.time()
        if sqlite_rows.applies(conn):
            sqlite_rows.put_artifacts(conn, refs, now, SHOWN_WIDTHS, scope)
            return
        rows = {r.id: {**r.to_dict(), "created_at": now, "scope": scope} for r in refs}
        if not rows:
            return
        for row in rows.values():
            for column, width in SHOWN_WIDTHS.items():
                if len(row[column]) > width:
                    row[column] = sqlite_rows.cut(row[column], width)
        _insert_ignore(conn, "artifacts", list(rows.values()))

    def replace_artifact(self, conn: Any, ref: ArtifactRef, scope: str) -> None:
        """Record ``ref`` in ``scope`` in place of the row there (whose bytes are lost)."""
        raw = sqlite_rows.dbapi(conn)
        if raw is not None:
            raw.execute("DELETE FROM artifacts WHERE id = ? AND scope = ?", (ref.id, scope))
        else:
            from .schema import artifacts, sa

            conn.execute(
                sa.delete(artifacts).where(artifacts.c.id == ref.id, artifacts.c.scope == scope)
            )
        self.put_artifacts(conn, [ref], scope)

    def artifact(self, artifact_id: str, scope: str = "") -> ArtifactRef | None:
        if self._file is not None:
            data = self._read_one(lambda conn: sqlite_rows.artifact(conn, artifact_id, scope))
            return ArtifactRef(**data) if data is not None else None
        found = self._artifacts(scope, lambda c: c.id == artifact_id, limit=2)
        return found[0] if found else None

    def artifacts_by_prefix(
        self, prefix: str, scope: str = "", limit: int = 5
    ) -> list[ArtifactRef]:
        # Ids are lowercase hex; SQLite's LIKE ignores case and PostgreSQL's does not.
        return self._artifacts(
            scope, lambda c: c.id.startswith(prefix.lower(), autoescape=True), limit
        )

    def _artifacts(self, scope: str, where: Any, limit: int) -> list[ArtifactRef]:
        """Rows matching ``where(columns)`` in ``scope`` or (failing that) in '', one per
        id, the scope's own first."""
        from .schema import artifacts, sa

        scopes = artifacts.c.scope.in_([scope, ""]) if scope else artifacts.c.scope == ""
        query = (
            sa.select(*(artifacts.c[f] for f in sqlite_rows.ARTIFACT_FIELDS))
            .where(where(artifacts.c), scopes)
            .order_by(artifacts.c.id, artifacts.c.scope.desc())
            .limit(2 * limit)
        )
        with self.read() as conn:
            rows = conn.execute(query).all()
        found: dict[str, ArtifactRef] = {}
        for row in rows:
            found.setdefault(row.id, ArtifactRef(*row))
        return list(found.values())[:limit]

    # -- workflows ---------------------------------------------------------------------------
    def put_workflow(self, conn: sa.Connection, row: dict[str, Any]) -> None:
        now = time.time()
        _insert_ignore(conn, "workflows", [{**row, "created_at": now}])
        self._scope(conn, "workflow_scopes", row, now)

    def workflow(self, version: str) -> dict[str, Any] | None:
        from .schema import sa, workflows

        with self.read() as conn:
            row = conn.execute(sa.select(workflows).where(workflows.c.version == version)).first()
        return dict(row._mapping) if row else None

    def tasks(self, versions: Iterable[str]) -> dict[str, dict[str, Any]]:
        from .schema import sa, tasks

        wanted = list(set(versions))
        found: dict[str, dict[str, Any]] = {}
        with self.read() as conn:
            for i in range(0, len(wanted), 500):
                rows = conn.execute(
                    sa.select(tasks).where(tasks.c.version.in_(wanted[i : i + 500]))
                )
                found.update({r.version: dict(r._mapping) for r in rows})
        return found

    # -- lineage -------------------------------------------------------------------------------
    def put_lineage(
        self, conn: sa.Connection, rows: list[dict[str, Any]], *, encoded: bool = False
    ) -> None:
        """Lineage rows. ``encoded``: their ``inputs`` is JSON text already
        (``sqlite_rows.json_text``), as a scheduler keeps a map's rows (see
        ``WorkflowRun._persist``)."""
        if not rows:
            return
        now = time.time()
        if sqlite_rows.applies(conn):
            sqlite_rows.put_lineage(conn, rows, now, encoded)
        else:
            from .schema import lineage

            if encoded:
                rows = _decoded(rows, ("inputs",))
            conn.execute(lineage.insert(), [{"created_at": now, **r} for r in rows])

    def producers(self, artifact_id: str, project: str | None = None) -> list[dict[str, Any]]:
        """Attempts that produced this artifact, oldest first (only ``project``'s: equal
        bytes in two projects share an id, not their history)."""
        from .schema import executions, lineage, sa

        query = (
            sa.select(lineage)
            .where(lineage.c.artifact_id == artifact_id)
            .order_by(lineage.c.created_at, lineage.c.id)  # rows of one flush tie
        )
        if project is not None:
            query = query.join(executions, executions.c.id == lineage.c.execution_id).where(
                executions.c.project == project
            )
        with self.read() as conn:
            rows = conn.execute(query).all()
        return [dict(r._mapping) for r in rows]

    # -- cache ----------------------------------------------------------------------------------
    def cache_get(self, key: str, project: str, domain: str) -> dict[str, Any] | None:
        if self._file is not None:
            # One statement is its own snapshot: no BEGIN and ROLLBACK around it.
            return self._read_one(lambda conn: sqlite_rows.cache_get(conn, key, project, domain))
        with self.read() as conn:
            if sqlite_rows.applies(conn):  # (a database in memory)
                return sqlite_rows.cache_get(conn, key, project, domain)
            select = _statements()["select_cache"]
            row = conn.execute(select, {"k": key, "p": project, "d": domain}).first()
        return dict(row._mapping) if row else None

    def cache_get_many(
        self, keys: list[str], project: str, domain: str
    ) -> dict[str, dict[str, Any]]:
        """Entries for many keys at once (a map's elements): one query per 500 keys."""
        if self._file is not None:
            return self._read_one(
                lambda conn: sqlite_rows.cache_get_many(conn, keys, project, domain)
            )
        from .schema import cache_entries, sa

        found: dict[str, dict[str, Any]] = {}
        with self.read() as conn:
            if sqlite_rows.applies(conn):
                return sqlite_rows.cache_get_many(conn, keys, project, domain)
            for i in range(0, len(keys), 500):
                rows = conn.execute(
                    sa.select(cache_entries).where(
                        cache_entries.c.key.in_(keys[i : i + 500]),
                        cache_entries.c.project == project,
                        cache_entries.c.domain == domain,
                    )
                )
                found.update({r.key: dict(r._mapping) for r in rows})
        return found

    def cache_put(self, conn: sa.Connection, row: dict[str, Any]) -> None:
        self.cache_put_many(conn, [row])

    def cache_put_many(
        self, conn: sa.Connection, rows: list[dict[str, Any]], *, encoded: bool = False
    ) -> None:
        """Insert or replace cache entries, one prebuilt statement for the whole batch (a
        map's elements land together). ``encoded``: their JSON columns (``outputs``,
        ``references``, ``display``) are JSON text already."""
        if not rows:
            return
        now = time.time()
        if sqlite_rows.applies(conn):
            sqlite_rows.cache_put(conn, rows, now, encoded)
            return
        if encoded:
            rows = _decoded(rows, ("outputs", "references", "display"))
        dialect = conn.dialect.name
        stmt = self._cache_upserts.get(dialect)
        if stmt is None:
            from sqlalchemy.dialects.postgresql import insert

            from .schema import cache_entries

            base = insert(cache_entries)
            keys = ("key", "project", "domain")
            stmt = base.on_conflict_do_update(
                index_elements=list(keys),
                set_={c.name: base.excluded[c.name] for c in cache_entries.c if c.name not in keys},
            )
            self._cache_upserts[dialect] = stmt
        conn.execute(stmt, [{**r, "created_at": now} for r in rows])

    def cache_delete(self, key: str, project: str, domain: str) -> None:
        from .schema import cache_entries

        with self.write() as conn:
            conn.execute(
                cache_entries.delete().where(
                    cache_entries.c.key == key,
                    cache_entries.c.project == project,
                    cache_entries.c.domain == domain,
                )
            )

    def cache_list(
        self,
        project: str | None = None,
        task_name: str | None = None,
        limit: int | None = None,
        domain: str | None = None,
    ) -> list[dict[str, Any]]:
        """Newest first; ``limit``: at most that many (a map leaves one per element)."""
        from .schema import cache_entries, sa

        query = sa.select(cache_entries).order_by(cache_entries.c.created_at.desc())
        if project:
            query = query.where(cache_entries.c.project == project)
        if domain:
            query = query.where(cache_entries.c.domain == domain)
        if task_name:
            query = query.where(cache_entries.c.task_name == task_name)
        if limit is not None:
            query = query.limit(limit)
        with self.read() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def cache_clear(
        self, project: str | None = None, task_name: str | None = None, domain: str | None = None
    ) -> int:
        """Delete cache entries: those of ``project``, ``domain`` and ``task_name`` when
        given (None: any). Returns how many."""
        from .schema import cache_entries

        stmt = cache_entries.delete()
        if project:
            stmt = stmt.where(cache_entries.c.project == project)
        if domain:
            stmt = stmt.where(cache_entries.c.domain == domain)
        if task_name:
            stmt = stmt.where(cache_entries.c.task_name == task_name)
        with self.write() as conn:
            return conn.execute(stmt).rowcount
