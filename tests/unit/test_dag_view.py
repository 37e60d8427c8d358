"""The DAG view: layering, escaping, status colours, bounded output for huge workflows."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from papercrane.backend.model import Status
from papercrane.dag_view import (
    CACHE_COLORS,
    STATUS_COLORS,
    DagEdge,
    DagNode,
    layout,
    render_dag_html,
    render_dag_text,
)

SVG = "{http://www.w3.org/2000/svg}"
ALL_STATUSES = [
    "none",
    "queued",
    "running",
    "succeeded",
    "cached",
    "failed",
    "aborted",
    "skipped",
    "recovered",
]


def n(id_: str, status: str = "none", **kw: object) -> DagNode:
    return DagNode(id=id_, label=id_, status=status, **kw)  # type: ignore[arg-type]


def e(source: str, target: str, label: str = "x") -> DagEdge:
    return DagEdge(source, target, label)


def svg_of(page: str) -> ET.Element:
    """The inline svg element, parsed strictly as XML (it must be well-formed)."""
    match = re.search(r"<svg\b.*</svg>", page, re.S)
    assert match, "no <svg> in the output"
    return ET.fromstring(match.group(0))


def node_groups(svg: ET.Element) -> list[ET.Element]:
    return [g for g in svg.iter(f"{SVG}g") if g.get("class") == "pc-node"]


# ----------------------------------------------------------------------------- layout


def test_diamond_layers() -> None:
    nodes = [n("a"), n("b"), n("c"), n("d")]
    edges = [e("a", "b"), e("a", "c"), e("b", "d"), e("c", "d")]
    assert layout(nodes, edges) == {"a": (0, 0), "b": (1, 0), "c": (1, 1), "d": (2, 0)}


def test_layer_is_longest_path_from_a_source() -> None:
    nodes = [n("a"), n("b"), n("c")]
    assert layout(nodes, [e("a", "b"), e("b", "c"), e("a", "c")])["c"] == (2, 0)


def test_fan_out_then_fan_in() -> None:
    mids = [f"m{i}" for i in range(5)]
    nodes = [n("src"), *(n(m) for m in mids), n("sink")]
    edges = [e("src", m) for m in mids] + [e(m, "sink") for m in mids]
    pos = layout(nodes, edges)
    assert pos["src"] == (0, 0)
    assert [pos[m] for m in mids] == [(1, i) for i in range(5)]
    assert pos["sink"] == (2, 0)


def test_disconnected_nodes_share_layer_zero_in_document_order() -> None:
    nodes = [n("z"), n("a"), n("m")]
    assert layout(nodes, []) == {"z": (0, 0), "a": (0, 1), "m": (0, 2)}


def test_rows_keep_document_order_not_edge_order() -> None:
    nodes = [n("root"), n("late"), n("early")]
    # edges given in the opposite order from the document
    pos = layout(nodes, [e("root", "early"), e("root", "late")])
    assert pos["late"] == (1, 0)
    assert pos["early"] == (1, 1)


def test_unknown_ids_and_duplicate_edges_are_ignored() -> None:
    nodes = [n("a"), n("b")]
    edges = [e("a", "b"), e("a", "b", "y"), e("ghost", "a"), e("b", "nowhere")]
    assert layout(nodes, edges) == {"a": (0, 0), "b": (1, 0)}


def test_duplicate_node_ids_keep_the_first() -> None:
    assert layout([n("a"), n("b"), n("a")], [e("a", "b")]) == {"a": (0, 0), "b": (1, 0)}


def test_cycle_raises_naming_the_nodes() -> None:
    nodes = [n("prepare"), n("fit"), n("score"), n("after")]
    edges = [e("prepare", "fit"), e("fit", "score"), e("score", "fit"), e("score", "after")]
    with pytest.raises(ValueError, match="cycle") as info:
        layout(nodes, edges)
    message = str(info.value)
    assert "fit" in message and "score" in message
    assert "prepare" not in message  # upstream of the cycle, not on it


def test_self_loop_is_a_cycle() -> None:
    with pytest.raises(ValueError, match="a -> a"):
        layout([n("a")], [e("a", "a")])


def test_renderers_do_not_raise_on_a_cycle() -> None:
    nodes = [n("a"), n("b"), n("c")]
    edges = [e("a", "b"), e("b", "c"), e("c", "b"), e("c", "c")]
    page = render_dag_html(nodes, edges)
    assert "cycle in the graph" in page
    assert len(node_groups(svg_of(page))) == 3
    text = render_dag_text(nodes, edges)
    assert "warning: cycle in the graph: " in text


# ----------------------------------------------------------------------------- HTML


def test_text_is_escaped_everywhere() -> None:
    evil = "<script>alert('x')</script>"
    nodes = [
        DagNode(id=evil, label=evil, status="failed", detail=evil, cache="hit"),
        DagNode(id="b", label="b & c", status="succeeded"),
    ]
    page = render_dag_html(nodes, [DagEdge(evil, "b", evil)], title=evil, footer=evil)
    assert "<script" not in page
    assert "&lt;script&gt;" in page
    svg = svg_of(page)
    texts = "".join(t for el in svg.iter() for t in (el.text or "", el.tail or ""))
    assert "<script>" in texts  # the parser un-escapes: shown literally, never run
    assert "b & c" in texts


def test_control_characters_keep_the_svg_well_formed() -> None:
    page = render_dag_html([DagNode("a", "bad\x00\x1bname", "running", detail="x\x07y")], [])
    svg_of(page)


@pytest.mark.parametrize("status", ALL_STATUSES)
def test_every_status_draws_with_its_colour(status: str) -> None:
    svg = svg_of(render_dag_html([n("only", status)], []))
    (group,) = node_groups(svg)
    assert group.get("data-status") == status
    box = group.findall(f"{SVG}rect")[0]
    assert box.get("stroke") == STATUS_COLORS[status]
    if status == "skipped":
        assert box.get("stroke-dasharray")
    else:
        assert box.get("stroke-dasharray") is None
    if status == "none":
        assert box.get("fill") == "#ffffff"


def test_status_colours_match_the_task_widget() -> None:
    from papercrane.widgets import _COLORS

    for status, color in _COLORS.items():
        assert STATUS_COLORS[status.value] == color
    assert STATUS_COLORS["recovered"] != STATUS_COLORS["succeeded"]


def test_status_enum_is_accepted() -> None:
    svg = svg_of(render_dag_html([DagNode("a", "a", Status.CACHED)], []))  # type: ignore[arg-type]
    (group,) = node_groups(svg)
    assert group.get("data-status") == "cached"
    assert "[cached] a" in render_dag_text([DagNode("a", "a", Status.CACHED)], [])  # type: ignore[arg-type]


def test_unknown_status_still_renders() -> None:
    svg = svg_of(render_dag_html([n("a", "paused")], []))
    assert node_groups(svg)[0].get("data-status") == "paused"


@pytest.mark.parametrize("cache", sorted(CACHE_COLORS))
def test_cache_badge(cache: str) -> None:
    svg = svg_of(render_dag_html([n("a", "succeeded", cache=cache)], []))
    (group,) = node_groups(svg)
    fills = [r.get("fill") for r in group.findall(f"{SVG}rect")]
    assert CACHE_COLORS[cache] in fills
    assert f"cache {cache}" in [t.text for t in group.iter(f"{SVG}text")]


def test_map_node_is_a_stack_of_boxes() -> None:
    svg = svg_of(render_dag_html([n("one"), n("many", map_over="items")], []))
    one, many = node_groups(svg)
    assert len(one.findall(f"{SVG}rect")) == 1
    assert len(many.findall(f"{SVG}rect")) == 3
    assert "map over items" in many.find(f"{SVG}title").text


def test_detail_line_and_legend() -> None:
    page = render_dag_html(
        [n("fit", "running", detail="attempt 2 of 3"), n("s", "skipped")], [], title="wf"
    )
    assert "attempt 2 of 3" in page
    legend = page[page.index("</svg>") :]
    assert "running" in legend and "skipped" in legend
    assert "failed" not in legend  # only the statuses on screen


def test_edges_run_left_to_right_with_the_label_between_the_columns() -> None:
    page = render_dag_html([n("prepare"), n("fit")], [e("prepare", "fit", "X_train, y_train")])
    svg = svg_of(page)
    rects = [g.findall(f"{SVG}rect")[0] for g in node_groups(svg)]
    left_end = float(rects[0].get("x", 0)) + float(rects[0].get("width", 0))
    right_start = float(rects[1].get("x", 0))
    assert left_end < right_start
    (edge,) = [g for g in svg.iter(f"{SVG}g") if g.get("class") == "pc-edge"]
    (label,) = edge.findall(f"{SVG}text")
    assert label.text == "X_train, y_train"
    assert left_end < float(label.get("x", 0)) < right_start


def test_edges_per_variable_are_merged() -> None:
    page = render_dag_html([n("a"), n("b")], [e("a", "b", "x"), e("a", "b", "y, x")])
    edges = [g for g in svg_of(page).iter(f"{SVG}g") if g.get("class") == "pc-edge"]
    assert len(edges) == 1
    assert edges[0].find(f"{SVG}text").text == "x, y"  # type: ignore[union-attr]


def test_empty_workflow() -> None:
    assert "no task cells yet" in render_dag_html([], [])
    assert render_dag_text([], [], title="wf") == "wf"


def test_hundred_thousand_node_chain_is_capped_and_bounded() -> None:
    count = 100_000
    nodes = [n(f"task_{i}", "succeeded", cache="hit", detail="1 ms") for i in range(count)]
    edges = [e(f"task_{i}", f"task_{i + 1}", "x") for i in range(count - 1)]
    page = render_dag_html(nodes, edges)
    assert len(page) < 400_000
    assert f"… and {count - 150} more nodes" in page
    groups = node_groups(svg_of(page))
    assert len(groups) == 150
    assert "task_149" in page and "task_150<" not in page
    text = render_dag_text(nodes, edges)
    assert len(text.splitlines()) == 501
    assert text.endswith(f"… and {count - 500} more nodes")


def test_dense_graph_caps_the_edges() -> None:
    nodes = [n(f"t{i}") for i in range(60)]
    edges = [e(f"t{i}", f"t{j}") for i in range(60) for j in range(i + 1, 60)]  # 1,770
    page = render_dag_html(nodes, edges)
    drawn = [g for g in svg_of(page).iter(f"{SVG}g") if g.get("class") == "pc-edge"]
    assert len(drawn) == 600
    assert "… 1170 more edges not drawn" in page


# ----------------------------------------------------------------------------- text


def test_text_rendering_of_a_small_dag() -> None:
    nodes = [
        DagNode("prepare", "prepare", "succeeded", cache="miss", detail="1.2 s"),
        DagNode("fit", "fit", "running", detail="attempt 2 of 3"),
        DagNode("notes", "notes", "skipped"),
        DagNode("score", "score", "cached", cache="hit", map_over="folds", detail="10/10 elements"),
        DagNode("report", "report", "none"),
    ]
    edges = [
        DagEdge("prepare", "fit", "X_train, y_train"),
        DagEdge("fit", "score", "model"),
        DagEdge("prepare", "score", "X_test"),
        DagEdge("score", "report", "rmse"),
        DagEdge("ghost", "report", "nothing"),
    ]
    assert render_dag_text(nodes, edges, title="workflow quickstart") == "\n".join(
        [
            "workflow quickstart",
            "[succeeded] prepare  (cache miss; 1.2 s)",
            "[skipped] notes",
            "[running] fit  <- X_train, y_train from prepare  (attempt 2 of 3)",
            "[cached] score  <- X_test from prepare, model from fit"
            "  (map over folds; cache hit; 10/10 elements)",
            "[not run] report  <- rmse from score",
        ]
    )


def test_text_edge_without_label_names_the_source() -> None:
    assert render_dag_text([n("a"), n("b")], [e("a", "b", "")]).splitlines()[1] == (
        "[not run] b  <- a"
    )


def test_notes_follow_the_graph_escaped() -> None:
    nodes = [DagNode("a", "a", "none"), DagNode("b", "b", "none")]
    note = "x is assigned by 2 task cells (a, <b>)"
    text = render_dag_text(nodes, [DagEdge("a", "b", "x")], extra_notes=[note])
    assert text.splitlines()[-1] == f"note: {note}"
    html = render_dag_html(nodes, [DagEdge("a", "b", "x")], extra_notes=[note])
    assert "x is assigned by 2 task cells (a, &lt;b&gt;)" in html and "<b>)" not in html
    assert html.index("</svg>") < html.index("&lt;b&gt;)")  # under the drawing
