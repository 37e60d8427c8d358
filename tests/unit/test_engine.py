"""The engine API without a kernel: registration, events, projections, the store."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from papercrane.backend.api import RunRequest
from papercrane.backend.config import Config
from papercrane.backend.engine import LocalEngine
from papercrane.backend.errors import ConfigError, ExecutionAborted, NotFound, TaskFailed
from papercrane.backend.model import (
    Event,
    EventColumns,
    EventKind,
    ExecutionState,
    Status,
    TaskConfig,
    TaskSpec,
)
from papercrane.backend.projection import replay
from papercrane.backend.store import db as store_db
from papercrane.backend.workflow import MapSpec


@pytest.fixture
def engine(tmp_path: Path):
    e = LocalEngine(Config(home=tmp_path))
    yield e
    e.close()


def spec(code: str, inputs=(), outputs=("y",), name="t") -> TaskSpec:
    return TaskSpec(name=name, code=code, inputs=tuple(inputs), outputs=tuple(outputs))


def run(engine: LocalEngine, code: str, values: dict, **config):
    s = spec(code, inputs=values, outputs=config.pop("outputs", ("y",)))
    refs = {n: engine.put_value(v, f"input {n!r}") for n, v in values.items()}
    cfg = TaskConfig(executor="inline", **config)
    return engine.run_task(RunRequest(spec=s, config=cfg, inputs=refs, values=values))


def test_register_is_idempotent_and_versions_are_content(engine: LocalEngine) -> None:
    a = engine.register_task(spec("y = 1"), "default", "development")
    b = engine.register_task(spec("y = 1  # same"), "default", "development")
    c = engine.register_task(spec("y = 2"), "default", "development")
    assert a == b != c
    assert engine.store.task(a)["name"] == "t"


def test_run_records_events_and_outputs(engine: LocalEngine) -> None:
    result = run(engine, "y = x + 1", {"x": 41})
    assert result.values == {"y": 42}
    state = engine.execution(result.execution.id)
    assert state.status is Status.SUCCEEDED
    assert state.nodes["t"].outputs == {"y": result.outputs["y"].id}
    assert engine.load(engine.artifact(result.outputs["y"].id)) == 42
    kinds = [e.kind for e in engine.events(state.id)]
    assert kinds[0] is EventKind.EXECUTION_CREATED and kinds[-1] is EventKind.EXECUTION_SUCCEEDED
    seqs = [e.seq for e in engine.events(state.id)]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_state_is_a_projection_of_the_events(engine: LocalEngine) -> None:
    ok = run(engine, "y = x", {"x": 1})
    with pytest.raises(TaskFailed):
        run(engine, "y = 1 / x", {"x": 0}, retries=1)
    rows = {r["id"]: r["status"] for r in engine.list_executions()}
    for execution_id, status in rows.items():
        folded = replay(execution_id, engine.events(execution_id))
        assert folded.status.value == status
    # Wreck the projection rows; rebuilding them from events restores them.
    with engine.store.write() as conn:
        conn.exec_driver_sql("UPDATE executions SET status = 'queued', ended_at = NULL")
    assert engine.store.rebuild_projections() == 2
    assert {r["id"]: r["status"] for r in engine.list_executions()} == rows
    assert rows[ok.execution.id] == "succeeded"


def test_failed_run_keeps_user_traceback(engine: LocalEngine) -> None:
    with pytest.raises(TaskFailed) as info:
        run(engine, "a = 1\ny = a / x", {"x": 0}, retries=2)
    err = info.value
    assert "ZeroDivisionError" in err.traceback_text
    assert "line 3" in err.traceback_text  # line 1 is the %%task line
    assert "engine.py" not in err.traceback_text and "runner.py" not in err.traceback_text
    state = engine.execution(err.execution_id)
    node = state.nodes["t"]
    assert node.user_failures == 3 and node.status is Status.FAILED
    kinds = [e.kind for e in engine.events(err.execution_id)]
    assert kinds.count(EventKind.RETRY_SCHEDULED) == 2


def test_a_failed_task_says_how_many_attempts_it_made(engine: LocalEngine) -> None:
    with pytest.raises(TaskFailed, match=r"^task 't' failed after 2 attempt\(s\): ZeroDivision"):
        run(engine, "y = 1 / x", {"x": 0}, retries=1)
    # A map's attempts are its elements', counted in the message: no "after 0 attempt(s)".
    s = TaskSpec(name="div", code="out = 10 // item", inputs=("item",), outputs=("out",))
    values = {"items": [1, 0, 5]}
    refs = {"items": engine.put_value(values["items"], "input 'items'")}
    cfg = TaskConfig(executor="inline")
    request = RunRequest(
        spec=s, config=cfg, inputs=refs, values=values, map=MapSpec("items", "item")
    )
    with pytest.raises(TaskFailed) as info:
        engine.run_task(request)
    assert str(info.value).startswith("task 'div' failed: ZeroDivisionError: 1 of 3 elements")
    assert "attempt" not in str(info.value)


def test_cache_hit_and_miss(engine: LocalEngine) -> None:
    first = run(engine, "y = x * 2", {"x": 3}, cache=True)
    second = run(engine, "y = x * 2", {"x": 3}, cache=True)
    assert second.execution.status is Status.CACHED
    node = second.execution.nodes["t"]
    assert node.cache == "hit" and node.cache_source["execution_id"] == first.execution.id
    assert second.values == {"y": 6}
    third = run(engine, "y = x * 2", {"x": 4}, cache=True)
    assert third.execution.nodes["t"].cache == "miss"


def test_unknown_ids(engine: LocalEngine) -> None:
    with pytest.raises(NotFound):
        engine.execution("nope")
    with pytest.raises(NotFound):
        engine.artifact("0" * 64)


def test_inline_needs_values(engine: LocalEngine) -> None:
    with pytest.raises(ConfigError):
        engine.run_task(
            RunRequest(spec=spec("y = 1"), config=TaskConfig(executor="inline"), inputs={})
        )


def test_unknown_executor_lists_known(engine: LocalEngine) -> None:
    with pytest.raises(ConfigError, match="known: inline, kubernetes, local"):
        engine.executor("cloud")


def test_schema_head_matches_migrations(tmp_path: Path) -> None:
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(store_db._MIGRATIONS))
    assert ScriptDirectory.from_config(cfg).get_current_head() == store_db.SCHEMA_HEAD
    engine = store_db.create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    store_db.ensure_schema(engine)
    assert store_db.current_revision(engine) == store_db.SCHEMA_HEAD
    with engine.connect() as conn:
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
    assert mode == "wal"
    engine.dispose()


def test_local_executor_runs_in_another_process(engine: LocalEngine) -> None:
    s = spec("import os\ny = os.getpid()", outputs=("y",))
    result = engine.run_task(RunRequest(spec=s, config=TaskConfig(executor="local"), inputs={}))
    import os

    assert result.values["y"] != os.getpid()
    assert result.references == {}


class _Recorder:
    """A run listener that notes each committed event and the thread that heard it."""

    def __init__(self) -> None:
        self.heard: list[tuple[EventKind, str, Status]] = []

    def on_event(self, event: Event, state: ExecutionState) -> None:
        self.heard.append((event.kind, threading.current_thread().name, state.status))

    def on_log(self, stream: str, text: str) -> None:
        pass


#: A task body that waits until the store, read through connections of its own (as
#: another process would), shows its execution running; its output is what it saw.
WATCH_THE_STORE = """
import time
from papercrane.backend.store import Store
other = Store(url)
seen, deadline = [], time.time() + 10
while 'attempt_started' not in seen and time.time() < deadline:
    time.sleep(0.02)
    newest = other.list_executions(limit=1)
    seen = [e.kind.value for e in other.events(newest[0]['id'])] if newest else []
