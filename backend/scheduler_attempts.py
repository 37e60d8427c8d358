"""Running a workflow run's units: launching attempts on their executors (worker
threads for out-of-process ones, the scheduler's own thread for inline ones) and
collecting what they report. Part of ``scheduler.WorkflowRun``."""

from __future__ import annotations

import logging
import queue
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from .deadlines import deadlines
from .executors.base import AttemptSpec, Executor
from .model import EventKind
from .runner import AttemptResult, system_error
from .scheduler_units import ROUND, START_GRACE, Unit

if TYPE_CHECKING:
    from .scheduler import WorkflowRun

K = EventKind


class Attempts:
    """``WorkflowRun``'s part that runs attempts and collects their results."""

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
            logs = AttemptLogs(self, unit, threaded=True)
            try:
                result = executor.run(attempt, logs, self.cancel, **adopt)
            finally:
                logs.close()
        except BaseException as exc:  # the executor itself broke: a system failure
            result = AttemptResult("failed", error=system_error(f"{type(exc).__name__}: {exc}"))
        self.done.put(("result", unit, result))

    def _run_here(self, unit: Unit) -> None:
        """Run one unit on the scheduler's own thread (inline units always are).

        The store and the widget must show a task running while it runs. A single
        inline task's start is not committed before its code runs, though: if the code
        is still running after ``START_GRACE``, a helper thread commits it then
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
        now = not deferred and (time.monotonic() - self._last_flush > ROUND or single)
        if now:
            self.flush()  # the widget and the store show it running
        token = None
        logs = AttemptLogs(self, unit, threaded=False)
        unit.node.running += 1
        try:
            # Held back (a flush was just made, for the unit before): committed if it runs
            # past the grace, else with its end. (Without this, a long task after a quick
            # one showed queued, with no attempt and no logs to `executions show` and
            # `logs`, until it ended.) Not where the rows may name members of this
            # thread's pack not written yet: another thread's flush can't write it.
            if not now and (deferred or not (self.packing and executor.in_process)):
                self._start_due = True
                token = deadlines.arm(START_GRACE, self._write_start)
            result = executor.run(self._attempt_spec(unit), logs, self.cancel)
        finally:
            logs.close()
            unit.node.running -= 1
            if token is not None:
                deadlines.cancel(token)
                with self._start_lock:  # waits for a start being written right now
                    self._start_due = False
        self._handle(unit, result)

    def _write_start(self) -> None:
        """On the helper thread: the unit ``_run_here`` runs is still running, commit its
        start (and what was held back with it).
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
        timeout = ROUND if block else 0
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


class AttemptLogs:
    """Log sink for one unit. Worker threads queue their lines for the scheduler thread,
    which alone talks to the listener; parallel nodes get a prefix.

    With a prefix, only whole lines go out, each prefixed once: ``print(a, b)`` writes
    ``a``, the space, ``b`` and the newline separately, and a parallel unit's output
    between those writes would otherwise land inside the line. A line still open when
    the attempt ends goes out then (``close``)."""

    #: Characters of an unfinished line held before it goes out anyway (a progress
    #: bar redrawn with "\r" never ends its line).
    HOLD = 8192

    def __init__(self, run: WorkflowRun, unit: Unit, threaded: bool) -> None:
        self.run = run
        self.prefix = f"[{unit.key}] " if run.prefix_logs else ""
        self.threaded = threaded
        self.unit = unit
        self.open: dict[str, str] = {}  # stream -> its unfinished line

    def log(self, stream: str, text: str) -> None:
        if self.prefix:
            held = self.open.pop(stream, "") + text
            whole, newline, rest = held.rpartition("\n")
            if len(rest) > self.HOLD:
                whole, newline, rest = held, "\n", ""
            if rest:
                self.open[stream] = rest
            if not newline:
                return
            text = "".join(
                self.prefix + line if line.strip() else line
                for line in (whole + "\n").splitlines(keepends=True)
            )
        self._send(stream, text)

    def close(self) -> None:
        """The attempt ended: send what is left of its unfinished lines."""
        for stream, rest in self.open.items():
            self._send(stream, f"{self.prefix}{rest}\n")
        self.open.clear()

    def _send(self, stream: str, text: str) -> None:
        if self.threaded:
            self.run.done.put(("log", stream, text))
        else:
            self.run.listener.on_log(stream, text)

    def status(self, message: str) -> None:
        """Where the attempt is (a pod pending on the scheduler, running): an event."""
        self.run.done.put(("status", self.unit, message))
