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

import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext, suppress
from typing import TYPE_CHECKING, Any

from .api import RunListener, deliver
from .errors import ExecutionAborted, TaskFailed, WorkflowFailed
from .executors.base import AttemptSpec
from .model import ArtifactRef, EventColumns, EventKind, ExecutionState, Status
from .owner import this_process
from .projection import fold
from .runner import system_error
from .scheduler_attempts import Attempts
from .scheduler_maps import Maps
from .scheduler_outcomes import Outcomes
from .scheduler_start import Starting
from .scheduler_units import ROUND, NodeRun, RunOptions, WorkflowResult
from .workflow import WorkflowSpec

if TYPE_CHECKING:
    from .engine import LocalEngine

K = EventKind


class _Stop(Exception):
    """Raised inside the loop when another thread asked the execution to stop."""


class _Shutdown(Exception):
    """The process is going away: stop without recording an end (it will be resumed)."""


class WorkflowRun(Starting, Attempts, Maps, Outcomes):
    """One execution, run on the calling thread. Here: its state, its events and their
    flushes, the scheduling loop and its end. Its other parts, each in a module of its
    own: starting nodes and queueing units (``scheduler_start``), running attempts
    (``scheduler_attempts``), map nodes (``scheduler_maps``), what an attempt's outcome
    leads to (``scheduler_outcomes``); the bookkeeping they share is in
    ``scheduler_units``. They are one class because they share one state, mutated on
    one thread, on a path a 10,000-element map takes per element."""

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
                time.sleep(ROUND / 5)  # every slot on the server is taken: wait for one
            else:
                break  # nothing running and nothing that can start: done
            self._collect(block=False)
            self.flush_if_due()
        # (no flush here: ``_finish`` records the end in the same transaction)

    def flush_if_due(self) -> None:
        if not self.pending or (not self.queued and not self.in_flight):
            return  # nothing to write, or the loop is about to end and ``_finish`` writes
        if self.queued == 0 or time.monotonic() - self._last_flush > ROUND:
            self.flush()

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
                    failed[0].display,
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
