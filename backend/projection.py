"""Current state as a fold over events.

The store keeps a projection row per execution for fast listing, but this reducer is the
definition of what the events mean: the live engine, the store's rebuild and the widget
all go through ``apply`` (the scheduler through ``fold``, the same on an event's fields).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .model import ErrorInfo, ErrorKind, Event, EventKind, ExecutionState, NodeState, Status

K = EventKind


#: The kinds and statuses ``fold`` names, as module names: a map folds thousands of
#: events, and an enum member looked up on its class (``K.NAME``) costs ~70 ns on
#: Python 3.11 (a descriptor call), a module name a few.
_ATTEMPT_FAILED = K.ATTEMPT_FAILED
_ATTEMPT_STARTED = K.ATTEMPT_STARTED
_ATTEMPT_STATUS = K.ATTEMPT_STATUS
_ATTEMPT_SUCCEEDED = K.ATTEMPT_SUCCEEDED
_CACHE_HIT = K.CACHE_HIT
_CACHE_INVALID = K.CACHE_INVALID
_CACHE_MISS = K.CACHE_MISS
_EXECUTION_ABORTED = K.EXECUTION_ABORTED
_EXECUTION_CREATED = K.EXECUTION_CREATED
_EXECUTION_FAILED = K.EXECUTION_FAILED
_EXECUTION_SUCCEEDED = K.EXECUTION_SUCCEEDED
_LOG_STORED = K.LOG_STORED
_MAP_EXPANDED = K.MAP_EXPANDED
_NODE_FAILED = K.NODE_FAILED
_NODE_QUEUED = K.NODE_QUEUED
_NODE_RECOVERED = K.NODE_RECOVERED
_NODE_SKIPPED = K.NODE_SKIPPED
_NODE_SUCCEEDED = K.NODE_SUCCEEDED
_RETRY_SCHEDULED = K.RETRY_SCHEDULED
_S_CACHED = Status.CACHED
_S_FAILED = Status.FAILED
_S_QUEUED = Status.QUEUED
_S_RECOVERED = Status.RECOVERED
_S_RUNNING = Status.RUNNING
_S_SKIPPED = Status.SKIPPED
_S_SUCCEEDED = Status.SUCCEEDED


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
    before any ``Event`` exists (a map emits two per element, and keeps them as
    columns until its flush, ``model.EventColumns``). The one definition of what each
    event means; ``apply`` is this on an ``Event``'s fields."""
    if seq > state.last_seq:
        state.last_seq = seq
    if (
        kind is _EXECUTION_CREATED
        or kind is _EXECUTION_SUCCEEDED
        or kind is _EXECUTION_FAILED
        or kind is _EXECUTION_ABORTED
    ):
        return _apply_execution(state, kind, p, ts)

    node = state.nodes.get(node_id)
    if node is None:
        node = state.nodes[node_id] = NodeState(node=node_id)
    element = "[" in node_id
    if element and kind in _ELEMENT_ENDS and not node.status.terminal:
        # (an older store's element has a node_succeeded after its attempt_succeeded)
        _count_element(state, kind, node_id)
    # (The kinds every task and map element records come first: a map folds thousands.)
    if kind is _ATTEMPT_STARTED:
        node.status = _S_RUNNING
        node.attempt = attempt
        node.started_at = node.started_at or ts
        if state.status is _S_QUEUED:
            state.status = _S_RUNNING
        executor = p.get("executor")
        if executor:  # (absent from an older store's events)
            node.executor = executor
        key = p.get("cache_key")
        if key:  # a map element's miss (see ``model.EventKind``)
            node.cache_key = key
            if node.cache != "invalid":
                node.cache = "miss"
    elif kind is _ATTEMPT_SUCCEEDED:
        node.outputs = dict(p.get("outputs", {}))
        node.references = dict(p.get("references", {}))
        node.display = p.get("display")
        if element:  # a map element's successful attempt is its end
            node.status = _S_SUCCEEDED
            node.error = None
            node.ended_at = ts
    elif kind is _NODE_SUCCEEDED:
        node.status = _S_SUCCEEDED
        node.error = None
        node.ended_at = ts
    elif kind is _CACHE_MISS:
        node.cache, node.cache_key = "miss", p["cache_key"]
    elif kind is _CACHE_HIT:
        node.cache, node.cache_key = "hit", p["cache_key"]
        node.cache_source = {
            "execution_id": p.get("source_execution", ""),
            "created_at": p.get("source_created_at", 0.0),
        }
        node.outputs = dict(p.get("outputs", {}))
        node.references = dict(p.get("references", {}))
        node.display = p.get("display")
        node.status = _S_CACHED
        node.started_at = node.started_at or ts
        node.ended_at = ts
    elif kind is _NODE_QUEUED:
        node.status = _S_QUEUED
        node.cache = "on" if p.get("cache") else "off"
    elif kind is _CACHE_INVALID:
        node.cache, node.cache_key = "invalid", p["cache_key"]
    elif kind is _ATTEMPT_STATUS:
        node.where = p.get("message", "")
    elif kind is _LOG_STORED:
        node.logs.setdefault(attempt, {})[p["stream"]] = p["uri"]
    elif kind is _ATTEMPT_FAILED:
        error = ErrorInfo.from_dict(p["error"])
        node.error = error
        node.display = p.get("display")  # what the failed attempt displayed, if anything
        if error.kind.value == "system":
            node.system_failures += 1
        else:
            node.user_failures += 1
    elif kind is _RETRY_SCHEDULED:
        node.status = _S_QUEUED
    elif kind is _NODE_FAILED:
        node.status = _S_FAILED
        node.ended_at = ts
        if p.get("error"):
            node.error = ErrorInfo.from_dict(p["error"])
        if "display" in p:  # a map's: what its elements displayed
            node.display = p["display"]
    elif kind is _NODE_SKIPPED:
        node.status = _S_SKIPPED
        node.ended_at = ts
    elif kind is _NODE_RECOVERED:
        node.status = _S_RECOVERED
        node.cache = "recovered"
        node.outputs = dict(p.get("outputs", {}))
        node.cache_source = {"execution_id": p.get("source_execution", "")}
        node.started_at = node.started_at or ts
        node.ended_at = ts
    elif kind is _MAP_EXPANDED:
        node.elements = p["elements"]
        node.status = _S_RUNNING
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
        state.runner = dict(p.get("runner") or {})
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
        # (a lost execution ended at its last recorded step, before the read that found it)
        ts = p.get("ended_at", ts)
        state.ended_at = ts
        if p.get("reason"):  # (why it stopped: an interrupt, a cancel, its process lost)
            state.error = ErrorInfo(ErrorKind.SYSTEM, "Aborted", p["reason"])
        for node in state.nodes.values():
            if not node.status.terminal:
                node.status = Status.ABORTED
                node.ended_at = ts
    return state


_ELEMENT_ENDS = (_ATTEMPT_SUCCEEDED, _NODE_SUCCEEDED, _CACHE_HIT, _NODE_FAILED, _NODE_RECOVERED)


def _count_element(state: ExecutionState, kind: EventKind, node_id: str) -> None:
    parent = state.nodes.get(node_id.partition("[")[0])
    if parent is None:
        return
    if kind is _NODE_FAILED:
        parent.elements_failed += 1
    else:
        parent.elements_done += 1
        if kind is _CACHE_HIT:
            parent.elements_cached += 1


def replay(execution_id: str, events: Iterable[Event]) -> ExecutionState:
    state = ExecutionState(id=execution_id)
    for event in events:
        apply(state, event)
    return state
