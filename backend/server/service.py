"""Executions on the server: each runs on a thread of its own, through the same
scheduler as the embedded engine, with one engine per project and domain (its own
storage prefix) over one shared store, and a shared fair-share gate.

Streams (server-sent events) wait on a condition the runs notify, so a client hears of
an event as soon as it is committed. On start, executions left unfinished by a previous
server process are resumed: attempts that were running are settled as system failures
(their processes died with the server) and retried on the system budget; finished
nodes keep their outputs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, defaultdict
from typing import Any

from ..api import RunRequest
from ..config import Config
from ..engine import LocalEngine, WorkflowRequest
from ..errors import Conflict, NotFound
from ..model import Event, EventKind, ExecutionState
from ..scheduler import WorkflowRun
from ..store import Store
from .gate import FairGate
from .settings import ServerSettings

log = logging.getLogger("papercrane.server")
_MAX_LOG_ENTRIES = 5000
#: Live log buffers of this many ended executions are kept for late followers; older
#: ones are dropped (their logs stay in storage, per attempt), so a long-lived server's
#: memory does not grow with every execution it has run.
_KEEP_ENDED = 200


class _Follow:
    """The listener of one server-side run."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.execution_id = ""

    def on_event(self, event: Event, state: ExecutionState) -> None:
        self.service.notify(state.id)

    def on_log(self, stream: str, text: str) -> None:
        self.service.add_log(self.execution_id, stream, text)


