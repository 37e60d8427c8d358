"""Opening the database: SQLite tuned for several processes at once, or PostgreSQL;
schema migrated.

SQLite runs in WAL mode (readers never block the writer) with a busy timeout, and every
write transaction starts with ``BEGIN IMMEDIATE`` so two processes that both want to
write queue on the lock instead of failing with "database is locked" when a read
transaction tries to upgrade.

PostgreSQL is reached with psycopg 3 (``pip install 'papercrane[postgres]'``);
``postgresql://`` and ``postgres://`` URLs are read as ``postgresql+psycopg://``. There,
the same "one writer at a time" holds: every write transaction first takes a
transaction-level advisory lock, PostgreSQL's ``BEGIN IMMEDIATE``. Without it two
engines inserting the same content-addressed rows (tasks, artifacts, cache entries) in
different orders deadlock, and events could commit out of ``seq`` order, so a reader
following ``seq > N`` would skip some. Reads never wait for it. Migrations from several
processes queue on a second advisory lock.

Opening a SQLite file at the schema's head needs no SQLAlchemy at all (``connect_sqlite``,
``sqlite_revision``): the store's task-run statements go to the driver directly, and a
fresh kernel whose tasks are all cache hits never pays for importing SQLAlchemy (~0.1 s).
So this module imports SQLAlchemy and Alembic inside the functions that use them.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    import sqlalchemy as sa

#: The newest Alembic revision; a test keeps it equal to the migration scripts' head.
SCHEMA_HEAD = "0008"
_MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


#: Keys of the PostgreSQL advisory locks (fixed bigints; advisory locks are per
#: database): "papercrw" and "papercrm" in ASCII, for whoever reads pg_locks.
PG_WRITE_LOCK = 0x7061706572637277
PG_MIGRATION_LOCK = 0x706170657263726D


#: Threads that may keep their own pair of connections (``repo.Store``), and a pool with
#: room for those pairs plus connections borrowed by the other threads, per block.
PINNED_THREADS = 8
POOL = {"pool_size": 2 * PINNED_THREADS + 4, "max_overflow": 16}


#: Where a database URL is set, for messages about one that can't be used.
DB_SETTING = "PAPERCRANE_DB (or --db / --url on the command line)"


def unusable_url(url: str, reason: str) -> ConfigError:
    """The error for a database URL SQLAlchemy can't read or has no driver for: one line
    with the setting and the value, not SQLAlchemy's traceback."""
    shown = url
    with contextlib.suppress(Exception):
        import sqlalchemy as sa

        shown = sa.make_url(url).render_as_string(hide_password=True)
    return ConfigError(
        f"the database URL {shown!r} from {DB_SETTING} is not usable ({reason}); give "
        "sqlite:///PATH or postgresql://USER@HOST/DB, or unset PAPERCRANE_DB to use the "
        "SQLite file in PAPERCRANE_HOME"
    )


def not_a_database(path: str, exc: BaseException) -> ConfigError:
    """The error for a SQLite file that can't be opened as one (not a database, a
    folder, no permission): it names the file and the settings that choose it."""
    return ConfigError(
        f"cannot open the database file {path} ({exc}); set {DB_SETTING} to another "
        "file, or PAPERCRANE_HOME to another folder"
    )


def create_engine(url: str) -> sa.Engine:
    import sqlalchemy as sa

    try:
        if url.startswith("sqlite"):
            return _sqlite_engine(url)
        if url.startswith(("postgresql", "postgres:")):
            return _postgres_engine(url)
        return sa.create_engine(url, pool_pre_ping=True)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as exc:
        raise unusable_url(url, str(exc).split("\n")[0]) from None
    except ImportError as exc:  # a dialect whose driver is not installed
        raise unusable_url(url, f"its driver is not installed: {exc}") from None


def postgres_url(url: str) -> sa.URL:
    """``url`` with the psycopg 3 driver unless it names another one explicitly."""
    import sqlalchemy as sa

    if url.startswith("postgres://"):  # Heroku-style spelling
        url = "postgresql://" + url[len("postgres://") :]
    parsed = sa.make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _postgres_engine(url: str) -> sa.Engine:
    import sqlalchemy as sa
    from sqlalchemy import event

    parsed = postgres_url(url)
    if parsed.drivername == "postgresql+psycopg":
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise ConfigError(
                "a PostgreSQL database needs the psycopg driver: pip install 'papercrane[postgres]'"
            ) from None
    engine = sa.create_engine(
        parsed, pool_pre_ping=True, connect_args={"application_name": "papercrane"}, **POOL
    )
    take_write_lock = f"SELECT pg_advisory_xact_lock({PG_WRITE_LOCK})"

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        if conn.get_execution_options().get("papercrane_write", False):
            conn.exec_driver_sql(take_write_lock)  # released by COMMIT or ROLLBACK

    return engine


def _sqlite_engine(url: str) -> sa.Engine:
    import sqlalchemy as sa
    from sqlalchemy import event

    path = sa.make_url(url).database
    if path and path != ":memory:":
        _make_folder(path)
    pool = POOL if path and path != ":memory:" else {}  # (one shared connection in memory)
    engine = sa.create_engine(url, connect_args={"timeout": 60, "check_same_thread": False}, **pool)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        _configure(dbapi_conn)

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        write = conn.get_execution_options().get("papercrane_write", False)
        # On the driver's connection: a statement through SQLAlchemy costs more than
        # SQLite takes to begin, and every task run begins a few transactions.
        conn.connection.dbapi_connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _make_folder(path: str) -> None:
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the papercrane database folder {Path(path).parent} "
            f"({exc.strerror}); set PAPERCRANE_HOME to a folder you can write to"
        ) from None


