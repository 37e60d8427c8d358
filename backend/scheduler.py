"""The scheduler: runs one execution of a workflow (or of a single task, a one-node
workflow) to the end.

It keeps the DAG's bookkeeping on the calling thread: which nodes are ready, which
units (a node, or one element of a map node) wait, run, succeeded or failed. Attempts
of out-of-process executors run on a bounded pool of worker threads that only wait on
their executor and hand results back through a queue; attempts of the inline executor
run on the calling thread itself, one at a time, so their timeouts and interrupts work
as in a normal cell. Every state change is an event; events are committed in batches
(one transaction per scheduling round), so a 10,000-element map costs rounds, not
10,000 transactions.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .api import RunListener, deliver
from .errors import ExecutionAborted, TaskFailed, UserError, WorkflowFailed, not_iterable
from .executors.base import AttemptSpec, Executor
from .model import (
    ArtifactRef,
    ErrorKind,
    EventColumns,
    EventKind,
    ExecutionState,
    Status,
)
from .owner import this_process
from .projection import fold
from .runner import AttemptResult, import_bound, system_error
from .store.sqlite_rows import json_text
from .workflow import NodeSpec, WorkflowSpec

if TYPE_CHECKING:
    from .engine import LocalEngine

K = EventKind


class _Stop(Exception):
    """Raised inside the loop when another thread asked the execution to stop."""


class _Shutdown(Exception):
    """The process is going away: stop without recording an end (it will be resumed)."""


_ROUND = 0.05  # longest wait for a worker result before the next scheduling round
#: How long an inline task may run before its start is committed on its own (``_run_here``).
_START_GRACE = _ROUND
_FAIL_FAST = "the execution stopped at an earlier failure (fail-fast)"


class _Deadlines:
    """Calls a function on a helper thread once its delay has passed, unless it was
    cancelled first. One daemon thread per process, started on first use.

    Waking the thread costs the caller's thread a GIL hand-over, and a quick task's job
    is cancelled before the thread would even see it. So arming notifies the thread
    only when it would otherwise wake too late (it waits with no deadline, or for a
    later one), and with nothing armed the thread lingers: it sleeps until the last
    job's arming plus the shortest delay ever armed, a time no job armed meanwhile can
    be due before, and only then waits for a notification. A run of quick tasks then
    wakes it about once per delay instead of once per task."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._jobs: dict[object, tuple[float, Any]] = {}
        self._thread: threading.Thread | None = None
        #: When the waiting thread wakes on its own; None: only when notified.
        self._wake_at: float | None = None
        self._last_arm = -math.inf
        self._shortest = math.inf

    def arm(self, delay: float, fn: Any) -> object:
        token = object()
        with self._cond:
            now = time.monotonic()
            at = now + delay
            self._jobs[token] = (at, fn)
            self._last_arm = now
            self._shortest = min(self._shortest, delay)
            if self._thread is None or not self._thread.is_alive():  # (also after a fork)
                self._thread = threading.Thread(
                    target=self._serve, name="papercrane-deadlines", daemon=True
                )
                self._thread.start()
            elif self._wake_at is None or at < self._wake_at:
                self._cond.notify()
        return token

    def cancel(self, token: object) -> None:
        with self._cond:
            self._jobs.pop(token, None)

    def _serve(self) -> None:
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    if not self._jobs:
                        until = self._last_arm + self._shortest
                        self._wake_at = until if until > now else None
                        self._cond.wait(until - now if until > now else None)
                        continue
                    token, (at, fn) = min(self._jobs.items(), key=lambda job: job[1][0])
                    if at <= now:
                        del self._jobs[token]
                        self._wake_at = now  # (busy until ``fn`` returns: no notify needed)
                        break
                    self._wake_at = at
                    self._cond.wait(at - now)
            fn()  # outside the condition: it takes its run's lock, and may write


_deadlines = _Deadlines()


@dataclass
class RunOptions:
    project: str = "default"
    domain: str = "development"
    max_parallel: int = 4
    failure_policy: str = "fail-fast"  # or "continue"
    want_values: bool = True


@dataclass
class Unit:
    """One schedulable piece: a whole node, or element ``index`` of a map node."""

    node: NodeRun
    key: str
    index: int | None
    inputs: dict[str, ArtifactRef]
    values: dict[str, Any] | None
    cache_key: str = ""
    attempt: int = 0
    user_failures: int = 0
    system_failures: int = 0
    op: str = "run"  # or "expand" / "collect" (a map's steps, out of this process)
    layout: dict[str, Any] | None = None
    #: A resumed attempt still running elsewhere (a pod): follow it, don't start one.
    adopt: bool = False


@dataclass
class NodeRun:
    spec: NodeSpec
    status: Status = Status.QUEUED
    waiting_on: set[str] = field(default_factory=set)
    outputs: dict[str, ArtifactRef] = field(default_factory=dict)
    references: dict[str, str] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    display: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    # map nodes
    elements: list[AttemptResult | None] = field(default_factory=list)
    element_inputs: list[dict[str, ArtifactRef]] = field(default_factory=list)
    open_units: int = 0
    failed_units: int = 0
    running: int = 0
    #: Units of this node waiting to start (attempts and retries), oldest first; a map
    #: element's first attempt as its index (``plan``), its ``Unit`` built when taken.
    queued: deque[Unit | int] = field(default_factory=deque)
    plan: _Plan | None = None

    @property
    def id(self) -> str:
        return self.spec.id


@dataclass
class _Plan:
    """What a map element's first unit is made of, kept once per map node.

    A queued element is its index rather than a ``Unit`` with its own inputs dict: the
    queue of a 1,000-element map lives as long as the map runs, long enough for Python's
    collector to move such objects to its oldest generation, whose full collections
    (tens of ms in a notebook's heap) come sooner the more objects get there."""

    shared: dict[str, ArtifactRef]
    shared_values: dict[str, Any] | None
    name: str
    refs: list[ArtifactRef]
    values: list[Any] | None
    keys: list[str] | None

    def unit(self, run: NodeRun, i: int) -> Unit:
        values = None
        if self.shared_values is not None and self.values is not None:
            values = {**self.shared_values, self.name: self.values[i]}
        inputs = {**self.shared, self.name: self.refs[i]}
        key = self.keys[i] if self.keys is not None else ""
        return Unit(run, f"{run.id}[{i}]", i, inputs, values, cache_key=key)

    @staticmethod
    def fresh(unit: Unit) -> bool:
        """Whether ``unit`` is one ``unit`` would build again (no attempt made yet)."""
        return (
            unit.attempt == 0
            and not unit.user_failures
            and not unit.system_failures
            and not unit.adopt
            and unit.op == "run"
        )


