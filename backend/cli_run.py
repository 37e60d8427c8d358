"""``papercrane run NOTEBOOK``: the notebook's workflow in batch, with progress.

The notebook runs under papermill in a real kernel with batch mode on
(``PAPERCRANE_DEFER=1``): task cells are recorded as they come and run together, in
parallel, when a later cell needs their outputs or at the end (a last cell papercrane
adds, and removes again from the written notebook). Meanwhile this process follows the
executions in the store and draws their nodes.
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import click

from . import owner
from .config import Config, check_scope
from .errors import UserError
from .notebook_file import FileWorkflow, notebook_workflow, read_notebook

#: The ``%workflow flush`` cell added at the end; the written notebook keeps it when it
#: printed something (the deferred tasks it ran, their output, a failure), marked so.
_FLUSH_TAG = "papercrane-flush"
_FLUSH_NOTE = (
    "# Added by `papercrane run`: runs the task cells still deferred at the notebook's end."
)
#: The ``%load_ext papercrane`` cell added to a notebook that has none.
_LOAD_TAG = "papercrane-load"
#: What ``%workflow flush --detach`` prints for each execution it submits.
_SUBMITTED = re.compile(r"submitted execution (\S+):")


def parse_value(raw: str) -> Any:
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def check_params(flow: FileWorkflow, params: dict[str, Any]) -> None:
    produced = {o for t in flow.tasks for o in t.outputs}
    inputs = [i for t in flow.tasks for i in t.inputs if i not in produced]
    known = list(dict.fromkeys([*flow.parameters, *inputs]))
    for name in params:
        if name not in known:
            raise UserError(
                f"-p {name}: the notebook has no parameter {name!r}; its parameters are: "
                f"{', '.join(known) or '(none)'}"
            )
        if name in flow.assigned_later:  # papermill would set it, then that cell, silently
            raise UserError(_replaced(flow, name))


def _replaced(flow: FileWorkflow, name: str) -> str:
    """Why ``-p NAME`` is refused: the cell that would set it again, and what to do."""
    index = flow.assigned_later[name]
    first = flow.parameters_cells[0] if flow.parameters_cells else -1
    where = (
        f"papermill sets them after cell {first + 1}, the first tagged 'parameters'"
        if first >= 0
        else "papermill sets them at the top: no cell is tagged 'parameters'"
    )
    if index in flow.parameters_cells:
        fix = f"tag only one cell 'parameters' (move {name!r} into cell {first + 1})"
    elif name in flow.parameters:
        fix = f"remove that assignment, so that {name!r} is set in the parameters cell only"
    else:
        fix = "move that assignment to a cell tagged 'parameters' (papermill's convention)"
    return (
        f"-p {name}: cell {index + 1} assigns {name!r} after the parameters are set ({where}), "
        f"so the value given would be replaced; {fix}"
    )


def _prepared_copy(path: Path, detach: bool, load: bool, flush: bool) -> Path:
    """The notebook with the cells this run adds: ``flush``: a flush at the end (a
    notebook with no task cell has nothing to flush, and need not load papercrane), and
    ``load``: the extension loaded at the top (taken out of the executed copy)."""
    import nbformat

    nb = read_notebook(path)
    if flush:
        line = "%workflow flush" + (" --detach" if detach else "")
        cell = nbformat.v4.new_code_cell(f"{_FLUSH_NOTE}\n{line}")
        cell.metadata["tags"] = [_FLUSH_TAG]
        nb.cells.append(cell)  # type: ignore[attr-defined]
    if load:
        first = nbformat.v4.new_code_cell("%load_ext papercrane")
        first.metadata["tags"] = [_LOAD_TAG]
        nb.cells.insert(0, first)  # type: ignore[attr-defined]
    handle, name = tempfile.mkstemp(suffix=".ipynb", prefix=f".{path.stem}-", dir=path.parent)
    os.close(handle)
    nbformat.write(nb, name)
    return Path(name)


def default_output(path: Path) -> Path:
    """Where the executed notebook goes without ``-o``: beside the notebook, as
    ``jupyter nbconvert --execute`` puts its own (``report.ipynb``: ``report.out.ipynb``),
    where the user finds it, the failing cell's error included, and the next run
    replaces it."""
    return path.with_name(f"{path.stem}.out.ipynb")


def _stamp(path: Path) -> tuple[int, int] | None:
    """The file's modification time and size, None if there is none: whether this run
    wrote it, or it is an earlier run's."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _strip_added_cells(out: Path) -> list[str]:
    """Remove the load cell we added, and the flush cell if it showed nothing (nothing
    was left to run, or the notebook stopped before it): one that did is what the tasks
    it ran printed and how they ended, the failure papermill's banner points at included,
    so it stays, marked as added. Return the executions the flush submitted detached
    (what it printed), which may have finished by now: the caller still wants their ids."""
    import nbformat

    nb = nbformat.read(str(out), as_version=4)
    submitted: list[str] = []
    kept = []
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if _FLUSH_TAG not in tags:
            if _LOAD_TAG not in tags:
                kept.append(cell)
            continue
        if cell.get("outputs"):
            kept.append(cell)
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                submitted += _SUBMITTED.findall("".join(output.get("text", "")))
    nb.cells = kept
    nbformat.write(nb, str(out))
    return submitted