other.close()
other.engine.dispose()
y = seen
"""


def test_a_long_inline_task_shows_running_while_it_runs(engine: LocalEngine) -> None:
    """Its start is committed (by a helper thread) while its code still runs: other
    processes and the listener see it running; the end comes after, as usual."""
    url = engine.config.db_url
    recorder = _Recorder()
    ref = engine.put_value(url, "url")
    result = engine.run_task(
        RunRequest(
            spec=spec(WATCH_THE_STORE, inputs=("url",)),
            config=TaskConfig(executor="inline"),
            inputs={"url": ref},
            values={"url": url},
        ),
        listener=recorder,
    )
    assert result.values["y"] == ["execution_created", "node_queued", "attempt_started"]
    assert (EventKind.ATTEMPT_STARTED, "papercrane-deadlines", Status.RUNNING) in recorder.heard
    assert recorder.heard[-1][0] is EventKind.EXECUTION_SUCCEEDED
    kinds = [e.kind.value for e in engine.events(result.execution.id)]
    assert kinds.count("attempt_started") == 1 and kinds[-1] == "execution_succeeded"


def test_a_quick_inline_task_records_its_start_and_end_together(engine: LocalEngine) -> None:
    """The same events, in order, with the start's own timestamp; the listener hears
    them once they are committed, on the calling thread."""
    recorder = _Recorder()
    s = spec("y = x + 1", inputs=("x",))
    ref = engine.put_value(1, "x")
    before = time.time()
    result = engine.run_task(
        RunRequest(
            spec=s, config=TaskConfig(executor="inline"), inputs={"x": ref}, values={"x": 1}
        ),
        listener=recorder,
    )
    assert result.values == {"y": 2}
    events = engine.events(result.execution.id)
    assert [e.kind.value for e in events] == [
        "execution_created",
        "node_queued",
        "attempt_started",
        "attempt_succeeded",
        "node_succeeded",
        "execution_succeeded",
    ]
    assert before <= events[2].ts <= events[3].ts
    assert {name for _, name, _ in recorder.heard} == {threading.current_thread().name}
    assert [k for k, _, _ in recorder.heard] == [e.kind for e in events]


def test_a_start_that_could_not_be_written_stays_pending(engine: LocalEngine) -> None:
    """``flush(keep_on_error=True)``, as the helper thread writes a start: a failed
    transaction leaves nothing in the store and keeps the events for the end's."""
    s = spec("y = 1")
    run = engine.task_run(
        RunRequest(spec=s, config=TaskConfig(executor="inline"), inputs={}, values={})
    )
    run._open()
    run.emit(EventKind.ATTEMPT_STATUS, "t", 1, message=object())  # not JSON: the write fails
    pending = list(run.pending.kinds)
    with pytest.raises(TypeError):
        run.flush(keep_on_error=True)
    assert run.pending.kinds == pending and len(run.pending.payloads) == len(pending)
    assert run.writes
    assert engine.list_executions() == []
    run.pending.pop()
    run.flush()
    assert [e.kind.value for e in engine.events(run.state.id)] == pending[:-1]


