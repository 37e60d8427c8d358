"""What ``papercrane run`` shows: the executions of this run as they go, what the
notebook prints (``--log-output``), and why a run failed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .notebook_file import FileWorkflow
from .run_copy import cell_stderr, last_started_cell
from .run_kernel import failed_cell


class Progress:
    """Follows the executions this run's kernel creates, by polling the store's events.

    Other kernels, and other ``papercrane run``s of this notebook or another, may create
    executions in the same project at the same time: an execution is this run's when its
    runner (``owner.this_process``, recorded by the kernel) carries ``run_id``, the marker
    this run gave its kernel. A server's executions record no runner: there, those of
    this notebook's workflow and tasks in this domain are taken for this run's."""

    def __init__(
        self, engine: Any, flow: FileWorkflow, since: float, scope: tuple[str, str], run_id: str
    ) -> None:
        from .projection import apply

        self.engine = engine
        self.flow = flow
        self.since = since
        self.project, self.domain = scope
        self.run_id = run_id
        self.states: dict[str, Any] = {}
        self.others: set[str] = set()  # executions seen not to be this run's
        self.reused: dict[str, int] = {}  # tasks a later execution took from the cache
        self._apply = apply

    def poll(self) -> None:
        from .model import ExecutionState

        rows = self.engine.list_executions(limit=200, project=self.project, domain=self.domain)
        for row in rows:
            if row["created_at"] < self.since or row["id"] in self.others:
                continue
            state = self.states.get(row["id"]) or ExecutionState(id=row["id"])
            for event in self.engine.events(row["id"], after=state.last_seq):
                self._apply(state, event)
            if row["id"] in self.states or not state.last_seq:
                continue  # (known, or its creation not read yet)
            if self._ours(state):
                self.states[row["id"]] = state
            else:
                self.others.add(row["id"])

    def _ours(self, state: Any) -> bool:
        if state.runner:
            return state.runner.get("run") == self.run_id
        return state.name in (self.flow.name, *self.flow.task_names())

    def node_states(self) -> dict[str, Any]:
        """Each task's node in the latest execution that ran it; a cache hit later in the
        run (a ``%workflow run`` after the cells ran) does not hide the run that did the
        work, it is counted (``reused``)."""
        found: dict[str, Any] = {}
        self.reused = {}
        for state in sorted(self.states.values(), key=lambda s: s.created_at):
            for node_id, node in state.nodes.items():
                if "[" in node_id:
                    continue
                earlier = found.get(node_id)
                if (
                    earlier is not None
                    and node.status.value == "cached"
                    and earlier[0].status.value == "succeeded"
                ):
                    self.reused[node_id] = self.reused.get(node_id, 0) + 1
                    continue
                found[node_id] = (node, state)
        return found

    def table(self, ended: bool = False) -> Any:
        """``ended``: the notebook has stopped, so a task with no execution never ran
        (a cell before it failed), rather than waiting for its turn."""
        from rich.table import Table

        from .units import format_duration

        t = Table(title=f"papercrane run {self.flow.name}", expand=False)
        for col in ("task", "status", "cache", "detail", "execution"):
            t.add_column(col, no_wrap=col != "detail")
        nodes = self.node_states()
        for task in self.flow.tasks:
            node, state = nodes.get(task.name, (None, None))
            if node is None:
                t.add_row(task.name, "not run" if ended else "waiting", "", "", "")
                continue
            detail = ""
            if node.elements:
                detail = f"{node.elements_done}/{node.elements} elements"
            elif node.attempt > 1:
                detail = f"attempt {node.attempt}"
            if node.started_at and node.ended_at:
                detail = " ".join(
                    filter(None, [detail, format_duration(node.ended_at - node.started_at)])
                )
            hits = self.reused.get(task.name, 0)
            if hits:
                detail += f" (+{hits} cache hit{'s' if hits > 1 else ''})"
            t.add_row(task.name, node.status.value, node.cache, detail, state.id)
        return t

    def failures(self) -> list[tuple[str, Any, Any]]:
        out = []
        for node_id, (node, state) in self.node_states().items():
            if node.status.value == "failed":
                out.append((node_id, node, state))
        return out


class Lines:
    """``--log-output``: what the notebook prints, whole lines at a time, on the console
    the progress is drawn on (so it scrolls above the progress, not through it)."""

    def __init__(self, console: Any, style: str = "") -> None:
        self.console = console
        self.style = style
        self.partial = ""

    def write(self, text: str) -> int:
        *lines, self.partial = (self.partial + text).split("\n")
        for line in lines:
            self.console.print(line, style=self.style, markup=False, highlight=False)
        return len(text)

    def flush(self) -> None:
        pass  # (papermill flushes after every output: a line is printed once it ends)

    def end(self) -> None:
        """The notebook is done: a last line with no newline is printed too."""
        if self.partial:
            self.write("\n")


def report(
    console: Any, exc: BaseException, progress: Progress, out: Path | None, late_since: float
) -> None:
    """Why the run failed: the tasks that failed (with their tracebacks), else the
    notebook's own error. Tasks that failed only in ``run_deferred``, after the
    notebook's error, are reported after that error, which remains the cause."""
    from rich.markup import escape

    from .cli_report import node_failure

    failed = progress.failures()
    late = [f for f in failed if f[2].created_at >= late_since]
    early = [f for f in failed if f[2].created_at < late_since]
    if not early:
        name = getattr(exc, "ename", type(exc).__name__)
        value = getattr(exc, "evalue", str(exc))
        message = f"{name}: {value}"
        if not value and out is not None:
            message = cell_stderr(out) or message
        where = failed_cell(exc)
        if name == "DeadKernelError":  # (nbclient's: its process ended mid-cell)
            message = "the notebook's kernel died (killed, or out of memory)"
            where = where or (last_started_cell(out) if out is not None else "")
        console.print(f"[bold red]the notebook failed[/]: {escape(message)}", highlight=False)
        if where:
            console.print(f"(in cell {where})", markup=False, highlight=False)
        if not late:
            for state in progress.states.values():  # (stopped by Ctrl-C: they can go on)
                if state.status.value == "aborted":
                    console.print(f"recover with: papercrane recover {state.id}")
            return
    for node_id, node, state in early + late:
        for part in node_failure(node_id, node, state.id):
            console.print(part, highlight=False)
    console.print(f"recover with: papercrane recover {(early + late)[0][2].id}")
    # (recover replays the execution as it ran: a fix in the notebook's code needs a run)
    console.print(
        "(that reuses what succeeded and runs the rest as it was: for a failure outside the "
        "code. After fixing a cell, run the notebook again: the --cache cells are reused)",
        highlight=False,
    )