class _Progress:
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


def run_notebook(
    notebook: str,
    params: dict[str, Any],
    output: str | None,
    project: str,
    domain: str,
    home: str | None,
    max_parallel: int | None,
    quiet: bool,
    remote: bool = False,
    detach: bool = False,
    kernel: str | None = None,
    log_output: bool = False,
) -> int:
    import papermill
    from rich.live import Live

    from .terminal import console as terminal

    console = terminal(stderr=True)
    path = Path(notebook).resolve()
    check_scope(project, domain, where="--project/--domain or PAPERCRANE_PROJECT/_DOMAIN")
    flow = notebook_workflow(path)
    check_params(flow, params)
    kernel = kernel or flow.kernel
    if not kernel:  # papermill's own error names neither the notebook nor --kernel
        raise UserError(
            f"{path.name} names no kernel (its metadata has no kernelspec): pass one with "
            "--kernel NAME, e.g. --kernel python3 (`jupyter kernelspec list` shows them)"
        )
    argv = _check_kernel(kernel, path.name)
    if output and not Path(output).resolve().parent.is_dir():  # (papermill finds out last)
        raise UserError(
            f"-o {output}: the folder {Path(output).resolve().parent} does not exist; "
            "create it first"
        )
    if (remote or detach) and not os.environ.get("PAPERCRANE_URL"):
        raise UserError(
            "--remote and --detach run the tasks on a papercrane server: set PAPERCRANE_URL "
            "(and PAPERCRANE_TOKEN) to its address"
        )
    if os.environ.get("PAPERCRANE_URL"):
        from .client import RemoteEngine

        engine: Any = RemoteEngine.from_env(project, domain)
        console.print(f"tasks run on {engine.url} (project {project}, domain {domain})")
    else:
        from .engine import LocalEngine

        overrides = {"home": Path(home)} if home else {}
        engine = LocalEngine(Config.from_env(**overrides))
    load = bool(flow.tasks) and not flow.loads_papercrane
    if load:
        console.print(
            f"note: {path.name} has no `%load_ext papercrane` cell before its first task "
            "cell; papercrane run loads it first. Add one at the top to run the notebook "
            "in JupyterLab or under papermill too."
        )
    prepared = _prepared_copy(path, detach, load, flush=bool(flow.tasks))
    out = Path(output).resolve() if output else default_output(path)
    before = _stamp(out)
    env_before = dict(os.environ)
    run_id = uuid.uuid4().hex
    os.environ.update(
        {
            "PAPERCRANE_DEFER": "1",
            "PAPERCRANE_NOTEBOOK": str(path),
            "PAPERCRANE_WORKFLOW": flow.name,
            "PAPERCRANE_PROJECT": project,
            "PAPERCRANE_DOMAIN": domain,
            owner.RUN_VARIABLE: run_id,
            **({"PAPERCRANE_HOME": str(Path(home).resolve())} if home else {}),
            **({"PAPERCRANE_MAX_PARALLEL": str(max_parallel)} if max_parallel else {}),
        }
    )
    failure: list[BaseException] = []
    late: list[str] = []  # what ``_run_deferred`` submitted (--detach)
    late_since: list[float] = []  # when it started
    flush_line = "flush --detach" if detach else "flush"
    since = time.time()
    # Our own kernel manager (papermill's would be out of reach): Ctrl-C interrupts the
    # kernel, so the running task stops and is recorded as interrupted, and papermill
    # then ends with that cell's error as with any other.
    sockets = Path(tempfile.mkdtemp(prefix="papercrane-kernel-"))
    km = _kernel_manager(kernel, argv, sockets)
    # (papermill's own log_output would also log every display's text: the widgets')
    streams = (
        {"stdout_file": _Lines(console), "stderr_file": _Lines(console, "red")}
        if log_output
        else {}
    )

    def execute() -> None:
        try:
            papermill.execute_notebook(
                str(prepared),
                str(out),
                parameters=params,
                progress_bar=False,
                cwd=str(path.parent),
                log_output=False,
                kernel_name=kernel,
                km=km,
                **streams,
            )
        except BaseException as exc:  # reported by the main thread
            failure.append(exc)
            if not stop.is_set():
                late_since.append(time.time())
                echo = {"stdout": streams.get("stdout_file"), "stderr": streams.get("stderr_file")}
                late.extend(_run_deferred(km, flush_line, console, stop, _failed_cell(exc), echo))
        finally:
            for writer in streams.values():
                writer.end()
            try:
                if km.has_kernel:  # (papermill leaves a kernel it was given running)
                    _blocking(km.shutdown_kernel)(now=stop.is_set() or not _alive(km))
            finally:
                done.set()

    progress = _Progress(engine, flow, since, (project, domain), run_id)
    worker = threading.Thread(target=execute, name="papermill", daemon=True)
    # Waited on instead of ``worker.join()``: a join that Ctrl-C interrupts can report
    # the thread finished while it still runs (CPython gh-90882, bpo-46726: 3.9 to 3.11).
    done = threading.Event()
    stop = threading.Event()  # Ctrl-C: no deferred task is to run as the kernel exits

    def follow() -> None:
        if quiet:
            while not done.wait(0.3):
                pass
            return
        with Live(progress.table(), console=console, refresh_per_second=4) as live:
            while not done.is_set():
                done.wait(0.3)
                progress.poll()
                live.update(progress.table(ended=done.is_set()))
            progress.poll()  # (the notebook may have ended before the first frame)
            live.update(progress.table(ended=True))
        if not console.is_terminal:
            console.line()  # rich leaves the last frame without a newline

    try:
        worker.start()
        try:
            follow()
        except KeyboardInterrupt:  # (a second Ctrl-C stops at once: the finally below)
            stop.set()
            console.print("interrupting the notebook's kernel (Ctrl-C again to quit at once)")
            if km.has_kernel:
                _blocking(km.interrupt_kernel)()
            follow()
        progress.poll()
    finally:
        if not done.is_set() and km.has_kernel:  # (a second Ctrl-C)
            with contextlib.suppress(Exception):
                _blocking(km.shutdown_kernel)(now=True)
        os.environ.clear()
        os.environ.update(env_before)
        prepared.unlink(missing_ok=True)
        shutil.rmtree(sockets, ignore_errors=True)
    written = _stamp(out) not in (None, before)  # (not an earlier run's)
    submitted = (_strip_added_cells(out) if written else []) + late
    engine.close()

    def print_submitted() -> None:
        """The executions of this run, one per line on stdout, for scripts (the rest goes
        to stderr), ``-q`` or not: those the run created, oldest first, then (``--detach``)
        those submitted without waiting not among them. With ``--detach`` the tasks a later
        cell reads ran before it, waited for: theirs are this run's executions too. A
        server's come with their address."""
        ran = [s.id for s in sorted(progress.states.values(), key=lambda s: s.created_at)]
        for execution_id in dict.fromkeys(ran + submitted) if detach else ran:
            url = getattr(engine, "url", "")
            click.echo(
                f"{execution_id} {url}/api/v1/executions/{execution_id}" if url else execution_id
            )

    if not failure:
        console.print(f"wrote {out}", highlight=False)
        print_submitted()
        return 0
    _report(
        console,
        failure[0],
        progress,
        out if written else None,
        late_since[0] if late_since else time.time(),
    )
    if written:
        console.print(f"wrote {out} (with the error)", highlight=False)
    else:
        console.print(f"no executed notebook was written ({out})", highlight=False)
    print_submitted()  # (with --detach: those deferred above the failed cell, submitted)
    return 1


