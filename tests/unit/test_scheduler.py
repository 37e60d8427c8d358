"""Workflows through the engine API, without a kernel: DAG order, parallelism, maps,
failure policies, recovery, lineage."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from papercrane.backend import owner
from papercrane.backend.config import Config
from papercrane.backend.engine import LocalEngine, WorkflowRequest
from papercrane.backend.errors import UserError, WorkflowFailed
from papercrane.backend.model import (
    Event,
    EventKind,
    ExecutionState,
    Status,
    TaskConfig,
    TaskSpec,
)
from papercrane.backend.workflow import CellTask, MapSpec, assemble, changed_nodes


@pytest.fixture
def engine(tmp_path: Path):
    e = LocalEngine(Config(home=tmp_path / "home"))
    yield e
    e.close()


def cell(name: str, code: str, inputs: tuple[str, ...], outputs: tuple[str, ...], **config: Any):
    m = config.pop("map", None)
    spec = TaskSpec(name=name, code=code, inputs=inputs, outputs=outputs)
    return CellTask(task=spec, config=TaskConfig(**{"executor": "inline", **config}), map=m)


def run(engine: LocalEngine, cells: list[CellTask], params: dict[str, Any], **options: Any):
    spec = assemble("wf", cells)
    refs = {n: engine.put_value(v, n) for n, v in params.items()}
    request = WorkflowRequest(spec=spec, params=refs, param_values=params, **options)
    return engine.run_workflow(request)


def test_diamond_binds_to_nearest_producers(engine: LocalEngine) -> None:
    cells = [
        cell("a", "x = n + 1", ("n",), ("x",)),
        cell("b", "y = x * 2", ("x",), ("y",)),
        cell("c", "z = x * 3", ("x",), ("z",)),
        cell("d", "total = y + z", ("y", "z"), ("total",)),
    ]
    spec = assemble("wf", cells)
    assert spec.parameters() == ["n"]
    assert [(a, b) for a, b, _ in spec.edges()] == [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")]
    result = run(engine, cells, {"n": 1})
    assert result.nodes["d"].values == {"total": 10}
    assert result.execution.status is Status.SUCCEEDED
    assert result.execution.kind == "workflow"


def test_a_name_produced_twice_binds_to_the_nearest_earlier_one(engine: LocalEngine) -> None:
    cells = [
        cell("first", "x = 1", (), ("x",)),
        cell("second", "x = 2", (), ("x",)),
        cell("use", "y = x", ("x",), ("y",)),
    ]
    spec = assemble("wf", cells)
    assert spec.node("use").bindings["x"].node == "second"
    assert spec.shadowed == {"x": ["first", "second"]}


def test_versions_are_content(engine: LocalEngine) -> None:
    base = [cell("a", "x = n + 1", ("n",), ("x",)), cell("b", "y = x", ("x",), ("y",))]
    changed = [base[0], cell("b", "y = x * 2", ("x",), ("y",))]
    assert assemble("wf", base).version() == assemble("wf", list(base)).version()
    assert assemble("wf", base).version() != assemble("wf", changed).version()
    v1 = engine.register_workflow(assemble("wf", base), "default", "development")
    v2 = engine.register_workflow(assemble("wf", base), "default", "development")
    assert v1 == v2
    assert engine.workflow(v1).version() == v1


def test_unchanged_upstream_stays_cached_in_a_new_version(engine: LocalEngine) -> None:
    up = cell("a", "x = n + 1", ("n",), ("x",), cache=True)
    run(engine, [up, cell("b", "y = x", ("x",), ("y",), cache=True)], {"n": 1})
    result = run(engine, [up, cell("b", "y = x * 10", ("x",), ("y",), cache=True)], {"n": 1})
    nodes = result.execution.nodes
    assert nodes["a"].cache == "hit" and nodes["b"].cache == "miss"
    assert result.nodes["b"].values == {"y": 20}


def test_local_branches_run_in_parallel(engine: LocalEngine) -> None:
    sleep = "import time\ntime.sleep(1.0)\n"
    cells = [
        cell("left", sleep + "l = 1", (), ("l",), executor="local"),
        cell("right", sleep + "r = 2", (), ("r",), executor="local"),
        cell("join", "s = l + r", ("l", "r"), ("s",)),
    ]
    result = run(engine, cells, {}, max_parallel=2)
    nodes = result.execution.nodes
    left, right = nodes["left"], nodes["right"]
    assert left.started_at < right.ended_at and right.started_at < left.ended_at  # overlap
    assert result.nodes["join"].values == {"s": 3}


def test_fail_fast_skips_the_rest_and_continue_runs_independent_branches(
    engine: LocalEngine,
) -> None:
    cells = [
        cell("bad", "x = 1 / 0", (), ("x",)),
        cell("after_bad", "y = x", ("x",), ("y",)),
        cell("other", "z = 3", (), ("z",)),
    ]
    with pytest.raises(WorkflowFailed) as fast:
        run(engine, cells, {}, failure_policy="fail-fast")
    state = engine.execution(fast.value.execution_id)
    assert state.nodes["bad"].status is Status.FAILED
    assert state.nodes["after_bad"].status is Status.SKIPPED
    with pytest.raises(WorkflowFailed) as cont:
        run(engine, cells, {}, failure_policy="continue")
    state = engine.execution(cont.value.execution_id)
    assert state.nodes["other"].status is Status.SUCCEEDED
    assert state.nodes["after_bad"].status is Status.SKIPPED
    assert state.status is Status.FAILED
    assert "ZeroDivisionError" in cont.value.failures[0][1]["traceback"]


def test_map_collects_outputs_in_order_with_per_element_cache(engine: LocalEngine) -> None:
    m = MapSpec("items", "item")
    cells = [cell("sq", "out = item * item", ("item",), ("out",), cache=True, map=m)]
    first = run(engine, cells, {"items": [3, 1, 2]})
    assert first.nodes["sq"].values == {"out": [9, 1, 4]}
    assert first.execution.nodes["sq"].elements == 3
    again = run(engine, cells, {"items": [3, 1, 2, 5]})
    nodes = again.execution.nodes
    assert [nodes[f"sq[{i}]"].cache for i in range(4)] == ["hit", "hit", "hit", "miss"]
    assert again.nodes["sq"].values == {"out": [9, 1, 4, 25]}


def test_map_failures_and_min_success_ratio(engine: LocalEngine) -> None:
    code = "out = 10 // item"
    strict = [cell("div", code, ("item",), ("out",), map=MapSpec("items", "item"))]
    with pytest.raises(WorkflowFailed, match="1 of 4 elements failed .allowed: 0.; element 2: "):
        run(engine, strict, {"items": [1, 2, 0, 5]})
    lenient = [cell("div", code, ("item",), ("out",), map=MapSpec("items", "item", 0.75))]
    result = run(engine, lenient, {"items": [1, 2, 0, 5]})
    assert result.nodes["div"].values == {"out": [10, 5, None, 2]}


def test_map_over_a_non_iterable_is_a_clear_error(engine: LocalEngine) -> None:
    cells = [cell("m", "out = item", ("item",), ("out",), map=MapSpec("items", "item"))]
    with pytest.raises(WorkflowFailed, match="'items' is an int, which is not iterable"):
        run(engine, cells, {"items": 5})


def test_ten_thousand_element_map(engine: LocalEngine) -> None:
    cells = [cell("inc", "out = item + 1", ("item",), ("out",), map=MapSpec("items", "item"))]
    result = run(engine, cells, {"items": list(range(10_000))})
    assert result.nodes["inc"].values["out"] == list(range(1, 10_001))
    assert result.execution.nodes["inc"].elements_done == 10_000


def test_recover_reruns_only_what_failed(engine: LocalEngine, tmp_path: Path) -> None:
    flag = tmp_path / "fixed"
    log = tmp_path / "ran.log"
    note = f"with open({str(log)!r}, 'a') as f:\n    f.write(NAME + '\\n')\n"
    cells = [
        cell("a", note.replace("NAME", "'a'") + "x = 1", (), ("x",)),
        cell(
            "b",
            note.replace("NAME", "'b'")
            + f"import os\nassert os.path.exists({str(flag)!r}), 'not yet'\ny = x + 1",
            ("x",),
            ("y",),
        ),
        cell("c", note.replace("NAME", "'c'") + "z = y + 1", ("y",), ("z",)),
    ]
    with pytest.raises(WorkflowFailed) as failed:
        run(engine, cells, {})
    assert log.read_text().split() == ["a", "b"]
    flag.write_text("ok")
    result = engine.recover(failed.value.execution_id)
    assert log.read_text().split() == ["a", "b", "b", "c"]  # a was not run again
    assert result.execution.nodes["a"].status is Status.RECOVERED
    assert result.nodes["c"].values == {"z": 3}
    assert result.execution.recovered_from == failed.value.execution_id
    with pytest.raises(UserError, match="nothing to recover"):
        engine.recover(result.execution.id)


def test_changed_nodes_are_the_edited_ones_and_all_downstream() -> None:
    base = [
        cell("a", "x = n", ("n",), ("x",)),
        cell("b", "y = x + 1", ("x",), ("y",)),
        cell("c", "z = y + 1", ("y",), ("z",)),
        cell("d", "w = n * 2", ("n",), ("w",)),
    ]
    before = assemble("wf", base)
    assert changed_nodes(before, before) == frozenset()
    # A comment is not a change; a retry setting changes no result.
    same = [base[0], cell("b", "y = x + 1  # note", ("x",), ("y",), retries=2), *base[2:]]
    assert changed_nodes(before, assemble("wf", same)) == frozenset()
    edited = [base[0], cell("b", "y = x + 2", ("x",), ("y",)), *base[2:]]
    assert changed_nodes(before, assemble("wf", edited)) == {"b", "c"}
    # c now reads y from a new cell between b and c: c and the new cell run.
    inserted = [*base[:2], cell("b2", "y = 0", (), ("y",)), *base[2:]]
    assert changed_nodes(before, assemble("wf", inserted)) == {"b2", "c"}
    mapped = [base[0], cell("b", "y = x + 1", ("x",), ("y",), map=MapSpec("x", "v")), *base[2:]]
    assert changed_nodes(before, assemble("wf", mapped)) == {"b", "c"}


def test_lineage_of_a_three_step_chain(engine: LocalEngine) -> None:
    cells = [
        cell("load", "raw = [n, n + 1]", ("n",), ("raw",)),
        cell("clean", "good = [v * 2 for v in raw]", ("raw",), ("good",)),
        cell("total", "answer = sum(good)", ("good",), ("answer",)),
    ]
    result = run(engine, cells, {"n": 1})
    tree = engine.lineage(result.nodes["total"].outputs["answer"].id)
    chain = []
    while tree.get("producer"):
        chain.append(tree["producer"]["task_name"])
        tree = tree["inputs"][0]
    assert chain == ["total", "clean", "load"]
    assert tree["name"] == "n" and tree["producer"] is None  # a parameter ends the chain


def test_lineage_of_a_cached_map_reaches_the_task_that_made_its_input(
    engine: LocalEngine,
) -> None:
    """A map collects its list again on a cache hit, recording where its input came
    from: the upstream node of that execution, itself a hit that ran nothing there. The
    chain goes on to the execution the hit came from (it ended at the map's input, shown
    as a notebook value)."""
    cells = [
        cell("load", "xs = list(range(n))", ("n",), ("xs",), cache=True),
        cell("sq", "y = x * x", ("x",), ("y",), cache=True, map=MapSpec("xs", "x")),
    ]
    first = run(engine, cells, {"n": 3})
    again = run(engine, cells, {"n": 3})
    assert again.execution.nodes["load"].cache == "hit"
    y = again.nodes["sq"].outputs["y"].id
    for via in (None, {"execution": again.execution.id, "node": "sq"}):
        tree = engine.lineage(y, via=via)
        (xs,) = tree["inputs"]
        assert xs["name"] == "xs"
        assert xs["producer"] is not None, via
        assert (xs["producer"]["task_name"], xs["producer"]["execution_id"]) == (
            "load",
            first.execution.id,
        )
        assert [i["name"] for i in xs["inputs"]] == ["n"]


def test_a_long_task_after_a_quick_one_is_recorded_running_while_it_runs(
    engine: LocalEngine, tmp_path: Path
) -> None:
    """The start of a unit run on the scheduler's thread just after a flush was held back
    until its end: ``executions show`` had the second task queued, with no attempt and
    no logs, for as long as it ran (and a kill then left it so)."""
    import threading
    import time

    flag = tmp_path / "go"
    wait = f"import time\nwhile not os.path.exists({str(flag)!r}): time.sleep(0.02)\n"
    cells = [
        cell("quick", "x = 1", (), ("x",)),
        cell("slow", f"import os\n{wait}print('slow ran')\ny = x + 1", ("x",), ("y",)),
    ]
    done: list[Any] = []
    runner = threading.Thread(target=lambda: done.append(run(engine, cells, {})))
    runner.start()
    try:
        seen = None
        reader = LocalEngine(engine.config)  # another reader of its store (SQLite or not)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            rows = reader.list_executions()
            if rows:
                seen = reader.execution(rows[0]["id"]).nodes.get("slow")
                if seen is not None and seen.attempt:
                    break
            time.sleep(0.05)
        reader.close()
        assert seen is not None and (seen.status, seen.attempt) == (Status.RUNNING, 1), seen
    finally:
        flag.write_text("go")
        runner.join(10)
    assert done and done[0].execution.status is Status.SUCCEEDED


def test_missing_parameter_names_it(engine: LocalEngine) -> None:
    cells = [cell("a", "x = n + m", ("n", "m"), ("x",))]
    spec = assemble("wf", cells)
    with pytest.raises(UserError, match="no value for parameter\\(s\\) m"):
        engine.run_workflow(WorkflowRequest(spec=spec, params={"n": engine.put_value(1, "n")}))


def test_duplicate_task_names_with_different_code() -> None:
    with pytest.raises(UserError, match="two cells define task 'a' with different code"):
        assemble("wf", [cell("a", "x = 1", (), ("x",)), cell("a", "x = 2", (), ("x",))])


def test_batched_events_are_committed_in_few_transactions(
    engine: LocalEngine, monkeypatch: Any
) -> None:
    """A map's events are written in batches (a flush per scheduling round and one at
    the end), not a transaction per event or per element."""
    commits = []
    transaction = engine.store.transaction

    @contextlib.contextmanager
    def counted() -> Any:
        with transaction() as conn:
            yield conn
        commits.append(1)

    monkeypatch.setattr(engine.store, "transaction", counted)
    cells = [cell("inc", "out = item + 1", ("item",), ("out",), map=MapSpec("items", "item"))]
    result = run(engine, cells, {"items": list(range(300))})
    events = engine.events(result.execution.id)
    assert sum(e.kind is EventKind.ATTEMPT_SUCCEEDED for e in events) == 301
    assert len(events) > 600
    # A round is 50 ms: even a machine 20 times slower than a laptop (~1.5 s for this
    # map) stays far below one transaction per element.
    assert 1 <= len(commits) <= 40


def test_a_server_never_unpickles_values(engine: LocalEngine, monkeypatch: Any) -> None:
    """With ``unpickles`` off (a shared server), map steps run in runner processes and
    no value is decoded in the scheduler's process."""
    from papercrane.backend import serializers

    engine.unpickles = False
    m = MapSpec("items", "item")
    cells = [
        cell("sq", "out = (item[0] * item[0],)", ("item",), ("out",), executor="local", map=m),
        cell("total", "answer = sum(o[0] for o in out)", ("out",), ("answer",), executor="local"),
    ]
    spec = assemble("wf", cells)
    items = [(1,), (2,), (3,)]  # tuples: pickled, not JSON
    refs = {"items": engine.put_value(items, "items")}

    def refuse(self: Any, stream: Any) -> Any:
        raise AssertionError("the scheduler's process unpickled a value")

    monkeypatch.setattr(serializers.CloudpickleSerializer, "load", refuse)
    result = engine.run_workflow(
        WorkflowRequest(spec=spec, params=refs, want_values=False, max_parallel=2)
    )
    monkeypatch.undo()
    assert engine.load(result.nodes["sq"].outputs["out"]) == [(1,), (4,), (9,)]
    assert engine.load(result.nodes["total"].outputs["answer"]) == 14
    assert result.execution.nodes["sq"].elements_done == 3


