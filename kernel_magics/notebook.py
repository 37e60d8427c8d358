"""The notebook as a workflow: its task cells, in document order, assembled into a DAG
that ``%workflow run`` runs in parallel, ``%workflow show`` draws, and batch mode
(``%workflow defer``) accumulates and runs when a later cell needs its outputs."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path
from typing import Any

from papercrane.backend.errors import ExecutionAborted, UserError, WorkflowFailed
from papercrane.backend.workflow import CellTask, WorkflowSpec, assemble

from .notebook_defer import Deferring
from .notebook_recover import Recovering
from .session import (
    CellRecord,
    Session,
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


class NotebookWorkflow(Deferring, Recovering):
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
            raise self._failed_run(failure, records, widget) from None
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

    def _failed_run(
        self, failure: WorkflowFailed, records: list[CellRecord], widget: Any
    ) -> WorkflowError:
        """A run (or recovery) that failed: what finished well is bound, what the failed
        nodes displayed is shown, and the error to raise says how each failed."""
        widget.finish()
        self.last_run = failure.execution_id
        self._bind_partial(failure, records, widget.state)
        _show_failed_displays(failure, widget.state)
        return WorkflowError(failure)

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


def _show_failed_displays(failure: WorkflowFailed, state: Any) -> None:
    """What each failed node displayed before it failed, above the run's tracebacks."""
    nodes = getattr(state, "nodes", None) or {}
    for name, _ in failure.failures:
        node = nodes.get(name)
        if node is not None:
            publish_display(node.display)