class _Lines:
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


#: Asked of the kernel after a cell failed: the task cells batch mode holds (none if
#: papercrane was never loaded, or nothing is deferred).
_DEFERRED = (
    "getattr(__import__('sys').modules.get('papercrane.notebook'), 'deferred_names', "
    "lambda shell: [])(get_ipython())"
)


def _run_deferred(
    km: Any,
    line: str,
    console: Any,
    stop: threading.Event,
    cell: str,
    echo: dict[str, Any] | None = None,
) -> list[str]:
    """After a cell failed: run the task cells deferred above it, as the notebook's own
    last cell would have, in its kernel, before it shuts down. Top to bottom, those cells
    ran before the one that failed, so their results (and cache entries) are kept for the
    next run. Left to the kernel's exit, they would be stopped 2.5 s in and recorded as
    aborted. Ctrl-C stops them as it stops a cell. What they print goes to ``echo``'s
    writers (``--log-output``). Returns the executions a ``--detach`` flush submitted."""
    import queue

    from jupyter_client.blocking import BlockingKernelClient

    if not km.has_kernel or not _alive(km):
        return []
    # (a blocking client of its own: the manager's clients are asyncio ones)
    client = BlockingKernelClient(**km.get_connection_info(session=True))
    client.start_channels()
    try:

        def ask(code: str, **extra: Any) -> tuple[dict[str, Any], str]:
            """Execute ``code``: its reply, and what it printed. Waits until the kernel
            is idle again, or dies (``execute_interactive`` would wait for ever)."""
            msg_id = client.execute(code, store_history=False, **extra)
            printed: list[str] = []
            while True:
                try:
                    msg = client.get_iopub_msg(timeout=0.5)
                except queue.Empty:
                    if not _alive(km):
                        raise RuntimeError("the kernel died") from None
                    continue
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                content = msg["content"]
                if msg["msg_type"] == "stream":
                    printed.append(content.get("text", ""))
                    writer = (echo or {}).get(content.get("name", ""))
                    if writer is not None:
                        writer.write(content.get("text", ""))
                elif msg["msg_type"] == "status" and content["execution_state"] == "idle":
                    break
            while True:  # (the reply is sent before the kernel goes idle)
                reply = client.get_shell_msg(timeout=5)
                if reply["parent_header"].get("msg_id") == msg_id:
                    return reply["content"], "".join(printed)

        reply, _ = ask("", user_expressions={"names": _DEFERRED})
        found = reply.get("user_expressions", {}).get("names", {})
        try:
            names = ast.literal_eval(found.get("data", {}).get("text/plain", "[]"))
        except (ValueError, SyntaxError):
            names = []
        if not names or stop.is_set():
            return []
        what = f"the deferred task above it ({names[0]})"
        if len(names) > 1:
            what = f"the {len(names)} deferred tasks above it ({', '.join(names)})"
        console.print(
            f"{cell.partition(':')[0] or 'a cell'} failed: running {what} first, as a "
            f"top-to-bottom run would have; Ctrl-C stops {'them' if len(names) > 1 else 'it'}",
            highlight=False,
        )
        _, printed = ask(f"get_ipython().run_line_magic('workflow', {line!r})")
        return _SUBMITTED.findall(printed)
    except Exception as exc:  # the notebook's own failure is what gets reported
        console.print(f"could not run the deferred tasks after the failure: {exc}")
        return []
    finally:
        client.stop_channels()


