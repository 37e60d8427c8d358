"""Listings the server's API needs, scoped to a project and domain."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from . import Store
from .schema import (
    executions,
    task_scopes,
    tasks,
    tokens,
    workflow_scopes,
    workflows,
)


def _rows(store: Store, query: Any) -> list[dict[str, Any]]:
    with store.read() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def list_tasks(store: Store, project: str, domain: str, limit: int = 100) -> list[dict[str, Any]]:
    q = (
        sa.select(tasks.c.version, tasks.c.name, task_scopes.c.created_at)
        .join(task_scopes, task_scopes.c.version == tasks.c.version)
        .where(task_scopes.c.project == project, task_scopes.c.domain == domain)
        .order_by(task_scopes.c.created_at.desc())
        .limit(limit)
    )
    return _rows(store, q)


def list_workflows(
    store: Store, project: str, domain: str, limit: int = 100
) -> list[dict[str, Any]]:
    q = (
        sa.select(workflows.c.version, workflows.c.name, workflow_scopes.c.created_at)
        .join(workflow_scopes, workflow_scopes.c.version == workflows.c.version)
        .where(workflow_scopes.c.project == project, workflow_scopes.c.domain == domain)
        .order_by(workflow_scopes.c.created_at.desc())
        .limit(limit)
    )
    return _rows(store, q)


def list_cache(
    store: Store,
    project: str,
    domain: str,
    task_name: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    return store.cache_list(project=project, domain=domain, task_name=task_name, limit=limit)


def clear_cache(store: Store, project: str, domain: str, task_name: str | None = None) -> int:
    return store.cache_clear(project=project, domain=domain, task_name=task_name)


def projects(store: Store) -> list[str]:
    found: set[str] = set()
    for table in (executions, tasks, tokens):
        with store.read() as conn:
            found.update(r[0] for r in conn.execute(sa.select(table.c.project).distinct()))
    found.discard("*")
    return sorted(found)


def domains(store: Store, project: str) -> list[str]:
    with store.read() as conn:
        used = {
            r[0]
            for r in conn.execute(
                sa.select(executions.c.domain).where(executions.c.project == project).distinct()
            )
        }
    return sorted(used | {"development", "staging", "production"})
