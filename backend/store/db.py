"""Opening the database: SQLite tuned for several processes at once, schema migrated.

SQLite runs in WAL mode (readers never block the writer) with a busy timeout, and every
write transaction starts with ``BEGIN IMMEDIATE`` so two processes that both want to
write queue on the lock instead of failing with "database is locked" when a read
transaction tries to upgrade.
"""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event

from ..errors import ConfigError

#: The newest Alembic revision; a test keeps it equal to the migration scripts' head.
SCHEMA_HEAD = "0002"
_MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def create_engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    return sa.create_engine(url, pool_pre_ping=True, future=True)


def _sqlite_engine(url: str) -> sa.Engine:
    path = sa.make_url(url).database
    if path and path != ":memory:":
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the papercrane database folder {Path(path).parent} "
                f"({exc.strerror}); set PAPERCRANE_HOME to a folder you can write to"
            ) from None
    engine = sa.create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        write = conn.get_execution_options().get("papercrane_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        try:
            return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        except sa.exc.OperationalError:
            return None
        except sa.exc.ProgrammingError:
            return None


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Run Alembic migrations up to ``revision``, one process at a time."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    lock = _migration_lock(engine)
    with lock, engine.connect().execution_options(papercrane_write=True) as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        conn.commit()


def _migration_lock(engine: sa.Engine):  # type: ignore[no-untyped-def]
    from contextlib import nullcontext

    from filelock import FileLock

    if engine.dialect.name == "sqlite":
        path = engine.url.database
        if path and path != ":memory:":
            return FileLock(os.fspath(path) + ".migrate.lock")
    return nullcontext()


def ensure_schema(engine: sa.Engine) -> None:
    if current_revision(engine) != SCHEMA_HEAD:
        upgrade(engine)