def test_the_records_of_a_cached_map_are_exactly_these(engine: LocalEngine) -> None:
    """Everything a map of misses records, field by field: its events and their
    payloads, each element's artifacts, lineage row and cache entry, the collected
    list's. The scheduler keeps these rows in compact forms until its flush (events as
    columns, JSON encoded early); what lands in the store must not change."""
    m = MapSpec("xs", "x")
    cells = [cell("m", "y = x + w", ("x", "w"), ("y",), cache=True, map=m)]
    spec = assemble("wf", cells)
    task = spec.nodes[0].task
    xs, w = [3, 1, 3], 10
    params = {"xs": engine.put_value(xs, "xs"), "w": engine.put_value(w, "w")}
    request = WorkflowRequest(spec=spec, params=params, param_values={"xs": xs, "w": w})
    result = engine.run_workflow(request)
    eid = result.execution.id
    assert result.nodes["m"].values == {"y": [13, 11, 13]}

    def stored(value: Any) -> dict[str, Any]:
        ref = engine.artifacts.put(value, "expected")
        found = engine.artifact(ref.id).to_dict()
        assert {k: v for k, v in found.items() if k != "uri"} == {
            k: v for k, v in ref.to_dict().items() if k != "uri"
        }
        return found

    elements = [stored(x) for x in xs]
    outs = [stored(x + w) for x in xs]
    keys = [
        engine.cache_key(task, "", {"w": params["w"], "x": engine.artifact(e["id"])})
        for e in elements
    ]
    collected = engine.artifact(result.nodes["m"].outputs["y"].id).to_dict()
    assert engine.artifacts.load(engine.artifact(collected["id"])) == [13, 11, 13]

    events = [(e.kind.value, e.node, e.attempt, e.payload) for e in engine.events(eid)]
    ends = [p for k, n, _, p in events if k == "attempt_succeeded" and "[" in n]
    durations = [p.pop("duration") for p in ends]
    assert len(durations) == 3 and all(isinstance(d, float) and d >= 0 for d in durations)
    config = {"max_parallel": 4, "failure_policy": "fail-fast"}
    assert events == [
        ("execution_created", "", 0, {
            "kind": "workflow", "project": "default", "domain": "development", "name": "wf",
            "inputs": {"xs": params["xs"].id, "w": params["w"].id},
            "workflow_version": spec.version(), "config": config,
            # (the process that runs it, this one, and the folder its attempts run in)
            "runner": {**owner.this_process(), "cwd": os.getcwd()},
        }),
        ("node_queued", "m", 0, {"cache": True, "map": True}),
        ("map_expanded", "m", 0, {"elements": 3}),
        *[
            event
            for i in range(3)
            for event in (
                ("attempt_started", f"m[{i}]", 1, {"executor": "inline", "cache_key": keys[i]}),
                ("attempt_succeeded", f"m[{i}]", 1, {
                    "outputs": {"y": outs[i]["id"]}, "references": {}, "display": None,
                }),
            )
        ],
        ("attempt_succeeded", "m", 0, {
            "outputs": {"y": collected["id"]}, "references": {}, "map_over": "xs",
        }),
        ("node_succeeded", "m", 0, {}),
        ("execution_succeeded", "", 0, {}),
    ]  # fmt: skip

    for i in range(3):
        entry = engine.store.cache_get(keys[i], "default", "development")
        assert entry is not None
        entry.pop("created_at")
        assert entry == {
            "key": keys[i], "project": "default", "domain": "development",
            "task_name": "m", "task_version": task.version(),
            "outputs": {"y": engine.artifact(outs[i]["id"]).to_dict()},
            "references": {}, "display": None, "execution_id": eid,
        }  # fmt: skip
    lineage = {}
    for ref in {o["id"] for o in outs} | {collected["id"]}:
        for row in engine.store.producers(ref):
            lineage[row["node"]] = {k: v for k, v in row.items() if k not in ("id", "created_at")}
    base = {"name": "y", "execution_id": eid, "task_name": "m", "task_version": task.version()}
    assert lineage == {
        **{
            f"m[{i}]": {
                **base, "artifact_id": outs[i]["id"], "node": f"m[{i}]", "attempt": 1,
                "inputs": {"w": {"id": params["w"].id}, "x": {"id": elements[i]["id"]}},
            }
            for i in range(3)
        },
        "m": {
            **base, "artifact_id": collected["id"], "node": "m", "attempt": 0,
            "inputs": {"xs": {"id": params["xs"].id}, "w": {"id": params["w"].id}},
        },
    }  # fmt: skip


