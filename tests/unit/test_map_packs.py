"""A map's small values are packed (``backend/packs.py``): what the records say and what
every reader gets must not change. Engine API, real SQLite, real files."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from papercrane.backend import packs
from papercrane.backend.config import Config
from papercrane.backend.engine import LocalEngine, WorkflowRequest
from papercrane.backend.model import TaskConfig, TaskSpec
from papercrane.backend.workflow import CellTask, MapSpec, assemble

ITEMS = [3, 1, 2, 5]


def _map(cache: bool = True) -> list[CellTask]:
    spec = TaskSpec(name="sq", code="out = item * item", inputs=("item",), outputs=("out",))
    config = TaskConfig(executor="inline", cache=cache)
    return [CellTask(task=spec, config=config, map=MapSpec("items", "item"))]


def _run(home: Path, items: list[Any], cells: list[CellTask] | None = None) -> Any:
    engine = LocalEngine(Config(home=home))
    try:
        spec = assemble("wf", cells or _map())
        request = WorkflowRequest(
            spec=spec,
            params={"items": engine.put_value(items, "items")},
            param_values={"items": items},
        )
        return engine.run_workflow(request)
    finally:
        engine.close()


def _uris(home: Path) -> dict[str, str]:
    with closing(sqlite3.connect(home / "papercrane.db")) as db:
        return dict(db.execute("SELECT preview, uri FROM artifacts"))


def _kinds(home: Path, execution_id: str) -> list[str]:
    with closing(sqlite3.connect(home / "papercrane.db")) as db:
        rows = db.execute(
            "SELECT node, kind FROM events WHERE execution_id = ? ORDER BY seq", (execution_id,)
        )
        return [f"{node}:{kind}" for node, kind in rows]


def test_a_maps_values_are_packed_and_read_back_by_a_new_engine(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = _run(home, ITEMS)
    assert first.nodes["sq"].values == {"out": [9, 1, 4, 25]}
    uris = _uris(home)
    # The elements (inputs) and the squares (outputs) live in packs, not a file each.
    assert all(uris[repr(v)].startswith(packs.PREFIX) for v in (3, 1, 2, 5, 9, 4, 25))
    assert uris[repr(ITEMS)].startswith("artifacts/")  # the parameter: stored before the run
    stored = list((home / "store" / "artifacts").rglob("*"))
    assert len([p for p in stored if p.is_file()]) == 1
    # Another engine (another process would do the same) hits every element's entry,
    # loading each packed output with its hash checked.
    again = _run(home, ITEMS)
    assert again.nodes["sq"].values == {"out": [9, 1, 4, 25]}
    kinds = _kinds(home, again.execution.id)
    assert kinds.count("sq[0]:cache_hit") == 1
    assert sum(k.endswith(":cache_hit") for k in kinds) == 5  # 4 elements, the node
    assert not any(k.endswith(":attempt_started") for k in kinds)


def test_lineage_of_a_packed_output(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = _run(home, ITEMS)
    engine = LocalEngine(Config(home=home))
    try:
        element_out = result.execution.nodes["sq[1]"].outputs["out"]
        tree = engine.lineage(element_out)
        assert tree["producer"]["node"] == "sq[1]"
        (item,) = tree["inputs"]
        assert item["name"] == "item" and engine.load(engine.artifact(item["artifact"]["id"])) == 1
        collected = engine.lineage(result.nodes["sq"].outputs["out"].id)
        assert collected["producer"]["node"] == "sq"
    finally:
        engine.close()


def _damage(home: Path, uri: str) -> None:
    pack_key, offset, size = packs.parse(uri)  # type: ignore[misc]
    path = home / "store" / pack_key
    blob = bytearray(path.read_bytes())
    blob[offset] ^= 0x01  # same size: only the member's hash check can see it
    path.write_bytes(bytes(blob))


@pytest.mark.parametrize("damage", ["corrupt", "delete"])
def test_a_damaged_packed_output_is_never_served_from_cache(tmp_path: Path, damage: str) -> None:
    home = tmp_path / "home"
    _run(home, ITEMS)
    uri = _uris(home)["25"]  # element 3's output
    if damage == "corrupt":
        _damage(home, uri)
    else:
        (home / "store" / packs.parse(uri)[0]).unlink()  # type: ignore[index]
    again = _run(home, ITEMS)
    assert again.nodes["sq"].values == {"out": [9, 1, 4, 25]}
    nodes = again.execution.nodes
    assert nodes["sq[3]"].cache == "invalid"
    kinds = _kinds(home, again.execution.id)
    assert "sq[3]:cache_invalid" in kinds and "sq[3]:attempt_succeeded" in kinds
    # The entry was replaced by a good one: the next run hits every element.
    third = _run(home, ITEMS)
    assert [third.execution.nodes[f"sq[{i}]"].cache for i in range(4)] == ["hit"] * 4


def test_a_map_feeding_a_task_in_another_process(tmp_path: Path) -> None:
    """The collected list is packed; the ``local`` executor's process reads it."""
    total = TaskSpec(name="total", code="s = sum(out)", inputs=("out",), outputs=("s",))
    cells = [*_map(cache=False), CellTask(task=total, config=TaskConfig(executor="local"))]
    result = _run(tmp_path / "home", ITEMS, cells)
    assert result.nodes["sq"].outputs["out"].uri.startswith(packs.PREFIX)
    assert result.nodes["total"].values == {"s": 39}
    assert result.execution.nodes["total"].attempt == 1


