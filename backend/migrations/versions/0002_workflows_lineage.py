"""Workflows and lineage.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workflows",
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("project", sa.String(100), nullable=False),
        sa.Column("domain", sa.String(100), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_workflows_scope_name", "workflows", ["project", "domain", "name"])
    op.create_table(
        "lineage",
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
    )
    op.create_index("ix_lineage_artifact", "lineage", ["artifact_id", "created_at"])
    op.create_index("ix_lineage_execution", "lineage", ["execution_id"])
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("kind", sa.String(20), nullable=False, server_default="task"))
        batch.add_column(
            sa.Column("workflow_version", sa.String(64), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("workflow_version")
        batch.drop_column("kind")
    op.drop_table("lineage")
    op.drop_table("workflows")
