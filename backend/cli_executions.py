"""``papercrane executions list|show`` and ``papercrane recover``: what ran, and running
again what failed."""

from __future__ import annotations

import os
from typing import Any

import click

from .cli_common import Ctx, asked_text, emit, fitted_table, json_option, local_time, scope_caption
from .cli_logs import executions_logs
from .model import Status
from .units import format_duration


@click.group()
def executions() -> None:
    """List and inspect executions."""


def _map_progress(node: dict[str, Any]) -> str:
    """A map's elements by outcome: which ran, which failed, and which a failure stopped
    before they started (they have no rows of their own to show it)."""
    total, done, failed = node["elements"], node["elements_done"], node["elements_failed"]
    parts = [f"{done:,} done"]
    if node["elements_cached"]:
        parts[0] += f" ({node['elements_cached']:,} cached)"
    if failed:
        parts.append(f"{failed:,} failed")
    rest = total - done - failed
    if rest:
        parts.append(f"{rest:,} {'not run' if Status(node['status']).terminal else 'to go'}")
    return f"map of {total:,}: " + ", ".join(parts)


def _other_names(obj: Ctx, name: str | None, project: str | None, domain: str | None) -> str:
    """For a ``--name`` that matched nothing: the names of recent executions, as a note.
    (A task of a notebook's workflow is no execution's name: the workflow's is.)"""
    if not name:
        return ""
    rows = obj.engine.list_executions(limit=200, project=project, domain=domain)
    names = list(dict.fromkeys(r["name"] for r in rows))
    if not names:
        return ""
    shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
    return f" (recent executions' names: {shown})"


#: How many elements of one map ``executions show`` lists (those that did not succeed).
_ELEMENT_ROWS = 20