@dataclass
class WorkflowResult:
    execution: ExecutionState
    nodes: dict[str, NodeRun]

    def outputs(self) -> dict[str, ArtifactRef]:
        """Every node's outputs by name; a later node wins, as cells run top to bottom."""
        merged: dict[str, ArtifactRef] = {}
        for run in self.nodes.values():
            merged.update(run.outputs)
        return merged


class _Logs:
    """Log sink for one unit. Worker threads queue their lines for the scheduler thread,
    which alone talks to the listener; parallel nodes get a prefix."""

    def __init__(self, run: WorkflowRun, unit: Unit, threaded: bool) -> None:
        self.run = run
        self.prefix = f"[{unit.key}] " if run.prefix_logs else ""
        self.threaded = threaded
        self.unit = unit

    def log(self, stream: str, text: str) -> None:
        if self.prefix:
            text = "".join(
                self.prefix + line if line.strip() else line
                for line in text.splitlines(keepends=True)
            )
        if self.threaded:
            self.run.done.put(("log", stream, text))
        else:
            self.run.listener.on_log(stream, text)

    def status(self, message: str) -> None:
        """Where the attempt is (a pod pending on the scheduler, running): an event."""
        self.run.done.put(("status", self.unit, message))


class WorkflowRun:
    def __init__(
        self,
        engine: LocalEngine,
        spec: WorkflowSpec,
        params: dict[str, ArtifactRef],
        param_values: dict[str, Any] | None,
        options: RunOptions,
        listener: RunListener,
        *,
        kind: str = "workflow",
        recover_from: ExecutionState | None = None,
        sources: dict[str, dict[str, str]] | None = None,
        resume: ExecutionState | None = None,
        stale: frozenset[str] = frozenset(),
    ) -> None:
        self.engine = engine
        self.spec = spec
        self.params = params
        self.param_values = param_values or {}
        #: Where parameter values came from, when known (a notebook variable that an
        #: earlier task execution produced): {param: {"execution": id, "node": id}}.
        self.sources = sources or {}
        self.options = options
        self.listener = listener
        self.kind = kind
        self.recover_from = recover_from
        #: Nodes of an edited workflow that a recover must run again, though they (or
        #: their elements) succeeded in ``recover_from`` (``workflow.changed_nodes``).
        self.stale = stale
        #: Continuing an execution whose scheduler died (a server restart): same id, its
        #: events so far are the truth, finished nodes and elements are kept.
        self.resume = resume
        self.state = resume if resume is not None else ExecutionState(id=engine.new_execution_id())
        self.abort_reason = ""  # set from another thread to stop the execution
        self.adopted: set[str] = set()  # resumed attempts taken over, not restarted
        self.shutting_down = False
        self.nodes = {n.id: NodeRun(n) for n in spec.nodes}
        self.downstream: dict[str, list[str]] = {n.id: [] for n in spec.nodes}
        for n in spec.nodes:
            ups = {b.node for b in n.bindings.values() if not b.is_param}
            self.nodes[n.id].waiting_on = ups
            for up in ups:
                self.downstream[up].append(n.id)
        #: Events not yet committed, field by field (see ``EventColumns``).
        self.pending = EventColumns(self.state.id)
        self.writes: list[Any] = []  # callables run in the next flush's transaction
        # Rows batched into one statement per kind at the next flush (lineage and cache
        # rows with their JSON columns as text: ``_persist``):
        self.new_artifacts: list[ArtifactRef] = []
        self.new_lineage: list[dict[str, Any]] = []
        self.new_cache: list[dict[str, Any]] = []
        #: Nodes with queued units, in the order they got them (round-robin launch).
        #: Nodes with queued units, oldest first (dicts keyed by id(): ordered sets with
        #: O(1) removal), apart by where their units run, so that finding the next inline
        #: unit never walks a wide DAG's thousands of waiting nodes.
        self.ready_inline: dict[int, NodeRun] = {}
        self.ready_out: dict[int, NodeRun] = {}
        self.queued = 0
        #: Results, log lines and statuses from attempts running on other threads. A
        #: ``SimpleQueue`` (put, get with a timeout): ``queue.Queue``'s three conditions
        #: cost a task run more to create than it ever uses.
        self.done: queue.SimpleQueue = queue.SimpleQueue()
        self.in_flight = 0
        self.stopping = False
        self.cancel = threading.Event()
        self.prefix_logs = len(spec.nodes) > 1 or any(n.map for n in spec.nodes)
        self.pool: ThreadPoolExecutor | None = None
        self._last_flush = 0.0
        #: A map writes two small values per element (its input, its output): packed
        #: into one storage object per flush (``Storage.begin_pack``), not a file each.
        #: Only where this process holds the values (a server's maps run in runners),
        #: and where every attempt runs this papercrane (a pod's may not read packs).
        self.packing = (
            engine.unpickles
            and any(n.map for n in spec.nodes)
            and all(engine.executor(n.config.executor).shares_install for n in spec.nodes)
        )
        #: An inline task's start waiting to be committed by ``_write_start``; the lock
        #: keeps that helper thread's flush and this thread's end apart.
        self._start_due = False
        self._start_lock = threading.Lock()

    # -- events ---------------------------------------------------------------------------
    def emit(self, what: EventKind, node: str = "", attempt: int = 0, /, **payload: Any) -> None:
        """Record a state change: folded into the live state now (``projection.fold``,
        what ``apply`` does with an ``Event``), kept as columns until the next flush
        commits it. No ``Event`` exists until a listener asks for one."""
        ts = time.time()
        fold(self.state, what, node, attempt, payload, ts)
        self.pending.append(what._value_, node, attempt, ts, payload)  # (`.value`: a property)

    def flush(self, *, keep_on_error: bool = False) -> None:
        """Commit the pending events with the rows they depend on, then tell the
        listener. ``keep_on_error``: a failed write leaves them pending (for a later
        flush to write) instead of dropping them."""
        if not self.pending:
            return
        batch = self.pending.take()
        writes, self.writes = self.writes, []
        artifacts, self.new_artifacts = self.new_artifacts, []
        lineage, self.new_lineage = self.new_lineage, []
        cache, self.new_cache = self.new_cache, []
        engine = self.engine
        try:
            if self.packing:  # the rows below name packed values: write them first
                engine.storage.seal_pack()
                engine.storage.renew_pack_checks()
            with engine.recording() as conn:
                for write in writes:
                    write(conn)
                engine._record_artifacts(conn, artifacts)
                engine.store.put_lineage(conn, lineage, encoded=True)
                engine.store.cache_put_many(conn, cache, encoded=True)
                seqs = engine.store.append_seqs(conn, batch, self.state)
        except BaseException:
            if keep_on_error:
                self.pending.put_back(batch)
                self.writes[:0] = writes
                self.new_artifacts[:0], self.new_lineage[:0] = artifacts, lineage
                self.new_cache[:0] = cache
            raise
        self._last_flush = time.monotonic()
        # The events one at a time (not thousands alive at once), all of them at one
        # call to a listener that takes a batch (``deliver``).
        deliver(self.listener, batch.numbered(seqs), self.state)

    # -- the run --------------------------------------------------------------------------
    def run(self) -> WorkflowResult:
        """Run to the end on this thread. Nobody needs the id before the run starts, so
        the execution's first events are committed with the first step that shows
        (an attempt starting, or a cache hit and the end): a cache hit is then one
        write transaction, and an inline task two (running, then done)."""
        self._open()
        return self.proceed()

    def begin(self) -> str:
        """Record the execution (committed), so its id can be handed out at once."""
        self._open()
        self.flush()
        return self.state.id

    def _open(self) -> None:
        if self.resume is None:
            self._create()
        else:
            self._settle_interrupted()

    def _adoptable(self, key: str, attempt: int) -> bool:
        """Is this attempt still running where its executor can find it (a pod)?"""
        run = self.nodes.get(key.partition("[")[0])
        if run is None:
            return False
        executor = self.engine.executor(run.spec.config.executor)
        if not executor.can_adopt:
            return False
        probe = AttemptSpec(
            execution_id=self.state.id,
            node=key,
            attempt=attempt,
            task=run.spec.task,
            task_key="",
            config=run.spec.config,
            inputs={},
            project=self.options.project,
            domain=self.options.domain,
        )
        return executor.adopt(probe)

    def proceed(self) -> WorkflowResult:
        """Run the execution to its end (on this thread)."""
        if self.packing:
            self.engine.storage.begin_pack()
        try:
            # A map stores many values, some of them already packed by this process
            # (an output equal to an element, a repeated small value): each pack's
            # presence is checked once per scheduling round (renewed at every flush),
            # not once per value named again.
            with self.engine.storage.pack_checks() if self.packing else nullcontext():
                self._loop()
        except _Shutdown:
            raise ExecutionAborted(f"execution {self.state.id} left for the next server") from None
        except (KeyboardInterrupt, _Stop) as stop:
            reason = self.abort_reason or "interrupted"
            self._abort(reason)
            how = "interrupted" if isinstance(stop, KeyboardInterrupt) else f"aborted ({reason})"
            raise ExecutionAborted(
                f"execution {self.state.id} was {how} and recorded as aborted"
            ) from None
        except Exception as exc:
            # papercrane's own failure mid-run (a bug; the interpreter refusing a thread):
            # the execution ends recorded as aborted, naming it, not "running" for ever.
            # The exception itself goes on to the caller, traceback and all.
            with suppress(Exception):
                self._abort(f"papercrane failed while running it: {type(exc).__name__}: {exc}")
            raise
        finally:
            if self.packing:
                self.engine.storage.end_pack()
            if self.pool is not None:
                self.pool.shutdown(wait=True, cancel_futures=True)
            if self.engine.gate is not None:
                self.engine.gate.forget(self)
        return self._finish()

    def _settle_interrupted(self) -> None:
        """Attempts that were running when the previous scheduler died are gone: each is
        a system failure, retried on the system budget like a lost pod."""
        for key, node in list(self.state.nodes.items()):
            if node.status is Status.RUNNING and node.attempt and ":" not in key:
                if self._adoptable(key, node.attempt):
                    self.adopted.add(key)
                    continue
                error = system_error(
                    "the scheduler stopped while this attempt ran (server restart)", "LostAttempt"
                )
                self.emit(K.ATTEMPT_FAILED, key, node.attempt, error=error)

    def _create(self) -> None:
        spec = self.spec
        engine = self.engine
        payload: dict[str, Any] = {
            "kind": self.kind,
            "project": self.options.project,
            "domain": self.options.domain,
            "name": spec.name,
            "inputs": {n: r.id for n, r in self.params.items()},
        }
        if self.kind == "task":
            only = spec.nodes[0]
            payload["task_version"] = only.task.version()
            payload["config"] = {
                **only.config.to_dict(),
                "map": only.map.to_dict() if only.map else None,
                "max_parallel": self.options.max_parallel,
            }
        else:
            payload["workflow_version"] = spec.version()
            payload["config"] = {
                "max_parallel": self.options.max_parallel,
                "failure_policy": self.options.failure_policy,
            }
        if self.recover_from is not None:
            payload["recovered_from"] = self.recover_from.id
        if engine.runs_in_process:
            payload["runner"] = this_process()
            with suppress(OSError):  # where its local attempts run, for a recover to run there
                payload["runner"] = {**payload["runner"], "cwd": os.getcwd()}
        self.emit(K.EXECUTION_CREATED, **payload)
        for n in spec.nodes:
            self.emit(K.NODE_QUEUED, n.id, cache=n.config.cache, map=bool(n.map))
        bundles = [engine.bundle(n.task) for n in spec.nodes]

        def register(conn: Any) -> None:
            for n, (version, key) in zip(spec.nodes, bundles):
                engine.record_task(conn, n.task, version, key, self.options)
            if self.kind == "workflow":
                engine.record_workflow(conn, spec, self.options)
            engine._record_artifacts(conn, self.params.values())

        self.writes.append(register)

    def _loop(self) -> None:
        for run in [r for r in self.nodes.values() if not r.waiting_on]:
            if run.status is Status.QUEUED:  # (starting one may already start others)
                self._start(run)
        gate = self.engine.gate
        while True:
            if self.abort_reason:
                raise _Stop()
            if self.shutting_down:
                raise _Shutdown()
            if (
                gate is None
                and not self.in_flight
                and self.queued == 1
                and self.engine.executor(self._first().spec.config.executor).quick_to_follow
            ):
                # One unit and nothing else to do: run it right here (no worker thread;
                # an interrupt reaches the executor, which stops its attempt).
                self._run_here(self._take(self._first()))
                self._collect(block=False)
                self.flush_if_due()
                continue
            inline = self._launch()
            if inline is not None:
                self._run_here(inline)
            elif self.in_flight:
                self._collect(block=True)
            elif self.queued and gate is not None:
                time.sleep(_ROUND / 5)  # every slot on the server is taken: wait for one
            else:
                break  # nothing running and nothing that can start: done
            self._collect(block=False)
            self.flush_if_due()
        # (no flush here: ``_finish`` records the end in the same transaction)

    def flush_if_due(self) -> None:
        if not self.pending or (not self.queued and not self.in_flight):
            return  # nothing to write, or the loop is about to end and ``_finish`` writes
        if self.queued == 0 or time.monotonic() - self._last_flush > _ROUND:
            self.flush()

    # -- starting nodes -------------------------------------------------------------------
    def _start(self, run: NodeRun) -> None:
        if self.stopping:
            self._skip(run, _FAIL_FAST)
            return
        run.status = Status.RUNNING
        source = self._recovered(run)
        if source is not None:
            return
        try:
            inputs, values = self._inputs(run)
        except UserError as exc:
            self._fail_node(
                run,
                {"kind": "user", "type": type(exc).__name__, "message": str(exc), "traceback": ""},
            )
            return
        if run.spec.map is None:
            unit = Unit(run, run.id, None, inputs, values)
            run.open_units = 1
            self._cache_or_queue(unit)
        elif self.engine.unpickles:
            self._expand(run, inputs, values)
        else:  # values stay out of this process: a runner splits the list
            over = run.spec.map.over
            step = Unit(run, f"{run.id}:expand", None, {over: inputs[over]}, None, op="expand")
            run.element_inputs = [inputs]  # kept for the elements' shared inputs
            self._enqueue(step)

    def _earlier(self, key: str) -> tuple[Any, str] | None:
        """A node (or element) that already finished well: in the execution being
        resumed (no new event), or in the one being recovered (a NODE_RECOVERED)."""
        for source, how in ((self.resume, "resume"), (self.recover_from, "recover")):
            if source is None:
                continue
            if how == "recover" and key.partition("[")[0].partition(":")[0] in self.stale:
                continue  # (an element ``node[3]``, a step ``node:collect``: the node's)
            old = source.nodes.get(key)
            if old is not None and old.status.ok and old.outputs:
                return old, how
        return None

    def _recovered(self, run: NodeRun) -> NodeRun | None:
        found = self._earlier(run.id)
        if found is None:
            return None
        old, how = found
        run.outputs = {n: self.engine.artifact(i) for n, i in old.outputs.items()}
        run.references = dict(getattr(old, "references", {}) or {})
        run.status = Status.RECOVERED if how == "recover" else old.status
        if how == "recover":
            self.emit(
                K.NODE_RECOVERED,
                run.id,
                outputs=old.outputs,
                source_execution=self.recover_from.id,  # type: ignore[union-attr]
            )
        self._node_done(run)
        return run

    def _inputs(self, run: NodeRun) -> tuple[dict[str, ArtifactRef], dict[str, Any] | None]:
        inputs: dict[str, ArtifactRef] = {}
        values: dict[str, Any] = {}
        have_all = True
        for name, b in run.spec.bindings.items():
            if b.is_param:
                if b.output not in self.params:
                    raise UserError(
                        f"node {run.id!r} needs parameter {b.output!r}, which has no value"
                    )
                inputs[name] = self.params[b.output]
                if b.output in self.param_values:
                    values[name] = self.param_values[b.output]
                else:
                    have_all = False
            else:
                up = self.nodes[b.node]
                if b.output not in up.outputs:
                    raise UserError(
                        f"node {run.id!r} reads {b.output!r} from {b.node!r}, which did not "
                        f"assign it; assign it in {b.node!r} or give the input another source"
                    )
                inputs[name] = up.outputs[b.output]
                if b.output in up.values:
                    values[name] = up.values[b.output]
                else:
                    have_all = False
        return inputs, values if have_all else None

    def _values(
        self, run: NodeRun, inputs: dict[str, ArtifactRef], values: dict[str, Any] | None
    ) -> dict[str, Any]:
        if values is not None:
            return values
        return {n: self.engine.artifacts.load(r) for n, r in inputs.items()}

    def _expand(
        self, run: NodeRun, inputs: dict[str, ArtifactRef], values: dict[str, Any] | None
    ) -> None:
        m = run.spec.map
        assert m is not None
        all_values = self._values(run, inputs, values)
        over = all_values.get(m.over)
        try:
            elements = list(over)  # type: ignore[arg-type]
        except TypeError:
            self._fail_node(
                run,
                {
                    "kind": "user",
                    "type": "TypeError",
                    "message": not_iterable(m.over, over),
                    "traceback": "",
                },
            )
            return
        with self.engine.storage.pack_checks():  # one look at each pack, not each element
            element_refs = [
                self.engine.artifacts.put(element, f"element {i} of {m.over!r}")
                for i, element in enumerate(elements)
            ]
            self._elements(run, inputs, element_refs, all_values, elements)

    def _elements(
        self,
        run: NodeRun,
        inputs: dict[str, ArtifactRef],
        element_refs: list[ArtifactRef],
        all_values: dict[str, Any] | None = None,
        elements: list[Any] | None = None,
    ) -> None:
        m = run.spec.map
        assert m is not None
        run.elements = [None] * len(element_refs)
        run.open_units = len(element_refs)
        self.emit(K.MAP_EXPANDED, run.id, elements=len(element_refs))
        if not element_refs:
            self._map_done(run)
            return
        self.new_artifacts.extend(element_refs)
        # The whole list goes to each element only if the cell itself reads it.
        keep = set(run.spec.task.inputs)
        shared = {n: r for n, r in inputs.items() if n != m.over or n in keep}
        shared_values = (
            {n: v for n, v in all_values.items() if n in shared} if all_values is not None else None
        )
        config = run.spec.config
        keys = None
        prefetched = None
        if config.cache:  # one query for all the elements' entries, not one each
            keys = self.engine.element_cache_keys(
                run.spec.task, config.cache_version, shared, m.as_name, element_refs
            )
            prefetched = self.engine.store.cache_get_many(
                keys, self.options.project, self.options.domain
            )
        values = elements if shared_values is not None else None
        run.plan = plan = _Plan(shared, shared_values, m.as_name, element_refs, values, keys)
        # An element with nothing earlier to reuse (no resume, no recovery) and no cache
        # entry is queued as its index straight away: what ``_cache_or_queue`` does for
        # it, without a ``Unit`` that would live only until queued (its miss is recorded
        # by its attempt, ``_begin``). Entries found (hits, damaged ones) go through
        # ``_cache_or_queue``.
        plain = self.resume is None and self.recover_from is None
        for i in range(len(element_refs)):
            if plain and (keys is None or (prefetched is not None and keys[i] not in prefetched)):
                self._push(run, i)
            else:
                self._cache_or_queue(plan.unit(run, i), prefetched)

    def _reuse(self, unit: Unit) -> bool:
        """Resume or recover: an element or node that finished well keeps its outputs.
        A resumed unit otherwise continues its attempt numbering and failure counts."""
        found = self._earlier(unit.key)
        if found is not None:
            old, how = found
            outputs = {n: self.engine.artifact(i) for n, i in old.outputs.items()}
            if how == "recover":
                self.emit(
                    K.NODE_RECOVERED,
                    unit.key,
                    outputs=old.outputs,
                    source_execution=self.recover_from.id,  # type: ignore[union-attr]
                )
            self._unit_ok(unit, AttemptResult("succeeded", outputs=outputs), cached=False)
            return True
        if self.resume is not None and unit.key in self.resume.nodes:
            old = self.resume.nodes[unit.key]
            unit.attempt = old.attempt
            unit.user_failures, unit.system_failures = old.user_failures, old.system_failures
            unit.adopt = unit.key in self.adopted
            config = unit.node.spec.config
            if old.system_failures > config.system_retries or old.user_failures > config.retries:
                error = old.error.to_dict() if old.error else system_error("attempts exhausted")
                self.emit(K.NODE_FAILED, unit.key, unit.attempt, error=error)
                self._unit_failed(unit, error)
                return True
        return False

    def _cache_or_queue(
        self, unit: Unit, prefetched: dict[str, dict[str, Any]] | None = None
    ) -> None:
        if (self.resume is not None or self.recover_from is not None) and self._reuse(unit):
            return
        config = unit.node.spec.config
        if config.cache:
            if not unit.cache_key:
                unit.cache_key = self.engine.cache_key(
                    unit.node.spec.task, config.cache_version, unit.inputs
                )
            hit, problem = self.engine.cache_lookup(
                unit.cache_key,
                self.options.project,
                self.options.domain,
                want_values=self.options.want_values,
                prefetched=prefetched,
            )
            if hit is not None:
                entry, outputs, values = hit
                outputs = _in_order(outputs, unit.node.spec.task.outputs)
                self.emit(
                    K.CACHE_HIT,
                    unit.key,
                    cache_key=unit.cache_key,
                    outputs={n: r.id for n, r in outputs.items()},
                    references=entry["references"],
                    display=entry["display"],
                    source_execution=entry["execution_id"],
                    source_created_at=entry["created_at"],
                )
                result = AttemptResult(
                    "succeeded",
                    outputs=outputs,
                    references=entry["references"],
                    display=entry["display"],
                    values=values,
                )
                self._unit_ok(unit, result, cached=True)
                return
            if problem:
                self.emit(K.CACHE_INVALID, unit.key, cache_key=unit.cache_key, reason=problem)
            elif unit.index is None:  # (an element's miss is recorded by its attempt)
                self.emit(K.CACHE_MISS, unit.key, cache_key=unit.cache_key)
        self._enqueue(unit)

    def _ready_for(self, run: NodeRun) -> dict[int, NodeRun]:
        executor = self.engine.executor(run.spec.config.executor)
        return self.ready_inline if executor.in_process else self.ready_out

    def _first(self) -> NodeRun:
        for ready in (self.ready_inline, self.ready_out):
            for run in ready.values():
                return run
        raise LookupError("nothing is queued")

    def _enqueue(self, unit: Unit) -> None:
        run = unit.node
        index = unit.index
        compact = index is not None and run.plan is not None and _Plan.fresh(unit)
        self._push(run, index if compact else unit)  # type: ignore[arg-type]

    def _push(self, run: NodeRun, entry: Unit | int) -> None:
        """Queue a unit, or a map element's first unit as its index (``_Plan``)."""
        if not run.queued:
            self._ready_for(run)[id(run)] = run
        run.queued.append(entry)
        self.queued += 1

    def _take(self, run: NodeRun) -> Unit:
        entry = run.queued.popleft()
        self.queued -= 1
        if not run.queued:
            self._ready_for(run).pop(id(run), None)
        if type(entry) is int:
            assert run.plan is not None
            return run.plan.unit(run, entry)
        return entry  # type: ignore[return-value]

    def _drop(self, run: NodeRun) -> None:
        """Forget a node's queued units (it failed, or fail-fast stopped the run)."""
        if run.queued:
            self.queued -= len(run.queued)
            run.queued.clear()
            self._ready_for(run).pop(id(run), None)

    # -- running units --------------------------------------------------------------------
    def _executor(self, unit: Unit) -> Executor:
        return self.engine.executor(unit.node.spec.config.executor)

    def _launch(self) -> Unit | None:
        """Hand out-of-process units to workers, round-robin over nodes, up to the
        parallelism limits; return an inline unit to run here, if one waits."""
        for run in list(self.ready_out.values()) if self.ready_out else ():
            if self.in_flight >= self.options.max_parallel:
                break
            executor = self.engine.executor(run.spec.config.executor)
            limit = run.spec.map.concurrency if run.spec.map else None
            gate = self.engine.gate
            while (
                run.queued
                and self.in_flight < self.options.max_parallel
                and (limit is None or run.running < limit)
            ):
                if gate is not None and not gate.try_acquire(self, self.queued):
                    break  # the server's share for this project is taken: wait a round
                self._submit(executor, self._take(run))
        for run in self.ready_inline.values():
            return self._take(run)
        return None

    def _submit(self, executor: Executor, unit: Unit) -> None:
        if self.packing:  # another process reads the inputs: packed ones must be written
            self.engine.storage.seal_pack()
        if not unit.adopt:
            self._begin(unit)
        if self.pool is None:
            self.pool = ThreadPoolExecutor(
                max_workers=self.options.max_parallel, thread_name_prefix="papercrane"
            )
        attempt = self._attempt_spec(unit)
        self.in_flight += 1
        unit.node.running += 1
        self.pool.submit(self._work, executor, unit, attempt)

    def _begin(self, unit: Unit, executor: Executor | None = None) -> None:
        """Record an attempt starting. A map element's life is its attempts' events
        (``model.EventKind``): its attempt names the cache key that missed, where a
        node records a ``cache_miss`` first (it may wait in the queue, shown as a miss)."""
        unit.attempt += 1
        name = (executor or self._executor(unit)).name
        if unit.index is not None and unit.cache_key:
            self.emit(
                K.ATTEMPT_STARTED, unit.key, unit.attempt, executor=name, cache_key=unit.cache_key
            )
        else:
            self.emit(K.ATTEMPT_STARTED, unit.key, unit.attempt, executor=name)

    def _attempt_spec(self, unit: Unit) -> AttemptSpec:
        spec = unit.node.spec
        return AttemptSpec(
            execution_id=self.state.id,
            node=unit.key,
            attempt=unit.attempt,
            task=spec.task,
            task_key=self.engine.bundle(spec.task)[1],
            config=spec.config,
            inputs=unit.inputs,
            values=unit.values,
            declared_outputs=spec.declared_outputs,
            op=unit.op,
            layout=unit.layout,
            project=self.options.project,
            domain=self.options.domain,
        )

    def _work(self, executor: Executor, unit: Unit, attempt: AttemptSpec) -> None:
        try:
            adopt = {"adopt": True} if unit.adopt else {}
            unit.adopt = False  # a retry starts a new attempt
            result = executor.run(attempt, _Logs(self, unit, threaded=True), self.cancel, **adopt)
        except BaseException as exc:  # the executor itself broke: a system failure
            result = AttemptResult("failed", error=system_error(f"{type(exc).__name__}: {exc}"))
        self.done.put(("result", unit, result))

    def _run_here(self, unit: Unit) -> None:
        """Run one unit on the scheduler's own thread (inline units always are).

        The store and the widget must show a task running while it runs. A single
        inline task's start is not committed before its code runs, though: if the code
        is still running after ``_START_GRACE``, a helper thread commits it then
        (``_write_start``); a task that ends sooner has its start and its end
        committed in one transaction, with the same events and timestamps. After a
        cache miss the start is committed first, as for other units: a listener
        (the notebook's widget) may wait for the first event before showing itself."""
        executor = self._executor(unit)
        if executor.in_process and unit.values is None:
            unit.values = self._values(unit.node, unit.inputs, None)
        elif not executor.in_process and self.packing:
            self.engine.storage.seal_pack()  # its process reads the inputs from storage
        self._begin(unit, executor)
        single = len(self.nodes) == 1 and unit.index is None
        deferred = single and executor.in_process and not unit.cache_key
        if not deferred and (time.monotonic() - self._last_flush > _ROUND or single):
            self.flush()  # the widget and the store show it running
        token = None
        unit.node.running += 1
        try:
            if deferred:
                self._start_due = True
                token = _deadlines.arm(_START_GRACE, self._write_start)
            result = executor.run(
                self._attempt_spec(unit), _Logs(self, unit, threaded=False), self.cancel
            )
        finally:
            unit.node.running -= 1
            if token is not None:
                _deadlines.cancel(token)
                with self._start_lock:  # waits for a start being written right now
                    self._start_due = False
        self._handle(unit, result)

    def _write_start(self) -> None:
        """On the helper thread: the inline task is still running, commit its start.
        If that fails, the events stay pending and its end's transaction writes them."""
        with self._start_lock:
            if not self._start_due:
                return
            self._start_due = False
            try:
                self.flush(keep_on_error=True)
            except Exception:
                logging.getLogger(__name__).warning(
                    "could not record the start of execution %s yet; it is recorded with the end",
                    self.state.id,
                    exc_info=True,
                )

    def _collect(self, block: bool) -> None:
        if not block and self.done.empty():
            return  # (the usual case between inline units: no exception raised and caught)
        timeout = _ROUND if block else 0
        while True:
            try:
                item = self.done.get(timeout=timeout) if timeout else self.done.get_nowait()
            except queue.Empty:
                return
            timeout = 0
            if item[0] == "log":
                self.listener.on_log(item[1], item[2])
                continue
            if item[0] == "status":
                unit = item[1]
                self.emit(K.ATTEMPT_STATUS, unit.key, unit.attempt, message=item[2][:500])
                continue
            _, unit, result = item
            self.in_flight -= 1
            unit.node.running -= 1
            if self.engine.gate is not None:
                self.engine.gate.release(self)
            self._handle(unit, result)

    # -- outcomes -------------------------------------------------------------------------
    def _handle(self, unit: Unit, result: AttemptResult) -> None:
        if result.logs:
            for stream, key in sorted(result.logs.items()):
                self.emit(K.LOG_STORED, unit.key, unit.attempt, stream=stream, uri=key)
        if result.status == "succeeded" and unit.op != "run":
            self._step_done(unit, result)
            return
        if result.status == "succeeded":
            self.emit(
                K.ATTEMPT_SUCCEEDED,
                unit.key,
                unit.attempt,
                outputs={n: r.id for n, r in result.outputs.items()},
                references=result.references,
                display=result.display,
                duration=result.ended_at - result.started_at,
            )
            if unit.index is None:  # (an element's successful attempt is its end)
                self.emit(K.NODE_SUCCEEDED, unit.key, unit.attempt)
            self._persist(unit, result)
            self._unit_ok(unit, result, cached=False)
            return
        if result.status == "aborted":
            return
        error = result.error or system_error("the attempt failed without a reason")
        self.emit(K.ATTEMPT_FAILED, unit.key, unit.attempt, error=error)
        config = unit.node.spec.config
        if error.get("kind") == ErrorKind.SYSTEM.value:
            unit.system_failures += 1
            retry, budget = unit.system_failures <= config.system_retries, "system"
        else:
            unit.user_failures += 1
            retry, budget = unit.user_failures <= config.retries, "user"
            # (an executor marks a failure every attempt would repeat: a missing image)
            retry = retry and error.get("retryable", True) is not False
        if retry and not self.stopping:
            self.emit(K.RETRY_SCHEDULED, unit.key, unit.attempt, budget=budget)
            self._enqueue(unit)
            return
        self.emit(K.NODE_FAILED, unit.key, unit.attempt, error=error)
        self._unit_failed(unit, error)

    def _settle(self, run: NodeRun) -> None:
        """After fail-fast dropped a node's queued units: once none of its units is
        still running, the node is skipped (it can neither finish nor fail now)."""
        if not self.stopping:
            return  # (the usual case: every element of a map comes here)
        stuck = run.status is Status.RUNNING and not run.running and not run.queued
        if stuck and run.open_units:
            run.open_units = 0
            self._skip(run, _FAIL_FAST, force=True)

    def _persist(self, unit: Unit, result: AttemptResult) -> None:
        """Queue the attempt's artifact, lineage and cache rows for the next flush. Their
        JSON values are encoded now (``json_text``, the text the store would write): a
        map keeps a lineage and a cache row per element until the flush, and a dict of
        strings and numbers alone is not tracked by Python's collector, whose full
        collections are triggered by how many tracked objects live long."""
        task = unit.node.spec.task
        version = task.version()
        outputs = result.outputs
        key = unit.cache_key
        inputs = json_text(self._provenance(unit.node, unit.inputs))
        self.new_artifacts.extend(outputs.values())
        lineage = self.new_lineage
        for name, ref in outputs.items():
            lineage.append(
                {
                    "artifact_id": ref.id,
                    "name": name,
                    "execution_id": self.state.id,
                    "node": unit.key,
                    "attempt": unit.attempt,
                    "task_name": task.name,
                    "task_version": version,
                    "inputs": inputs,
                }
            )
        if key and not result.uncacheable:
            self.new_cache.append(
                {
                    "key": key,
                    "project": self.options.project,
                    "domain": self.options.domain,
                    "task_name": task.name,
                    "task_version": version,
                    "outputs": json_text({n: r.to_dict() for n, r in outputs.items()}),
                    "references": json_text(result.references),
                    "display": json_text(result.display),
                    "execution_id": self.state.id,
                }
            )

    def _unit_ok(self, unit: Unit, result: AttemptResult, cached: bool) -> None:
        run = unit.node
        if unit.index is None:
            run.outputs = dict(result.outputs)
            run.references = dict(result.references)
            run.values = dict(result.values)
            run.display = result.display
            run.status = Status.CACHED if cached else Status.SUCCEEDED
            run.open_units = 0
            self._node_done(run)
            return
        run.elements[unit.index] = result
        run.open_units -= 1
        if run.open_units == 0:
            self._map_done(run)
        else:
            self._settle(run)

    def _step_done(self, unit: Unit, result: AttemptResult) -> None:
        """An out-of-process map step finished: elements to run, or the node's lists."""
        run = unit.node
        outputs = result.outputs
        self.emit(
            K.ATTEMPT_SUCCEEDED,
            unit.key,
            unit.attempt,
            outputs={n: r.id for n, r in outputs.items()},
        )
        self.emit(K.NODE_SUCCEEDED, unit.key, unit.attempt)
        if unit.op == "expand":
            refs = [outputs[str(i)] for i in range(len(outputs))]
            self._elements(run, run.element_inputs[0], refs)
        else:
            self._map_finish(run, outputs, {})

    def _unit_failed(self, unit: Unit, error: dict[str, Any]) -> None:
        run = unit.node
        if unit.index is None:
            run.open_units = 0
            self._fail_node(run, error)
            return
        run.failed_units += 1
        run.open_units -= 1
        run.error = run.error or error
        allowed = math.floor(len(run.elements) * (1 - run.spec.map.min_success_ratio) + 1e-9)
        if run.failed_units > allowed:
            if run.status is not Status.FAILED:
                # Too many elements failed: the node fails; its other elements stop.
                self._drop(run)
                self._fail_node(
                    run,
                    {
                        **error,
                        "message": f"{run.failed_units} of {len(run.elements)} elements failed "
                        f"(allowed: {allowed}); element {unit.index}: {error.get('type')}: "
                        f"{error.get('message')}",
                    },
                )
            return
        if run.open_units == 0:
            self._map_done(run)
        else:
            self._settle(run)

    def _map_done(self, run: NodeRun) -> None:
        """Collect each output into a list in element order (None for failed elements).

        Every output of the task gets its list, whether or not an element produced it:
        an empty map gives empty lists and a map whose elements all failed (allowed by
        its ``min_success_ratio``) lists of None, which replace the notebook's old values
        and bind downstream inputs. Names an element stored as a reference (a module),
        and names the cell binds by ``import`` (the reference it would store), get none."""
        if run.status is Status.FAILED:
            return
        produced: set[str] = set()
        refs: dict[str, str] = {}
        for result in run.elements:
            if result is None:
                continue
            produced.update(result.outputs)
            refs.update(result.references)
        run.references = refs
        imported = import_bound(run.spec.task)
        names = [
            n
            for n in run.spec.task.outputs
            if n in produced or (n not in refs and n not in imported)
        ]
        if not self.engine.unpickles:  # a runner builds the lists
            inputs = {
                f"{n}[{i}]": result.outputs[n]
                for i, result in enumerate(run.elements)
                if result is not None
                for n in names
                if n in result.outputs
            }
            layout = {"names": names, "count": len(run.elements)}
            step = Unit(run, f"{run.id}:collect", None, inputs, None, op="collect", layout=layout)
            self._enqueue(step)
            return
        collected: dict[str, list[Any]] = {n: [] for n in names}
        for result in run.elements:
            for n in names:
                if result is None or n not in result.outputs:
                    collected[n].append(None)
                elif n in result.values:
                    collected[n].append(result.values[n])
                else:
                    collected[n].append(self.engine.artifacts.load(result.outputs[n], verify=False))
        outputs = {
            n: self.engine.artifacts.put(v, f"collected output {n!r} of {run.id!r}")
            for n, v in collected.items()
        }
        self._map_finish(run, outputs, collected)

    def _map_finish(
        self, run: NodeRun, outputs: dict[str, ArtifactRef], values: dict[str, Any]
    ) -> None:
        run.outputs, run.values = outputs, values
        all_cached = bool(run.elements) and all(
            self.state.nodes[f"{run.id}[{i}]"].status is Status.CACHED
            for i in range(len(run.elements))
        )
        run.status = Status.CACHED if all_cached else Status.SUCCEEDED
        inputs = json_text(self._provenance(run, self._node_inputs(run)))
        self.new_artifacts.extend(outputs.values())
        self.new_lineage.extend(
            {
                "artifact_id": r.id,
                "name": n,
                "execution_id": self.state.id,
                "node": run.id,
                "attempt": 0,
                "task_name": run.spec.task.name,
                "task_version": run.spec.task.version(),
                "inputs": inputs,
            }
            for n, r in outputs.items()
        )
        m = run.spec.map
        payload = {
            "outputs": {n: r.id for n, r in outputs.items()},
            "references": run.references,
            "map_over": m.over if m else "",
        }
        if all_cached:
            self.emit(K.CACHE_HIT, run.id, cache_key="", **payload)
        else:
            self.emit(K.ATTEMPT_SUCCEEDED, run.id, 0, **payload)
            self.emit(K.NODE_SUCCEEDED, run.id, 0)
        self._node_done(run)

    def _provenance(self, run: NodeRun, inputs: dict[str, ArtifactRef]) -> dict[str, Any]:
        """Each input's artifact and, when known, the attempt's node that produced it."""
        found: dict[str, Any] = {}
        for name, ref in inputs.items():
            b = run.spec.bindings.get(name)
            if b is not None and not b.is_param:
                source = {"execution": self.state.id, "node": b.node}
                if self.nodes[b.node].status is Status.RECOVERED and self.recover_from:
                    source = {"execution": self.recover_from.id, "node": b.node}
            elif b is not None:
                source = self.sources.get(b.output, {})
            else:  # a map element: it came out of the list input
                source = {}
            found[name] = {"id": ref.id, **source}
        return found

    def _node_inputs(self, run: NodeRun) -> dict[str, ArtifactRef]:
        found = {}
        for name, b in run.spec.bindings.items():
            source = self.params if b.is_param else self.nodes[b.node].outputs
            if b.output in source:
                found[name] = source[b.output]
        return found

    def _node_done(self, run: NodeRun) -> None:
        for down_id in self.downstream[run.id]:
            down = self.nodes[down_id]
            down.waiting_on.discard(run.id)
            if not down.waiting_on and down.status is Status.QUEUED and not down.open_units:
                self._start(down)

    def _fail_node(self, run: NodeRun, error: dict[str, Any]) -> None:
        run.status = Status.FAILED
        run.error = error
        if run.spec.map is not None or self.state.nodes[run.id].status is not Status.FAILED:
            self.emit(K.NODE_FAILED, run.id, error=error)
        if self.options.failure_policy == "fail-fast":
            self.stopping = True
            for other in self.nodes.values():  # nothing new starts; what runs finishes
                self._drop(other)
            for other in self.nodes.values():
                if other is not run:
                    self._skip(other, _FAIL_FAST)
                    self._settle(other)
        else:
            self._skip_downstream(run)

    def _skip_downstream(self, run: NodeRun) -> None:
        for down_id in self.downstream[run.id]:
            down = self.nodes[down_id]
            if down.status is Status.QUEUED:
                self._skip(down, f"upstream node {run.id!r} failed")
                self._skip_downstream(down)

    def _skip(self, run: NodeRun, reason: str, force: bool = False) -> None:
        """Mark a node that will never run. A started node only by ``_settle``."""
        if run.status.terminal or (run.status is Status.RUNNING and not force):
            return
        run.status = Status.SKIPPED
        self.emit(K.NODE_SKIPPED, run.id, reason=reason)

    def stop(self, reason: str) -> None:
        """Ask the execution to stop (from another thread): its attempts are stopped
        and it is recorded as aborted."""
        self.abort_reason = reason
        self.cancel.set()

    def shutdown(self) -> None:
        """Stop the attempts and the loop, recording nothing (see ``_Shutdown``).
        ``detach`` on the cancel event tells executors whose attempts can outlive this
        process (``can_adopt``: pods) to leave them running for the next server."""
        self.shutting_down = True
        self.cancel.detach = True  # type: ignore[attr-defined]
        self.cancel.set()

    def _abort(self, reason: str) -> None:
        self.cancel.set()
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        if self.state.created_at == 0.0:
            return
        self.emit(K.EXECUTION_ABORTED, reason=reason)
        self.flush()

    # -- the end --------------------------------------------------------------------------
    def _finish(self) -> WorkflowResult:
        for run in self.nodes.values():
            if not run.status.terminal:  # a scheduling bug must not pass for success
                self._fail_node(
                    run,
                    system_error(
                        f"node {run.id!r} was left {run.status.value} when the execution ended"
                    ),
                )
        failed = [r for r in self.nodes.values() if r.status is Status.FAILED]
        if failed:
            first = failed[0].error or {}
            self.emit(K.EXECUTION_FAILED, error=first)
            self.flush()
            if self.kind == "task":
                attempts = self.state.nodes[failed[0].id].attempt
                # A map's attempts are its elements' (the message counts those), and a
                # node whose inputs were refused never made one: no "after 0 attempt(s)".
                after = f" after {attempts} attempt(s)" if attempts else ""
                raise TaskFailed(
                    f"task {failed[0].id!r} failed{after}: {first.get('type')}: "
                    f"{first.get('message')}",
                    first.get("traceback", ""),
                    self.state.id,
                    first.get("type", ""),
                    first.get("message", ""),
                )
            failure = WorkflowFailed(
                self.state.id,
                [(r.id, r.error or {}) for r in failed],
                [r.id for r in self.nodes.values() if r.status is Status.SKIPPED],
            )
            failure.result = self._result(only_ok=True)
            raise failure
        self.emit(K.EXECUTION_SUCCEEDED)
        self.flush()
        return self._result()

    def _result(self, only_ok: bool = False) -> WorkflowResult:
        nodes = {k: r for k, r in self.nodes.items() if r.status.ok} if only_ok else self.nodes
        if self.options.want_values:
            for run in nodes.values():
                for name, ref in run.outputs.items():
                    if name not in run.values:
                        run.values[name] = self.engine.artifacts.load(
                            ref, verify=run.status is Status.RECOVERED
                        )
        return WorkflowResult(self.state, nodes)


def _in_order(outputs: dict[str, ArtifactRef], names: tuple[str, ...]) -> dict[str, ArtifactRef]:
    """A cache entry's outputs in the order this cell lists them: the entry may come from
    the same cell with ``--outputs`` in another order (one cache key), and the widget
    should show them as the cell asks."""
    ordered = {n: outputs[n] for n in names if n in outputs}
    return ordered if len(ordered) == len(outputs) else {**ordered, **outputs}
