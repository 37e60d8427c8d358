"""``papercrane cache list|clear`` and ``papercrane lineage``: the cache's entries, and
what produced a value."""

from __future__ import annotations

from typing import Any

import click

from .cli_common import Ctx, asked_text, emit, fitted_table, json_option, local_time, scope_caption
from .config import ANY_SCOPE, SCOPE_LENGTH, check_name


@click.group()
def cache() -> None:
    """List or clear cache entries."""


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
@json_option
@click.pass_obj
def cache_list(
    obj: Ctx,
    project: str | None,
    domain: str | None,
    task_name: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Cache entries, newest first: the task, its outputs, the execution that made them,
    and the project and domain they serve (a cache entry is reused only there)."""
    # (one more than shown: whether to say there are more)
    missing = obj.missing_home()  # (then none, and the home is not made)
    rows = (
        []
        if missing
        else obj.engine.cache_list(
            task_name=task_name,
            limit=limit + 1 if limit else None,
            project=project,
            domain=domain,
        )
    )
    more = bool(limit) and len(rows) > limit
    rows = rows[:limit] if limit else rows

    def table() -> Any:
        if missing:
            return f"no cache entries: {missing}"
        if not rows:
            asked = asked_text(project=project, domain=domain, task=task_name)
            said = f"no cache entries{' with ' + asked if asked else ' yet'}"
            return said + _other_tasks(obj, task_name, project, domain)
        from rich.console import Group

        caption, column = scope_caption(rows)
        headers = ["key", "task", "outputs", "execution", "created"]
        t = fitted_table(
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
                local_time(r["created_at"]),
                *([f"{r['project']}/{r['domain']}"] if column else []),
            )
        if not more:
            return t
        return Group(t, f"the newest {limit}; there are more (--limit N, or 0 for all)")

    emit(rows, as_json, table)


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
@json_option
@click.pass_obj
def cache_clear(obj: Ctx, project: str, domain: str, task_name: str | None, as_json: bool) -> None:
    """Forget cache entries of one project and domain (those `run` and the notebook use
    by default), so their tasks run again there. The values they named stay in storage:
    earlier executions and lineage still read them."""
    for kind, value in (("project", project), ("domain", domain)):
        if value != ANY_SCOPE:
            check_name(kind, value, limit=SCOPE_LENGTH, where=f"--{kind}")
    # (a home nothing ran with has none: said, and not made; a script that clears
    # before its first run goes on)
    missing = obj.missing_home()
    n = (
        0
        if missing
        else obj.engine.cache_clear(task_name=task_name, project=project, domain=domain)
    )
    where = " ".join(
        f"in every {kind}" if value == ANY_SCOPE else f"in {kind} {value}"
        for kind, value in (("project", project), ("domain", domain))
    )
    of = f" of task {task_name!r}" if task_name else ""
    said = f"cleared {n} cache entr{'y' if n == 1 else 'ies'}{of} {where}"
    if missing:
        said += f": {missing}"
    elif not n:
        said += _other_tasks(obj, task_name, project, domain)
    emit({"cleared": n, "project": project, "domain": domain}, as_json, lambda: said)


def _other_tasks(obj: Ctx, task_name: str | None, project: str | None, domain: str | None) -> str:
    """For a ``--task`` that matched no entry: the tasks that have entries there, as a
    note (a mistyped name, ``--task lod``, said only that it found or cleared none).
    Still no error: clearing twice, or listing what is not cached yet, is no mistake."""
    if not task_name:
        return ""
    names = sorted(
        {r["task_name"] for r in obj.engine.cache_list(limit=1000, project=project, domain=domain)}
    )
    there = " there" if project or domain else ""
    if not names:
        return f" (no task has cache entries{there})"
    shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
    return f" (tasks with cache entries{there}: {shown})"


@click.command()
@click.argument("artifact")
@json_option
@click.pass_obj
def lineage(obj: Ctx, artifact: str, as_json: bool) -> None:
    """How an artifact was made: task, version, execution and inputs, recursively."""
    tree = obj.reader.lineage(artifact)

    def text() -> Any:
        from rich.tree import Tree

        def add(branch: Any, node: dict[str, Any]) -> None:
            art = node["artifact"]
            kind = f"({art['python_type']}, {art['id'][:12]})"
            named = f"{node['name']} = " if node["name"] else ""
            sub = branch.add(f"{named}{art['preview']}  {kind}")
            p = node.get("producer")
            if not p:
                # (as %lineage says it: no task's attempt recorded making this value)
                sub.add("<- notebook value or workflow parameter")
                return
            # (a map's lists are collected from its elements: no attempt of their own)
            attempt = f", attempt {p['attempt']}" if p["attempt"] else ""
            # A step met before (two outputs of one task, read by one) has its inputs
            # shown there once: here it says so, not that it had none.
            again = "  see above" if node.get("repeated") else ""
            sub = sub.add(
                f"<- {p['task_name']} @ {p['task_version'][:12]}  "
                f"(execution {p['execution_id']}{attempt}){again}"
            )
            for child in node["inputs"]:
                add(sub, child)

        root = Tree(f"lineage of {tree['artifact']['id'][:12]}")
        add(root, tree)
        return root

    emit(tree, as_json, text)