@executions.command("list")
@click.option("--project", default=None, help="only this project's")
@click.option("--domain", default=None, help="only this domain's")
@click.option(
    "--status",
    default=None,
    type=click.Choice(["queued", "running", "succeeded", "cached", "failed", "aborted"]),
    help="only executions in this state",
)
@click.option(
    "--name",
    default=None,
    help="only those of this workflow (a notebook's: its name as `run` shows it, or its "
    ".ipynb file) or of this task run alone",
)
@click.option(
    "--limit",
    default=20,
    show_default=True,
    type=click.IntRange(min=0),
    help="how many, newest first; 0 for all",
)
@json_option
@click.pass_obj
def executions_list(
    obj: Ctx,
    project: str | None,
    domain: str | None,
    status: str | None,
    name: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """The most recent executions, newest first."""
    if name and name.endswith(".ipynb"):
        # (a notebook's workflow is named after its file, made to fit: `run` says so)
        from .config import workflow_name

        name = workflow_name(name)
    missing = obj.missing_home()  # (then none, and the home is not made)
    rows = (
        []
        if missing
        else obj.engine.list_executions(
            limit=limit or None, project=project, domain=domain, status=status, name=name
        )
    )

    def table() -> Any:
        if missing:
            return f"no executions: {missing}"
        if not rows:
            asked = asked_text(project=project, domain=domain, status=status, name=name)
            return f"no executions{' with ' + asked if asked else ' yet'}" + _other_names(
                obj, name, project, domain
            )
        caption, column = scope_caption(rows)
        columns = ["id", "name", "status", "created", "duration"]
        # (in a narrow terminal: the least needed go first)
        t = fitted_table(
            *columns,
            *(["project/domain"] if column else []),
            caption=caption,
            drop=("duration", "created", "project/domain"),
        )
        for r in rows:
            dur = format_duration(r["ended_at"] - r["created_at"]) if r["ended_at"] else ""
            cells = [r["id"], r["name"], r["status"], local_time(r["created_at"]), dur]
            t.add_row(*cells, *([f"{r['project']}/{r['domain']}"] if column else []))
        return t

    emit(rows, as_json, table)


@executions.command("show")
@click.argument("execution_id")
@click.option("--events", "with_events", is_flag=True, help="also list every event")
@click.option(
    "--elements",
    "all_elements",
    is_flag=True,
    help="list every map element and step (default: a map's line counts them, and only "
    f"elements that did not succeed are listed, up to {_ELEMENT_ROWS} per map)",
)
@json_option
@click.pass_obj
def executions_show(
    obj: Ctx, execution_id: str, with_events: bool, all_elements: bool, as_json: bool
) -> None:
    """One execution: its nodes, attempts, cache status and errors, with the tracebacks
    of the tasks that failed. (--json has every element of a map; the table, for
    people, summarizes them.)"""
    state = obj.reader.execution(execution_id)
    evs = obj.engine.events(state.id) if with_events else []
    data = {
        "id": state.id,
        "name": state.name,
        "status": state.status.value,
        "project": state.project,
        "domain": state.domain,
        "kind": state.kind,
        "task_version": state.task_version,
        "workflow_version": state.workflow_version,
        "recovered_from": state.recovered_from,
        "created_at": state.created_at,
        "ended_at": state.ended_at,
        "inputs": state.inputs,
        "error": state.error.to_dict() if state.error else None,
        "nodes": {
            n.node: {
                "status": n.status.value,
                "attempts": n.attempt,
                **(
                    {
                        "elements": n.elements,
                        "elements_done": n.elements_done,
                        "elements_failed": n.elements_failed,
                        "elements_cached": n.elements_cached,
                    }
                    if n.elements
                    else {}
                ),
                "cache": n.cache,
                "cache_key": n.cache_key,
                "outputs": n.outputs,
                "error": n.error.to_dict() if n.error else None,
            }
            for n in state.nodes.values()
        },
    }
    if with_events:
        data["events"] = [e.to_dict() for e in evs]

    def table() -> Any:
        from rich.console import Group
        from rich.table import Table

        from .cli_report import failed_nodes, node_failure

        head = Table.grid(padding=(0, 2))
        head.add_column()
        head.add_column(overflow="fold")  # (a 64-digit version is copied, not cut)
        version = "workflow_version" if state.kind == "workflow" else "task_version"
        for k in ("id", "name", "kind", "status", version):
            head.add_row(k, str(data[k]))
        if state.recovered_from:
            head.add_row("recovers", f"{state.recovered_from} (reusing its successful nodes)")
        head.add_row("created", local_time(state.created_at))
        if state.duration is not None:
            head.add_row("duration", format_duration(state.duration))
        if state.status is Status.ABORTED and state.error is not None:
            head.add_row("aborted", state.error.message)
        nodes = fitted_table(
            "node",
            "status",
            "attempts",
            "cache",
            "outputs",
            "error",
            drop=("cache", "outputs", "attempts"),
        )
        listed: dict[str, int] = {}  # a map's element rows listed so far
        unlisted: dict[str, int] = {}  # ... and left out
        for name, n in data["nodes"].items():
            if ":" in name and n["status"] == "succeeded" and not all_elements:
                continue  # a map's own steps on a server (expand, collect): shown if they fail
            parent, element, _ = name.partition("[")
            if element and not all_elements:
                quiet = n["status"] in ("succeeded", "cached", "recovered")
                if quiet or listed.get(parent, 0) >= _ELEMENT_ROWS:
                    unlisted[parent] = unlisted.get(parent, 0) + 1
                    continue
                listed[parent] = listed.get(parent, 0) + 1
            err = f"{n['error']['type']}: {n['error']['message']}" if n["error"] else ""
            # A map's attempts are its elements' (their own rows): show how many it has.
            tries = _map_progress(n) if n.get("elements") else str(n["attempts"])
            nodes.add_row(name, n["status"], tries, n["cache"], ", ".join(n["outputs"]), err)
        parts: list[Any] = [head, nodes]
        for parent, count in unlisted.items():
            total = data["nodes"][parent].get("elements", count)
            parts.append(f"{parent}: {count:,} of {total:,} elements not listed (--elements)")
        # The failed tasks' tracebacks, as `run` printed them (the table has one line).
        for name, node in failed_nodes(state):
            parts += ["", *node_failure(name, node, state.id)]
        return Group(*parts)

    emit(data, as_json, table)
    if with_events and not as_json:
        # A log, printed as lines: a big map has tens of thousands of events, which a
        # rich table (measuring every cell) took seconds to lay out.
        node_width = max((len(e.node) for e in evs), default=4)
        kind_width = max((len(e.kind.value) for e in evs), default=4)
        click.echo(
            f"\n{'seq':>6}  {'time':<14}  {'kind':<{kind_width}}  {'node':<{node_width}}  attempt"
        )
        click.echo(
            "\n".join(
                f"{e.seq:>6}  {local_time(e.ts):<14}  {e.kind.value:<{kind_width}}  "
                f"{e.node:<{node_width}}  {e.attempt or ''}".rstrip()
                for e in evs
            )
        )


def _run_where_it_ran(source: Any) -> None:
    """Recover in the folder the execution ran in: its tasks read and write files
    relative to it (a notebook's ``open('data.csv')``), and a recovery from another
    shell must find them. Only for an execution whose runner was on this machine."""
    import socket

    where = (source.runner or {}).get("cwd")
    if not where or (source.runner or {}).get("host") != socket.gethostname():
        return
    if os.path.isdir(where) and os.path.realpath(where) != os.path.realpath(os.getcwd()):
        os.chdir(where)
        click.echo(f"running in {where}, where execution {source.id} ran", err=True)


@click.command()
@click.argument("execution_id")
@click.option(
    "--max-parallel",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="nodes at the same time",
)
@json_option
@click.pass_obj
def recover(obj: Ctx, execution_id: str, max_parallel: int, as_json: bool) -> None:
    """Re-run a failed execution: reuse every node that succeeded, run only the rest.
    It exits 1 if the new execution fails too, after printing the failing task, its
    attempt and traceback (with --json: the new execution, its status and errors)."""
    from .cli_report import failed_nodes, node_failure
    from .errors import TaskFailed, WorkflowFailed

    source = obj.reader.execution(execution_id)  # (its id whole, from the start of it)
    _run_where_it_ran(source)
    try:
        state = obj.engine.recover(source.id, max_parallel=max_parallel, want_values=False)
        state = state.execution
    except (WorkflowFailed, TaskFailed) as exc:
        # The new execution failed: it was recorded, and a script needs its id.
        state = obj.engine.execution(exc.execution_id)
    failed = failed_nodes(state)
    data = {
        "id": state.id,
        "recovered_from": source.id,
        "status": state.status.value,
        "nodes": {n: s.status.value for n, s in state.nodes.items() if "[" not in n},
        "error": state.error.to_dict() if state.error else None,
        "failed": {
            name: {"attempts": n.attempt, "error": n.error.to_dict() if n.error else None}
            for name, n in failed
        },
    }
    summary = (
        f"execution {state.id}: {state.status.value} "
        f"({', '.join(f'{n} {s}' for n, s in data['nodes'].items())})"
    )
    if state.status.ok:
        emit(data, as_json, lambda: summary)
        return
    if as_json:
        emit(data, True, lambda: summary)
    else:
        from .terminal import console

        err = console(stderr=True, markup=False)
        err.print(summary, markup=False, highlight=False)
        for name, node in failed:
            for part in node_failure(name, node, state.id):
                err.print(part, highlight=False)
        if state.status is Status.ABORTED and state.error is not None:
            err.print(f"aborted: {state.error.message}", markup=False, highlight=False)
        err.print(f"recover with: papercrane recover {state.id}", highlight=False)
    click.get_current_context().exit(1)


executions.add_command(executions_logs, "logs")
