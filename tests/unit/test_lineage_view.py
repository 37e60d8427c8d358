"""The lineage view: the chain that made a value, diamonds shown once, bounded output."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from papercrane.lineage_view import LineageNode, render_lineage_html, render_lineage_text

NOW = 1_700_000_000.0


def value(name: str, art: str, task: str = "", *inputs: LineageNode, **kw: object) -> LineageNode:
    return LineageNode(
        name=name,
        artifact_id=art * 64 if len(art) == 1 else art,
        python_type=kw.pop("python_type", "int"),  # type: ignore[arg-type]
        size=kw.pop("size", 28),  # type: ignore[arg-type]
        preview=kw.pop("preview", "1"),  # type: ignore[arg-type]
        task=task,
        task_version=kw.pop("task_version", ("9" * 64) if task else ""),  # type: ignore[arg-type]
        execution_id=kw.pop("execution_id", "ex-1" if task else ""),  # type: ignore[arg-type]
        attempt=kw.pop("attempt", 1 if task else 0),  # type: ignore[arg-type]
        created_at=kw.pop("created_at", NOW - 90 if task else 0.0),  # type: ignore[arg-type]
        inputs=list(inputs),
    )


def three_steps() -> LineageNode:
    """prepare -> (fit, and evaluate also reads X_test straight from prepare) -> evaluate."""
    data = value("data", "d", "", preview="[1, 2, 3]", python_type="list", size=88)
    x = value("X", "a", "prepare", data, python_type="ndarray", size=8000, preview="array([1])")
    model = value(
        "model",
        "c",
        "fit",
        x,
        python_type="LinearRegression",
        size=1200,
        preview="LinearRegression()",
        attempt=2,
        task_version="1" * 64,
        created_at=NOW - 60,
    )
    return value(
        "rmse",
        "e",
        "evaluate",
        model,
        x,
        python_type="float",
        size=24,
        preview="0.42",
        task_version="2" * 64,
        created_at=NOW - 30,
    )


def test_text_tree_exact() -> None:
    assert render_lineage_text(three_steps(), now=NOW) == "\n".join(
        [
            "rmse = 0.42  (float, 24 B, eeeeeeeeeeee)",
            "  <- evaluate @ 222222222222  (execution ex-1, attempt 1, 30.0 s ago)",
            "    model = LinearRegression()  (LinearRegression, 1.2 KiB, cccccccccccc)",
            "      <- fit @ 111111111111  (execution ex-1, attempt 2, 1m 00s ago)",
            "        X = array([1])  (ndarray, 7.8 KiB, aaaaaaaaaaaa)",
            "          <- prepare @ 999999999999  (execution ex-1, attempt 1, 1m 30s ago)",
            "            data = [1, 2, 3]  (list, 88 B, dddddddddddd)",
            "              <- notebook value or workflow parameter",
            "    X  (ndarray, 7.8 KiB, aaaaaaaaaaaa)  see above",
        ]
    )


def test_diamond_input_is_shown_once() -> None:
    text = render_lineage_text(three_steps(), now=NOW)
    assert text.count("<- prepare") == 1
    assert text.count("aaaaaaaaaaaa") == 2
    assert text.count("see above") == 1
    page = render_lineage_html(three_steps(), now=NOW)
    assert page.count("prepare</b>") == 1
    assert page.count("see above") == 1


def test_same_bytes_from_another_step_are_not_collapsed() -> None:
    """An identity-like task re-emits its input's bytes: its upstream must stay visible."""
    original = value("raw", "a", "load")
    passed = value("clean", "a", "passthrough", original)
    text = render_lineage_text(passed, now=NOW)
    assert "<- passthrough" in text and "<- load" in text
    assert "see above" not in text


def test_a_cyclic_object_graph_terminates() -> None:
    loop = value("x", "a", "t")
    loop.inputs.append(loop)
    text = render_lineage_text(loop, now=NOW)
    assert text.count("see above") == 1
    render_lineage_html(loop, now=NOW)


def test_depth_cap() -> None:
    node = value("v0", "0" * 64, "")
    for i in range(1, 100):
        node = value(f"v{i}", f"{i:064d}", f"step{i}", node)
    text = render_lineage_text(node, now=NOW)
    assert "… 1 input(s) deeper than 30 levels" in text
    assert "v69 " in text and "v68 " not in text  # 31 values: depths 0..30
    assert "deeper than 30 levels" in render_lineage_html(node, now=NOW)


def test_a_very_deep_chain_does_not_recurse() -> None:
    node = value("v0", "0" * 64, "")
    for i in range(1, 1100):  # deeper than Python's default recursion limit
        node = value(f"v{i}", f"{i:064d}", "step", node)
    text = render_lineage_text(node, now=NOW, max_depth=2000, max_entries=2000)
    assert text.endswith("<- notebook value or workflow parameter")


def test_entry_cap_for_a_wide_map() -> None:
    elements = [value(f"item{i}", f"{i:064d}", "load") for i in range(10_000)]
    root = value("results", "r", "mapped", *elements, python_type="list")
    text = render_lineage_text(root, now=NOW)
    assert len(text.splitlines()) < 700
    assert text.endswith("… more inputs not shown (limit 300 entries)")
    page = render_lineage_html(root, now=NOW)
    assert len(page) < 200_000
    assert "limit 300 entries" in page


def test_html_is_escaped_and_well_formed() -> None:
    evil = "<script>alert(1)</script>"
    root = value(evil, "a", evil, value(evil, "b", "", preview=evil), preview=evil)
    root.python_type = evil
    root.execution_id = evil
    page = render_lineage_html(root, now=NOW)
    assert "<script" not in page
    assert "&lt;script&gt;" in page
    ET.fromstring(page)  # every tag closed, every text escaped


def test_html_shows_the_chain() -> None:
    page = render_lineage_html(three_steps(), now=NOW)
    ET.fromstring(page)
    for fact in (
        "rmse",
        "evaluate",
        "222222222222",
        "execution ex-1",
        "attempt 2",
        "1m 00s ago",
        "notebook value or workflow parameter",
    ):
        assert fact in page
    assert "2" * 13 not in page  # ids shortened to 12 characters


def test_a_plain_notebook_value() -> None:
    root = value("threshold", "t", "", python_type="float", size=24, preview="0.5")
    assert render_lineage_text(root) == "\n".join(
        [
            "threshold = 0.5  (float, 24 B, tttttttttttt)",
            "  <- notebook value or workflow parameter",
        ]
    )


def test_long_preview_is_shortened_to_one_line() -> None:
    root = value("s", "s", "", preview="line\n" * 100)
    first = render_lineage_text(root).splitlines()[0]
    assert len(first) < 140
    assert "…" in first
