"""Pure renderings of a workflow DAG: an inline-SVG HTML view and a plain-text fallback.

These functions take plain dataclasses and return strings, so the same code draws
``%workflow show``, the live view of ``%workflow run`` (re-rendered on every event into
an ``ipywidgets.HTML``) and the ``text/plain`` a notebook keeps under papermill or on
GitHub. Nothing here talks to the kernel or the engine, and nothing here may raise on a
graph the assembler should never produce (unknown ids, cycles): a view that crashes hides
the very run it is meant to show. Only :func:`layout` raises, on a cycle, for callers that
want to be told.

Big graphs are capped (``max_nodes``, first nodes in document order) so a
100,000-node workflow still renders quickly into bounded output.
"""

from __future__ import annotations

import html
from collections import deque
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "CACHE_COLORS",
    "STATUS_COLORS",
    "DagEdge",
    "DagNode",
    "layout",
    "render_dag_html",
    "render_dag_text",
]


@dataclass
class DagNode:
    """One workflow node as the view needs it, nothing more."""

    id: str
    label: str
    status: str
    cache: str = ""
    detail: str = ""
    #: A map node: the name of the list it runs over.
    map_over: str = ""

    @property
    def is_map(self) -> bool:
        return bool(self.map_over)


@dataclass
class DagEdge:
    """Data flowing from ``source`` to ``target``; ``label`` names the variables carried."""

    source: str
    target: str
    label: str


# (stroke, fill, text shown). The first six match widgets._COLORS so a task looks the same
# in its cell widget and in the DAG; a unit test keeps them in step.
_STATUS_STYLE: dict[str, tuple[str, str, str]] = {
    "none": ("#9ca3af", "#ffffff", "not run"),
    "queued": ("#6b7280", "#f3f4f6", "queued"),
    "running": ("#2563eb", "#dbeafe", "running"),
    "succeeded": ("#15803d", "#dcfce7", "succeeded"),
    "cached": ("#7c3aed", "#ede9fe", "cached"),
    "failed": ("#b91c1c", "#fee2e2", "failed"),
    "aborted": ("#b45309", "#fef3c7", "aborted"),
    "skipped": ("#9ca3af", "#f9fafb", "skipped"),
    "recovered": ("#0d9488", "#ccfbf1", "recovered"),
    "deferred": ("#6b7280", "#ffffff", "deferred"),  # batch mode: recorded, not run yet
}
_UNKNOWN_STYLE = ("#6b7280", "#ffffff", "")
_DASHED = {"skipped", "deferred"}

STATUS_COLORS: dict[str, str] = {k: v[0] for k, v in _STATUS_STYLE.items()}
"""Border colour of a node per status (public so tests and other views can match it)."""

CACHE_COLORS: dict[str, str] = {
    "hit": "#7c3aed",
    "miss": "#6b7280",
    "off": "#9ca3af",
    "invalid": "#b45309",
    "recovered": "#0d9488",
}
"""Background colour of the cache badge per cache state."""

# Geometry (px). Layers are columns, rows stack downwards.
_W, _H = 180, 46
_COL_GAP, _ROW_GAP = 130, 22
_PAD = 14
_STACK = 4  # offset of each shadow box behind a map node
_MAX_EDGES = 600
_GREY = "#6b7280"


def _status_key(status: object) -> str:
    """Accept plain strings and ``Status`` enums alike (str-mixin enums format oddly)."""
    return str(getattr(status, "value", status) or "none")


