"""How the command line shows a failed task: the node, its attempt and the user's own
traceback. ``papercrane run``, ``recover`` and ``executions show`` print failures the
same way, from this one place."""

from __future__ import annotations

from typing import Any


def node_failure(node_id: str, node: Any, execution_id: str) -> list[Any]:
    """What to print for a failed node (a ``model.NodeState``): a headline naming the
    task, its execution and attempt (for a map, its error, which names the elements),
    then its traceback, as rich ``Text`` (no markup is read in a user's message)."""
    from rich.text import Text

    error = node.error
    if node.elements and error is not None:  # a map: its elements made the attempts
        where = f": {error.message}"
    elif node.attempt:
        where = f", attempt {node.attempt}"
    else:
        where = ", before its first attempt"
    parts = [
        Text.assemble(
            (f"task {node_id!r} failed", "bold red"), f" in execution {execution_id}{where}"
        )
    ]
    if error is not None:
        parts.append(Text(error.traceback.rstrip() or f"{error.type}: {error.message}"))
    return parts


def failed_nodes(state: Any) -> list[tuple[str, Any]]:
    """An execution's failed tasks, a map's elements and steps left out (the map's own
    node says how many failed, and which first)."""
    return [
        (name, n)
        for name, n in state.nodes.items()
        if n.status.value == "failed" and "[" not in name and ":" not in name
    ]
