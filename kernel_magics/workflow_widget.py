"""The DAG widget of ``%workflow show`` and ``%workflow run``: the notebook's workflow
drawn by dependency, each node coloured by its state, updated live from the events."""

from __future__ import annotations

import functools
import sys
import time
from typing import Any

from papercrane.backend.model import Event, ExecutionState
from papercrane.backend.units import format_duration
from papercrane.backend.workflow import WorkflowSpec

from .dag_view import DagEdge, DagNode, render_dag_html, render_dag_text

_SHOWN = 150


class _Bundle:
    def __init__(self, owner: WorkflowWidget) -> None:
        self.owner = owner

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        nodes, edges = self.owner.graph()
        data: dict[str, Any] = {
            "text/plain": render_dag_text(
                nodes, edges, self.owner.title(), extra_notes=self.owner.notes
            ),
            "text/html": render_dag_html(
                nodes,
                edges,
                self.owner.title(),
                self.owner.footer(),
                extra_notes=self.owner.notes,
            ),
        }
        if self.owner.widget is not None:
            data["application/vnd.jupyter.widget-view+json"] = {
                "model_id": self.owner.widget.model_id,
                "version_major": 2,
                "version_minor": 0,
            }
        return data


class WorkflowWidget:
    """A ``RunListener`` that redraws the DAG as events arrive (at most every 0.1 s)."""

    def __init__(
        self,
        spec: WorkflowSpec | None,
        *,
        live: bool = True,
        title: str = "",
        records: dict[str, Any] | None = None,
        deferred: frozenset[str] = frozenset(),
    ) -> None:
        self.spec = spec
        self.state: ExecutionState | None = None
        self.records = records or {}
        #: Task cells batch mode holds (``%workflow show``): recorded, not run yet.
        self.deferred = deferred
        self._title = title
        self.started = time.time()
        self.ended: float | None = None
        self.widget = None
        if live:
            import ipywidgets

            nodes, edges = self.graph()
            self.widget = ipywidgets.HTML(
                value=render_dag_html(nodes, edges, self.title(), extra_notes=self.notes)
            )
        self._handle: Any = None
        self._last = 0.0
        #: The server unreachable while the run goes on (``on_connection``), or "".
        self.notice = ""
        #: Each node's state line as last seen (a map's elements are not drawn: left out).
        self._where: dict[str, str] = {}

    # -- what to draw ---------------------------------------------------------------------
    def title(self) -> str:
        name = self.spec.name if self.spec else (self.state.name if self.state else "")
        parts = [self._title or f"workflow {name}"]
        if self.spec is not None:
            parts.append(f"version {self.spec.version()[:12]}")
        if self.state is not None:
            parts.append(f"execution {self.state.id}: {self.state.status.value}")
        return " · ".join(parts)

    @functools.cached_property
    def notes(self) -> list[str]:
        """A name two task cells assign: which one each reader gets is document order,
        which the edges alone don't say (the issue: resolved by document order, shown).
        Of the spec alone, so made once, not at every redraw of a live run."""
        if self.spec is None or not self.spec.shadowed:
            return []
        # Only names a task reads: a module two cells import is environment, not data.
        read = {b.output for n in self.spec.nodes for b in n.bindings.values() if b.node}
        return [
            f"{name} is assigned by {len(tasks)} task cells ({', '.join(tasks)}): each task "
            "reading it gets the nearest one above it"
            for name, tasks in self.spec.shadowed.items()
            if name in read
        ]

    def footer(self) -> str:
        parts = []
        if getattr(self, "total", 0) > _SHOWN:
            parts.append(f"showing the first {_SHOWN} of {self.total} nodes")
        if self.state is not None:
            parts.append(f"elapsed {format_duration((self.ended or time.time()) - self.started)}")
        if self.notice and self.ended is None:
            parts.append(f"server {self.notice}")
        return " · ".join(parts)

    def graph(self) -> tuple[list[DagNode], list[DagEdge]]:
        nodes: list[DagNode] = []
        ids: list[str] = []
        if self.spec is not None:
            ids = [n.id for n in self.spec.nodes]
        elif self.state is not None:
            ids = [n for n in self.state.nodes if "[" not in n]
        self.total = len(ids)
        ids = ids[:_SHOWN]  # a 100,000-node workflow: build (and draw) only what is shown
        maps = {n.id: n.map.over for n in self.spec.nodes[:_SHOWN] if n.map} if self.spec else {}
        last = {r.spec.name: r for r in self.records.values()}
        for node_id in ids:
            node = self.state.nodes.get(node_id) if self.state else None
            if node is not None:
                status, cache, detail = node.status.value, node.cache, _detail(node)
            elif node_id in self.deferred:
                status, cache, detail = "deferred", "", "runs when a later cell needs its outputs"
            elif node_id in last:
                rec = last[node_id]
                status, cache = rec.last_status, rec.last_cache
                detail = f"last run {rec.last_execution}" if rec.last_execution else ""
            else:
                status, cache, detail = "none", "", ""
            nodes.append(DagNode(node_id, node_id, status, cache, detail, maps.get(node_id, "")))
        shown = set(ids)
        edges = (
            [
                DagEdge(a, b, ", ".join(names))
                for a, b, names in self.spec.edges()
                if a in shown and b in shown
            ]
            if self.spec is not None
            else []
        )
        return nodes, edges

    # -- display --------------------------------------------------------------------------
    def show(self) -> None:
        from IPython.display import display

        self._handle = display(_Bundle(self), display_id=True)

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.widget is None or (not force and now - self._last < 0.1):
            return
        self._last = now
        nodes, edges = self.graph()
        self.widget.value = render_dag_html(
            nodes, edges, self.title(), self.footer(), extra_notes=self.notes
        )

    def finish(self) -> None:
        self.ended = time.time()
        self.refresh(force=True)
        if self._handle is not None:
            self._handle.update(_Bundle(self))

    # -- RunListener ----------------------------------------------------------------------
    def on_connection(self, problem: str | None) -> None:
        """The server unreachable and retried (``problem``), or back (None)."""
        if (problem or "") != self.notice:
            self.notice = problem or ""
            self.refresh(force=True)

    def on_event(self, event: Event, state: ExecutionState) -> None:
        self.state = state
        # (a node's new state line, a pod's scheduling reason, may be the last change
        # for minutes: it is rendered even within the 0.1 s between renders. Only the
        # event's node is looked at: a map's 10,000 elements are 10,000 events.)
        changed = False
        if event.node and "[" not in event.node:
            node = state.nodes.get(event.node)
            where = node.where if node is not None else ""
            changed = self._where.get(event.node, "") != where
            self._where[event.node] = where
        self.refresh(force=state.status.terminal or changed)

    def on_log(self, stream: str, text: str) -> None:
        target = sys.stderr if stream == "stderr" else sys.stdout
        target.write(text)
        target.flush()


def _clip(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters, ending in "…" when cut (a row's detail
    stays one line; the node's widget and ``%workflow show`` have the rest)."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _detail(node: Any) -> str:
    parts = []
    if node.elements:
        done = f"{node.elements_done}/{node.elements} elements"
        if node.elements_cached:
            done += f", {node.elements_cached} cached"
        if node.elements_failed:
            done += f", {node.elements_failed} failed"
        parts.append(done)
    elif node.attempt > 1:
        parts.append(f"attempt {node.attempt}")
    if node.where and not node.status.terminal and node.where != "running":
        parts.append(_clip(node.where))
    if node.started_at and node.ended_at:
        parts.append(format_duration(node.ended_at - node.started_at))
    if node.error is not None and node.status.value == "failed":
        parts.append(_clip(f"{node.error.type}: {node.error.message}"))
    return " · ".join(parts)
