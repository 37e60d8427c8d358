"""Tables. Changing them means a new Alembic revision in ``migrations/versions``.

Times are float epoch seconds (portable between SQLite and PostgreSQL, cheap to write);
JSON columns hold small structured payloads, never value bytes.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("version", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, index=True),
    sa.Column("project", sa.String(100), nullable=False),
    sa.Column("domain", sa.String(100), nullable=False),
    sa.Column("bundle_key", sa.String(300), nullable=False),
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

artifacts = sa.Table(
    "artifacts",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("hash", sa.String(80), nullable=False),
    sa.Column("uri", sa.String(300), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("serializer", sa.String(50), nullable=False),
    sa.Column("python_type", sa.String(200), nullable=False),
    sa.Column("preview", sa.String(200), nullable=False, default=""),
    sa.Column("created_at", sa.Float, nullable=False),
    # The storage that holds the bytes: '' where a store's projects share one (the local
    # default), "project/domain" for a server's engines (revision 0008).
    sa.Column("scope", sa.String(201), primary_key=True, server_default=""),
)

executions = sa.Table(
    "executions",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("project", sa.String(100), nullable=False),
    sa.Column("domain", sa.String(100), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("task_version", sa.String(64), nullable=False, default=""),
    sa.Column("kind", sa.String(20), nullable=False, server_default="task"),
    sa.Column("workflow_version", sa.String(64), nullable=False, server_default=""),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("ended_at", sa.Float),
    sa.Column("last_seq", sa.BigInteger, nullable=False, default=0),
    sa.Index("ix_executions_scope_created", "project", "domain", "created_at"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("execution_id", sa.String(32), sa.ForeignKey("executions.id"), nullable=False),
    sa.Column("node", sa.String(200), nullable=False, default=""),
    sa.Column("attempt", sa.Integer, nullable=False, default=0),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Index("ix_events_execution_seq", "execution_id", "seq"),
)

cache_entries = sa.Table(
    "cache_entries",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("project", sa.String(100), primary_key=True),
    sa.Column("domain", sa.String(100), primary_key=True),
    sa.Column("task_name", sa.String(200), nullable=False, index=True),
    sa.Column("task_version", sa.String(64), nullable=False),
    sa.Column("outputs", sa.JSON, nullable=False),
    sa.Column("references", sa.JSON, nullable=False),
    sa.Column("display", sa.JSON),
    sa.Column("execution_id", sa.String(32), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

workflows = sa.Table(
    "workflows",
    metadata,
    sa.Column("version", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("project", sa.String(100), nullable=False),
    sa.Column("domain", sa.String(100), nullable=False),
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("ix_workflows_scope_name", "project", "domain", "name"),
)

#: Which attempt produced an artifact, and from which input artifacts. A projection of
#: the attempt events, kept as a table so a value's history is one indexed walk.
lineage = sa.Table(
    "lineage",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("artifact_id", sa.String(64), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("execution_id", sa.String(32), nullable=False),
    sa.Column("node", sa.String(250), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("task_name", sa.String(200), nullable=False),
    sa.Column("task_version", sa.String(64), nullable=False),
    sa.Column("inputs", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("ix_lineage_artifact", "artifact_id", "created_at"),
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("project", sa.String(100), nullable=False),
    sa.Column("role", sa.String(10), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float),
)


def _scopes(name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("project", sa.String(100), primary_key=True),
        sa.Column("domain", sa.String(100), primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Index(f"ix_{name}_scope", "project", "domain", "created_at"),
    )


#: Who registered a (content-addressed, shared) task or workflow version.
task_scopes = _scopes("task_scopes")
workflow_scopes = _scopes("workflow_scopes")