def _clean(text: object) -> str:
    """Text safe for XML: control characters would make the SVG ill-formed."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(ch if ch.isprintable() else " " for ch in s)


def _esc(text: object) -> str:
    return html.escape(_clean(text), quote=True)


def _clip(text: str, limit: int) -> str:
    text = " ".join(_clean(text).split())
    return text if len(text) <= limit else text[: max(1, limit - 1)] + "…"


def _unique(nodes: Iterable[DagNode]) -> list[DagNode]:
    """First node per id wins; a duplicate id must not corrupt the layout."""
    seen: set[str] = set()
    out = []
    for n in nodes:
        if n.id not in seen:
            seen.add(n.id)
            out.append(n)
    return out


def _find_cycle(
    remaining: set[str], preds: dict[str, list[str]], order: dict[str, int]
) -> list[str]:
    """Return one cycle among ``remaining`` (every one of them has a remaining predecessor)."""
    start = min(remaining, key=order.__getitem__)
    path: list[str] = []
    index: dict[str, int] = {}
    node = start
    while node not in index:
        index[node] = len(path)
        path.append(node)
        node = next(p for p in preds[node] if p in remaining)
    cycle = path[index[node] :]
    cycle.reverse()  # walked against the edges; report in edge direction
    return cycle


def _layer(
    nodes: Sequence[DagNode], edges: Sequence[DagEdge], strict: bool
) -> tuple[dict[str, tuple[int, int]], list[str]]:
    """Longest-path layering plus document-order rows.

    Returns the positions and, when the graph has a cycle and ``strict`` is false, the
    nodes of one cycle (the layout then breaks it at the earliest node in document order).
    """
    order = {n.id: i for i, n in enumerate(nodes)}
    preds: dict[str, list[str]] = {nid: [] for nid in order}
    succs: dict[str, list[str]] = {nid: [] for nid in order}
    for e in edges:
        if e.source in order and e.target in order:
            preds[e.target].append(e.source)
            succs[e.source].append(e.target)
    indeg = {nid: len(p) for nid, p in preds.items()}
    depth = dict.fromkeys(order, 0)  # longest path seen so far; final once the node is popped
    done: set[str] = set()
    queue = deque(nid for nid in order if indeg[nid] == 0)
    cycle: list[str] = []
    while len(done) < len(order):
        if not queue:
            remaining = {nid for nid in order if nid not in done}
            found = _find_cycle(remaining, preds, order)
            if strict:
                raise ValueError(
                    "the workflow graph has a cycle: "
                    + " -> ".join(found + found[:1])
                    + "; a task cannot depend on its own outputs"
                )
            cycle = cycle or found
            forced = min(remaining, key=order.__getitem__)
            indeg[forced] = 0
            queue.append(forced)
        nid = queue.popleft()
        if nid in done:
            continue
        done.add(nid)
        below = depth[nid] + 1
        for succ in succs[nid]:
            if depth[succ] < below:
                depth[succ] = below
            indeg[succ] -= 1
            if indeg[succ] == 0 and succ not in done:
                queue.append(succ)
    layer = depth
    rows: dict[int, int] = {}
    pos: dict[str, tuple[int, int]] = {}
    for n in nodes:  # document order within each layer
        lyr = layer[n.id]
        pos[n.id] = (lyr, rows.get(lyr, 0))
        rows[lyr] = rows.get(lyr, 0) + 1
    return pos, cycle


def layout(nodes: list[DagNode], edges: list[DagEdge]) -> dict[str, tuple[int, int]]:
    """Place each node at ``(layer, row)``.

    ``layer`` is the longest path from a source, so every edge points rightwards;
    ``row`` keeps document order within a layer, which is the order the user wrote the
    cells in and so the order they expect to find them. Edges naming unknown nodes are
    ignored; a cycle raises ``ValueError`` naming the nodes on it.
    """
    pos, _ = _layer(_unique(nodes), edges, strict=True)
    return pos


def _merge_edges(edges: Iterable[DagEdge], keep: Container[str]) -> list[DagEdge]:
    """One edge per (source, target) with the labels joined: callers may send one per variable."""
    merged: dict[tuple[str, str], list[str]] = {}
    for e in edges:
        if e.source in keep and e.target in keep:
            labels = merged.setdefault((e.source, e.target), [])
            for part in str(e.label).split(","):
                part = part.strip()
                if part and part not in labels:
                    labels.append(part)
    return [DagEdge(s, t, ", ".join(labels)) for (s, t), labels in merged.items()]


def _cycle_note(cycle: list[str]) -> str:
    return "cycle in the graph: " + " -> ".join(cycle + cycle[:1])


# --------------------------------------------------------------------------- HTML / SVG


def _node_svg(node: DagNode, x: float, y: float) -> str:
    key = _status_key(node.status)
    stroke, fill, status_text = _STATUS_STYLE.get(key, _UNKNOWN_STYLE)
    status_text = status_text or key
    dash = " stroke-dasharray='5 3'" if key in _DASHED else ""
    cache = _status_key(node.cache) if node.cache else ""
    tip = [f"{node.label} ({node.id})" if node.label != node.id else node.id, status_text]
    if node.is_map:
        tip.append(f"map over {node.map_over}")
    if cache:
        tip.append(f"cache {cache}")
    if node.detail:
        tip.append(node.detail)
    parts = [f"<g class='pc-node' data-status='{_esc(key)}'><title>{_esc(' · '.join(tip))}</title>"]
    if node.is_map:
        for k in (2, 1):
            parts.append(
                f"<rect x='{x + k * _STACK}' y='{y + k * _STACK}' width='{_W}' height='{_H}' "
                f"rx='6' fill='{fill}' stroke='{stroke}' stroke-width='1'{dash}/>"
            )
    parts.append(
        f"<rect x='{x}' y='{y}' width='{_W}' height='{_H}' rx='6' fill='{fill}' "
        f"stroke='{stroke}' stroke-width='1.5'{dash}/>"
    )
    parts.append(
        f"<text x='{x + 10}' y='{y + 18}' font-size='12' font-weight='bold' fill='#111827'>"
        f"{_esc(_clip(node.label or node.id, 22))}</text>"
    )
    line = f"<tspan fill='{stroke}'>{_esc(status_text)}</tspan>"
    if node.detail:
        room = max(4, 27 - len(status_text) - 3)
        line += f"<tspan dx='4' fill='{_GREY}'>·\u00a0{_esc(_clip(node.detail, room))}</tspan>"
    parts.append(f"<text x='{x + 10}' y='{y + 36}' font-size='10.5'>{line}</text>")
    if cache:
        text = _clip(f"cache {cache}", 16)
        bw = 10 + 5.6 * len(text)
        bx, by = x + _W - bw - 8, y - 7  # sits on the top border, clear of the label
        color = CACHE_COLORS.get(cache, _GREY)
        parts.append(
            f"<rect x='{bx:.1f}' y='{by}' width='{bw:.1f}' height='14' rx='7' fill='{color}'/>"
            f"<text x='{bx + bw / 2:.1f}' y='{by + 10}' font-size='9' fill='#ffffff' "
            f"text-anchor='middle'>{_esc(text)}</text>"
        )
    parts.append("</g>")
    return "".join(parts)


def _edge_svg(edge: DagEdge, a: tuple[float, float], b: tuple[float, float]) -> str:
    (x1, y1), (x2, y2) = a, b
    x1 += _W
    y1 += _H / 2
    y2 += _H / 2
    x2 -= 2
    mx = (x1 + x2) / 2
    # Control points at mid-x give an S-curve whose t=0.5 point is exactly (mx, mid-y).
    bend = max(abs(x2 - x1) / 2, 30)
    c1, c2 = x1 + bend, x2 - bend
    path = f"M{x1:.1f},{y1:.1f} C{c1:.1f},{y1:.1f} {c2:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"
    head = f"{x2:.1f},{y2:.1f} {x2 - 7:.1f},{y2 - 3.5:.1f} {x2 - 7:.1f},{y2 + 3.5:.1f}"
    tip = f"{edge.source} → {edge.target}" + (f": {edge.label}" if edge.label else "")
    out = [
        f"<g class='pc-edge'><title>{_esc(tip)}</title>"
        f"<path d='{path}' fill='none' stroke='#9ca3af' stroke-width='1.3'/>"
        f"<polygon points='{head}' fill='#9ca3af'/>"
    ]
    if edge.label:
        out.append(
            f"<text x='{mx:.1f}' y='{(y1 + y2) / 2 - 3:.1f}' font-size='10' fill='#374151' "
            f"text-anchor='middle' stroke='#ffffff' stroke-width='3' paint-order='stroke'>"
            f"{_esc(_clip(edge.label, 22))}</text>"
        )
    out.append("</g>")
    return "".join(out)


def _legend_html(nodes: Sequence[DagNode]) -> str:
    present = []
    for n in nodes:
        key = _status_key(n.status)
        if key not in present:
            present.append(key)
    items = []
    for key in [k for k in _STATUS_STYLE if k in present] + [
        k for k in present if k not in _STATUS_STYLE
    ]:
        stroke, fill, text = _STATUS_STYLE.get(key, _UNKNOWN_STYLE)
        style = "dashed" if key in _DASHED else "solid"
        items.append(
            f"<span style='display:inline-block;width:10px;height:10px;border-radius:3px;"
            f"background:{fill};border:1.5px {style} {stroke};vertical-align:-1px;"
            f"margin:0 3px 0 10px'></span>{_esc(text or key)}"
        )
    if any(n.is_map for n in nodes):
        items.append(
            "<span style='display:inline-block;width:10px;height:10px;border-radius:3px;"
            "border:1px solid #6b7280;box-shadow:2px 2px 0 #ffffff,3px 3px 0 #6b7280;"
            "vertical-align:-1px;margin:0 5px 0 10px'></span>map task"
        )
    return (
        f"<div style='color:{_GREY};margin-top:4px;margin-left:-10px'>" + "".join(items) + "</div>"
    )


def render_dag_html(
    nodes: list[DagNode],
    edges: list[DagEdge],
    title: str = "",
    footer: str = "",
    *,
    max_nodes: int = 150,
    extra_notes: Sequence[str] = (),
) -> str:
    """HTML with an inline SVG of the DAG: layers as columns, nodes coloured by status.

    Only the first ``max_nodes`` nodes (document order) are drawn, so the output stays
    bounded and legible whatever the workflow's size; a note says how many were left out.
    Never raises on a cycle or unknown ids: it draws what it can and says what is wrong.
    """
    all_nodes = _unique(nodes)
    shown = all_nodes[: max(0, max_nodes)]
    hidden = len(all_nodes) - len(shown)
    ids = {n.id: n for n in shown}
    drawn = _merge_edges(edges, ids)
    pos, cycle = _layer(shown, drawn, strict=False)

    n_layers = max((lyr for lyr, _ in pos.values()), default=-1) + 1
    per_layer: dict[int, int] = {}
    for lyr, _ in pos.values():
        per_layer[lyr] = per_layer.get(lyr, 0) + 1
    max_rows = max(per_layer.values(), default=0)
    extra = 2 * _STACK if any(n.is_map for n in shown) else 0
    width = 2 * _PAD + n_layers * _W + max(0, n_layers - 1) * _COL_GAP + extra
    height = 2 * _PAD + max_rows * _H + max(0, max_rows - 1) * _ROW_GAP + extra

    xy: dict[str, tuple[float, float]] = {}
    for nid, (lyr, row) in pos.items():
        offset = (max_rows - per_layer[lyr]) * (_H + _ROW_GAP) / 2  # centre short columns
        xy[nid] = (_PAD + lyr * (_W + _COL_GAP), _PAD + offset + row * (_H + _ROW_GAP))

    esc = _esc
    parts = [
        "<div class='papercrane-dag' style='font-family:var(--jp-ui-font-family,sans-serif);"
        "font-size:12px;border-left:3px solid #2563eb;padding:4px 10px;margin:2px 0'>"
    ]
    if title:
        parts.append(f"<div style='margin-bottom:4px'><b>{esc(title)}</b></div>")
    notes = []
    if cycle:
        notes.append(f"<div style='color:#b91c1c'>{esc(_cycle_note(cycle))}</div>")
    if shown:
        parts.append("<div style='overflow:auto;max-height:640px;max-width:100%'>")
        parts.append(
            f"<svg xmlns='http://www.w3.org/2000/svg' width='{width:.0f}' height='{height:.0f}' "
            f"viewBox='0 0 {width:.0f} {height:.0f}' role='img' "
            f"style='font-family:var(--jp-ui-font-family,sans-serif)'>"
        )
        real_edges = [e for e in drawn if e.source != e.target]  # self-loops: cycle note
        skipped_edges = max(0, len(real_edges) - _MAX_EDGES)
        for e in real_edges[:_MAX_EDGES]:
            parts.append(_edge_svg(e, xy[e.source], xy[e.target]))
        for n in shown:
            parts.append(_node_svg(n, *xy[n.id]))
        parts.append("</svg></div>")
        if skipped_edges:
            notes.append(f"<div style='color:{_GREY}'>… {skipped_edges} more edges not drawn</div>")
    else:
        notes.append(f"<div style='color:{_GREY}'>no task cells yet</div>")
    if hidden:
        notes.append(
            f"<div style='color:{_GREY}'>… and {hidden} more nodes "
            f"(showing the first {len(shown)} in document order)</div>"
        )
    parts.extend(notes)
    for note in extra_notes:  # the caller's: worth reading before the legend
        parts.append(f"<div style='color:#b45309'>{esc(note)}</div>")
    if shown:
        parts.append(_legend_html(shown))
    if footer:
        parts.append(f"<div style='color:{_GREY};margin-top:3px'>{esc(footer)}</div>")
    parts.append("</div>")
    return "".join(parts)


# --------------------------------------------------------------------------- text


def render_dag_text(
    nodes: list[DagNode],
    edges: list[DagEdge],
    title: str = "",
    *,
    max_nodes: int = 500,
    extra_notes: Sequence[str] = (),
) -> str:
    """One line per node in layer order, for papermill output and GitHub's viewer.

    ``[status] id  <- x from prepare, coef from fit  (detail)``; map nodes and the cache
    state join the detail in the parentheses. Capped at ``max_nodes`` like the HTML.
    """
    all_nodes = _unique(nodes)
    shown = all_nodes[: max(0, max_nodes)]
    hidden = len(all_nodes) - len(shown)
    by_id = {n.id: n for n in shown}
    merged = _merge_edges(edges, by_id)
    pos, cycle = _layer(shown, merged, strict=False)
    order = {n.id: i for i, n in enumerate(shown)}
    incoming: dict[str, list[DagEdge]] = {}
    for e in merged:
        incoming.setdefault(e.target, []).append(e)

    lines = [_clean(title)] if title else []
    for n in sorted(shown, key=lambda n: pos[n.id]):
        key = _status_key(n.status)
        text = _STATUS_STYLE.get(key, _UNKNOWN_STYLE)[2] or key
        line = f"[{text}] {_clean(n.id)}"
        sources = [
            f"{_clean(e.label)} from {_clean(e.source)}" if e.label else _clean(e.source)
            for e in sorted(incoming.get(n.id, []), key=lambda e: order[e.source])
        ]
        if sources:
            line += "  <- " + ", ".join(sources)
        extras = ([f"map over {_clean(n.map_over)}"] if n.is_map else []) + (
            [f"cache {_status_key(n.cache)}"] if n.cache else []
        )
        if n.detail:
            extras.append(" ".join(_clean(n.detail).split()))
        if extras:
            line += f"  ({'; '.join(extras)})"
        lines.append(line)
    if hidden:
        lines.append(f"… and {hidden} more nodes")
    if cycle:
        lines.append("warning: " + _cycle_note(cycle))
    lines.extend(f"note: {_clean(note)}" for note in extra_notes)
    return "\n".join(lines)
