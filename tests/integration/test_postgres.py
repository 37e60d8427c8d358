"""The engine end to end on a real PostgreSQL server (``pg_url``, see tests/conftest.py):
migrations from scratch, tasks on both executors, workflows with a map, failure and
recovery, the cache, lineage, projections, and two processes writing at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from papercrane.backend.api import RunRequest
from papercrane.backend.cli import main
from papercrane.backend.config import Config
from papercrane.backend.engine import LocalEngine, WorkflowRequest
from papercrane.backend.errors import ConfigError, TaskFailed, WorkflowFailed
from papercrane.backend.model import Event, EventKind, ExecutionState, Status, TaskConfig, TaskSpec
from papercrane.backend.projection import apply, replay
from papercrane.backend.store import Store
from papercrane.backend.store import db as store_db
from papercrane.backend.store.schema import metadata
from papercrane.backend.workflow import CellTask, MapSpec, assemble

pytestmark = pytest.mark.postgres


@pytest.fixture
def engine(tmp_path: Path, pg_url: str) -> Iterator[LocalEngine]:
    e = LocalEngine(Config(home=tmp_path / "home", db_url=pg_url))
    yield e
    e.close()


# The helpers of tests/unit/test_engine.py and test_scheduler.py, kept here so that this
# file does not break when those change.
def task(engine: LocalEngine, code: str, values: dict[str, Any], **config: Any):
    outputs = config.pop("outputs", ("y",))
    spec = TaskSpec(name=config.pop("name", "t"), code=code, inputs=tuple(values), outputs=outputs)
    refs = {n: engine.put_value(v, f"input {n!r}") for n, v in values.items()}
    cfg = TaskConfig(**{"executor": "inline", **config})
    values = values if cfg.executor == "inline" else None  # type: ignore[assignment]
    return engine.run_task(RunRequest(spec=spec, config=cfg, inputs=refs, values=values))


def cell(name: str, code: str, inputs: tuple[str, ...], outputs: tuple[str, ...], **config: Any):
    m = config.pop("map", None)
    spec = TaskSpec(name=name, code=code, inputs=inputs, outputs=outputs)
    return CellTask(task=spec, config=TaskConfig(**{"executor": "inline", **config}), map=m)


def workflow(engine: LocalEngine, cells: list[CellTask], params: dict[str, Any], **options: Any):
    spec = assemble("wf", cells)
    refs = {n: engine.put_value(v, n) for n, v in params.items()}
    request = WorkflowRequest(spec=spec, params=refs, param_values=params, **options)
    return engine.run_workflow(request)


def projections_match_events(engine: LocalEngine) -> dict[str, str]:
    rows = {r["id"]: r for r in engine.list_executions(limit=10_000)}
    for execution_id, row in rows.items():
        events = engine.events(execution_id)
        folded = replay(execution_id, events)
        assert folded.status.value == row["status"]
        assert row["last_seq"] == events[-1].seq
        seqs = [e.seq for e in events]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    return {i: r["status"] for i, r in rows.items()}


# -- the schema -------------------------------------------------------------------------------
def test_migrations_run_from_scratch_with_the_cli(pg_url: str) -> None:
    plain = sa.make_url(pg_url).set(drivername="postgresql").render_as_string(False)
    for _ in range(2):  # the second time there is nothing to do
        result = CliRunner().invoke(main, ["db", "upgrade", "--url", plain])
        assert result.exit_code == 0, result.output
        assert f"schema at revision {store_db.SCHEMA_HEAD}" in result.output
    engine = store_db.create_engine(plain)
    try:
        assert engine.dialect.driver == "psycopg"  # postgresql:// means psycopg 3
        inspector = sa.inspect(engine)
        assert set(metadata.tables) <= set(inspector.get_table_names())
        for table in metadata.tables.values():  # every column the code knows is there
            columns = {c["name"] for c in inspector.get_columns(table.name)}
            assert {c.name for c in table.columns} <= columns, table.name
        seq = next(c for c in inspector.get_columns("events") if c["name"] == "seq")
        assert isinstance(seq["type"], sa.BigInteger)
        assert "nextval" in str(seq["default"]) or seq.get("identity")
        payload = next(c for c in inspector.get_columns("events") if c["name"] == "payload")
        assert isinstance(payload["type"], sa.JSON)
    finally:
        engine.dispose()


def test_revision_0008_keys_artifacts_by_id_and_scope(pg_url: str) -> None:
    """A row from before 0008 keeps scope ''; afterwards one id takes a row per scope,
    and the store can go back to 0007 only while no id has two."""
    from papercrane.backend.model import ArtifactRef

    engine = store_db.create_engine(pg_url)
    try:
        store_db.upgrade(engine, "0007")
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO artifacts VALUES ('aa', 'h1', 'u1', 1, 'text', 'str', '', 1.0)"
            )
        store_db.upgrade(engine)
        assert store_db.current_revision(engine) == store_db.SCHEMA_HEAD
        key = sa.inspect(engine).get_pk_constraint("artifacts")["constrained_columns"]
        assert key == ["id", "scope"]
        store = Store(pg_url)
        try:
            old = ArtifactRef("aa", "h1", "u1", 1, "text", "str", "")
            assert store.artifact("aa") == old == store.artifact("aa", "p/d")
            mine = ArtifactRef("aa", "h2", "u2", 2, "text", "str", "")
            with store.transaction() as conn:
                store.put_artifacts(conn, [mine], "p/d")
            assert store.artifact("aa", "p/d") == mine and store.artifact("aa") == old
            assert store.artifacts_by_prefix("a", "p/d") == [mine]
        finally:
            store.close()
        from alembic import command

        cfg = store_db.alembic_config()
        for refused in (True, False):
            with engine.connect() as conn:
                cfg.attributes["connection"] = conn
                if refused:
                    with pytest.raises(RuntimeError, match="recorded for more than one project"):
                        command.downgrade(cfg, "0007")
                    conn.rollback()
                    conn.exec_driver_sql("DELETE FROM artifacts WHERE scope = ''")
                else:
                    command.downgrade(cfg, "0007")
                conn.commit()
        assert store_db.current_revision(engine) == "0007"
        key = sa.inspect(engine).get_pk_constraint("artifacts")["constrained_columns"]
        assert key == ["id"]
    finally:
        engine.dispose()


def test_processes_migrating_at_once_queue_on_the_lock(pg_url: str) -> None:
    """Four fresh stores on one empty database: one migrates, the others wait for it and
    find the schema at head (without the advisory lock they trip over each other)."""
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def open_store() -> None:
        engine = store_db.create_engine(pg_url)
        try:
            barrier.wait()
            store_db.upgrade(engine)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    engine = store_db.create_engine(pg_url)
    assert store_db.current_revision(engine) == store_db.SCHEMA_HEAD
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar() == 1
    engine.dispose()


def test_an_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://someone:secret@127.0.0.1:{port}/papercrane"
    with pytest.raises(ConfigError, match="cannot connect to the PostgreSQL database") as info:
        Store(url)
    assert "secret" not in str(info.value) and "***" in str(info.value)


# -- the store's queries ----------------------------------------------------------------------
def test_a_batch_of_events_gets_increasing_seqs_in_batch_order(pg_url: str) -> None:
    store = Store(pg_url)
    try:
        state = ExecutionState(id="e" * 16, name="batch", created_at=time.time())
        batch = [Event(state.id, EventKind.EXECUTION_CREATED, payload={"name": "batch"})]
        batch += [
            Event(state.id, EventKind.NODE_QUEUED, f"n{i}", payload={"i": i}) for i in range(3000)
        ]
        for e in batch:
            apply(state, e)
        with store.write() as conn:
            numbered = store.append(conn, batch, state)
        seqs = [e.seq for e in numbered]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert [e.payload.get("i") for e in numbered[1:]] == list(range(3000))
        read = store.events(state.id)
        assert [(e.seq, e.node) for e in read] == [(e.seq, e.node) for e in numbered]
        assert store.list_executions()[0]["last_seq"] == seqs[-1]
    finally:
        store.close()


def test_json_payloads_round_trip(pg_url: str) -> None:
    store = Store(pg_url)
    try:
        payload = {
            "text": 'naïve ☃ \x00 nul, tab\t, quote" and backslash\\',
            "big": 2**62 + 1,
            "float": 0.1,
            "nested": {"list": [1, "two", None, True, {"deep": []}]},
        }
        state = ExecutionState(id="j" * 16, name="json", created_at=time.time())
        batch = [Event(state.id, EventKind.EXECUTION_CREATED, payload=payload)]
        apply(state, batch[0])
        with store.write() as conn:
            store.append(conn, batch, state)
        assert store.events(state.id)[0].payload == payload
    finally:
        store.close()


def test_writers_take_turns_and_readers_never_wait(pg_url: str) -> None:
    """PostgreSQL's stand-in for ``BEGIN IMMEDIATE``: a second write transaction waits
    for the first to end; reads go on meanwhile."""
    first, second = Store(pg_url), Store(pg_url)
    waited: list[float] = []

    def write_too() -> None:
        started = time.monotonic()
        with second.write():
            waited.append(time.monotonic() - started)

    try:
        with first.write():
            other = threading.Thread(target=write_too)
            other.start()
            time.sleep(0.5)
            assert not waited  # still waiting for the lock
            started = time.monotonic()
            assert second.list_executions() == []  # reads don't wait
            assert time.monotonic() - started < 0.4
        other.join(10)
        assert waited and waited[0] >= 0.4
    finally:
        first.close()
        second.close()


def test_long_previews_fit_their_columns(engine: LocalEngine) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({f"{'column' * 20}{i}": [i] for i in range(6)})
    ref = engine.put_value(frame, "frame")
    assert len(ref.preview) > 200  # SQLite would keep it whole; PostgreSQL would refuse it
    result = task(engine, "y = frame.shape", {"frame": frame})
    assert result.values == {"y": (1, 6)}
    stored = engine.store.artifact(ref.id)
    assert stored is not None and len(stored.preview) == 200 and stored.preview.endswith("…")
    assert engine.artifact(ref.id[:10].upper()).id == ref.id  # prefixes ignore case


def test_blake3_digests_fit_the_hash_column(engine: LocalEngine) -> None:
    np = pytest.importorskip("numpy")
    big = np.arange(300_000, dtype=np.float64)  # over hashing.LARGE: "blake3-" + 64 hex
    ref = engine.put_value(big, "big")
    assert ref.hash.startswith("blake3-") and len(ref.hash) == 71
    stored = engine.store.artifact(ref.id)
    assert stored is not None and stored.hash == ref.hash  # PostgreSQL kept all 71 chars
    result = task(engine, "y = float(big[-1])", {"big": big}, executor="local")
    assert result.values == {"y": 299_999.0}


# -- the engine ---------------------------------------------------------------------------------
def test_inline_and_local_tasks(engine: LocalEngine) -> None:
    inline = task(engine, "y = x + 1", {"x": 41})
    assert inline.values == {"y": 42}
    local = task(engine, "import os\ny = (os.getpid(), x * 2)", {"x": 21}, executor="local")
    pid, doubled = local.values["y"]
    assert pid != os.getpid() and doubled == 42
    for result in (inline, local):
        state = engine.execution(result.execution.id)
        assert state.status is Status.SUCCEEDED
        assert state.nodes["t"].outputs == {"y": result.outputs["y"].id}
        kinds = [e.kind for e in engine.events(state.id)]
        assert kinds[0] is EventKind.EXECUTION_CREATED
        assert kinds[-1] is EventKind.EXECUTION_SUCCEEDED
    assert engine.load(engine.artifact(local.outputs["y"].id)) == (pid, 42)
    assert engine.logs(local.execution.id, "t", 1) == ""


def test_cache_failures_listing_and_rebuilt_projections(engine: LocalEngine) -> None:
    first = task(engine, "y = x * 2", {"x": 3}, cache=True)
    second = task(engine, "y = x * 2", {"x": 3}, cache=True)
    assert first.execution.nodes["t"].cache == "miss"
    assert second.execution.status is Status.CACHED
    assert second.execution.nodes["t"].cache_source["execution_id"] == first.execution.id
    assert second.values == {"y": 6}
    assert task(engine, "y = x * 2", {"x": 4}, cache=True).execution.nodes["t"].cache == "miss"
    assert len(engine.store.cache_list(task_name="t")) == 2
    with pytest.raises(TaskFailed) as failed:
        task(engine, "a = 1\ny = a / x", {"x": 0}, retries=1, name="bad")
    assert "ZeroDivisionError" in failed.value.traceback_text
    assert engine.execution(failed.value.execution_id).nodes["bad"].user_failures == 2

    rows = engine.list_executions()
    assert [r["created_at"] for r in rows] == sorted((r["created_at"] for r in rows), reverse=True)
    assert len(rows) == 4
    assert [r["id"] for r in engine.list_executions(status="failed")] == [failed.value.execution_id]
    assert engine.list_executions(project="elsewhere") == []
    assert len(engine.list_executions(limit=2, before=rows[1]["created_at"])) == 2
    statuses = projections_match_events(engine)
    assert sorted(statuses.values()) == ["cached", "failed", "succeeded", "succeeded"]

    with engine.store.write() as conn:  # wreck the projection; the events rebuild it
        conn.exec_driver_sql("UPDATE executions SET status = 'queued', ended_at = NULL")
    assert engine.store.rebuild_projections() == 4
    assert projections_match_events(engine) == statuses
    assert engine.store.cache_clear(task_name="t") == 2


def test_workflow_with_a_map_fails_then_recovers(engine: LocalEngine, tmp_path: Path) -> None:
    flag, log = tmp_path / "fixed", tmp_path / "ran.log"
    note = f"with open({str(log)!r}, 'a') as f:\n    f.write(NAME + '\\n')\n"
    cells = [
        cell("prep", note.replace("NAME", "'prep'") + "items = list(range(n))", ("n",), ("items",)),
        cell(
            "square",
            f"import os\nassert item != 2 or os.path.exists({str(flag)!r}), 'not yet'\n"
            "out = item * item",
            ("item",),
            ("out",),
            cache=True,
            map=MapSpec("items", "item"),
        ),
        cell("total", "answer = sum(out)", ("out",), ("answer",)),
    ]
    with pytest.raises(WorkflowFailed) as failed:
        workflow(engine, cells, {"n": 5}, max_parallel=3)
    state = engine.execution(failed.value.execution_id)
    assert state.status is Status.FAILED
    assert state.nodes["prep"].status is Status.SUCCEEDED
    assert state.nodes["square[2]"].status is Status.FAILED
    assert state.nodes["total"].status is Status.SKIPPED

    flag.write_text("ok")
    result = engine.recover(failed.value.execution_id)
    assert result.execution.status is Status.SUCCEEDED
    assert result.execution.recovered_from == failed.value.execution_id
    assert result.execution.nodes["prep"].status is Status.RECOVERED
    assert log.read_text().split() == ["prep"]  # prep did not run again
    assert result.nodes["total"].values == {"answer": 0 + 1 + 4 + 9 + 16}
    assert result.nodes["square"].values == {"out": [0, 1, 4, 9, 16]}
    assert result.execution.kind == "workflow"

    again = workflow(engine, cells, {"n": 5})  # every element is cached now
    nodes = again.execution.nodes
    assert [nodes[f"square[{i}]"].cache for i in range(5)] == ["hit"] * 5
    assert again.nodes["total"].values == {"answer": 30}
    projections_match_events(engine)


def test_lineage_of_a_three_step_chain(engine: LocalEngine) -> None:
    cells = [
        cell("load", "raw = [n, n + 1]", ("n",), ("raw",)),
        cell("clean", "good = [v * 2 for v in raw]", ("raw",), ("good",)),
        cell("total", "answer = sum(good)", ("good",), ("answer",)),
    ]
    result = workflow(engine, cells, {"n": 1})
    answer = result.nodes["total"].outputs["answer"]
    tree = engine.lineage(answer.id)
    chain = []
    while tree.get("producer"):
        assert tree["producer"]["execution_id"] == result.execution.id
        chain.append(tree["producer"]["task_name"])
        tree = tree["inputs"][0]
    assert chain == ["total", "clean", "load"]
    assert tree["name"] == "n" and tree["producer"] is None
    assert [p["node"] for p in engine.store.producers(answer.id)] == ["total"]


# -- two engines in two processes ---------------------------------------------------------------
WORKER = textwrap.dedent(
    """
    import json, random, sys, time
    from pathlib import Path

    from papercrane.backend.api import RunRequest
    from papercrane.backend.config import Config
    from papercrane.backend.engine import LocalEngine, WorkflowRequest
    from papercrane.backend.model import TaskConfig, TaskSpec
    from papercrane.backend.workflow import CellTask, MapSpec, assemble

    url, home, seed, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    engine = LocalEngine(Config(home=Path(home), db_url=url))
    rng = random.Random(seed)

    def cell(name, code, inputs, outputs, **config):
        m = config.pop("map", None)
        spec = TaskSpec(name=name, code=code, inputs=inputs, outputs=outputs)
        return CellTask(task=spec, config=TaskConfig(executor="inline", **config), map=m)

    ids = []
    while time.time() < start:  # both workers begin together
        time.sleep(0.005)
    for i in range(40):
        # The same cached task and inputs in both processes: shared cache entries,
        # artifacts and task rows, written by whoever gets there first.
        spec = TaskSpec(name="shared", code="y = x * 3", inputs=("x",), outputs=("y",))
        x = i % 7
        ref = engine.put_value(x, "x")
        config = TaskConfig(executor="inline", cache=True)
        request = RunRequest(spec=spec, config=config, inputs={"x": ref}, values={"x": x})
        r = engine.run_task(request)
        assert r.values == {"y": x * 3}, r.values
        ids.append(r.execution.id)
        # New tasks registered in a random order: a deadlock without one writer at a time.
        names = [f"n{j}" for j in range(8)]
        rng.shuffle(names)
        cells = [cell(n, f"{n} = {i}", (), (n,)) for n in names]
        cells.append(cell("m", "out = item + k", ("item", "k"), ("out",), cache=True,
                          map=MapSpec("items", "item")))
        params = {"items": list(range(i % 5 + 1)), "k": i % 3}
        refs = {k: engine.put_value(v, k) for k, v in params.items()}
        request = WorkflowRequest(spec=assemble("wf", cells), params=refs, param_values=params)
        w = engine.run_workflow(request)
        assert w.nodes["m"].values == {"out": [v + i % 3 for v in params["items"]]}
        ids.append(w.execution.id)
    spec = TaskSpec(name="local", code="import os\\ny = os.getpid()", inputs=(), outputs=("y",))
    r = engine.run_task(RunRequest(spec=spec, config=TaskConfig(executor="local"), inputs={}))
    ids.append(r.execution.id)
    engine.close()
    print(json.dumps(ids))
    """
)


def test_two_engines_in_two_processes_write_at_once(tmp_path: Path, pg_url: str) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    home = tmp_path / "shared-home"
    Store(pg_url).close()  # schema first, so the workers race on work, not migrations
    start = time.time() + 3  # (imports take a while)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), pg_url, str(home), str(seed), str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    outputs = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    ids = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert len(ids[0]) == len(ids[1]) == 81 and not set(ids[0]) & set(ids[1])
    engine = LocalEngine(Config(home=home, db_url=pg_url))
    try:
        statuses = projections_match_events(engine)
        assert set(statuses) == set(ids[0]) | set(ids[1])
        assert set(statuses.values()) <= {"succeeded", "cached"}
        # Both processes ran the shared task on 7 inputs; one cache entry per input.
        assert len(engine.store.cache_list(task_name="shared")) == 7
        with engine.store.read() as conn:
            seqs = conn.exec_driver_sql("SELECT seq FROM events ORDER BY seq").scalars().all()
        assert len(seqs) == len(set(seqs))
    finally:
        engine.close()


def test_threads_do_not_drain_the_pool(pg_url: str) -> None:
    from tests.unit.test_store_threads import exercise_threads

    store = Store(pg_url)
    try:
        exercise_threads(store)
    finally:
        store.close()
