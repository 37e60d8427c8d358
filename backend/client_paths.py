"""How the client names executions and workflows on the wire (its request paths and
bodies), shared by ``client``'s parts."""

from __future__ import annotations

import re
from typing import Any

from . import config
from .errors import NotFound
from .workflow import WorkflowSpec

_ID = re.compile(config.ID_PATTERN)


def execution_path(execution_id: str) -> str:
    """An execution's API path. An id that is no id (the server answers its pattern
    with a 422 about a path parameter) is an unknown execution, as the embedded engine
    says it."""
    if not _ID.fullmatch(execution_id):
        raise NotFound(f"no execution {execution_id!r}")
    return f"/api/v1/executions/{execution_id}"


def workflow_body(spec: WorkflowSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "nodes": [
            {
                "id": n.id,
                "task": n.task.to_dict(),
                "config": n.config.to_dict(),
                "bindings": {k: b.to_dict() for k, b in n.bindings.items()},
                "map": n.map.to_dict() if n.map else None,
                "declared_outputs": list(n.declared_outputs),
                "cell_id": n.cell_id,
            }
            for n in spec.nodes
        ],
    }
