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
from .notebook_file import FileWorkflow, notebook_workflow
from .run_copy import default_output, prepared_copy, stamp, strip_added_cells
from .run_kernel import alive, blocking, check_kernel, failed_cell, kernel_manager, run_deferred
from .run_progress import Lines, Progress, report


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
    argv = check_kernel(kernel, path.name)
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
    prepared = prepared_copy(path, detach, load, flush=bool(flow.tasks))
    out = Path(output).resolve() if output else default_output(path)
    before = stamp(out)
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
    late: list[str] = []  # what ``run_deferred`` submitted (--detach)
    late_since: list[float] = []  # when it started
    flush_line = "flush --detach" if detach else "flush"
    since = time.time()
    # Our own kernel manager (papermill's would be out of reach): Ctrl-C interrupts the
    # kernel, so the running task stops and is recorded as interrupted, and papermill
    # then ends with that cell's error as with any other.
    sockets = Path(tempfile.mkdtemp(prefix="papercrane-kernel-"))
    km = kernel_manager(kernel, argv, sockets)
    # (papermill's own log_output would also log every display's text: the widgets')
    streams = (
        {"stdout_file": Lines(console), "stderr_file": Lines(console, "red")} if log_output else {}
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
                late.extend(run_deferred(km, flush_line, console, stop, failed_cell(exc), echo))
        finally:
            for writer in streams.values():
                writer.end()
            try:
                if km.has_kernel:  # (papermill leaves a kernel it was given running)
                    blocking(km.shutdown_kernel)(now=stop.is_set() or not alive(km))
            finally:
                done.set()

    progress = Progress(engine, flow, since, (project, domain), run_id)
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
                blocking(km.interrupt_kernel)()
            follow()
        progress.poll()
    finally:
        if not done.is_set() and km.has_kernel:  # (a second Ctrl-C)
            with contextlib.suppress(Exception):
                blocking(km.shutdown_kernel)(now=True)
        os.environ.clear()
        os.environ.update(env_before)
        prepared.unlink(missing_ok=True)
        shutil.rmtree(sockets, ignore_errors=True)
    written = stamp(out) not in (None, before)  # (not an earlier run's)
    submitted = (strip_added_cells(out) if written else []) + late
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
    report(
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