class _CountingStream:
    """The cell's stream as a kernel provides it (ipykernel's ``OutStream`` waits for
    its I/O thread on every flush): here one that counts the flushes it is asked for."""

    def __init__(self) -> None:
        self.text = ""
        self.flushes = 0

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        self.flushes += 1


def test_an_inline_task_that_prints_nothing_does_not_flush_the_cells_streams(
    engine: LocalEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc
    import sys

    out, err = _CountingStream(), _CountingStream()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    quiet = run(engine, "y = x + 1", {"x": 1})
    gc.collect()  # (a capture flushes, if at all, when it is collected)
    assert quiet.values == {"y": 2} and (out.flushes, err.flushes) == (0, 0)
    assert engine.execution(quiet.execution.id).nodes["t"].logs == {}
    loud = run(engine, "print('hello')\ny = x + 1", {"x": 2})
    gc.collect()
    assert out.text == "hello\n" and out.flushes >= 1 and err.flushes == 0
    (key,) = engine.execution(loud.execution.id).nodes["t"].logs[1].values()
    assert engine.storage.read_bytes(key) == b"hello\n"
    assert sys.stdout is out and sys.stderr is err


def test_events_built_field_by_field_equal_the_dataclasss_own() -> None:
    """``EventColumns.numbered`` skips the frozen dataclass's ``__init__``: what it
    gives must be the same events, in order, still frozen."""
    import dataclasses

    events = [
        Event("e1", EventKind.CACHE_MISS, "t[3]", 0, {"cache_key": "k"}, 1.5),
        Event("e1", EventKind.ATTEMPT_STARTED, "t[3]", 1, {"executor": "inline"}, 2.5),
    ]
    numbered = list(EventColumns.of(events).numbered([7, 8]))
    expected = [dataclasses.replace(e, seq=s) for e, s in zip(events, (7, 8))]
    assert numbered == expected and [repr(e) for e in numbered] == [repr(e) for e in expected]
    assert [dataclasses.asdict(e) for e in numbered] == [dataclasses.asdict(e) for e in expected]
    with pytest.raises(dataclasses.FrozenInstanceError):
        numbered[0].seq = 9  # type: ignore[misc]


def _element_events(old_form: bool) -> list[Event]:
    """A 3-element map as each form of the store records it: element 0 a cache hit,
    element 1 a miss that succeeded on its second attempt, element 2 a miss that failed
    for good (the map allowed one failure)."""
    ev: list[Event] = []

    def add(what: EventKind, node: str, attempt: int = 0, /, **payload: Any) -> None:
        ev.append(Event("e1", what, node, attempt, payload, 1.0 + len(ev), len(ev) + 1))

    error = {"kind": "user", "type": "ValueError", "message": "no", "traceback": ""}
    add(EventKind.EXECUTION_CREATED, "", kind="task", name="m")
    add(EventKind.NODE_QUEUED, "m", cache=True, map=True)
    add(EventKind.MAP_EXPANDED, "m", elements=3)
    add(EventKind.CACHE_HIT, "m[0]", cache_key="k0", outputs={"y": "a0"}, references={})
    start = {} if old_form else {"cache_key": "k1"}
    if old_form:
        add(EventKind.CACHE_MISS, "m[1]", cache_key="k1")
        add(EventKind.CACHE_MISS, "m[2]", cache_key="k2")
    add(EventKind.ATTEMPT_STARTED, "m[1]", 1, executor="inline", **start)
    add(EventKind.ATTEMPT_FAILED, "m[1]", 1, error=error)
    add(EventKind.RETRY_SCHEDULED, "m[1]", 1, budget="user")
    add(EventKind.ATTEMPT_STARTED, "m[1]", 2, executor="inline", **start)
    add(EventKind.ATTEMPT_SUCCEEDED, "m[1]", 2, outputs={"y": "a1"}, references={})
    if old_form:
        add(EventKind.NODE_SUCCEEDED, "m[1]", 2)
    start = {} if old_form else {"cache_key": "k2"}
    add(EventKind.ATTEMPT_STARTED, "m[2]", 1, executor="inline", **start)
    add(EventKind.ATTEMPT_FAILED, "m[2]", 1, error=error)
    add(EventKind.NODE_FAILED, "m[2]", 1, error=error)
    add(EventKind.ATTEMPT_SUCCEEDED, "m", 0, outputs={"y": "list"}, references={})
    add(EventKind.NODE_SUCCEEDED, "m", 0)
    add(EventKind.EXECUTION_SUCCEEDED, "")
    return ev


def test_an_elements_events_fold_alike_in_both_forms_of_the_store() -> None:
    """A map element records no ``cache_miss`` or ``node_succeeded`` now (its attempt
    names the key, its successful attempt ends it); a store written before has them.
    Both must read as the same state, each element counted once."""
    new, old = replay("e1", _element_events(False)), replay("e1", _element_events(True))
    for state in (new, old):
        m = state.nodes["m"]
        assert (m.elements, m.elements_done, m.elements_cached, m.elements_failed) == (3, 2, 1, 1)
        hit, ran, failed = (state.nodes[f"m[{i}]"] for i in range(3))
        assert (hit.status, hit.cache, hit.cache_key) == (Status.CACHED, "hit", "k0")
        assert (ran.status, ran.cache, ran.cache_key) == (Status.SUCCEEDED, "miss", "k1")
        assert ran.attempt == 2 and ran.error is None and ran.outputs == {"y": "a1"}
        assert ran.started_at is not None and ran.ended_at is not None
        assert ran.ended_at > ran.started_at
        assert (failed.status, failed.cache, failed.cache_key) == (Status.FAILED, "miss", "k2")
        assert failed.error is not None and failed.error.type == "ValueError"
        assert state.status is Status.SUCCEEDED
    ended = [e for e in _element_events(False) if e.kind is EventKind.ATTEMPT_SUCCEEDED]
    assert new.nodes["m[1]"].ended_at == ended[0].ts  # its successful attempt ended it


def test_a_top_level_attempt_that_succeeded_waits_for_its_node_succeeded() -> None:
    """Only an element's attempt ends it: a node's attempt that succeeded leaves the
    node running until ``node_succeeded`` (its outputs may still be checked)."""
    ev = [
        Event("e1", EventKind.EXECUTION_CREATED, "", 0, {"kind": "task"}, 1.0, 1),
        Event("e1", EventKind.CACHE_MISS, "t", 0, {"cache_key": "k"}, 2.0, 2),
        Event("e1", EventKind.ATTEMPT_STARTED, "t", 1, {"executor": "inline"}, 3.0, 3),
        Event("e1", EventKind.ATTEMPT_SUCCEEDED, "t", 1, {"outputs": {"y": "a"}}, 4.0, 4),
    ]
    state = replay("e1", ev)
    assert state.nodes["t"].status is Status.RUNNING and state.nodes["t"].cache == "miss"
    state = replay("e1", [*ev, Event("e1", EventKind.NODE_SUCCEEDED, "t", 1, {}, 5.0, 5)])
    assert state.nodes["t"].status is Status.SUCCEEDED and state.nodes["t"].ended_at == 5.0


def test_the_api_refuses_a_project_or_domain_the_server_would(engine: LocalEngine) -> None:
    """The kernel, the CLI and the server check their own options; a script calling the
    engine directly gets the same rule, before anything is recorded."""
    from papercrane.backend.engine import WorkflowRequest
    from papercrane.backend.workflow import NodeSpec, WorkflowSpec

    cfg = TaskConfig(executor="inline")
    task = spec("y = 1")
    with pytest.raises(ConfigError, match=r"project 'a b' is not usable.*project= and domain="):
        engine.run_task(RunRequest(task, cfg, {}, {}, project="a b"))
    with pytest.raises(ConfigError, match=r"domain '\.\./x' is not usable"):
        engine.register_task(task, "default", "../x")
    flow = WorkflowSpec("w", (NodeSpec(id="t", task=task, config=cfg, bindings={}),))
    with pytest.raises(ConfigError, match="project"):
        engine.run_workflow(WorkflowRequest(flow, {}, {}, project="-x"))
    with pytest.raises(ConfigError, match="domain"):
        engine.register_workflow(flow, "default", "")
    assert engine.list_executions() == []
    assert engine.store.cache_list() == []


def test_papercranes_own_failure_mid_run_records_the_execution_aborted(
    engine: LocalEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure of papercrane's own while it runs an execution reaches the caller as it
    is, and the execution is recorded aborted with the reason, not left "running". The
    stand-in (a monkeypatch): the helper thread refused, as Python 3.12 refuses any new
    thread once the interpreter is exiting."""
    from papercrane.backend import deadlines

    def refuse(*args: Any) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")

    monkeypatch.setattr(deadlines.deadlines, "arm", refuse)
    with pytest.raises(RuntimeError, match="can't create new thread"):
        run(engine, "y = x + 1", {"x": 1})
    (row,) = engine.list_executions()
    assert row["status"] == "aborted"
    last = engine.events(row["id"])[-1]
    assert last.kind.value == "execution_aborted"
    assert last.payload["reason"] == (
        "papercrane failed while running it: RuntimeError: "
        "can't create new thread at interpreter shutdown"
    )
    assert engine.execution(row["id"]).nodes["t"].status.value != "running"


def test_sys_exit_inline_is_a_recorded_user_error(engine: LocalEngine) -> None:
    """``sys.exit()`` in an inline task fails the task like any exception (recorded,
    one attempt, the user's traceback), instead of escaping the engine unrecorded."""
    with pytest.raises(TaskFailed) as info:
        run(engine, "import sys\nsys.exit(1)", {})
    err = info.value
    assert str(err).startswith("task 't' failed after 1 attempt(s): SystemExit: the task called")
    assert err.traceback_text.rstrip().endswith("SystemExit: " + err.error_message)
    assert "runner.py" not in err.traceback_text
    state = engine.execution(err.execution_id)
    assert state.status is Status.FAILED and state.nodes["t"].user_failures == 1


def test_keyboard_interrupt_inline_still_aborts_the_run(engine: LocalEngine) -> None:
    """In the kernel's own process a KeyboardInterrupt is the user interrupting the
    kernel: the execution is aborted (recorded so), not failed or retried."""
    with pytest.raises(ExecutionAborted):
        run(engine, "raise KeyboardInterrupt", {}, retries=2)
    (row,) = engine.list_executions()
    assert row["status"] == "aborted"


def test_an_inline_timeout_names_its_error_as_a_local_one_does(engine: LocalEngine) -> None:
    with pytest.raises(TaskFailed) as info:
        run(engine, "import time\ntime.sleep(5)", {}, timeout=0.2)
    last = info.value.traceback_text.rstrip().splitlines()[-1]
    assert last == "TaskTimeout: task 't' ran longer than its timeout of 0.2 s and was stopped"


def test_a_task_run_again_with_other_code_shows_its_own_lines_in_tracebacks() -> None:
    """The kernel runs an edited cell under the same task name: its traceback must show
    the lines that ran, not the lines of the cell as it was before."""
    import traceback

    from papercrane.backend.runner import run_code

    first = TaskSpec(name="edited", code="x = 1\nraise ValueError('a')", inputs=(), outputs=())
    with pytest.raises(ValueError):
        run_code(first, {})
    code = "z = 5\nw = 6\nraise ValueError('b')"
    second = TaskSpec(name="edited", code=code, inputs=(), outputs=())
    with pytest.raises(ValueError) as raised:
        run_code(second, {})
    text = "".join(traceback.format_exception(raised.value))
    assert "line 4" in text and "raise ValueError('b')" in text
