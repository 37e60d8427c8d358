"""Room for BLAKE3 content digests ("blake3-" + 64 hex) in artifacts.hash.

Values past hashing.LARGE are hashed with BLAKE3, and the digest names its algorithm, so
the column grows from 64 to 80 characters. Widening a VARCHAR is a catalog change in
PostgreSQL (no table rewrite); SQLite does not enforce VARCHAR lengths, so its table is
left as it is rather than copied.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column(
            "artifacts", "hash", type_=sa.String(80), existing_type=sa.String(64), nullable=False
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column(
            "artifacts", "hash", type_=sa.String(64), existing_type=sa.String(80), nullable=False
        )
