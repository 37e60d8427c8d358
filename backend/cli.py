"""The ``papercrane`` command line: look at executions, logs and the cache.

Tables (rich) for people, ``--json`` for scripts. Every command works on the embedded
store under ``PAPERCRANE_HOME`` unless ``--home`` says otherwise.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import click

from .config import ANY_SCOPE, SCOPE_LENGTH, Config, check_name
from .errors import NotFound, PapercraneError
from .model import Status
from .units import format_duration


class _Ctx:
    def __init__(self, home: str | None) -> None:
        self.home = home
        self._engine: Any = None

    @property
    def engine(self) -> Any:
        """The server's engine when PAPERCRANE_URL is set, else the embedded one."""
        if self._engine is None:
            import os

            if os.environ.get("PAPERCRANE_URL"):
                from .client import RemoteEngine

                self._engine = RemoteEngine.from_env()
            else:
                from .engine import LocalEngine

                overrides = {"home": Path(home)} if (home := self.home) else {}
                self._engine = LocalEngine(Config.from_env(**overrides))
        return self._engine

    def close(self) -> None:
        """Close the engine if a command opened one: its database connections (SQLite
        checkpoints its WAL on the last close) or its HTTP session."""
        if self._engine is not None:
            engine, self._engine = self._engine, None
            engine.close()


def _emit(data: Any, as_json: bool, table: Any) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    from .terminal import console

    console().print(table())


def _table(*headers: str, **options: Any) -> Any:
    """A table for people in a terminal of any width (``cli_report.FittedTable``)."""
    from .cli_report import FittedTable

    return FittedTable(*headers, **options)


def _when(ts: float | None) -> str:
    if not ts:
        return ""
    return time.strftime("%m-%d %H:%M:%S", time.localtime(ts))


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


#: How many elements of one map ``executions show`` lists (those that did not succeed).
_ELEMENT_ROWS = 20

#: ``--json`` on every command that prints records: the same data, for scripts.
_json = click.option("--json", "as_json", is_flag=True, help="machine-readable output (JSON)")