def _check_kernel(kernel: str, notebook: str) -> list[str]:
    """Refuse a kernel that is not installed before anything starts, naming the ones
    that are (papermill's ``NoSuchKernel`` comes after a kernel manager is set up and
    says neither). Returns the kernelspec's command line."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    specs = KernelSpecManager()
    try:
        return list(specs.get_kernel_spec(kernel).argv)
    except NoSuchKernel:
        installed = ", ".join(sorted(specs.find_kernel_specs())) or "none"
        raise UserError(
            f"{notebook}: no kernel named {kernel!r} is installed (installed: {installed}); "
            "pass one with --kernel NAME"
        ) from None


def _kernel_manager(kernel: str, argv: list[str], sockets: Path) -> Any:
    """The notebook kernel's manager: an asyncio one, as papermill makes its own. nbclient
    waits for a cell's reply and, beside it, checks every second that the kernel is
    alive; with a blocking manager (and so blocking clients) the wait blocks its event
    loop, the check never runs, and a kernel killed mid-cell (``kill -9``, out of memory)
    leaves the run waiting for ever instead of ending with ``DeadKernelError``.

    An IPython kernel on a POSIX system talks over Unix sockets in ``sockets`` (a private
    temporary folder): no TCP ports open on localhost for other local users to reach, and
    none of ipykernel's warning about unencrypted TCP on every run. Other kernels (not all
    take ``ipc``) and Windows keep jupyter_client's TCP."""
    from jupyter_client.manager import AsyncKernelManager

    ipython = any("ipykernel" in part for part in argv)
    if os.name == "posix" and ipython:
        return AsyncKernelManager(kernel_name=kernel, transport="ipc", ip=str(sockets / "kernel"))
    return AsyncKernelManager(kernel_name=kernel)


def _blocking(method: Any) -> Any:
    """An asyncio kernel manager's ``method`` as a plain call, on the calling thread's
    own event loop (the one papermill ran its cells on, in the papermill thread)."""
    from jupyter_core.utils import run_sync

    return run_sync(method)


def _alive(km: Any) -> bool:
    """Whether the kernel's process still runs."""
    return bool(_blocking(km.is_alive)())