class Service:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.store = Store(settings.db_url)
        self.gate = FairGate(settings.max_running, settings.project_limit, settings.project_limits)
        self._engines: dict[tuple[str, str], LocalEngine] = {}
        self._lock = threading.Lock()
        self._runs: dict[str, WorkflowRun] = {}
        self._changes: dict[str, int] = defaultdict(int)
        self._cond = threading.Condition()
        self._logs: dict[str, list[tuple[str, str]]] = defaultdict(list)
        #: Per execution, how many of its oldest live log lines were trimmed, so a
        #: follower's position stays an absolute line number.
        self._trimmed: dict[str, int] = defaultdict(int)
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._closing = False

    # -- engines ----------------------------------------------------------------------------
    def engine(self, project: str, domain: str) -> LocalEngine:
        key = (project, domain)
        with self._lock:
            engine = self._engines.get(key)
            if engine is None:
                config = Config(
                    home=self.settings.home,
                    db_url=self.settings.db_url,
                    storage_url=self.settings.storage_for(project, domain),
                    project=project,
                    domain=domain,
                )
                engine = LocalEngine(config, store=self.store)
                engine.unpickles = False  # the server never decodes user values
                engine.scope_project = project
                engine.artifact_scope = f"{project}/{domain}"  # (storage_for's partition)
                engine.gate = self.gate
                engine.runs_in_process = False  # (a restarted server resumes its own)
                engine.default_executor = self.settings.project_executors.get(
                    project, self.settings.executor
                )
                self._engines[key] = engine
            return engine

    def engine_for(self, execution_id: str) -> tuple[LocalEngine, ExecutionState]:
        state = self.store.execution(execution_id)
        if state is None:
            raise NotFound(f"no execution {execution_id!r}")
        return self.engine(state.project, state.domain), state

    # -- running ------------------------------------------------------------------------------
    def _launch(self, run: WorkflowRun, follow: _Follow, begun: bool = False) -> str:
        follow.execution_id = run.state.id
        if not begun:
            run.begin()
        execution_id = run.state.id
        with self._lock:
            self._runs[execution_id] = run
        thread = threading.Thread(
            target=self._proceed, args=(run,), name=f"execution-{execution_id}", daemon=True
        )
        thread.start()
        return execution_id

    def _proceed(self, run: WorkflowRun) -> None:
        from ..errors import ExecutionAborted, TaskFailed, WorkflowFailed

        execution_id = run.state.id
        try:
            run.proceed()
        except (TaskFailed, WorkflowFailed, ExecutionAborted):
            pass  # recorded as events; clients read them
        except Exception:  # a bug, not the task's fault: the record must still end
            log.exception("execution %s crashed in the scheduler", execution_id)
            if not self._closing:
                self._fail(run, "the server's scheduler crashed; see the server log")
        finally:
            with self._lock:
                self._runs.pop(execution_id, None)
            self.notify(execution_id)
            self._forget_later(execution_id)

    def _forget_later(self, execution_id: str) -> None:
        """Keep an ended execution's live buffers for a while, then drop them."""
        with self._cond:
            self._ended[execution_id] = None
            while len(self._ended) > _KEEP_ENDED:
                old, _ = self._ended.popitem(last=False)
                self._logs.pop(old, None)
                self._trimmed.pop(old, None)
                self._changes.pop(old, None)

    def _fail(self, run: WorkflowRun, message: str) -> None:
        error = {"kind": "system", "type": "SchedulerError", "message": message, "traceback": ""}
        try:
            run.pending.clear()
            run.emit(EventKind.EXECUTION_FAILED, error=error)
            run.flush()
        except Exception:
            log.exception("could not record the failure of %s", run.state.id)

    def submit_task(self, request: RunRequest) -> str:
        engine = self.engine(request.project, request.domain)
        follow = _Follow(self)
        return self._launch(engine.task_run(request, follow), follow)

    def submit_workflow(self, request: WorkflowRequest) -> str:
        engine = self.engine(request.project, request.domain)
        follow = _Follow(self)
        return self._launch(engine.workflow_run(request, follow), follow)

    def recover(
        self, execution_id: str, max_parallel: int, workflow_version: str | None = None
    ) -> str:
        engine, state = self.engine_for(execution_id)
        follow = _Follow(self)
        workflow = None
        if workflow_version:
            if not self.store.in_scope("workflow", workflow_version, state.project, state.domain):
                raise NotFound(
                    f"no workflow version {workflow_version!r} in {state.project}/{state.domain}"
                )
            workflow = engine.workflow(workflow_version)
        run = engine.recover_run(
            execution_id, follow, max_parallel=max_parallel, want_values=False, workflow=workflow
        )
        return self._launch(run, follow)

    def abort(self, execution_id: str) -> None:
        engine, state = self.engine_for(execution_id)
        if state.status.terminal:
            raise Conflict(f"execution {execution_id} already {state.status.value}")
        with self._lock:
            run = self._runs.get(execution_id)
        if run is not None:
            run.stop("aborted on request")
            return
        # Not running here (never started, or left over): record the end directly.
        follow = _Follow(self)
        run = engine.resume_run(execution_id, follow)
        run.emit(EventKind.EXECUTION_ABORTED, reason="aborted on request")
        run.flush()

    def resume_unfinished(self) -> list[str]:
        """Continue every execution a previous server process left running."""
        resumed = []
        rows = [
            r
            for status in ("queued", "running")
            for r in self.store.list_executions(status=status, limit=100_000)
        ]
        for row in sorted(rows, key=lambda r: r["created_at"]):
            engine = self.engine(row["project"], row["domain"])
            follow = _Follow(self)
            try:
                run = engine.resume_run(row["id"], follow)
                follow.execution_id = row["id"]
                run.begin()
            except Exception:
                log.exception("could not resume execution %s", row["id"])
                continue
            self._launch(run, follow, begun=True)
            resumed.append(row["id"])
        return resumed

    def close(self) -> None:
        """Stop this process's runs without recording an end: the next server resumes
        them (their attempts are settled as lost then)."""
        with self._cond:  # (and wakes the streams still waiting, to end)
            self._closing = True
            self._cond.notify_all()
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:
            run.shutdown()
        for engine in self._engines.values():
            engine.close()
        self.store.close()  # (the engines share it: theirs to use, the service's to close)

    # -- following ---------------------------------------------------------------------------
    def notify(self, execution_id: str) -> None:
        with self._cond:
            self._changes[execution_id] += 1
            self._cond.notify_all()

    def add_log(self, execution_id: str, stream: str, text: str) -> None:
        with self._cond:
            entries = self._logs[execution_id]
            entries.append((stream, text))
            if len(entries) > _MAX_LOG_ENTRIES:
                extra = len(entries) - _MAX_LOG_ENTRIES
                del entries[:extra]
                self._trimmed[execution_id] += extra
        self.notify(execution_id)

    def logs_since(self, execution_id: str, index: int) -> tuple[list[tuple[str, str]], int]:
        """Live log lines from absolute line ``index`` on (what was trimmed is skipped),
        and the position to ask from next time."""
        with self._cond:
            entries = list(self._logs.get(execution_id, ()))
            base = self._trimmed.get(execution_id, 0)
        start = max(index - base, 0)
        return entries[start:], base + len(entries)

    def wait(self, execution_id: str, seen: int, timeout: float) -> int:
        """Block until the execution changes after ``seen`` (or the timeout)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._changes[execution_id] == seen and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return self._changes[execution_id]

    def running(self, execution_id: str) -> bool:
        with self._lock:
            return execution_id in self._runs

    def status(self) -> dict[str, Any]:
        with self._lock:
            active = list(self._runs)
        return {"active_executions": active, "gate": self.gate.snapshot()}
