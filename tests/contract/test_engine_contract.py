"""One contract, three engines: the embedded engine on SQLite, and the HTTP client
against a real ``papercrane server`` process on SQLite and on PostgreSQL.

Everything here uses the ``local`` executor (a subprocess per attempt), which both the
embedded engine and the server run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from papercrane.backend.api import RunRequest
from papercrane.backend.config import Config
from papercrane.backend.engine import LocalEngine, WorkflowRequest
from papercrane.backend.errors import NotFound, TaskFailed, UserError, WorkflowFailed
from papercrane.backend.model import EventKind, Status, TaskConfig, TaskSpec
from papercrane.backend.workflow import CellTask, MapSpec, assemble

from ..server_fixture import ServerProcess

PROJECT = "contract"


@pytest.fixture(scope="module", params=["embedded", "server-sqlite", "server-postgres"])
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    home = tmp_path_factory.mktemp(request.param)
    if request.param == "embedded":
        e = LocalEngine(Config(home=home, project=PROJECT))
        yield e
        e.close()
        return
    db_url = ""
    databases = None
    if request.param == "server-postgres":
        databases = request.getfixturevalue("pg_databases")
        db_url = databases.create()
    from papercrane.backend.client import RemoteEngine

    server = ServerProcess(home, db_url).start()
    client = RemoteEngine(server.url, server.token(PROJECT), PROJECT)
    try:
        yield client
    finally:
        client.close()
        server.stop()
        if databases is not None:
            databases.drop(db_url)


def task(name: str, code: str, inputs: tuple[str, ...] = (), outputs: tuple[str, ...] = ("y",)):
    return TaskSpec(name=name, code=code, inputs=inputs, outputs=outputs)


def run(engine: Any, spec: TaskSpec, values: dict[str, Any], **config: Any):
    refs = {n: engine.put_value(v, f"input {n!r}") for n, v in values.items()}
    return engine.run_task(
        RunRequest(
            spec=spec,
            config=TaskConfig(executor="local", **config),
            inputs=refs,
            values=values,
            project=PROJECT,
        )
    )


def test_values_round_trip(engine: Any) -> None:
    import numpy as np

    for value in ({"a": [1, 2]}, (1, "two", 3.0), np.arange(12).reshape(3, 4), "text", b"\x00b"):
        ref = engine.put_value(value, "a value")
        back = engine.load(engine.artifact(ref.id))
        if isinstance(value, np.ndarray):
            assert (back == value).all() and back.dtype == value.dtype
        else:
            assert back == value
        assert engine.find_artifact(ref.id) == ref
    assert engine.find_artifact("0" * 64) is None
    with pytest.raises(NotFound):
        engine.artifact("0" * 64)


def test_run_a_task_and_read_its_record(engine: Any) -> None:
    result = run(engine, task("double", "print('hello')\ny = x * 2", ("x",)), {"x": 21})
    assert result.values == {"y": 42}
    state = engine.execution(result.execution.id)
    assert state.status is Status.SUCCEEDED
    kinds = [e.kind for e in engine.events(state.id)]
    assert kinds[0] is EventKind.EXECUTION_CREATED and kinds[-1] is EventKind.EXECUTION_SUCCEEDED
    assert engine.logs(state.id, "double", 1) == "hello\n"
    assert state.id in [r["id"] for r in engine.list_executions(limit=100)]


def test_an_execution_is_found_by_the_start_of_its_id(engine: Any) -> None:
    state = run(engine, task("prefixed", "y = 1"), {}).execution
    assert engine.execution(state.id[:8]).id == state.id
    assert engine.execution(state.id[:8].upper()).id == state.id
    for given in (state.id[:3], "zzzz", "0000ffff0000ffff"):
        with pytest.raises(NotFound, match="give its id or at least 4 of its first"):
            engine.execution(given)


def test_cache_hits_the_second_time(engine: Any) -> None:
    spec = task("cached", "y = x + 1", ("x",))
    first = run(engine, spec, {"x": 1}, cache=True)
    second = run(engine, spec, {"x": 1}, cache=True)
    assert second.execution.status is Status.CACHED and second.values == {"y": 2}
    node = second.execution.nodes["cached"]
    assert node.cache_source["execution_id"] == first.execution.id


def test_the_cache_lists_newest_first_up_to_a_limit(engine: Any) -> None:
    spec = task("listed", "y = x * 7", ("x",))  # (a code no other test caches)
    made = [run(engine, spec, {"x": x}, cache=True).execution.id for x in (1, 2, 3)]
    entries = engine.cache_list(task_name="listed")
    assert [e["execution_id"] for e in entries] == made[::-1]
    assert [e["execution_id"] for e in engine.cache_list(task_name="listed", limit=2)] == (
        made[:0:-1]
    )


def test_the_cache_is_listed_and_cleared_per_project_and_domain(engine: Any) -> None:
    spec = task("scoped", "y = x + 1", ("x",))
    run(engine, spec, {"x": 5}, cache=True)
    here = {"project": PROJECT, "domain": "development"}
    (entry,) = engine.cache_list(task_name="scoped", **here)
    assert (entry["project"], entry["domain"]) == (PROJECT, "development")
    assert engine.cache_list(task_name="scoped", project=PROJECT, domain="staging") == []
    assert engine.cache_clear(task_name="scoped", project=PROJECT, domain="staging") == 0
    assert len(engine.cache_list(task_name="scoped", **here)) == 1
    assert engine.cache_clear(task_name="scoped", **here) == 1
    assert engine.cache_list(task_name="scoped", **here) == []


def test_failure_keeps_the_users_traceback(engine: Any) -> None:
    with pytest.raises(TaskFailed) as info:
        run(engine, task("broken", "a = 1\ny = a / x", ("x",)), {"x": 0}, retries=1)
    assert (
        "ZeroDivisionError" in info.value.traceback_text and "line 3" in info.value.traceback_text
    )
    state = engine.execution(info.value.execution_id)
    assert state.status is Status.FAILED and state.nodes["broken"].attempt == 2


def test_a_failure_keeps_what_its_last_attempt_displayed(engine: Any) -> None:
    """What a task in a process of its own displayed before it failed reaches the
    caller with the failure (the notebook shows it above the traceback): the last
    attempt's, locally and from a server, and the execution's node keeps it."""
    code = "display(f'checked {x} rows')\ny = 1 / (x - x)"
    with pytest.raises(TaskFailed) as info:
        run(engine, task("shows", code, ("x",)), {"x": 17}, retries=1)
    shown = info.value.display
    assert [b["data"]["text/plain"] for b in shown["displayed"]] == ["'checked 17 rows'"]
    state = engine.execution(info.value.execution_id)
    assert state.nodes["shows"].display == shown and state.nodes["shows"].attempt == 2


def test_a_failed_map_keeps_what_its_elements_displayed(engine: Any) -> None:
    """A map whose element fails shows what each element displayed, the failed one's
    included, in element order, as an inline map shows it while running."""
    items = [4, 2, 0]
    refs = {"items": engine.put_value(items, "input 'items'")}
    code = "display(f'element {item}')\ny = 8 // item"
    with pytest.raises(TaskFailed) as info:
        engine.run_task(
            RunRequest(
                spec=task("quot", code, ("items",)),
                config=TaskConfig(executor="local"),
                inputs=refs,
                values={"items": items},
                project=PROJECT,
                map=MapSpec("items", "item", concurrency=1),
            )
        )
    shown = [b["data"]["text/plain"] for b in info.value.display["displayed"]]
    assert shown == ["'element 4'", "'element 2'", "'element 0'"]
    assert engine.execution(info.value.execution_id).nodes["quot"].display == info.value.display


def test_workflow_with_a_map(engine: Any) -> None:
    cells = [
        CellTask(
            task("sq", "out = (item[0] ** 2,)", ("item",), ("out",)),
            TaskConfig(executor="local"),
            map=MapSpec("items", "item"),
        ),
        CellTask(
            task("total", "answer = sum(o[0] for o in out)", ("out",), ("answer",)),
            TaskConfig(executor="local"),
        ),
    ]
    spec = assemble("contract-map", cells)
    items = [(1,), (2,), (3,)]
    request = WorkflowRequest(
        spec=spec,
        params={"items": engine.put_value(items, "items")},
        param_values=None,
        project=PROJECT,
        max_parallel=2,
    )
    result = engine.run_workflow(request)
    assert result.nodes["total"].values == {"answer": 14}
    assert result.nodes["sq"].values == {"out": [(1,), (4,), (9,)]}
    tree = engine.lineage(result.nodes["total"].outputs["answer"].id)
    assert tree["producer"]["task_name"] == "total"
    assert tree["inputs"][0]["producer"]["task_name"] == "sq"


def test_recover_runs_only_what_failed(engine: Any, tmp_path: Path) -> None:
    log, flag = tmp_path / "ran.log", tmp_path / "flag"
    note = "with open({!r}, 'a') as f:\n    f.write('{}\\n')\n"
    cells = [
        CellTask(
            task("a", note.format(str(log), "a") + "x = 1", (), ("x",)),
            TaskConfig(executor="local"),
        ),
        CellTask(
            task(
                "b",
                note.format(str(log), "b")
                + f"import os\nassert os.path.exists({str(flag)!r})\ny = x + 1",
                ("x",),
            ),
            TaskConfig(executor="local"),
        ),
    ]
    request = WorkflowRequest(spec=assemble("contract-recover", cells), params={}, project=PROJECT)
    with pytest.raises(WorkflowFailed) as failed:
        engine.run_workflow(request)
    flag.write_text("ok")
    result = engine.recover(failed.value.execution_id)
    assert log.read_text().split() == ["a", "b", "b"]
    assert result.nodes["b"].values == {"y": 2}
    with pytest.raises(UserError, match="nothing to recover"):
        engine.recover(result.execution.id)


def test_recover_onto_the_edited_workflow_runs_what_changed(engine: Any, tmp_path: Path) -> None:
    """A notebook's "fix the cell, then recover": the workflow as it is now, with the
    failed execution's parameters; what succeeded and did not change is reused."""
    log = tmp_path / "ran.log"
    note = "with open({!r}, 'a') as f:\n    f.write('{}\\n')\n".format(str(log), "{}")
    local = TaskConfig(executor="local")

    def workflow(b_code: str, b_inputs: tuple[str, ...] = ("x",)):
        cells = [
            CellTask(task("a", note.format("a") + "x = n + 1", ("n",), ("x",)), local),
            CellTask(task("b", note.format("b") + b_code, b_inputs), local),
            CellTask(task("c", note.format("c") + "z = y * 2", ("y",), ("z",)), local),
        ]
        return assemble("contract-edited", cells)

    n = engine.put_value(3, "parameter 'n'")
    request = WorkflowRequest(spec=workflow("y = x // 0"), params={"n": n}, project=PROJECT)
    with pytest.raises(WorkflowFailed) as failed:
        engine.run_workflow(request)
    assert log.read_text().split() == ["a", "b"]
    # What finished well comes with the failure, for a notebook to bind.
    assert set(failed.value.result.nodes) == {"a"}
    assert failed.value.result.nodes["a"].values == {"x": 4}
    fixed = workflow("y = x // 2")
    result = engine.recover(failed.value.execution_id, workflow=fixed)
    assert log.read_text().split() == ["a", "b", "b", "c"]  # a reused, b's new code, then c
    assert result.nodes["c"].values == {"z": 4}
    assert result.nodes["a"].status is Status.RECOVERED
    assert result.execution.workflow_version == fixed.version()
    assert result.execution.recovered_from == failed.value.execution_id
    with pytest.raises(UserError, match="parameter.*m.*%workflow run"):
        engine.recover(failed.value.execution_id, workflow=workflow("y = x // 2 + m", ("x", "m")))


def test_lineage_of_an_artifact_two_tasks_made_follows_the_one_asked_for(engine: Any) -> None:
    first = run(engine, task("twelve_a", "y = n + 7", ("n",)), {"n": 5})
    second = run(engine, task("twelve_b", "y = m + 5", ("m",)), {"m": 7})
    artifact = first.outputs["y"].id
    assert second.outputs["y"].id == artifact  # equal values: one artifact
    latest = engine.lineage(artifact)["producer"]
    assert latest["task_name"] == "twelve_b"
    via = {"execution": first.execution.id, "node": "twelve_a"}
    assert engine.lineage(artifact, via=via)["producer"]["task_name"] == "twelve_a"