def _configure(dbapi_conn: sqlite3.Connection) -> None:
    """The settings every SQLite connection gets, through SQLAlchemy or not."""
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=60000")
    # A checkpoint (copying the WAL into the database, with its fsyncs) every 1,000
    # pages, SQLite's default, came every ~150 task runs and cost 4-50 ms on slow
    # disks: most of a small transaction's average cost. Every 10,000 pages (a WAL
    # of up to ~40 MiB) cuts the fsyncs tenfold and rewrites hot pages less often.
    cur.execute("PRAGMA wal_autocheckpoint=10000")
    cur.close()


def sqlite_file(url: str) -> str | None:
    """The file of a plain ``sqlite:///path`` URL (what ``Config`` makes), or None for
    anything else (memory, a driver or options in the URL, another database): those
    go through SQLAlchemy only."""
    for prefix in ("sqlite:///", "sqlite+pysqlite:///"):
        if url.startswith(prefix):
            path = url[len(prefix) :]
            plain = not any(c in path for c in "?%") and not path.startswith("file:")
            if path and path != ":memory:" and plain:
                return path
    return None


def connect_sqlite(path: str) -> sqlite3.Connection:
    """A connection to a SQLite file set up as the SQLAlchemy engine's are (same
    timeout, same PRAGMAs, transactions begun explicitly), without SQLAlchemy."""
    _make_folder(path)
    conn = None
    try:
        conn = sqlite3.connect(path, timeout=60, check_same_thread=False)
        _configure(conn)
    except sqlite3.DatabaseError as exc:
        if conn is not None:
            conn.close()
        if "locked" in str(exc):  # (busy for a minute: not a setting's fault)
            raise
        raise not_a_database(path, exc) from None
    return conn


def sqlite_revision(conn: sqlite3.Connection) -> str | None:
    """The schema's Alembic revision, or None when there is no schema yet."""
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.OperationalError:  # no such table: a new database
        return None
    return row[0] if row else None


def known_revisions() -> set[str]:
    """The revisions this papercrane's migration scripts define (``0006_....py``)."""
    return {p.name.split("_", 1)[0] for p in (_MIGRATIONS / "versions").glob("[0-9]*_*.py")}


def check_not_newer(revision: str | None, where: str) -> None:
    """A store migrated by a newer papercrane is refused with a message that says so
    (Alembic's own is "Can't locate revision"): its rows may name things this version
    cannot read, such as values inside packs."""
    if revision is not None and revision not in known_revisions():
        raise ConfigError(
            f"the store at {where} was upgraded by a newer papercrane (schema revision "
            f"{revision!r}; this papercrane knows up to {SCHEMA_HEAD!r}): upgrade papercrane "
            "(pip install -U papercrane), or set PAPERCRANE_HOME to another folder"
        )


def current_revision(engine: sa.Engine) -> str | None:
    import sqlalchemy as sa

    with _connect(engine) as conn:
        try:
            return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        except sa.exc.OperationalError:
            return None
        except sa.exc.ProgrammingError:
            return None


def _connect(engine: sa.Engine) -> sa.Connection:
    """A connection; a PostgreSQL server that can't be reached is a ``ConfigError``."""
    import sqlalchemy as sa

    if engine.dialect.name == "sqlite":
        try:
            return engine.connect()
        except sa.exc.DatabaseError as exc:
            if "locked" in str(exc.orig):
                raise
            raise not_a_database(str(engine.url.database), exc.orig or exc) from None
    if engine.dialect.name != "postgresql":
        return engine.connect()
    try:
        return engine.connect()
    except sa.exc.OperationalError as exc:
        where = engine.url.render_as_string(hide_password=True)
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise ConfigError(
            f"cannot connect to the PostgreSQL database {where}: {reason}; check the URL "
            f"({DB_SETTING}), that the server is running and that the database exists"
        ) from None


def alembic_config() -> Any:
    """Alembic's configuration for papercrane's migration scripts (no ``alembic.ini``)."""
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    return cfg


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Run Alembic migrations up to ``revision``, one process at a time."""
    import sqlalchemy as sa
    from alembic import command

    cfg = alembic_config()
    lock = _migration_lock(engine)
    with lock, _connect(engine).execution_options(papercrane_write=True) as conn:
        if engine.dialect.name == "postgresql":
            # Held until the migration's transaction ends (DDL is transactional there):
            # a second process waits, then finds the schema at head and does nothing.
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(PG_MIGRATION_LOCK)))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        conn.commit()


def _migration_lock(engine: sa.Engine):  # type: ignore[no-untyped-def]
    """A file lock beside a SQLite database; elsewhere the database locks (above)."""
    from contextlib import nullcontext

    from filelock import FileLock

    if engine.dialect.name == "sqlite":
        path = engine.url.database
        if path and path != ":memory:":
            return FileLock(os.fspath(path) + ".migrate.lock")
    return nullcontext()


def ensure_schema(engine: sa.Engine) -> None:
    revision = current_revision(engine)
    if revision != SCHEMA_HEAD:
        check_not_newer(revision, engine.url.render_as_string(hide_password=True))
        upgrade(engine)
