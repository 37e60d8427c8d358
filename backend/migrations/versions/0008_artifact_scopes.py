"""An artifact row belongs to the storage that holds its bytes: ``artifacts.scope``.

A server keeps each project and domain's values under a prefix of their own
(``server.settings.storage_for``), but artifact rows were keyed by id alone. An id names
a value, not its bytes: a notebook function's id comes from its code, its pickle differs
from kernel to kernel. So the second project to upload a helper function both used was
refused ("already recorded with other bytes"); a token of one project could upload junk
under an id another would use, and block it; and the answer to an upload told a project
whether another held a value it guessed. Rows are now keyed by (id, scope): ``''`` for
a store whose projects share one storage (the local default), ``project/domain`` for a
server's engines.

Rows from before this revision keep ``scope = ''``. A server's engine reads its own
scope first and falls back to them, and it only ever uses a row whose bytes are in its
own storage (``LocalEngine.find_artifact``), so they stay readable by the project that
wrote them and no other.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


_COLUMNS = ("id", "hash", "uri", "size", "serializer", "python_type", "preview", "created_at")


def _artifacts_table(name: str, scoped: bool) -> None:
    """SQLite cannot change a primary key in place: the table is made anew and copied."""
    key = ["id", "scope"] if scoped else ["id"]
    op.create_table(
        name,
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(80), nullable=False),
        sa.Column("uri", sa.String(300), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("serializer", sa.String(50), nullable=False),
        sa.Column("python_type", sa.String(200), nullable=False),
        sa.Column("preview", sa.String(200), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        *(
            [sa.Column("scope", sa.String(201), nullable=False, server_default="")]
            if scoped
            else []
        ),
        sa.PrimaryKeyConstraint(*key),
    )
    columns = ", ".join(_COLUMNS)
    op.execute(f"INSERT INTO {name} ({columns}) SELECT {columns} FROM artifacts")
    op.drop_table("artifacts")
    op.rename_table(name, "artifacts")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _artifacts_table("_artifacts_0008", scoped=True)
        return
    op.add_column(
        "artifacts", sa.Column("scope", sa.String(201), nullable=False, server_default="")
    )
    op.drop_constraint("artifacts_pkey", "artifacts", type_="primary")
    op.create_primary_key("artifacts_pkey", "artifacts", ["id", "scope"])


def downgrade() -> None:
    """Only a store where no id has rows in two scopes can go back: the older schema
    holds one row per id, and which one a project's executions need is not known."""
    bind = op.get_bind()
    shared = bind.execute(
        sa.text("SELECT id FROM artifacts GROUP BY id HAVING count(*) > 1 LIMIT 1")
    ).first()
    if shared is not None:
        raise RuntimeError(
            f"artifact {shared[0]} is recorded for more than one project, which papercrane "
            "before revision 0008 cannot hold; keep the newer papercrane (or start a new "
            "store)"
        )
    if bind.dialect.name == "sqlite":
        _artifacts_table("_artifacts_0007", scoped=False)
        return
    op.drop_constraint("artifacts_pkey", "artifacts", type_="primary")
    op.drop_column("artifacts", "scope")
    op.create_primary_key("artifacts_pkey", "artifacts", ["id"])
