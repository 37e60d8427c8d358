"""``%workflow recover``: a failed execution run again, its successful nodes reused, the
notebook's cells as they are now where they changed. Part of
``notebook.NotebookWorkflow``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from papercrane.backend.errors import (
    ExecutionAborted,
    TaskFailed,
    UserError,
    WorkflowFailed,
)
from papercrane.backend.workflow import WorkflowSpec

from .session import (
    CellRecord,
    TaskError,
    TaskInterrupted,
    publish_display,
)


class Recovering:
    """``NotebookWorkflow``'s recovery of failed executions."""

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
            raise self._failed_run(failure, records, widget) from None
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
