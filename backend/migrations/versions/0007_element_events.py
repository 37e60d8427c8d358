"""A map element records its attempts only; two indexes no query used are dropped.

Events: a map element (node ``name[i]``) no longer records ``cache_miss`` (its first
``attempt_started`` names the cache key that missed) nor ``node_succeeded`` (its
successful attempt ends it); see ``model.EventKind``. ``projection.fold`` reads both
forms, so the executions already stored read as before. A papercrane older than this
revision would read a new map's elements as still running, so the revision marks the
format and that papercrane refuses the store (``db.check_not_newer``).

Indexes: ``ix_artifacts_hash`` and ``ix_lineage_execution`` served no query (artifacts
are found by id, lineage by artifact). Every artifact and lineage row paid for them, and
``artifacts.hash`` is a random 64-character key: on a store of 100,000 artifacts its
index was about half of what writing a 10,000-element map's artifact rows cost.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_artifacts_hash", table_name="artifacts")
    op.drop_index("ix_lineage_execution", table_name="lineage")


def downgrade() -> None:
    """Only a store with no map element recorded in the new form can go back: the older
    code would read those elements as still running (history is not rewritten)."""
    bind = op.get_bind()
    new_form = bind.execute(
        sa.text(
            "SELECT 1 FROM events WHERE kind = 'attempt_started' AND node LIKE '%[%' "
            "AND CAST(payload AS TEXT) LIKE '%\"cache_key\"%' LIMIT 1"
        )
    ).first()
    if new_form is None:
        new_form = bind.execute(
            sa.text(
                "SELECT 1 FROM events s WHERE s.kind = 'attempt_succeeded' AND s.node LIKE "
                "'%[%' AND NOT EXISTS (SELECT 1 FROM events n WHERE n.execution_id = "
                "s.execution_id AND n.node = s.node AND n.kind = 'node_succeeded') LIMIT 1"
            )
        ).first()
    if new_form is not None:
        raise RuntimeError(
            "this store holds map elements recorded without node_succeeded events, which "
            "papercrane before revision 0007 reads as still running; keep the newer "
            "papercrane (or start a new store)"
        )
    op.create_index("ix_lineage_execution", "lineage", ["execution_id"])
    op.create_index("ix_artifacts_hash", "artifacts", ["hash"])