class _EachEvent:
    """A listener with ``on_event`` alone: it must hear every committed event."""

    def __init__(self) -> None:
        self.heard: list[Event] = []
        self.states: list[Status] = []

    def on_event(self, event: Event, state: ExecutionState) -> None:
        self.heard.append(event)
        self.states.append(state.status)

    def on_log(self, stream: str, text: str) -> None:
        pass


class _Batches(_EachEvent):
    """A listener that takes committed batches (``on_events``)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches = 0

    def on_events(self, events: Iterable[Event], state: ExecutionState) -> None:
        self.batches += 1
        for event in events:
            self.on_event(event, state)


@pytest.mark.parametrize("listener", [_EachEvent, _Batches])
def test_listeners_hear_every_event_as_stored_in_order(
    engine: LocalEngine, listener: Any, tmp_path: Path
) -> None:
    """A map's events reach a listener after their commit, with their sequence numbers,
    whether it takes them one by one or by batch: the same events, in the store's order
    (a failed and retried element, log lines and the execution's end included)."""
    failed_once = tmp_path / "failed-once"
    code = (
        f"import pathlib\nprint(x)\nmark = pathlib.Path({str(failed_once)!r})\n"
        "if x == 2 and not mark.exists():\n    mark.touch()\n    raise ValueError(x)\ny = x"
    )
    cells = [cell("m", code, ("x",), ("y",), cache=True, retries=1, map=MapSpec("xs", "x"))]
    heard = listener()
    xs = list(range(5))
    request = WorkflowRequest(
        spec=assemble("wf", cells),
        params={"xs": engine.put_value(xs, "xs")},
        param_values={"xs": xs},
    )
    result = engine.run_workflow(request, listener=heard)
    assert result.nodes["m"].values == {"y": xs}
    stored = engine.events(result.execution.id)
    assert [e.to_dict() for e in heard.heard] == [e.to_dict() for e in stored]
    kinds = {e.kind for e in stored}
    assert {EventKind.ATTEMPT_FAILED, EventKind.RETRY_SCHEDULED, EventKind.LOG_STORED} <= kinds
    assert heard.states[-1] is Status.SUCCEEDED
    if isinstance(heard, _Batches):
        assert 1 <= heard.batches < len(stored)


class _Logs(_EachEvent):
    """A listener that keeps what the run printed, as the notebook shows it."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []

    def on_log(self, stream: str, text: str) -> None:
        self.text.append(text)


def test_parallel_output_comes_in_whole_lines_each_prefixed_once(engine: LocalEngine) -> None:
    """``print(a, b)`` writes its arguments and separators one by one: each line still
    gets one prefix, elements running side by side don't cut into each other's lines,
    and a line the cell left unfinished comes out when its attempt ends. (Inline
    elements run one after another and print straight through, unprefixed.)"""
    code = 'print("each ran", x, "of", 4)\nprint("left open", x, end="")\ny = x'
    m = MapSpec("xs", "x", concurrency=2)
    cells = [cell("m", code, ("x",), ("y",), executor="local", map=m)]
    heard = _Logs()
    xs = list(range(4))
    request = WorkflowRequest(
        spec=assemble("wf", cells),
        params={"xs": engine.put_value(xs, "xs")},
        param_values={"xs": xs},
    )
    assert engine.run_workflow(request, listener=heard).nodes["m"].values == {"y": xs}
    lines = "".join(heard.text).splitlines()
    expected = [f"[m[{i}]] each ran {i} of 4" for i in xs]
    expected += [f"[m[{i}]] left open {i}" for i in xs]
    assert sorted(lines) == sorted(expected)


@pytest.mark.parametrize("where", ["here", "runner"])
def test_a_map_with_no_element_to_show_still_gives_every_output_its_list(
    engine: LocalEngine, where: str
) -> None:
    """An empty list gives empty lists, a map whose every element failed (allowed)
    lists of None: the outputs are bound and feed downstream nodes, whether the lists
    are built here or (a server: ``unpickles`` off) by a runner. A name the cell binds
    by ``import`` is a module, never a list."""
    executor = "inline"
    if where == "runner":
        engine.unpickles = False
        executor = "local"
    code = "import math\nout = math.sqrt(10 / item)"
    m = MapSpec("items", "item", 0.0)
    cells = [
        cell("sq", code, ("item",), ("math", "out"), executor=executor, map=m),
        cell("total", "n = len(out)", ("out",), ("n",), executor=executor),
    ]
    for items, expected in (([], []), ([0, 0], [None, None])):
        spec = assemble("wf", cells)
        refs = {"items": engine.put_value(items, "items")}
        result = engine.run_workflow(
            WorkflowRequest(spec=spec, params=refs, want_values=False, max_parallel=2)
        )
        sq = result.nodes["sq"]
        assert set(sq.outputs) == {"out"}
        assert engine.load(sq.outputs["out"]) == expected
        assert engine.load(result.nodes["total"].outputs["n"]) == len(items)
        assert result.execution.nodes["sq"].outputs == {"out": sq.outputs["out"].id}