def test_a_local_map_reads_its_packed_elements_in_its_processes(tmp_path: Path) -> None:
    spec = TaskSpec(name="sq", code="out = item * item", inputs=("item",), outputs=("out",))
    cells = [CellTask(task=spec, config=TaskConfig(executor="local"), map=MapSpec("items", "item"))]
    result = _run(tmp_path / "home", [4, 6], cells)
    assert result.nodes["sq"].values == {"out": [16, 36]}
    assert _uris(tmp_path / "home")["4"].startswith(packs.PREFIX)
    assert result.execution.nodes["sq[1]"].status.value == "succeeded"


def test_the_event_kinds_of_a_packed_map_are_those_of_any_map(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = _run(home, [7])
    assert _kinds(home, result.execution.id) == [
        ":execution_created",
        "sq:node_queued",
        "sq:map_expanded",
        "sq[0]:attempt_started",
        "sq[0]:attempt_succeeded",
        "sq:attempt_succeeded",
        "sq:node_succeeded",
        ":execution_succeeded",
    ]


def test_element_cache_keys_are_the_cache_keys_of_each_element(tmp_path: Path) -> None:
    from papercrane.backend.engine import cache_key, element_cache_keys

    engine = LocalEngine(Config(home=tmp_path / "home"))
    try:
        spec = TaskSpec(name="f", code="y = x + k", inputs=("x", "k"), outputs=("y",))
        shared = {"k": engine.put_value(2, "k"), "x": engine.put_value([1, "é"], "list")}
        elements = [engine.put_value(v, "element") for v in (1, "é\\u0000", None, [2])]
        keys = element_cache_keys(spec, "v2", shared, "x", elements)
        assert keys == [cache_key(spec, "v2", {**shared, "x": e}) for e in elements]
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("executor", "packs_values"), [("inline", True), ("local", True), ("kubernetes", False)]
)
def test_maps_pack_only_where_every_attempt_runs_this_papercrane(
    tmp_path: Path, executor: str, packs_values: bool
) -> None:
    """A pod's image may hold another papercrane, which could not read a pack."""
    spec = TaskSpec(name="sq", code="out = item * item", inputs=("item",), outputs=("out",))
    cells = [CellTask(spec, TaskConfig(executor=executor), map=MapSpec("items", "item"))]
    engine = LocalEngine(Config(home=tmp_path / "home"))
    try:
        request = WorkflowRequest(
            spec=assemble("wf", cells), params={"items": engine.put_value([1], "items")}
        )
        assert engine.workflow_run(request).packing is packs_values
    finally:
        engine.close()
