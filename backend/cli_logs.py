"""``papercrane logs`` (and ``executions logs``): a node's output for one attempt, found
where its executor kept it."""

from __future__ import annotations

import json
from typing import Any

import click

from .cli_common import Ctx, json_option
from .errors import NotFound
from .model import Status


@click.command()
@click.argument("execution_id")
@click.argument("node", required=False)
@click.option(
    "--attempt", type=click.IntRange(min=1), default=None, help="default: the last attempt"
)
@click.option("--stderr", "stderr", is_flag=True, help="show stderr instead of stdout")
@json_option
@click.pass_obj
def logs(
    obj: Ctx,
    execution_id: str,
    node: str | None,
    attempt: int | None,
    stderr: bool,
    as_json: bool,
) -> None:
    """Print a node's stdout (or --stderr) for one attempt; NODE may be left out when
    the execution has one (a single task's). A cache hit's or a recovered node's are
    those of the attempt that made its outputs, in another execution."""
    state = obj.reader.execution(execution_id)
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
    ran = found.attempt  # how many attempts the node whose logs are read made
    if not found.attempt:
        # A cache hit or a recovered node ran no attempt here: its logs are those of
        # the attempt that made its outputs, in another execution (--attempt: of its
        # attempts there).
        if found.status is Status.SKIPPED:
            raise NotFound(
                f"{node!r} was skipped in {execution_id}: it never ran, so it has no logs; "
                f"{_skip_reason(obj.engine, execution_id, node)}"
            )
        if found.status not in (Status.CACHED, Status.RECOVERED):
            raise NotFound(_never_ran(node, execution_id, found, state))
        source = _ran_elsewhere(obj.engine, state, node, found)
        if source is None:
            raise NotFound(
                f"{node!r} ran no attempt in {execution_id} ({found.status.value}), "
                "and the one that made its outputs is not recorded"
            )
        record["via"] = {"execution_id": execution_id, "node": node, "status": found.status.value}
        execution_id, node, ran = source
        _check_attempt(attempt, ran, node, execution_id)
        if not as_json:
            which = (
                "which made its outputs" if attempt in (None, ran) else f"attempt {ran} made them"
            )
            click.echo(
                f"({record['via']['node']} was {found.status.value} in "
                f"{record['via']['execution_id']}: these are the logs of execution "
                f"{execution_id}, node {node}, attempt {attempt or ran}, {which})",
                err=True,
            )
    _check_attempt(attempt, ran, node, execution_id)
    attempt = attempt or ran or 1
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


def _never_ran(node: str, execution_id: str, found: Any, state: Any) -> str:
    """Why a node that made no attempt and reuses no one's outputs has no logs: it
    failed before its first attempt (its error says why), its execution was aborted or
    lost first, or it has not started yet."""
    said = f"{node!r} made no attempt in {execution_id} ({found.status.value}), so it has no logs"
    if found.error is not None:
        return (
            f"{said}; it failed before its first attempt: {found.error.type}: {found.error.message}"
        )
    if state.error is not None and state.status.terminal:
        return f"{said}; the execution ended first: {state.error.message}"
    return said


def _check_attempt(attempt: int | None, ran: int, node: str, execution_id: str) -> None:
    """Refuse an ``--attempt`` the node never made, saying which it did (the engine's
    own answer named neither)."""
    if attempt is None or not ran or attempt <= ran:
        return
    made = "attempt 1" if ran == 1 else f"attempts 1 to {ran}"
    raise NotFound(
        f"{node!r} made {made} in execution {execution_id}, not {attempt} "
        "(leave --attempt out for the last)"
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


@click.command("logs")
@click.argument("execution_id")
@click.argument("node", required=False)
@click.option(
    "--attempt", type=click.IntRange(min=1), default=None, help="default: the last attempt"
)
@click.option("--stderr", "stderr", is_flag=True, help="show stderr instead of stdout")
@json_option
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
