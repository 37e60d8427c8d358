"""Pure renderings of a value's lineage for ``%lineage VAR``: HTML and an indented text tree.

The caller resolves the lineage graph (artifact <- attempt <- task version <- input
artifacts) into :class:`LineageNode` trees; this module only draws them. Lineage is a
DAG, not a tree: the same artifact reaches a value along several paths (a diamond), so
each producing step is drawn once and later occurrences say "see above". Depth and
entry count are capped so a 10,000-element map or a long chain stays readable and
bounded.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from papercrane.backend.units import format_duration, format_size

__all__ = ["LineageNode", "render_lineage_html", "render_lineage_text"]

MAX_DEPTH = 30
MAX_ENTRIES = 300
_ID_CHARS = 12
_PREVIEW_CHARS = 80
_GREY = "#6b7280"
_ACCENT = "#7c3aed"


@dataclass
class LineageNode:
    """One value in the lineage and the step that produced it.

    ``task == ""`` means nobody in papercrane produced it: a notebook value or a workflow
    parameter, which ends the chain.
    """

    name: str
    artifact_id: str
    python_type: str
    size: int
    preview: str
    task: str = ""
    task_version: str = ""
    execution_id: str = ""
    attempt: int = 0
    created_at: float = 0.0
    inputs: list[LineageNode] = field(default_factory=list)


@dataclass
class _Entry:
    """One line of the flattened tree, shared by both renderers so they agree."""

    kind: str  # "value" | "seen" | "deeper" | "more"
    depth: int
    node: LineageNode | None = None
    count: int = 0


def _key(node: LineageNode) -> tuple[object, ...]:
    """Same bytes from the same attempt are one entry; same bytes made elsewhere are not.

    Including the producer keeps an identity-like task (output hash == input hash) from
    hiding its own upstream, while still collapsing diamonds and breaking any cycle.
    """
    if not node.artifact_id:
        return ("object", id(node))
    return (node.artifact_id, node.task, node.task_version, node.execution_id, node.attempt)


def _walk(root: LineageNode, max_depth: int, max_entries: int) -> Iterator[_Entry]:
    """Depth-first, inputs in their given order, iteratively (no recursion limit)."""
    seen: set[tuple[object, ...]] = set()
    stack: list[tuple[LineageNode, int]] = [(root, 0)]
    emitted = 0
    while stack:
        node, depth = stack.pop()
        if emitted >= max_entries:
            yield _Entry("more", 0)
            return
        emitted += 1
        key = _key(node)
        if key in seen:
            yield _Entry("seen", depth, node)
            continue
        seen.add(key)
        yield _Entry("value", depth, node)
        if node.inputs:
            if depth + 1 > max_depth:
                yield _Entry("deeper", depth + 1, count=len(node.inputs))
                continue
            stack.extend((child, depth + 1) for child in reversed(node.inputs))


def _clean(text: object, limit: int = 0) -> str:
    s = " ".join("".join(ch if ch.isprintable() else " " for ch in str(text)).split())
    if limit and len(s) > limit:
        s = s[: limit - 1] + "…"
    return s


def _age(created_at: float, now: float) -> str:
    if not created_at:
        return ""
    return f"{format_duration(max(0.0, now - created_at))} ago"


def _value_parts(node: LineageNode) -> tuple[str, str, str]:
    """(name, "type, size, id", preview)."""
    meta = [m for m in (_clean(node.python_type), format_size(node.size)) if m]
    if node.artifact_id:
        meta.append(node.artifact_id[:_ID_CHARS])
    return _clean(node.name) or "?", ", ".join(meta), _clean(node.preview, _PREVIEW_CHARS)


def _producer_parts(node: LineageNode, now: float) -> list[str]:
    """The "where it came from" facts, in reading order."""
    facts = []
    if node.execution_id:
        facts.append(f"execution {_clean(node.execution_id)}")
    if node.attempt:
        facts.append(f"attempt {node.attempt}")
    age = _age(node.created_at, now)
    if age:
        facts.append(age)
    return facts


_ROOT_MARK = "notebook value or workflow parameter"


def render_lineage_text(
    root: LineageNode,
    *,
    now: float | None = None,
    max_depth: int = MAX_DEPTH,
    max_entries: int = MAX_ENTRIES,
) -> str:
    """An indented tree: each value, then ``<- task @ version`` and that step's inputs.

    ``now`` (epoch seconds) fixes the "ago" times, for reproducible output.
    """
    now = time.time() if now is None else now
    lines = []
    for entry in _walk(root, max_depth, max_entries):
        pad = "    " * entry.depth
        if entry.kind == "more":
            lines.append(f"… more inputs not shown (limit {max_entries} entries)")
            continue
        if entry.kind == "deeper":
            lines.append(f"{pad}… {entry.count} input(s) deeper than {max_depth} levels")
            continue
        node = entry.node
        assert node is not None
        name, meta, preview = _value_parts(node)
        if entry.kind == "seen":
            lines.append(f"{pad}{name}  ({meta})  see above")
            continue
        lines.append(f"{pad}{name}" + (f" = {preview}" if preview else "") + f"  ({meta})")
        if node.task:
            head = f"{pad}  <- {_clean(node.task)}"
            if node.task_version:
                head += f" @ {node.task_version[:_ID_CHARS]}"
            facts = _producer_parts(node, now)
            lines.append(head + (f"  ({', '.join(facts)})" if facts else ""))
        else:
            lines.append(f"{pad}  <- {_ROOT_MARK}")
    return "\n".join(lines)


def render_lineage_html(
    root: LineageNode,
    *,
    now: float | None = None,
    max_depth: int = MAX_DEPTH,
    max_entries: int = MAX_ENTRIES,
) -> str:
    """The same tree as :func:`render_lineage_text`, styled like the task widget."""
    now = time.time() if now is None else now
    esc = html.escape
    rows = []
    for entry in _walk(root, max_depth, max_entries):
        indent = f"padding-left:{entry.depth * 18}px"
        if entry.kind == "more":
            rows.append(
                f"<div style='color:{_GREY};margin-top:3px'>… more inputs not shown "
                f"(limit {max_entries} entries)</div>"
            )
            continue
        if entry.kind == "deeper":
            rows.append(
                f"<div style='{indent};color:{_GREY}'>… {entry.count} input(s) deeper than "
                f"{max_depth} levels</div>"
            )
            continue
        node = entry.node
        assert node is not None
        name, meta, preview = _value_parts(node)
        if entry.kind == "seen":
            rows.append(
                f"<div style='{indent};margin-top:3px'><b>{esc(name)}</b> "
                f"<span style='color:{_GREY}'>{esc(meta)} · see above</span></div>"
            )
            continue
        value = f"<b>{esc(name)}</b>"
        if preview:
            value += f" = <code style='font-size:11px'>{esc(preview)}</code>"
        value += f" <span style='color:{_GREY}'>({esc(meta)})</span>"
        rows.append(f"<div style='{indent};margin-top:3px'>{value}</div>")
        if node.task:
            step = f"← task <b style='color:{_ACCENT}'>{esc(_clean(node.task))}</b>" + (
                f" <span style='font-family:var(--jp-code-font-family,monospace)'>@ "
                f"{esc(node.task_version[:_ID_CHARS])}</span>"
                if node.task_version
                else ""
            )
            facts = _producer_parts(node, now)
            if facts:
                step += f" <span style='color:{_GREY}'>· {esc(' · '.join(facts))}</span>"
        else:
            step = f"<span style='color:{_GREY}'>← {_ROOT_MARK}</span>"
        rows.append(f"<div style='padding-left:{entry.depth * 18 + 12}px'>{step}</div>")
    return (
        "<div class='papercrane-lineage' style='font-family:var(--jp-ui-font-family,sans-serif);"
        f"font-size:12px;border-left:3px solid {_ACCENT};padding:4px 10px;margin:2px 0'>"
        f"<div style='margin-bottom:2px'>lineage of <b>{esc(_clean(root.name) or '?')}</b></div>"
        + "".join(rows)
        + "</div>"
    )