class _Group(click.Group):
    """Turns papercrane's own errors into one clean line and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PapercraneError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", envvar="PAPERCRANE_HOME", help="papercrane home (default ~/.papercrane)")
@click.version_option(package_name="papercrane")
@click.pass_context
def main(ctx: click.Context, home: str | None) -> None:
    """papercrane: notebook cells as cached, versioned tasks."""
    ctx.obj = _Ctx(home)
    ctx.call_on_close(ctx.obj.close)


@main.group()
def executions() -> None:
    """List and inspect executions."""


@executions.command("list")
@click.option("--project", default=None, help="only this project's")
@click.option("--domain", default=None, help="only this domain's")
@click.option(
    "--status",
    default=None,
    type=click.Choice(["queued", "running", "succeeded", "cached", "failed", "aborted"]),
    help="only executions in this state",
)
@click.option("--name", default=None, help="only this task's or workflow's (e.g. a notebook's)")
@click.option(
    "--limit",
    default=20,
    show_default=True,
    type=click.IntRange(min=0),
    help="how many, newest first; 0 for all",
)
@_json
@click.pass_obj
def executions_list(
    obj: _Ctx,
    project: str | None,
    domain: str | None,
    status: str | None,
    name: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """The most recent executions, newest first."""
    rows = obj.engine.list_executions(
        limit=limit or None, project=project, domain=domain, status=status, name=name
    )

    def table() -> Any:
        if not rows:
            asked = _asked(project=project, domain=domain, status=status, name=name)
            return f"no executions{' with ' + asked if asked else ' yet'}"
        caption, column = _scope_caption(rows)
        columns = ["id", "name", "status", "created", "duration"]
        # (in a narrow terminal: the least needed go first)
        t = _table(
            *columns,
            *(["project/domain"] if column else []),
            caption=caption,
            drop=("duration", "created", "project/domain"),
        )
        for r in rows:
            dur = format_duration(r["ended_at"] - r["created_at"]) if r["ended_at"] else ""
            cells = [r["id"], r["name"], r["status"], _when(r["created_at"]), dur]
            t.add_row(*cells, *([f"{r['project']}/{r['domain']}"] if column else []))
        return t

    _emit(rows, as_json, table)


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
@_json
@click.pass_obj
def executions_show(
    obj: _Ctx, execution_id: str, with_events: bool, all_elements: bool, as_json: bool
) -> None:
    """One execution: its nodes, attempts, cache status and errors, with the tracebacks
    of the tasks that failed. (--json has every element of a map; the table, for
    people, summarizes them.)"""
    state = obj.engine.execution(execution_id)
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
        head.add_row("created", _when(state.created_at))
        if state.duration is not None:
            head.add_row("duration", format_duration(state.duration))
        if state.status is Status.ABORTED and state.error is not None:
            head.add_row("aborted", state.error.message)
        nodes = _table(
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

    _emit(data, as_json, table)
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
                f"{e.seq:>6}  {_when(e.ts):<14}  {e.kind.value:<{kind_width}}  "
                f"{e.node:<{node_width}}  {e.attempt or ''}".rstrip()
                for e in evs
            )
        )


@main.command()
@click.argument("execution_id")
@click.argument("node", required=False)
@click.option(
    "--attempt", type=click.IntRange(min=1), default=None, help="default: the last attempt"
)
@click.option("--stderr", "stderr", is_flag=True, help="show stderr instead of stdout")
@_json
@click.pass_obj
def logs(
    obj: _Ctx,
    execution_id: str,
    node: str | None,
    attempt: int | None,
    stderr: bool,
    as_json: bool,
) -> None:
    """Print a node's stdout (or --stderr) for one attempt; NODE may be left out when
    the execution has one (a single task's). A cache hit's or a recovered node's are
    those of the attempt that made its outputs, in another execution."""
    state = obj.engine.execution(execution_id)
    execution_id = state.id  # (given by the start of its id, perhaps)
    if node is None:
        nodes = [n for n in state.nodes if "[" not in n and ":" not in n]
        if len(nodes) != 1:
            raise click.UsageError(
                f"execution {execution_id} has {len(nodes)} nodes: give one, e.g. "
                f"papercrane logs {execution_id} {nodes[0] if nodes else 'NODE'} "
                f"(nodes: {_node_names(state)})"
            )
        node = nodes[0]
    if node not in state.nodes:
        parent, _, index = node.partition("[")
        size = state.nodes[parent].elements if parent in state.nodes else 0
        if index[:-1].isdigit() and int(index[:-1]) < size:
            raise NotFound(f"{node} never ran: the map stopped before it started")
        # (a missing object, as an unknown execution is: exit 1, not a usage error)
        raise NotFound(
            f"execution {execution_id} has no node {node!r}; nodes: {_node_names(state)}"
        )
    found = state.nodes[node]
    if found.elements and not found.attempt:  # (its elements ran, each with its own logs)
        raise NotFound(
            f"{node!r} is a map: each element has its own logs, e.g. "
            f"papercrane logs {execution_id} '{node}[0]' (elements 0 to {found.elements - 1})"
        )
    stream = "stderr" if stderr else "stdout"
    record: dict[str, Any] = {}
    if not found.attempt and attempt is None:
        # A cache hit or a recovered node ran no attempt here: its logs are those of
        # the attempt that made its outputs, in another execution.
        if found.status is Status.SKIPPED:
            raise NotFound(
                f"{node!r} was skipped in {execution_id}: it never ran, so it has no logs; "
                f"{_skip_reason(obj.engine, execution_id, node)}"
            )
        source = _ran_elsewhere(obj.engine, state, node, found)
        if source is None:
            raise NotFound(
                f"{node!r} ran no attempt in {execution_id} ({found.status.value}), "
                "and the one that made its outputs is not recorded"
            )
        record["via"] = {"execution_id": execution_id, "node": node, "status": found.status.value}
        execution_id, node, attempt = source
        if not as_json:
            click.echo(
                f"({record['via']['node']} was {found.status.value} in "
                f"{record['via']['execution_id']}: these are the logs of execution "
                f"{execution_id}, node {node}, attempt {attempt}, which made its outputs)",
                err=True,
            )
    attempt = attempt or found.attempt or 1
    text = obj.engine.logs(execution_id, node, attempt, stream)
    if as_json:
        record = {"execution_id": execution_id, "node": node, "attempt": attempt, **record}
        click.echo(json.dumps({**record, "stream": stream, "text": text}, indent=2))
    else:
        click.echo(text, nl=False)
        if not text and found.error is not None and found.attempt == attempt:
            # (the traceback is recorded with the failure, not in the task's own output)
            click.echo(
                f"({node} wrote nothing to {stream} in attempt {attempt}; it failed with "
                f"{found.error.type}: {found.error.message}. Its traceback: "
                f"papercrane executions show {execution_id})",
                err=True,
            )


def _ran_elsewhere(engine: Any, state: Any, node: str, found: Any) -> tuple[str, str, int] | None:
    """Where a node that ran no attempt in ``state`` got its outputs: the execution, node
    and attempt (a cache hit's source execution, whose node with the same cache key ran;
    a recovered node's failed execution, where it succeeded)."""
    recovered = found.status is Status.RECOVERED
    origin = state.recovered_from if recovered else found.cache_source.get("execution_id")
    if not origin or not (recovered or found.cache == "hit" and found.cache_key):
        return None
    try:
        source = engine.execution(origin)
    except NotFound:  # (deleted, or in another store)
        return None
    if recovered:
        done = source.nodes.get(node)
        return (source.id, node, done.attempt) if done is not None and done.attempt else None
    for name, n in source.nodes.items():
        if n.cache_key == found.cache_key and n.attempt and n.status is Status.SUCCEEDED:
            return source.id, name, n.attempt
    return None


def _skip_reason(engine: Any, execution_id: str, node: str) -> str:
    """Why a node was skipped, as its event recorded it."""
    from .model import EventKind

    for event in engine.events(execution_id):
        if event.kind is EventKind.NODE_SKIPPED and event.node == node:
            return str(event.payload.get("reason") or "no reason recorded")
    return "no reason recorded"


def _node_names(state: Any) -> str:
    """An execution's nodes for a message: a map's elements as one range, not thousands."""
    names = []
    for name, n in state.nodes.items():
        if "[" in name or ":" in name:
            continue
        names.append(f"{name}, {name}[0..{n.elements - 1}]" if n.elements else name)
    return ", ".join(names) or "none"


@main.group()
def cache() -> None:
    """List or clear cache entries."""


def _scope_caption(rows: list[dict[str, Any]]) -> tuple[str | None, bool]:
    """(caption, column): one project and domain (the usual case) is said once, under
    the table, which leaves a narrow terminal the width for names; several get a
    column."""
    scopes = {f"{r['project']}/{r['domain']}" for r in rows}
    if len(scopes) == 1:
        return f"in {scopes.pop()}", False
    return None, True


def _asked(**options: Any) -> str:
    """The filters a listing was given, for the line that says it found nothing."""
    return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in options.items() if v)


@cache.command("list")
@click.option("--project", default=None, help="only this project's (default: every project's)")
@click.option("--domain", default=None, help="only this domain's (default: every domain's)")
@click.option("--task", "task_name", default=None, help="only this task's entries")
@click.option(
    "--limit",
    default=50,
    show_default=True,
    type=click.IntRange(min=0),
    help="how many, newest first (a map has one per element); 0 for all",
)
@_json
@click.pass_obj
def cache_list(
    obj: _Ctx,
    project: str | None,
    domain: str | None,
    task_name: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Cache entries, newest first: the task, its outputs, the execution that made them,
    and the project and domain they serve (a cache entry is reused only there)."""
    # (one more than shown: whether to say there are more)
    rows = obj.engine.cache_list(
        task_name=task_name,
        limit=limit + 1 if limit else None,
        project=project,
        domain=domain,
    )
    more = bool(limit) and len(rows) > limit
    rows = rows[:limit] if limit else rows

    def table() -> Any:
        if not rows:
            asked = _asked(project=project, domain=domain, task=task_name)
            return f"no cache entries{' with ' + asked if asked else ' yet'}"
        from rich.console import Group

        caption, column = _scope_caption(rows)
        headers = ["key", "task", "outputs", "execution", "created"]
        t = _table(
            *headers,
            *(["project/domain"] if column else []),
            caption=caption,
            drop=("key", "created", "project/domain"),
        )
        for r in rows:
            t.add_row(
                r["key"][:12],
                r["task_name"],
                ", ".join(r["outputs"]),
                r["execution_id"],
                _when(r["created_at"]),
                *([f"{r['project']}/{r['domain']}"] if column else []),
            )
        if not more:
            return t
        return Group(t, f"the newest {limit}; there are more (--limit N, or 0 for all)")

    _emit(rows, as_json, table)


@cache.command("clear")
@click.option(
    "--project",
    envvar="PAPERCRANE_PROJECT",
    default="default",
    show_default=True,
    help=f"the project whose entries to forget ({ANY_SCOPE!r}: every project; "
    "default: $PAPERCRANE_PROJECT)",
)
@click.option(
    "--domain",
    envvar="PAPERCRANE_DOMAIN",
    default="development",
    show_default=True,
    help=f"the domain whose entries to forget ({ANY_SCOPE!r}: every domain; "
    "default: $PAPERCRANE_DOMAIN)",
)
@click.option("--task", "task_name", default=None, help="only this task's entries")
@_json
@click.pass_obj
def cache_clear(obj: _Ctx, project: str, domain: str, task_name: str | None, as_json: bool) -> None:
    """Forget cache entries of one project and domain (those `run` and the notebook use
    by default), so their tasks run again there. The values they named stay in storage:
    earlier executions and lineage still read them."""
    for kind, value in (("project", project), ("domain", domain)):
        if value != ANY_SCOPE:
            check_name(kind, value, limit=SCOPE_LENGTH, where=f"--{kind}")
    n = obj.engine.cache_clear(task_name=task_name, project=project, domain=domain)
    where = " ".join(
        f"in every {kind}" if value == ANY_SCOPE else f"in {kind} {value}"
        for kind, value in (("project", project), ("domain", domain))
    )
    of = f" of task {task_name!r}" if task_name else ""
    said = f"cleared {n} cache entr{'y' if n == 1 else 'ies'}{of} {where}"
    _emit({"cleared": n, "project": project, "domain": domain}, as_json, lambda: said)


@executions.command("logs")
@click.argument("execution_id")
@click.argument("node", required=False)
@click.option(
    "--attempt", type=click.IntRange(min=1), default=None, help="default: the last attempt"
)
@click.option("--stderr", "stderr", is_flag=True, help="show stderr instead of stdout")
@_json
@click.pass_context
def executions_logs(
    ctx: click.Context,
    execution_id: str,
    node: str | None,
    attempt: int | None,
    stderr: bool,
    as_json: bool,
) -> None:
    """Print a node's stdout (or --stderr) for one attempt (NODE: see papercrane logs)."""
    ctx.invoke(
        logs, execution_id=execution_id, node=node, attempt=attempt, stderr=stderr, as_json=as_json
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


@main.command()
@click.argument("execution_id")
@click.option(
    "--max-parallel",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="nodes at the same time",
)
@_json
@click.pass_obj
def recover(obj: _Ctx, execution_id: str, max_parallel: int, as_json: bool) -> None:
    """Re-run a failed execution: reuse every node that succeeded, run only the rest.
    It exits 1 if the new execution fails too, after printing the failing task, its
    attempt and traceback (with --json: the new execution, its status and errors)."""
    from .cli_report import failed_nodes, node_failure
    from .errors import TaskFailed, WorkflowFailed

    source = obj.engine.execution(execution_id)  # (its id whole, from the start of it)
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
        _emit(data, as_json, lambda: summary)
        return
    if as_json:
        _emit(data, True, lambda: summary)
    else:
        from .terminal import console

        err = console(stderr=True)
        err.print(summary, markup=False, highlight=False)
        for name, node in failed:
            for part in node_failure(name, node, state.id):
                err.print(part, highlight=False)
        if state.status is Status.ABORTED and state.error is not None:
            err.print(f"aborted: {state.error.message}", markup=False, highlight=False)
        err.print(f"recover with: papercrane recover {state.id}", highlight=False)
    click.get_current_context().exit(1)


@main.command()
@click.argument("artifact")
@_json
@click.pass_obj
def lineage(obj: _Ctx, artifact: str, as_json: bool) -> None:
    """How an artifact was made: task, version, execution and inputs, recursively."""
    tree = obj.engine.lineage(artifact)

    def text() -> Any:
        from rich.tree import Tree

        def add(branch: Any, node: dict[str, Any]) -> None:
            art = node["artifact"]
            kind = f"({art['python_type']}, {art['id'][:12]})"
            label = f"{node['name'] or '?'} = {art['preview']}  {kind}"
            p = node.get("producer")
            sub = branch.add(label)
            if p:
                # (a map's lists are collected from its elements: no attempt of their own)
                attempt = f", attempt {p['attempt']}" if p["attempt"] else ""
                sub = sub.add(
                    f"<- {p['task_name']} @ {p['task_version'][:12]}  "
                    f"(execution {p['execution_id']}{attempt})"
                )
                for child in node["inputs"]:
                    add(sub, child)

        root = Tree(f"lineage of {tree['artifact']['id'][:12]}")
        add(root, tree)
        return root

    _emit(tree, as_json, text)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=int)
@click.option("--db", "db_url", default=None, help="SQLAlchemy URL (default: SQLite in the home)")
@click.option("--storage", default=None, help="path or fsspec URL (default: store/ in the home)")
@click.option(
    "--executor",
    type=click.Choice(["local", "kubernetes"]),
    default="local",
    show_default=True,
    help="where attempts of tasks that don't choose run",
)
@click.option(
    "--project-executor",
    multiple=True,
    metavar="PROJECT=EXECUTOR",
    help="a project's default executor (repeatable)",
)
@click.option("--k8s-image", default=None, help="task image (default local/papercrane-task:dev)")
@click.option("--k8s-context", default=None, help="kubeconfig context (default: current)")
@click.option("--k8s-namespace", default=None, help="one namespace for all (default: per project)")
@click.option(
    "--k8s-pull-policy",
    type=click.Choice(["Always", "IfNotPresent", "Never"]),
    default=None,
    help="imagePullPolicy of task pods (default IfNotPresent)",
)
@click.option("--k8s-secret", multiple=True, help="Secret whose keys become env vars in pods")
@click.option(
    "--k8s-storage-volume", default=None, help="hostPath (default) or pvc:CLAIM, for file storage"
)
@click.option(
    "--k8s-pending-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="seconds a pod may pend",
)
@click.option(
    "--k8s-pod-quota", type=click.IntRange(min=1), default=None, help="running pods per namespace"
)
@click.option(
    "--max-running",
    type=click.IntRange(min=1),
    default=None,
    help="attempts at once, all projects",
)
@click.option(
    "--project-limit",
    type=click.IntRange(min=0),
    default=0,
    help="attempts at once per project (0: only --max-running limits them)",
)
@click.option("--public-url", default="", help="base URL shown to clients")
@click.option(
    "--max-upload",
    type=click.IntRange(min=1),
    default=None,
    help="largest artifact upload accepted, in bytes (default 2 GiB)",
)
@click.pass_obj
def server(
    obj: _Ctx,
    host: str,
    port: int,
    db_url: str | None,
    storage: str | None,
    executor: str,
    max_running: int | None,
    project_limit: int,
    public_url: str,
    max_upload: int | None,
    project_executor: tuple[str, ...],
    k8s_image: str | None,
    k8s_context: str | None,
    k8s_namespace: str | None,
    k8s_pull_policy: str | None,
    k8s_secret: tuple[str, ...],
    k8s_storage_volume: str | None,
    k8s_pending_timeout: float | None,
    k8s_pod_quota: int | None,
) -> None:
    """Run the papercrane server (REST API + live events) for a team."""
    import os

    k8s = {
        "PAPERCRANE_K8S_IMAGE": k8s_image,
        "PAPERCRANE_K8S_CONTEXT": k8s_context,
        "PAPERCRANE_K8S_NAMESPACE": k8s_namespace,
        "PAPERCRANE_K8S_PULL_POLICY": k8s_pull_policy,
        "PAPERCRANE_K8S_SECRETS": ",".join(k8s_secret) or None,
        "PAPERCRANE_K8S_STORAGE_VOLUME": k8s_storage_volume,
        "PAPERCRANE_K8S_PENDING_TIMEOUT": None
        if k8s_pending_timeout is None
        else str(k8s_pending_timeout),
        "PAPERCRANE_K8S_POD_QUOTA": None if k8s_pod_quota is None else str(k8s_pod_quota),
    }
    os.environ.update({k: v for k, v in k8s.items() if v})  # read by the executor
    per_project = {}
    for item in project_executor:
        name, sep, chosen = item.partition("=")
        if not sep or chosen not in ("local", "kubernetes"):
            raise click.UsageError(f"--project-executor {item!r}: write PROJECT=local|kubernetes")
        per_project[name] = chosen
    if "kubernetes" in (executor, *per_project.values()):
        # A bad PAPERCRANE_K8S_* value stops the server now, not every task later.
        from .errors import ConfigError
        from .executors.k8s_settings import KubernetesSettings

        try:
            KubernetesSettings.from_env()
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from None
    try:
        import uvicorn

        from .server import ServerSettings, create_app
    except ImportError as exc:
        raise click.ClickException(
            f"the server needs extra packages ({exc.name}): pip install 'papercrane[server]'"
        ) from None
    home = Path(obj.home) if obj.home else Config.from_env().home
    settings = ServerSettings(
        home=home,
        db_url=db_url or "",
        storage_url=storage or "",
        executor=executor,
        project_executors=per_project,
        project_limit=project_limit,
        public_url=public_url or f"http://{host}:{port}",
        **({"max_running": max_running} if max_running else {}),
        **({"max_upload": max_upload} if max_upload else {}),
    )
    _check_server_settings(settings)
    # A stop (SIGTERM, Ctrl-C) waits at most SHUTDOWN_GRACE for requests in flight, then
    # ends what is still open: live event streams last as long as their executions, and
    # their followers reconnect to the next server, which resumes the executions.
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level="info",
        timeout_graceful_shutdown=SHUTDOWN_GRACE,
    )


#: Seconds a stopping server waits for its requests in flight (``papercrane server``).
SHUTDOWN_GRACE = 5


def _check_server_settings(settings: Any) -> None:
    """Open the database and the storage once before serving: a bad --db or --storage
    is then one line here, not a traceback from inside the server's start-up."""
    from .storage import Storage
    from .store import Store

    try:
        Store(settings.db_url).close()
        Storage(settings.storage_for("default", "development"))
    except PapercraneError as exc:
        raise click.ClickException(str(exc)) from None


@main.group()
def token() -> None:
    """API tokens for the server.

    With PAPERCRANE_URL set (and no --db or PAPERCRANE_DB), they are managed on that
    server through its API, with the admin token in PAPERCRANE_TOKEN; otherwise in the
    database directly (run them where the server's database is, or pass --db).
    """


_TOKEN_DB = click.option(
    "--db",
    "db_url",
    default=None,
    help="SQLAlchemy URL of the server's database (default: $PAPERCRANE_DB; else, with "
    "$PAPERCRANE_URL set, that server's tokens over its API; else the home's SQLite file)",
)


def _token_server(db_url: str | None) -> Any:
    """The server whose tokens to manage (``TokenAdmin``), or None for a database.

    A database named (--db, PAPERCRANE_DB) is used as it is. Otherwise, with
    PAPERCRANE_URL set, the tokens are the server's: one created in this machine's home
    instead would be silently unknown to the server."""
    url = os.environ.get("PAPERCRANE_URL", "")
    if db_url or os.environ.get("PAPERCRANE_DB") or not url:
        return None
    if not os.environ.get("PAPERCRANE_TOKEN"):
        raise click.ClickException(
            f"PAPERCRANE_URL is set ({url}), so tokens are managed on that server, with an "
            "admin token in PAPERCRANE_TOKEN (none is set); or run this where the server's "
            "database is, or pass --db with its URL"
        )
    from .client import RemoteEngine, TokenAdmin

    return TokenAdmin(RemoteEngine.from_env())


def _on_server(admin: Any, action: Any) -> Any:
    """Run ``action`` against the server, a refused token saying what is needed."""
    from .errors import ConfigError

    try:
        return action(admin)
    except ConfigError as exc:
        raise click.ClickException(
            f"{exc} (with PAPERCRANE_URL set, `papercrane token` works on that server and "
            "needs an admin token in PAPERCRANE_TOKEN: the operator's, or the project's; "
            "or pass --db with the server's database URL)"
        ) from None
    finally:
        admin.engine.close()


def _token_store(obj: _Ctx, db_url: str | None) -> Any:
    from .store import Store

    return Store(db_url or Config.from_env(**_home(obj)).db_url)


@token.command("create")
@click.option("--project", required=True, help="the project it may use ('*' for all: admin)")
@click.option(
    "--role", type=click.Choice(["read", "write", "admin"]), default="write", show_default=True
)
@click.option("--name", default="", help="a note: who or what uses it")
@_TOKEN_DB
@click.pass_obj
def token_create(obj: _Ctx, project: str, role: str, name: str, db_url: str | None) -> None:
    """Create a token; it is printed once and stored only as a hash."""
    from .server.auth import create_token

    if project == "*" and role != "admin":
        raise click.UsageError("a token for every project ('*') must have --role admin")
    if project != "*":
        check_name("project", project, limit=SCOPE_LENGTH, where="--project")
    admin = _token_server(db_url)
    if admin is not None:
        click.echo(_on_server(admin, lambda a: a.create(project, role, name)))
        return
    store = _token_store(obj, db_url)
    try:
        click.echo(create_token(store, project, role, name))
    finally:
        store.close()


@token.command("list")
@_TOKEN_DB
@_json
@click.pass_obj
def token_list(obj: _Ctx, db_url: str | None, as_json: bool) -> None:
    """Tokens (never their secret), with the id to revoke them by."""
    from .server.auth import list_tokens

    admin = _token_server(db_url)
    if admin is not None:
        rows = _on_server(admin, lambda a: a.list())
    else:
        store = _token_store(obj, db_url)
        try:
            rows = list_tokens(store)
        finally:
            store.close()

    def table() -> Any:
        if not rows:
            return "no tokens yet (papercrane token create --project P)"
        t = _table("id", "project", "role", "name", "created", "revoked", drop=("created",))
        for r in rows:
            t.add_row(
                str(r["id"]),
                str(r["project"]),
                str(r["role"]),
                str(r["name"]),
                _when(r["created_at"]),
                "yes" if r["revoked"] else "",
            )
        return t

    _emit(rows, as_json, table)


@token.command("revoke")
@click.argument("token_id")
@_TOKEN_DB
@click.pass_obj
def token_revoke(obj: _Ctx, token_id: str, db_url: str | None) -> None:
    """Revoke a token by its id (from `papercrane token list`); it stops working at once."""
    from .server.auth import revoke_token

    token_id = token_id.lower()
    if len(token_id) < 8 or not all(c in "0123456789abcdef" for c in token_id):
        raise click.UsageError(
            f"{token_id!r} is no token id: give at least 8 of the hex digits "
            "`papercrane token list` shows"
        )
    admin = _token_server(db_url)
    if admin is not None:
        try:
            count = _on_server(admin, lambda a: a.revoke(token_id))
        except NotFound:
            count = 0
    else:
        store = _token_store(obj, db_url)
        try:
            count = revoke_token(store, token_id)
        finally:
            store.close()
    if not count:
        raise click.ClickException(f"no active token with id {token_id!r}")
    click.echo(f"revoked {count} token{'s' if count > 1 else ''}")


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option(
    "--db",
    "--url",
    "url",
    default=None,
    help="SQLAlchemy URL (default: $PAPERCRANE_DB, else the home's SQLite file)",
)
@click.pass_obj
def db_upgrade(obj: _Ctx, url: str | None) -> None:
    """Create or upgrade the schema with Alembic migrations."""
    from .store import db as store_db

    engine = store_db.create_engine(url or Config.from_env(**_home(obj)).db_url)
    store_db.upgrade(engine)
    click.echo(f"schema at revision {store_db.current_revision(engine)}")
    engine.dispose()


def _home(obj: _Ctx) -> dict[str, Any]:
    return {"home": Path(obj.home)} if obj.home else {}


def _register_run() -> None:
    from .cli_run import register

    register(main)


_register_run()

if __name__ == "__main__":
    main()