def _read_cells(out: Path) -> list[Any]:
    """The written notebook's cells; none if it was not written."""
    import nbformat

    try:
        return list(nbformat.read(str(out), as_version=4).cells)
    except Exception:
        return []


def _cell_stderr(out: Path) -> str:
    """What the failed cell wrote to stderr: IPython reports a UsageError (papercrane's
    own one-line errors) there, not as an error output papermill can see."""
    for cell in _read_cells(out):
        if cell.get("metadata", {}).get("papermill", {}).get("exception"):
            return "".join(
                o.get("text", "")
                for o in cell.get("outputs", [])
                if o.get("output_type") == "stream" and o.get("name") == "stderr"
            ).strip()
    return ""


def _last_started_cell(out: Path) -> str:
    """``In[N]: its first line`` for the last cell papermill started: where a kernel that
    died was (papermill marks no cell failed then); '' if none."""
    started = [
        c for c in _read_cells(out) if c.get("metadata", {}).get("papermill", {}).get("start_time")
    ]
    if not started:
        return ""
    source = str(started[-1].get("source", "")).strip().splitlines()
    return f"In[{started[-1].get('execution_count') or ' '}]" + (f": {source[0]}" if source else "")


def _report(
    console: Any, exc: BaseException, progress: _Progress, out: Path | None, late_since: float
) -> None:
    """Why the run failed: the tasks that failed (with their tracebacks), else the
    notebook's own error. Tasks that failed only in ``_run_deferred``, after the
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
            message = _cell_stderr(out) or message
        where = _failed_cell(exc)
        if name == "DeadKernelError":  # (nbclient's: its process ended mid-cell)
            message = "the notebook's kernel died (killed, or out of memory)"
            where = where or (_last_started_cell(out) if out is not None else "")
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


def _failed_cell(exc: BaseException) -> str:
    """``In[N]: its first line`` for papermill's error, else ''."""
    cell = getattr(exc, "exec_count", None)
    if cell is None:
        return ""
    source = (getattr(exc, "source", "") or "").strip().splitlines()
    return f"In[{cell}]" + (f": {source[0]}" if source else "")


def register(main: click.Group) -> None:
    @main.command("run")
    @click.argument("notebook", type=click.Path(dir_okay=False))
    @click.option(
        "-p",
        "--parameter",
        "params",
        nargs=2,
        multiple=True,
        metavar="NAME VALUE",
        help="set a notebook parameter (repeatable)",
    )
    @click.option(
        "-o",
        "--output",
        default=None,
        metavar="OUT.ipynb",
        help="write the executed notebook here (default: beside NOTEBOOK, as NAME.out.ipynb)",
    )
    @click.option(
        "-k",
        "--kernel",
        default=None,
        metavar="NAME",
        help="kernel to run it in (default: the one the notebook names)",
    )
    @click.option("--project", default=None, help="project (default: $PAPERCRANE_PROJECT)")
    @click.option("--domain", default=None, help="domain (default: $PAPERCRANE_DOMAIN)")
    @click.option(
        "--max-parallel", type=click.IntRange(min=1), default=None, help="tasks at the same time"
    )
    @click.option("-q", "--quiet", is_flag=True, help="no progress display")
    @click.option(
        "--log-output",
        is_flag=True,
        help="also print what the notebook's cells and tasks print, as they print it",
    )
    @click.option(
        "--remote",
        is_flag=True,
        help="run the tasks on the server at $PAPERCRANE_URL (an error if unset)",
    )
    @click.option(
        "--detach",
        is_flag=True,
        help="with a server: submit the final workflow and return without waiting",
    )
    @click.pass_obj
    def run(
        obj: Any,
        notebook: str,
        params: tuple,
        output: str | None,
        kernel: str | None,
        project: str | None,
        domain: str | None,
        max_parallel: int | None,
        quiet: bool,
        log_output: bool,
        remote: bool,
        detach: bool,
    ) -> None:
        """Run NOTEBOOK's workflow in batch and write the executed notebook (to -o, by
        default NAME.out.ipynb beside NOTEBOOK), failed or not.

        Task cells run as one workflow, independent ones in parallel, with the same
        cache and history as interactive runs. Exits 1 if a task (or the notebook)
        fails, after printing the failing task, its attempt and traceback.
        """
        values = {name: parse_value(raw) for name, raw in params}
        code = run_notebook(
            notebook,
            values,
            output,
            project or os.environ.get("PAPERCRANE_PROJECT", "default"),
            domain or os.environ.get("PAPERCRANE_DOMAIN", "development"),
            obj.home,
            max_parallel,
            quiet,
            remote,
            detach,
            kernel,
            log_output,
        )
        raise SystemExit(code)
