"""Running on the server: submitting tasks and workflows, recovering and aborting
executions, and following one over server-sent events until it ends. Part of
``client.RemoteEngine``."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from .api import (
    NullListener,
    RunListener,
    RunRequest,
    RunResult,
    tell_connection,
)
from .client_paths import execution_path, workflow_body
from .errors import (
    ConfigError,
    Conflict,
    ExecutionAborted,
    NotFound,
    PapercraneError,
    TaskFailed,
    WorkflowFailed,
)
from .model import ArtifactRef, Event, EventKind, ExecutionState, Status
from .projection import apply
from .workflow import WorkflowSpec

_TERMINAL = (EventKind.EXECUTION_SUCCEEDED, EventKind.EXECUTION_FAILED, EventKind.EXECUTION_ABORTED)


@dataclass
class _Stream:
    """One connection to an execution's event stream: whether it was answered, and what
    to call when it is."""

    on_open: Callable[[], None]
    opened: bool = False


@dataclass
class RemoteNode:
    """What a notebook needs of a finished node: its outputs, loaded here."""

    id: str
    status: Status
    outputs: dict[str, ArtifactRef] = field(default_factory=dict)
    references: dict[str, str] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict, repr=False)
    display: dict[str, Any] | None = None


@dataclass
class RemoteResult:
    execution: ExecutionState
    nodes: dict[str, RemoteNode]


class RemoteRuns:
    """``RemoteEngine``'s part that submits executions and follows them."""

    def submit_task(self, request: RunRequest) -> str:
        if request.config.executor == "inline":  # ("" lets the server choose)
            raise ConfigError(
                "the inline executor runs in this kernel, but PAPERCRANE_URL sends tasks to "
                "the server: use --executor local (it runs on the server) or unset PAPERCRANE_URL"
            )
        body: dict[str, Any] = {
            "task": request.spec.to_dict(),
            "config": request.config.to_dict(),
            "inputs": {n: r.id for n, r in request.inputs.items()},
            "declared_outputs": list(request.declared_outputs),
            "max_parallel": request.max_parallel,
            "sources": request.sources,
        }
        if request.map is not None:
            body["map"] = request.map.to_dict()
        return self._req("POST", f"{self._scope}/executions", json=body)["id"]

    def submit_workflow(self, request: Any) -> str:
        for n in request.spec.nodes:
            if n.config.executor == "inline":
                raise ConfigError(
                    f"task {n.id!r} uses the inline executor, which runs in this kernel; "
                    "with PAPERCRANE_URL set, use --executor local (it runs on the server)"
                )
        body = {
            "workflow": workflow_body(request.spec),
            "params": {n: r.id for n, r in request.params.items()},
            "max_parallel": request.max_parallel,
            "failure_policy": request.failure_policy,
            "sources": request.sources,
        }
        return self._req("POST", f"{self._scope}/executions", json=body)["id"]

    def run_task(self, request: RunRequest, listener: RunListener | None = None) -> RunResult:
        execution_id = self.submit_task(request)
        state = self.follow(execution_id, listener)
        result = self._result(state, request.want_values)
        node = result.nodes[request.spec.name]
        return RunResult(state, node.outputs, node.references, node.values, node.display)

    def run_workflow(self, request: Any, listener: RunListener | None = None) -> RemoteResult:
        execution_id = self.submit_workflow(request)
        return self._result(self.follow(execution_id, listener), request.want_values)

    def recover(
        self,
        execution_id: str,
        listener: RunListener | None = None,
        *,
        max_parallel: int = 4,
        want_values: bool = True,
        workflow: WorkflowSpec | None = None,
    ) -> RemoteResult:
        body: dict[str, Any] = {"max_parallel": max_parallel}
        if workflow is not None:  # the edited workflow: the server must know it first
            body["workflow_version"] = self.register_workflow(workflow)
        try:
            new = self._req("POST", f"{execution_path(execution_id)}/recover", json=body)["id"]
        except NotFound:  # (the start of an id: the server takes whole ones)
            execution_id = self.complete_execution_id(execution_id)
            new = self._req("POST", f"{execution_path(execution_id)}/recover", json=body)["id"]
        return self._result(self.follow(new, listener), want_values)

    def abort(self, execution_id: str) -> None:
        self._req("POST", f"{execution_path(execution_id)}/abort")

    #: Waits between reconnection attempts while the server cannot be reached: the first,
    #: then doubled each time up to the last (a follower must not spin a core meanwhile).
    RETRY_FIRST, RETRY_MOST = 0.5, 5.0

    def follow(self, execution_id: str, listener: RunListener | None = None) -> ExecutionState:
        """Stream the execution's events until it ends, reconnecting if the stream drops
        (with a growing wait). While the server is unreachable the execution goes on
        there: one line on stderr says so, and the listener hears of each failed try
        (``on_connection``: the widget shows it) until the server is back."""
        listener = listener or NullListener()
        state = ExecutionState(id=execution_id)
        wait, lost, tries = self.RETRY_FIRST, False, 0

        def connected() -> None:
            nonlocal wait, lost, tries
            wait = self.RETRY_FIRST
            if lost:
                self._say(f"the server at {self.url} is back; following {execution_id}")
                lost = False
            if tries:
                tries = 0
                tell_connection(listener, None)

        try:
            while True:
                stream = _Stream(connected)
                try:
                    for kind, data in self._sse(execution_id, state.last_seq, stream):
                        if kind == "log":
                            listener.on_log(data["stream"], data["text"])
                        elif kind == "event":
                            event = Event(
                                data["execution_id"],
                                EventKind(data["kind"]),
                                data["node"],
                                data["attempt"],
                                data["payload"],
                                data["ts"],
                                data["seq"],
                            )
                            apply(state, event)
                            listener.on_event(event, state)
                        elif kind == "end":
                            return state
                except httpx.TransportError:
                    if not stream.opened:
                        if not lost:
                            self._say(
                                f"the server at {self.url} is unreachable, retrying... "
                                f"(interrupt to stop waiting; execution {execution_id} goes on "
                                "on the server)"
                            )
                            lost = True
                        tries += 1
                        tell_connection(
                            listener,
                            f"unreachable, reconnecting (try {tries})… the task goes on there",
                        )
                if state.status.terminal and state.ended_at is not None:
                    return state
                time.sleep(wait)
                wait = min(wait * 2, self.RETRY_MOST)
        except KeyboardInterrupt:
            try:
                self.abort(execution_id)
            except Conflict:
                pass  # it ended meanwhile: its end is fetched below
            except PapercraneError as exc:
                raise ExecutionAborted(
                    f"execution {execution_id} was interrupted here, but the server could not "
                    f"be asked to abort it ({exc}); it may still run there: see "
                    f"`papercrane executions show {execution_id}`, and abort it when the server "
                    f"is back with POST {self.url}{execution_path(execution_id)}/abort (e.g. "
                    'curl -X POST -H "Authorization: Bearer $PAPERCRANE_TOKEN" <that URL>)'
                ) from None
            self._settle(state, listener)
            raise ExecutionAborted(
                f"execution {execution_id} was interrupted; the server was asked to abort it"
            ) from None

    #: How long an interrupted follower waits for the server to record the abort.
    SETTLE = 10.0

    def _settle(self, state: ExecutionState, listener: RunListener) -> None:
        """After an interrupt: the events up to the execution's end (its abort, which
        the server records once it has stopped the attempt), given to the listener, so
        that what follows it (a widget) ends "aborted", not "running". Waits at most
        ``SETTLE`` seconds; a second interrupt stops waiting."""
        deadline = time.monotonic() + self.SETTLE
        try:
            while not state.status.terminal and time.monotonic() < deadline:
                for event in self.events(state.id, after=state.last_seq):
                    apply(state, event)
                    listener.on_event(event, state)
                if not state.status.terminal:
                    time.sleep(0.1)
        except (KeyboardInterrupt, PapercraneError):
            pass  # the caller says the abort was asked for; the widget ends aborted anyway

    @staticmethod
    def _say(text: str) -> None:
        """A line for the person waiting (stderr: a cell's error stream in a notebook)."""
        print(f"papercrane: {text}", file=sys.stderr, flush=True)

    def _sse(
        self, execution_id: str, after: int, stream: _Stream | None = None
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """The stream's messages as (kind, data). Raises ``httpx.TransportError`` if it
        cannot connect or drops; ``stream.opened`` then says whether it had connected."""
        path = f"{execution_path(execution_id)}/stream"
        with self._http.stream("GET", path, params={"after": after}) as response:
            self._check(response)
            if stream is not None:
                stream.opened = True
                stream.on_open()
            kind, data = "message", []
            for line in response.iter_lines():
                if not line:
                    if data:
                        yield kind, json.loads("\n".join(data))
                    kind, data = "message", []
                elif line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())

    def _result(self, state: ExecutionState, want_values: bool) -> RemoteResult:
        if state.status is Status.ABORTED:
            why = f" ({state.error.message})" if state.error is not None else ""
            raise ExecutionAborted(f"execution {state.id} was aborted{why}")
        tops = {k: n for k, n in state.nodes.items() if "[" not in k and ":" not in k}
        if state.status is Status.FAILED:
            failed = [
                (k, n.error.to_dict() if n.error else {})
                for k, n in tops.items()
                if n.status is Status.FAILED
            ]
            if not failed and state.error is not None:
                failed = [("(execution)", state.error.to_dict())]
            if state.kind == "task" and failed:
                node, error = failed[0]
                raise TaskFailed(
                    f"task {node!r} failed: {error.get('type')}: {error.get('message')}",
                    error.get("traceback", ""),
                    state.id,
                    error.get("type", ""),
                    error.get("message", ""),
                    tops[node].display if node in tops else None,
                )
            skipped = [k for k, n in tops.items() if n.status is Status.SKIPPED]
            failure = WorkflowFailed(state.id, failed or [("?", {})], skipped)
            ok = {k: n for k, n in tops.items() if n.status.ok}
            failure.result = self._nodes(state, ok, want_values)
            raise failure
        return self._nodes(state, tops, want_values)

    def _nodes(
        self, state: ExecutionState, tops: dict[str, Any], want_values: bool
    ) -> RemoteResult:
        nodes = {}
        for key, n in tops.items():
            outputs = {name: self.artifact(aid) for name, aid in n.outputs.items()}
            values = {name: self.load(ref) for name, ref in outputs.items()} if want_values else {}
            nodes[key] = RemoteNode(key, n.status, outputs, dict(n.references), values, n.display)
        return RemoteResult(state, nodes)
