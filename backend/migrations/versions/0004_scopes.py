"""Which projects and domains registered a task or workflow version.

Versions are content hashes, so one row serves every project that registers the same
content; these tables say who may see it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("task_scopes", "workflow_scopes"):
        op.create_table(
            table,
            sa.Column("version", sa.String(64), primary_key=True),
            sa.Column("project", sa.String(100), primary_key=True),
            sa.Column("domain", sa.String(100), primary_key=True),
            sa.Column("created_at", sa.Float, nullable=False),
        )
        op.create_index(f"ix_{table}_scope", table, ["project", "domain", "created_at"])
    # What each version's own row says is its first scope.
    op.execute(
        "INSERT INTO task_scopes (version, project, domain, created_at) "
        "SELECT version, project, domain, created_at FROM tasks"
    )
    op.execute(
        "INSERT INTO workflow_scopes (version, project, domain, created_at) "
        "SELECT version, project, domain, created_at FROM workflows"
    )


def downgrade() -> None:
    op.drop_table("workflow_scopes")
    op.drop_table("task_scopes")
