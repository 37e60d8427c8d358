"""Alembic migrations of the papercrane schema (``papercrane db upgrade`` runs them)."""
