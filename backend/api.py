"""The engine API: what the magics, the CLI and (later) the server and its HTTP client
have in common. ``LocalEngine`` implements it in-process; an HTTP client will implement
the same methods against ``papercrane server``, checked by one contract test suite."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .model import ArtifactRef, Event, ExecutionState, TaskConfig, TaskSpec


class RunListener(Protocol):
    """Live updates while a run goes on (the widget is one).

    ``on_event`` gets every committed event, in order, with the execution's live state
    (already past the whole committed batch). A listener may also have ``on_events``
    (``BatchListener``): it then gets each committed batch at one call instead."""

    def on_event(self, event: Event, state: ExecutionState) -> None: ...

    def on_log(self, stream: str, text: str) -> None: ...


class BatchListener(RunListener, Protocol):
    """A listener that takes a committed batch of events at once: a map commits
    thousands per transaction, and a listener that only shows the state (the run
    widget) need not be called, nor an ``Event`` built, for each of them."""

    def on_events(self, events: Iterable[Event], state: ExecutionState) -> None:
        """``events``: the batch, in order, each built as it is iterated (iterate once)."""


def deliver(listener: RunListener, events: Iterable[Event], state: ExecutionState) -> None:
    """Hand committed events to ``listener``: to its ``on_events`` if it has one, else
    to ``on_event`` one by one, in order."""
    on_events = getattr(listener, "on_events", None)
    if on_events is not None:
        on_events(events, state)
        return
    on_event = listener.on_event
    for event in events:
        on_event(event, state)


class ConnectionListener(RunListener, Protocol):
    """A listener told when the server it follows a run on cannot be reached (the run
    goes on there; the client retries): the widget says so until it is back."""

    def on_connection(self, problem: str | None) -> None:
        """``problem``: what is wrong and how often it was retried; None: it is back."""


def tell_connection(listener: RunListener, problem: str | None) -> None:
    """Hand a connection change to ``listener``, if it listens for them
    (``ConnectionListener``); others hear only of events and logs."""
    on_connection = getattr(listener, "on_connection", None)
    if on_connection is not None:
        on_connection(problem)


class NullListener:
    def on_event(self, event: Event, state: ExecutionState) -> None:
        pass

    def on_events(self, events: Iterable[Event], state: ExecutionState) -> None:
        pass  # nobody listens: no event need be built

    def on_log(self, stream: str, text: str) -> None:
        pass


@dataclass
class RunRequest:
    spec: TaskSpec
    config: TaskConfig
    inputs: dict[str, ArtifactRef]
    #: Live input values held by the caller: required by the inline executor.
    values: dict[str, Any] | None = field(default=None, repr=False)
    project: str = "default"
    domain: str = "development"
    #: Outputs named with --outputs: missing ones are an error rather than skipped.
    declared_outputs: tuple[str, ...] = ()
    #: Load output values for the caller (the kernel binds them).
    want_values: bool = True
    #: ``--map``: run once per element of one input (a ``workflow.MapSpec``).
    map: Any = None
    max_parallel: int = 4
    #: Where input values came from, when the caller knows: a notebook variable bound
    #: from an earlier execution's output. {input: {"execution": id, "node": id}}
    sources: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class RunResult:
    execution: ExecutionState
    outputs: dict[str, ArtifactRef]
    references: dict[str, str]
    values: dict[str, Any] = field(repr=False, default_factory=dict)
    display: dict[str, Any] | None = None

    @property
    def node(self):  # type: ignore[no-untyped-def]
        return next(iter(self.execution.nodes.values()))


class EngineAPI(ABC):
    @abstractmethod
    def register_task(self, spec: TaskSpec, project: str, domain: str) -> str:
        """Register (idempotently) and return the task version."""

    @abstractmethod
    def put_value(self, value: Any, what: str, fingerprint: str | None = None) -> ArtifactRef:
        """Store a value's bytes; ``what`` names it in errors."""

    @abstractmethod
    def run_task(self, request: RunRequest, listener: RunListener | None = None) -> RunResult:
        """Run a task to the end (cache, retries, timeout); raise ``TaskFailed`` or
        ``ExecutionAborted`` if it does not succeed."""

    @abstractmethod
    def execution(self, execution_id: str) -> ExecutionState: ...

    @abstractmethod
    def events(self, execution_id: str, after: int = 0) -> list[Event]: ...

    @abstractmethod
    def list_executions(self, limit: int | None = 50, **filters: Any) -> list[dict[str, Any]]:
        """Newest first, at most ``limit`` (None: all). Filters: project, domain, status,
        name, before (created_at), and id_prefix (executions whose id starts so)."""

    def complete_execution_id(self, given: str) -> str:
        """The id of the one execution whose id starts with ``given`` (at least
        ``EXECUTION_PREFIX`` characters): people type ``645a``, not 16 hex digits. Not
        found raises ``NotFound``; a start that several ids share raises ``UserError``
        listing them. Called when ``given`` is not an id as it stands."""
        from .config import EXECUTION_PREFIX, ID_PATTERN
        from .errors import NotFound, UserError

        hint = (
            f"give its id or at least {EXECUTION_PREFIX} of its first characters "
            "(papercrane executions list shows them)"
        )
        prefix = given.lower()
        if len(prefix) < EXECUTION_PREFIX or not re.fullmatch(ID_PATTERN, prefix):
            raise NotFound(f"no execution {given!r}; {hint}")
        found = [r["id"] for r in self.list_executions(limit=10, id_prefix=prefix)]
        if not found:
            raise NotFound(f"no execution {given!r}; {hint}")
        if len(found) > 1:
            more = " and more" if len(found) == 10 else ""
            raise UserError(
                f"{given!r} is the start of several executions' ids: {', '.join(found)}"
                f"{more}; give more characters"
            )
        return found[0]

    @abstractmethod
    def load(self, ref: ArtifactRef) -> Any: ...

    @abstractmethod
    def artifact(self, artifact_id: str) -> ArtifactRef: ...

    @abstractmethod
    def logs(self, execution_id: str, node: str, attempt: int, stream: str = "stdout") -> str: ...
