"""Metadata store: SQLAlchemy tables, Alembic migrations, queries."""

from .repo import Store

__all__ = ["Store"]
