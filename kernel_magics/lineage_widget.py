"""``%lineage VARIABLE``: the engine's lineage tree, shown as a widget with static
HTML and text fallbacks (readable in papermill output and on GitHub too)."""

from __future__ import annotations

from typing import Any

from .lineage_view import LineageNode, render_lineage_html, render_lineage_text


def to_view(tree: dict[str, Any], name: str = "") -> LineageNode:
    art = tree["artifact"]
    producer = tree.get("producer") or {}
    return LineageNode(
        name=name or tree.get("name") or "",
        artifact_id=art["id"],
        python_type=art["python_type"],
        size=art["size"],
        preview=art.get("preview", ""),
        task=producer.get("task_name", ""),
        task_version=producer.get("task_version", ""),
        execution_id=producer.get("execution_id", ""),
        attempt=producer.get("attempt", 0),
        created_at=producer.get("created_at", 0.0),
        inputs=[to_view(child) for child in tree.get("inputs", [])],
    )


class _Lineage:
    def __init__(self, root: LineageNode) -> None:
        import ipywidgets

        self.root = root
        self.widget = ipywidgets.HTML(value=render_lineage_html(root))

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        return {
            "text/plain": render_lineage_text(self.root),
            "text/html": render_lineage_html(self.root),
            "application/vnd.jupyter.widget-view+json": {
                "model_id": self.widget.model_id,
                "version_major": 2,
                "version_minor": 0,
            },
        }


def lineage_display(tree: dict[str, Any], variable: str) -> _Lineage:
    return _Lineage(to_view(tree, variable))
