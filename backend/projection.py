"""Current state as a fold over events.

The store keeps a projection row per execution for fast listing, but this reducer is the
definition of what the events mean: the live engine, the store's rebuild and the widget
all go through ``apply`` (the scheduler through ``fold``, the same on an event's fields).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .model import ErrorInfo, Event, EventKind, ExecutionState, NodeState, Status

K = EventKind


def apply(state: ExecutionState, event: Event) -> ExecutionState:
    """Fold one event into ``state``."""
    return fold(state, event.kind, event.node, event.attempt, event.payload, event.ts, event.seq)


def fold(
    state: ExecutionState,
    kind: EventKind,
    node_id: str,
    attempt: int,
    p: dict[str, Any],
    ts: float,
    seq: int = 0,
) -> ExecutionState:
    """``apply`` of an event given field by field: the scheduler folds what it emits
    before any ``Event`` exists (a map emits four per element, and keeps them as
    columns until its flush, ``model.EventColumns``). The one definition of what each
    event means; ``apply`` is this on an ``Event``'s fields."""
    if seq > state.last_seq:
        state.last_seq = seq
    if (
        kind is K.EXECUTION_CREATED
        or kind is K.EXECUTION_SUCCEEDED
        or kind is K.EXECUTION_FAILED
        or kind is K.EXECUTION_ABORTED
    ):
        return _apply_execution(state, kind, p, ts)

    node = state.nodes.get(node_id)
    if node is None:
        node = state.nodes[node_id] = NodeState(node=node_id)
    if "[" in node_id and kind in _ELEMENT_ENDS:
        _count_element(state, kind, node_id)
    # (The kinds every task and map element records come first: a map folds thousands.)
    if kind is K.ATTEMPT_STARTED:
        node.status = Status.RUNNING
        node.attempt = attempt
        node.started_at = node.started_at or ts
        if state.status is Status.QUEUED:
            state.status = Status.RUNNING
    elif kind is K.ATTEMPT_SUCCEEDED:
        node.outputs = dict(p.get("outputs", {}))
        node.references = dict(p.get("references", {}))
        node.display = p.get("display")
    elif kind is K.NODE_SUCCEEDED:
        node.status = Status.SUCCEEDED
        node.error = None
        node.ended_at = ts
    elif kind is K.CACHE_MISS:
        node.cache, node.cache_key = "miss", p["cache_key"]
    elif kind is K.CACHE_HIT:
        node.cache, node.cache_key = "hit", p["cache_key"]
        node.cache_source = {
            "execution_id": p.get("source_execution", ""),
            "created_at": p.get("source_created_at", 0.0),
        }
        node.outputs = dict(p.get("outputs", {}))
        node.references = dict(p.get("references", {}))
        node.display = p.get("display")
        node.status = Status.CACHED
        node.started_at = node.started_at or ts
        node.ended_at = ts
    elif kind is K.NODE_QUEUED:
        node.status = Status.QUEUED
        node.cache = "on" if p.get("cache") else "off"
    elif kind is K.CACHE_INVALID:
        node.cache, node.cache_key = "invalid", p["cache_key"]
    elif kind is K.ATTEMPT_STATUS:
        node.where = p.get("message", "")
    elif kind is K.LOG_STORED:
        node.logs.setdefault(attempt, {})[p["stream"]] = p["uri"]
    elif kind is K.ATTEMPT_FAILED:
        error = ErrorInfo.from_dict(p["error"])
        node.error = error
        if error.kind.value == "system":
            node.system_failures += 1
        else:
            node.user_failures += 1
    elif kind is K.RETRY_SCHEDULED:
        node.status = Status.QUEUED
    elif kind is K.NODE_FAILED:
        node.status = Status.FAILED
        node.ended_at = ts
        if p.get("error"):
            node.error = ErrorInfo.from_dict(p["error"])
    elif kind is K.NODE_SKIPPED:
        node.status = Status.SKIPPED
        node.ended_at = ts
    elif kind is K.NODE_RECOVERED:
        node.status = Status.RECOVERED
        node.cache = "recovered"
        node.outputs = dict(p.get("outputs", {}))
        node.cache_source = {"execution_id": p.get("source_execution", "")}
        node.started_at = node.started_at or ts
        node.ended_at = ts
    elif kind is K.MAP_EXPANDED:
        node.elements = p["elements"]
        node.status = Status.RUNNING
        node.started_at = node.started_at or ts
    return state


def _apply_execution(
    state: ExecutionState, kind: EventKind, p: dict[str, Any], ts: float
) -> ExecutionState:
    """The events about the whole execution."""
    if kind is K.EXECUTION_CREATED:
        state.project = p.get("project", state.project)
        state.domain = p.get("domain", state.domain)
        state.name = p.get("name", "")
        state.kind = p.get("kind", "task")
        state.task_version = p.get("task_version", "")
        state.workflow_version = p.get("workflow_version", "")
        state.recovered_from = p.get("recovered_from", "")
        state.inputs = dict(p.get("inputs", {}))
        state.config = dict(p.get("config", {}))
        state.created_at = ts
        state.status = Status.QUEUED
    elif kind is K.EXECUTION_SUCCEEDED:
        tops = [n for n in state.nodes.values() if "[" not in n.node]
        cached = bool(tops) and all(n.status is Status.CACHED for n in tops)
        state.status = Status.CACHED if cached else Status.SUCCEEDED
        state.ended_at = ts
    elif kind is K.EXECUTION_FAILED:
        state.status = Status.FAILED
        state.ended_at = ts
        if p.get("error"):
            state.error = ErrorInfo.from_dict(p["error"])
    else:  # EXECUTION_ABORTED
        state.status = Status.ABORTED
        state.ended_at = ts
        for node in state.nodes.values():
            if not node.status.terminal:
                node.status = Status.ABORTED
                node.ended_at = ts
    return state


_ELEMENT_ENDS = (K.NODE_SUCCEEDED, K.CACHE_HIT, K.NODE_FAILED, K.NODE_RECOVERED)


def _count_element(state: ExecutionState, kind: EventKind, node_id: str) -> None:
    parent = state.nodes.get(node_id.partition("[")[0])
    if parent is None:
        return
    if kind is K.NODE_FAILED:
        parent.elements_failed += 1
    else:
        parent.elements_done += 1
        if kind is K.CACHE_HIT:
            parent.elements_cached += 1


def replay(execution_id: str, events: Iterable[Event]) -> ExecutionState:
    state = ExecutionState(id=execution_id)
    for event in events:
        apply(state, event)
    return state
