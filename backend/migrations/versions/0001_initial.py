"""Initial schema: tasks, artifacts, executions with their events, cache entries.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tasks",
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("project", sa.String(100), nullable=False),
        sa.Column("domain", sa.String(100), nullable=False),
        sa.Column("bundle_key", sa.String(300), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_tasks_name", "tasks", ["name"])
    op.create_table(
        "artifacts",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("uri", sa.String(300), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("serializer", sa.String(50), nullable=False),
        sa.Column("python_type", sa.String(200), nullable=False),
        sa.Column("preview", sa.String(200), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_artifacts_hash", "artifacts", ["hash"])
    op.create_table(
        "executions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("project", sa.String(100), nullable=False),
        sa.Column("domain", sa.String(100), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("task_version", sa.String(64), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("ended_at", sa.Float),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
    )
    op.create_index(
        "ix_executions_scope_created", "executions", ["project", "domain", "created_at"]
    )
    op.create_table(
        "events",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("execution_id", sa.String(32), sa.ForeignKey("executions.id"), nullable=False),
        sa.Column("node", sa.String(200), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
    )
    op.create_index("ix_events_execution_seq", "events", ["execution_id", "seq"])
    op.create_table(
        "cache_entries",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("project", sa.String(100), primary_key=True),
        sa.Column("domain", sa.String(100), primary_key=True),
        sa.Column("task_name", sa.String(200), nullable=False),
        sa.Column("task_version", sa.String(64), nullable=False),
        sa.Column("outputs", sa.JSON, nullable=False),
        sa.Column("references", sa.JSON, nullable=False),
        sa.Column("display", sa.JSON),
        sa.Column("execution_id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_cache_entries_task_name", "cache_entries", ["task_name"])


def downgrade() -> None:
    op.drop_table("cache_entries")
    op.drop_table("events")
    op.drop_table("executions")
    op.drop_table("artifacts")
    op.drop_table("tasks")
