"""Artifacts may live inside packs: ``artifacts.uri`` can name a byte range of one.

A map writes two small values per element; they are now packed, many to one storage
object (``backend/packs.py``), and an artifact's ``uri`` may be a member key,
``packs/ab/<name>@<offset>+<size>``. No table changes: the column holds such keys as
they are. The revision marks the stored format: a papercrane older than this one would
read a member key as a missing file (reporting sound values as lost and dropping cache
entries that are fine), so it refuses a store at this revision instead.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing to change in the tables (see the module's docstring)."""


def downgrade() -> None:
    """Only a store that names no packed value can go back: the older code could not
    read one (the values would have to be copied out of their packs first)."""
    bind = op.get_bind()
    packed = bind.execute(
        sa.text(
            "SELECT 1 FROM artifacts WHERE uri LIKE 'packs/%' UNION ALL "
            "SELECT 1 FROM cache_entries WHERE CAST(outputs AS TEXT) LIKE '%packs/%' LIMIT 1"
        )
    ).first()
    if packed is not None:
        raise RuntimeError(
            "this store holds packed artifacts, which papercrane before revision 0006 "
            "cannot read; keep the newer papercrane (or start a new store)"
        )
