"""The notebook as a workflow: its task cells, in document order, assembled into a DAG
that ``%workflow run`` runs in parallel, ``%workflow show`` draws, and batch mode
(``%workflow defer``) accumulates and runs when a later cell needs its outputs."""

from __future__ import annotations

import ast
import atexit
import contextlib
import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from papercrane.backend.errors import ExecutionAborted, TaskFailed, UserError, WorkflowFailed
from papercrane.backend.workflow import CellTask, WorkflowSpec, assemble

from .session import (
    CellRecord,
    Session,
    TaskError,
    TaskInterrupted,
    WorkflowError,
    publish_display,
)


def deferred_names(shell: Any) -> list[str]:
    """The task cells batch mode has recorded and not run yet, by name: ``papercrane
    run`` asks after a cell failed, to run them as the notebook would have before it."""
    for magics in shell.magics_manager.registry.values():
        session = getattr(magics, "_session", None)
        if isinstance(session, Session):
            return [rec.spec.name for rec in session.workflow.pending]
    return []


class NotebookWorkflow:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.pending: list[CellRecord] = []
        self.defer_override: bool | None = None
        self._atexit = False
        #: Deferred task cells whose last expression is shown, by task name: the display
        #: id of their "deferred" note, which the value replaces once the task has run.
        self._value_displays: dict[str, str] = {}
        #: What each deferred output's name held when its task cell was deferred (where
        #: the task runs, top to bottom): a later plain cell that binds it again out of
        #: analysis's sight (a function's ``global``, ``%%time``) leaves another object.
        self._held: dict[str, Any] = {}
        #: ``--detach`` on the current %workflow line: submit to the server, don't wait.
        self.detach = False
        #: The latest workflow execution this kernel ran (``last_failed``'s choice when
        #: the notebook's name, and so its workflow's, is not known).
        self.last_run = ""
        #: Task cells ``ordered`` left out last time: deleted from the saved notebook.
        self.left_out: list[str] = []

    @property
    def deferring(self) -> bool:
        if self.defer_override is not None:
            return self.defer_override
        return bool(self.session.settings.defer)

    # -- naming and order -----------------------------------------------------------------
    def notebook_path(self) -> Path | None:
        ns = self.session.shell.user_ns
        for candidate in (os.environ.get("PAPERCRANE_NOTEBOOK"), ns.get("__session__")):
            if candidate and str(candidate).endswith(".ipynb"):
                return Path(str(candidate))
        return None

    def name(self) -> str:
        configured = self.session.settings.workflow_name
        from papercrane.backend.config import check_name, workflow_name

        if configured:
            where = "%config Papercrane.workflow_name or PAPERCRANE_WORKFLOW"
            return check_name("workflow name", configured, where=where)

        path = self.notebook_path()
        return workflow_name(path) if path else "notebook"

    def ordered(self, records: list[CellRecord]) -> list[CellRecord]:
        """Document order when the notebook file is known, else the order cells ran.

        A task cell the saved notebook no longer has, though it was saved after the cell
        ran, was deleted (or cut and pasted, which gives it a new id): it is left out,
        and ``left_out`` names it. A cell that ran after the last save is kept (JupyterLab
        saves every two minutes), after the saved ones."""
        position: dict[str, int] = {}
        saved_at = 0.0
        path = self.notebook_path()
        if path is not None and path.exists():
            try:
                saved_at = path.stat().st_mtime
                cells = json.loads(path.read_text()).get("cells", [])
                position = {c.get("id", ""): i for i, c in enumerate(cells) if c.get("id")}
            except (OSError, ValueError):
                position = {}
        gone = [
            r
            for r in records
            if position and r.cell_id and r.cell_id not in position and r.recorded_at < saved_at
        ]
        self.left_out = [r.spec.name for r in gone]
        big = len(position) + 1
        kept = [r for r in records if r not in gone]
        return sorted(kept, key=lambda r: (position.get(r.cell_id, big), r.order))

    def spec(self, records: list[CellRecord] | None = None) -> WorkflowSpec:
        chosen = self.ordered(list(self.session.records.values()) if records is None else records)
        if self.left_out:
            names = ", ".join(repr(n) for n in self.left_out)
            print(
                f"left out of the workflow: task {names}, whose cell the saved notebook no "
                "longer has (deleted); run it again to bring it back"
            )
        if not chosen:
            raise UserError(
                "this notebook has no task cells yet: run a %%task cell first "
                "(a workflow is the notebook's task cells, in order)"
            )
        cells = [
            CellTask(
                task=r.spec,
                config=r.options.config,
                map=r.options.map,
                cell_id=r.cell_id,
                declared_outputs=r.declared_outputs,
                position=_position(r),
            )
            for r in chosen
        ]
        return assemble(self.name(), cells)

    # -- batch mode -----------------------------------------------------------------------
    def pending_outputs(self) -> frozenset[str]:
        names: set[str] = set()
        for rec in self.pending:
            names.update(n for n in rec.spec.outputs if n not in rec.import_names)
        return frozenset(names)

    def defer(self, rec: CellRecord) -> None:
        # A parameter that changed value since an earlier deferred cell captured it:
        # run what is pending first, so each cell sees the value it saw in order.
        for other in self.pending:
            for name, ref in rec.inputs.items():
                old = other.inputs.get(name)
                if old is not None and old.id != ref.id and name not in self.pending_outputs():
                    self.flush()
                    break
        earlier = next((p for p in self.pending if p.key == rec.key), None)
        if earlier is not None and earlier.spec.version() != rec.spec.version():
            # Another cell with this task name (papermill sends no cell ids, so both have
            # the name as their key), or this cell edited and run again: what ran above
            # runs first, as top to bottom, rather than being silently replaced.
            self.flush()
        self.pending = [p for p in self.pending if p.key != rec.key] + [rec]
        ns = self.session.shell.user_ns
        for name in rec.spec.outputs:
            if name not in rec.import_names:
                self._held.setdefault(name, ns.get(name, _UNBOUND))
        # Modules the cell imports at top level are bound now, as the flush would: later
        # cells then capture them as imports (as interactively), not as pending data.
        for line in rec.import_lines:
            # (if the import fails here, the task itself reports it when it runs)
            with contextlib.suppress(ImportError):
                exec(line, self.session.shell.user_ns)
        if not self._atexit:
            _at_exit(self._flush_at_exit)
            self._atexit = True
            shell = self.session.shell
            if not shell.custom_exceptions:  # (one handler per shell: never replace another's)
                shell.set_custom_exc((NameError,), self._name_error)
        from IPython.display import display

        from .widgets import deferred_note

        display_id = None
        if rec.spec.display_last:
            display_id = f"papercrane-deferred-{uuid.uuid4().hex}"
            self._value_displays[rec.spec.name] = display_id
        display(deferred_note(rec.spec.name, len(self.pending)), display_id=display_id)

    def _name_error(
        self, shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: Any = None
    ) -> list[str]:
        """A NameError for an output of a deferred task says so. A cell that names it
        runs the tasks first, but not one that reads it out of sight (in a function
        defined before the task cell): plain "not defined" would be a puzzle there."""
        name = getattr(value, "name", None)
        producers = [rec.spec.name for rec in self.pending if name in rec.spec.outputs]
        if producers and value.args and "deferred task" not in str(value.args[0]):
            value.args = (
                f"{value.args[0]}: it is an output of the deferred task {producers[-1]!r}, "
                "which has not run yet (this cell reads it where papercrane can't see, "
                "such as in a function defined earlier); run `%workflow flush` first",
            )
        return shell.InteractiveTB.structured_traceback(  # type: ignore[no-any-return]
            etype, value, tb, tb_offset=tb_offset
        )

    def needs_flush(self, source: str) -> bool:
        """Must the deferred tasks run before this (plain) cell, for the notebook to mean
        what it means top to bottom? Yes when the cell touches a name a deferred task
        outputs: reads it (it needs the value), or assigns, deletes or changes it (run
        later, the task would bind its value over the cell's: ``y = 100`` then
        ``print(y)`` would show the task's ``y``, and a later task would read it too).
        Also when the cell reads or writes names in ways analysis can't see
        (``eval``, ``exec``, ``globals()``, ``import *``): then any of them may be one."""
        if not self.pending:
            return False
        from .analysis import analyze

        try:
            found = analyze(source)
        except SyntaxError:
            return False
        if found.dynamic or found.star_imports:
            return True
        touched = (
            set(found.reads)
            | set(found.deferred_reads)
            | found.ever_bound
            | found.deleted
            | set(found.mutated)
        )
        return not touched.isdisjoint(self.pending_outputs())

    def rebound(self) -> frozenset[str]:
        """Deferred outputs that a plain cell bound or deleted since, where analysis
        could not see it (the cell would have run the tasks first otherwise)."""
        ns = self.session.shell.user_ns
        return frozenset(n for n, held in self._held.items() if ns.get(n, _UNBOUND) is not held)

    def flush(self, live: bool = True) -> Any:
        """Run every deferred task cell now, as one workflow, and bind the outputs. A
        name a later plain cell bound again keeps that cell's value, as top to bottom."""
        if not self.pending:
            return None
        records, later, shown = self._take_pending()
        spec = self.spec(records)
        params: dict[str, Any] = {}
        values: dict[str, Any] = {}
        scope = self._options(records)
        for rec in records:
            elsewhere = (rec.options.project, rec.options.domain) != scope
            for name, ref in rec.inputs.items():
                if elsewhere and name in rec.values and name not in params:
                    # Stored in the cell's own project; the workflow runs in the last's.
                    what = f"task {rec.spec.name!r}: input {name!r}"
                    ref = self.session.value_ref(rec.values[name], what, ref.id, scope)
                params.setdefault(name, ref)
                if name in rec.values:
                    values.setdefault(name, rec.values[name])
        values = self._unchanged(params, values)
        return self._settled(
            lambda: self._execute(spec, params, values, records, live=live), later, shown, live
        )

    def _take_pending(self) -> tuple[list[CellRecord], dict[str, Any], dict[str, str]]:
        """The deferred cells, taken out of batch mode's hands to run now: their records,
        the names a later plain cell bound again (with that cell's value), and where
        each task's value is to be shown."""
        ns = self.session.shell.user_ns
        later = {n: ns.get(n, _UNBOUND) for n in self.rebound()}
        records, self.pending, self._held = self.pending, [], {}
        shown = {rec.spec.name: self._value_displays.pop(rec.spec.name, "") for rec in records}
        return records, later, shown

    def _settled(
        self, execute: Any, later: dict[str, Any], shown: dict[str, str], live: bool = True
    ) -> Any:
        """``execute()`` a run that includes deferred cells, then, as top to bottom: a
        name a later plain cell bound again keeps that cell's value, and each deferred
        task's value is shown in its own cell (those that finished, if the run failed)."""
        ns = self.session.shell.user_ns
        try:
            result = execute()
        except WorkflowError as error:  # the tasks that finished still show their values
            partial = error.failure.result
            if partial is not None and live:
                self._show_values(partial, shown)
            raise
        finally:  # (whatever the run bound, a failed one included)
            for name, value in later.items():
                if value is _UNBOUND:
                    ns.pop(name, None)
                else:
                    ns[name] = value
        if result is not None and live:
            self._show_values(result, shown)
        return result

    @staticmethod
    def _show_values(result: Any, display_ids: dict[str, str]) -> None:
        """Each deferred task's last expression, shown where it would have been, had the
        cell run at once: in the task's own cell, in place of its "deferred" note (an
        update of that display, which Jupyter front ends and papermill apply to the
        earlier cell's output)."""
        from IPython.display import publish_display_data

        for name, run in result.nodes.items():
            display_id = display_ids.get(name)
            if not run.display:
                continue
            # What the task's display() calls kept (a task outside the kernel) shows
            # where the run happens, as an inline task's display() does.
            for bundle in run.display.get("displayed") or []:
                publish_display_data(bundle["data"], bundle["metadata"])
            if run.display.get("data") and display_id:
                publish_display_data(
                    run.display["data"],
                    run.display.get("metadata") or {},
                    transient={"display_id": display_id},
                    update=True,
                )

    def _unchanged(self, params: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
        """The deferred inputs whose objects still hold what their cells captured. A
        plain cell may have changed one in place since (``cfg["a"] = 2``): the task must
        see the value its cell saw, the one its input artifact (and cache key) was made
        of, so a changed object is left out and the run loads the stored value instead.
        (Batch mode only: a task that runs at once gets the objects as they are.)"""
        artifacts = self.session.engine.artifacts
        fingerprinter = artifacts.fingerprinter()
        known = getattr(artifacts, "known_fingerprint", None)  # (a server's has none)
        kept = {}
        for name, value in values.items():
            try:
                fp = (known and known(value)) or fingerprinter.value(value)
            except Exception:  # (it was fingerprinted when deferred: the stored one is safe)
                continue
            if fp == params[name].id:
                kept[name] = value
        return kept

    def _flush_at_exit(self) -> None:
        """The end of a notebook whose last deferred tasks no cell read: they run as the
        interpreter begins to exit (``_at_exit``). A kernel manager (papermill's,
        nbconvert's, JupyterLab's) gives a shutting-down kernel a few seconds
        (``shutdown_wait_time``: SIGTERM after half of its 5 s), so a SIGTERM meanwhile
        stops the run like an interrupt: recorded as aborted, its subprocesses stopped,
        rather than killed mid-run and left "running" in the store. What happened goes to
        the kernel's stderr (the terminal that ran papermill): by then the notebook has
        no cell to show it."""
        if not self.pending:
            return
        import platform
        import signal
        import sys

        names = ", ".join(rec.spec.name for rec in self.pending)
        if not _threads_start():
            # (before anything is recorded: no execution is left half-written)
            print(
                f"papercrane: the deferred tasks ({names}) did not run: this Python "
                f"({platform.python_version()}) cannot start a thread while the kernel exits, "
                "and running them needs one. End the notebook with a `%workflow flush` cell, "
                "or run it with `papercrane run` (which adds that cell).",
                file=sys.__stderr__,
            )
            return

        print(
            f"papercrane: the deferred tasks ({names}) run now, as the kernel exits: no cell "
            "read their outputs. A kernel manager (papermill's, nbconvert's) stops a kernel "
            "2.5 s after asking it to exit, and a run still going then is recorded as "
            "aborted. To run them as a cell, end the notebook with a `%workflow flush` "
            "cell, or run it with `papercrane run`.",
            file=sys.__stderr__,
            flush=True,
        )

        def stopped(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt("the kernel was stopped (SIGTERM)")

        previous: Any = None
        with contextlib.suppress(ValueError):  # (only the main thread may; atexit runs there)
            previous = signal.signal(signal.SIGTERM, stopped)
        try:
            result = self.flush(live=False)
            if result is not None:
                state = result.execution
                print(
                    f"papercrane: the deferred tasks ({names}) ran at exit: execution "
                    f"{state.id} {state.status.value}",
                    file=sys.__stderr__,
                )
        except KeyboardInterrupt as exc:  # (TaskInterrupted: the run was recorded aborted)
            print(
                f"papercrane: the kernel was stopped while its deferred tasks ({names}) ran at "
                f"exit: {exc}. To run them as a cell, not during the kernel's shutdown, end "
                "the notebook with a `%workflow flush` cell, or run it with `papercrane run` "
                "(which adds that cell, and runs them after a failed cell too).",
                file=sys.__stderr__,
            )
        except Exception as exc:  # the kernel is going away: say why, don't raise
            print(f"papercrane: deferred tasks failed at exit: {exc}", file=sys.__stderr__)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    # -- %workflow run / recover / show ---------------------------------------------------
    def run(self, overrides: dict[str, Any], max_parallel: int | None, policy: str) -> Any:
        spec = self.spec()
        known = spec.parameters()
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise UserError(
                f"-p {unknown[0]}: the workflow has no parameter {unknown[0]!r}; its "
                f"parameters are: {', '.join(known) or '(none)'}"
            )
        ns = self.session.shell.user_ns
        records = list(self.session.records.values())
        scope = self._options(records)  # (the parameters go to the workflow's project)
        params: dict[str, Any] = {}
        values: dict[str, Any] = {}
        for name in known:
            if name in overrides:
                value = overrides[name]
            elif name in ns:
                value = ns[name]
            else:
                raise UserError(
                    f"workflow parameter {name!r} has no value: no task produces it and the "
                    f"notebook has no variable {name!r}; define it or pass -p {name}=VALUE"
                )
            values[name] = value
            params[name] = self.session.value_ref(value, f"parameter {name!r}", scope=scope)
        _note_rebound_parameters(spec, overrides, values)
        # Deferred cells are recorded cells like the others: this run runs them, once
        # (flushing them first ran them twice). Taken only now: a refused -p leaves them.
        _, later, shown = self._take_pending()
        execute = lambda: self._execute(  # noqa: E731
            spec, params, values, records, max_parallel=max_parallel, policy=policy
        )
        return self._settled(execute, later, shown)

    def _options(self, records: list[CellRecord]) -> tuple[str, str]:
        from papercrane.backend.config import check_scope

        settings = self.session.settings
        if records:
            return records[-1].options.project, records[-1].options.domain
        check_scope(settings.project, settings.domain)  # (a record's were checked)
        return settings.project, settings.domain

    def _execute(
        self,
        spec: WorkflowSpec,
        params: dict[str, Any],
        values: dict[str, Any],
        records: list[CellRecord],
        *,
        max_parallel: int | None = None,
        policy: str = "fail-fast",
        live: bool = True,
    ) -> Any:
        from papercrane.backend.engine import WorkflowRequest

        from .workflow_widget import WorkflowWidget

        project, domain = self._options(records)
        _note_mixed_scopes(records, project, domain)
        request = WorkflowRequest(
            spec=spec,
            params=params,
            param_values=values,
            project=project,
            domain=domain,
            max_parallel=max_parallel or self.session.settings.max_parallel,
            failure_policy=policy,
            sources=self.session.sources(params, values),
        )
        engine = self.session.engine_for(project, domain)
        if self.detach:
            if not hasattr(engine, "submit_workflow"):
                raise UserError("--detach needs a papercrane server (set PAPERCRANE_URL)")
            execution_id = engine.submit_workflow(request)
            print(
                f"submitted execution {execution_id}: {engine.url}/api/v1/executions/"
                f"{execution_id}  (follow it with `papercrane executions show {execution_id}`)"
            )
            return None
        widget = WorkflowWidget(spec, live=live)
        widget.show()
        try:
            result = engine.run_workflow(request, listener=widget)
        except WorkflowFailed as failure:
            widget.finish()
            self.last_run = failure.execution_id
            self._bind_partial(failure, records, widget.state)
            _show_failed_displays(failure, widget.state)
            raise WorkflowError(failure) from None
        except ExecutionAborted as aborted:
            widget.finish()
            if widget.state is not None:
                self.last_run = widget.state.id
            self._remember(records, widget.state)
            raise TaskInterrupted(str(aborted)) from None
        widget.finish()
        self.last_run = result.execution.id
        self._bind(result, records)
        return result

    def last_failed(self) -> str:
        """``%workflow recover`` without an id: this notebook's workflow's latest
        execution, if it failed or was aborted (a later success leaves nothing to do)."""
        project, domain = self._options([])
        name = self.name()
        if name == "notebook" and not self.session.settings.workflow_name:
            # Not this notebook's name: every notebook whose file is not known (under
            # papermill, say) gets it. Only this kernel's own run can be meant.
            if not self.last_run:
                raise UserError(
                    "this kernel has not run the workflow yet, and the notebook's file is "
                    "not known, so its earlier runs can't be told from other notebooks'; "
                    "give an execution id: %workflow recover ID (papercrane executions list "
                    "--status failed)"
                )
            state = self.session.engine_for(project, domain).execution(self.last_run)
            latest = [{"id": state.id, "status": state.status.value}]
        else:
            latest = self.session.engine_for(project, domain).list_executions(
                limit=1, project=project, domain=domain, name=name
            )
        if not latest or latest[0]["status"] not in ("failed", "aborted"):
            last = (
                f"its last run, {latest[0]['id']}, {latest[0]['status']}"
                if latest
                else "it has not run yet"
            )
            raise UserError(
                f"workflow {name!r} has no failed run to recover ({last}); give an "
                "execution id: %workflow recover ID (papercrane executions list --status failed)"
            )
        return str(latest[0]["id"])

    def recover(self, execution_id: str) -> Any:
        """Re-run a failed execution, reusing what succeeded. If it is this notebook's
        workflow and its task cells changed since (the user fixed the failing cell and
        ran it), the cells as they are now run: the changed nodes and everything
        downstream of them run again, the rest is reused (``engine.recover``). Cells
        batch mode deferred are among them: the recovery runs them, once, as ``run``
        does (left deferred, the next plain cell ran the fixed cell a second time)."""
        from papercrane.backend.engine import check_recoverable

        engine = self.session.engine_for(*self._options(list(self.session.records.values())))
        source = engine.execution(execution_id)
        execution_id = source.id  # (given by the start of its id, perhaps)
        check_recoverable(source)  # (before a widget is shown)
        spec = edited = None
        ours = source.kind == "workflow" and source.name == self.name()
        if source.kind == "workflow":
            spec = engine.workflow(source.workflow_version)
            if ours and self.session.records:
                current = self.spec()
                if current.version() != spec.version():
                    spec = edited = current
        records = list(self.session.records.values()) if edited is not None else []
        run = _Recovery(engine, execution_id, spec, edited, records, source.name)
        if not (ours and self.pending):
            return self._recover(run)
        taken = (self.pending, dict(self._held), dict(self._value_displays))
        _, later, shown = self._take_pending()
        return self._settled(lambda: self._recover(run, taken), later, shown)

    def _recover(
        self,
        run: _Recovery,
        taken: tuple[list[CellRecord], dict[str, Any], dict[str, str]] | None = None,
    ) -> Any:
        """``recover``'s run, with its widget. ``taken``: the deferred cells it runs, and
        batch mode's state for them, given back if the engine refuses the recovery before
        anything runs (they are still to run then)."""
        from .workflow_widget import WorkflowWidget

        widget = WorkflowWidget(run.spec, live=True, title=f"recovering {run.execution_id}")
        widget.show()
        records = run.records
        try:
            result = run.engine.recover(run.execution_id, listener=widget, workflow=run.edited)
        except WorkflowFailed as failure:
            widget.finish()
            self.last_run = failure.execution_id
            self._bind_partial(failure, records, widget.state)
            _show_failed_displays(failure, widget.state)
            raise WorkflowError(failure) from None
        except TaskFailed as failure:  # a single task's execution, failing again
            widget.finish()
            publish_display(failure.display)
            raise TaskError(failure, run.name) from None
        except ExecutionAborted as aborted:
            widget.finish()
            if widget.state is not None:
                self.last_run = widget.state.id
            raise TaskInterrupted(str(aborted)) from None
        except UserError:  # refused (no execution began: none was seen)
            widget.finish()
            if taken is not None and widget.state is None:
                pending, held, displays = taken
                self.pending = pending + self.pending
                self._held = {**held, **self._held}
                self._value_displays.update(displays)
            raise
        widget.finish()
        self.last_run = result.execution.id
        self._bind(result, records)
        return result

    def _bind_partial(self, failure: WorkflowFailed, records: list[CellRecord], state: Any) -> None:
        """A failed run still binds what its nodes that finished well produced, as the
        cells above a failing cell would have: a fix of the failing cell then finds its
        inputs in the notebook."""
        if failure.result is not None and failure.result.nodes:
            self._bind(failure.result, records, partial=True)
        else:
            self._remember(records, state)

    def _bind(self, result: Any, records: list[CellRecord], partial: bool = False) -> None:
        deleted: set[str] = set()
        for rec in records:
            if not partial:  # (a partial result: only the nodes that finished are known)
                deleted |= rec.deleted
        state = result.execution
        scope = self._options(records)
        for run in result.nodes.values():  # document order: later nodes win, as cells do
            recovered = run.status.value == "recovered" and state.recovered_from
            origin = {"execution": recovered or state.id, "node": run.id}
            self.session.bind(run.outputs, run.values, run.references, origin=origin, scope=scope)
        produced = {n for run in result.nodes.values() for n in run.outputs}
        for name in deleted - produced:
            self.session.shell.user_ns.pop(name, None)
        self._remember(records, result.execution)

    def _remember(self, records: list[CellRecord], state: Any) -> None:
        if state is None:
            return
        by_name = {r.spec.name: r for r in records}
        for node_id, node in state.nodes.items():
            rec = by_name.get(node_id)
            if rec is not None:
                rec.last_execution = state.id
                rec.last_status, rec.last_cache = node.status.value, node.cache

    def show(self) -> None:
        from .workflow_widget import WorkflowWidget

        spec = self.spec()
        deferred = frozenset(rec.spec.name for rec in self.pending)
        widget = WorkflowWidget(spec, live=False, records=self.session.records, deferred=deferred)
        widget.show()


_UNBOUND = object()  # (a name with no value in the notebook)


@dataclass(frozen=True)
class _Recovery:
    """What ``%workflow recover`` runs: the execution, the workflow as it ran (for the
    widget), the notebook's cells as they are now if they changed since (``edited``,
    whose ``records`` the result binds), and the source's name (for a task's error)."""

    engine: Any
    execution_id: str
    spec: WorkflowSpec | None
    edited: WorkflowSpec | None
    records: list[CellRecord]
    name: str


def _position(rec: CellRecord) -> str:
    """How a message names a task cell: the ``In[n]`` it last ran as, which the user
    sees (a cell id is a UUID nobody sees)."""
    from papercrane.backend.runner import cell_filename

    label = rec.spec.sources.get(cell_filename(rec.spec.name), ("", ""))[0]
    if label:
        return f"the cell that ran as {label}"
    return f"cell {rec.cell_id}" if rec.cell_id else f"task {rec.spec.name!r}"


def parse_param(text: str) -> tuple[str, Any]:
    """``name=value``: the value is a Python literal if it parses as one, else a string.
    A value with a space comes as one quoted word (``-p "s=a b"``, see ``unquoted``)."""
    from .magics import unquoted

    name, sep, raw = unquoted(text).partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise UserError(f"-p {text!r}: write parameters as NAME=VALUE, for example -p n=10")
    try:
        value = ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError):
        value = raw
    return name, value


def _at_exit(hook: Callable[[], None]) -> None:
    """Call ``hook`` as the interpreter begins to exit, while thread pools still take
    work. An ``atexit`` handler is too late for a workflow of two nodes or more:
    ``concurrent.futures`` registers its own exit hook with ``threading._register_atexit``,
    whose hooks run before atexit handlers, and after it a ThreadPoolExecutor refuses
    work ("cannot schedule new futures after interpreter shutdown"). Those hooks run in
    reverse order, so one registered once ``concurrent.futures.thread`` is imported runs
    before its own. (A private function of ``threading``, there since Python 3.9:
    without it, or once the interpreter exits, ``atexit`` is the fallback.)"""
    import concurrent.futures.thread  # noqa: F401  (registers its hook: ours then runs first)
    import threading

    register = getattr(threading, "_register_atexit", None)
    try:
        if register is not None:
            register(hook)
            return
    except RuntimeError:  # the interpreter is exiting already
        pass
    atexit.register(hook)


def _note_mixed_scopes(records: list[CellRecord], project: str, domain: str) -> None:
    """Say so when the task cells name different projects or domains: a workflow runs as
    one execution, in the last cell's, which the user may not expect of a cell whose
    ``--project`` says otherwise."""
    others = [
        f"{r.spec.name!r} ({r.options.project}/{r.options.domain})"
        for r in records
        if (r.options.project, r.options.domain) != (project, domain)
    ]
    if others:
        print(
            f"note: the workflow runs in {project}/{domain}, its last task cell's, but "
            f"{', '.join(others[:3])}{' and others' if len(others) > 3 else ''} name "
            "another; give the cells one --project and --domain (or set "
            '%config Papercrane.project = "...") to keep the runs and the cache in one place'
        )


def _note_rebound_parameters(
    spec: WorkflowSpec, overrides: dict[str, Any], values: dict[str, Any]
) -> None:
    """Say so when a parameter's default is a value the workflow itself rebinds: a task
    reads ``n`` before any task makes it (so ``n`` is a parameter) and assigns ``n``
    too. Without ``-p`` the run starts from the ``n`` the notebook holds now, which
    the last run left, so each run without ``-p`` starts somewhere else."""
    for name in values:
        if name in overrides:
            continue
        node = next((n.id for n in spec.nodes if name in n.task.outputs), None)
        if node is not None:
            shown = repr(values[name])
            shown = shown if len(shown) <= 40 else shown[:39] + "\u2026"
            print(
                f"note: parameter {name!r} is also an output of task {node!r}: this run "
                f"starts from the {name!r} the notebook holds now ({shown}), which the last "
                f"run may have set; pass -p {name}=VALUE to start from a value of yours"
            )


def _threads_start() -> bool:
    """Whether this process can still start a thread. Python 3.12 refuses once the
    interpreter has begun to exit, its exit hooks included (CPython issue 113964);
    3.10, 3.11 and 3.13 allow it."""
    import threading

    try:
        probe = threading.Thread(target=lambda: None, name="papercrane-probe", daemon=True)
        probe.start()
    except RuntimeError:
        return False
    probe.join()
    return True


def _show_failed_displays(failure: WorkflowFailed, state: Any) -> None:
    """What each failed node displayed before it failed, above the run's tracebacks."""
    nodes = getattr(state, "nodes", None) or {}
    for name, _ in failure.failures:
        node = nodes.get(name)
        if node is not None:
            publish_display(node.display)
