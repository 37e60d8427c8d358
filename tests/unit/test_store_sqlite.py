"""The store on a SQLite file: task runs write through the driver (``sqlite_rows``),
everything else through SQLAlchemy, and both see the same rows."""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import subprocess
import sys
import textwrap
from dataclasses import astuple, replace
from pathlib import Path

import pytest
import sqlalchemy as sa

from papercrane.backend.api import RunRequest
from papercrane.backend.config import Config
from papercrane.backend.engine import LocalEngine, WorkflowRequest
from papercrane.backend.errors import ConfigError
from papercrane.backend.model import ArtifactRef, Status, TaskConfig, TaskSpec
from papercrane.backend.store import Store, db, sqlite_rows
from papercrane.backend.store.repo import SHOWN_WIDTHS
from papercrane.backend.store.schema import metadata
from papercrane.backend.workflow import CellTask, MapSpec, assemble


def test_the_driver_statements_follow_the_schema(tmp_path: Path) -> None:
    """``sqlite_rows`` reads the columns from the database: at the schema's head they
    must be ``schema.py``'s, JSON columns included."""
    store = Store(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with store.transaction() as conn:
            for table in metadata.sorted_tables:
                found = sqlite_rows.table(conn, table.name)
                assert set(found.columns) == {c.name for c in table.columns}, table.name
                json_columns = {c.name for c in table.columns if isinstance(c.type, sa.JSON)}
                assert found.json == json_columns, table.name
    finally:
        store.close()
    artifacts = metadata.tables["artifacts"]
    assert {c: artifacts.c[c].type.length for c in SHOWN_WIDTHS} == SHOWN_WIDTHS
    # Artifact rows are written from the refs' fields (``put_artifacts``), not the table's.
    written = {*sqlite_rows.ARTIFACT_FIELDS, "created_at", "scope"}
    assert written == {c.name for c in artifacts.columns}


def test_rows_written_by_the_driver_read_back_through_sqlalchemy(tmp_path: Path) -> None:
    engine = LocalEngine(Config(home=tmp_path))
    try:
        spec = TaskSpec(name="t", code="y = x * 2", inputs=("x",), outputs=("y",))
        x = engine.put_value(3, "input 'x'")
        request = RunRequest(
            spec=spec,
            config=TaskConfig(executor="inline", cache=True),
            inputs={"x": x},
            values={"x": 3},
        )
        first = engine.run_task(request)
        second = engine.run_task(request)
        assert second.execution.status is Status.CACHED and second.values == {"y": 6}
        store = engine.store
        assert store.artifact(x.id) == x
        entry = store.cache_get(second.execution.nodes["t"].cache_key, "default", "development")
        (listed,) = store.cache_list()
        assert entry == listed  # the driver's decoding is SQLAlchemy's
        assert entry["execution_id"] == first.execution.id
        assert TaskSpec.from_dict(store.task(entry["task_version"])["spec"]) == spec
        assert store.in_scope("task", entry["task_version"], "default", "development")
        (producer,) = store.producers(first.outputs["y"].id)
        assert (
            producer["inputs"]["x"]["id"] == x.id and producer["execution_id"] == first.execution.id
        )
        statuses = {r["id"]: r["status"] for r in store.list_executions()}
        assert statuses == {first.execution.id: "succeeded", second.execution.id: "cached"}
        seqs = [e.seq for e in store.events(second.execution.id)]
        assert seqs == sorted(seqs) and store.list_executions()[0]["last_seq"] in seqs + [
            e.seq for e in store.events(first.execution.id)
        ]
    finally:
        engine.close()


def test_event_payloads_are_stored_as_json_dumps_writes_them(tmp_path: Path) -> None:
    """Empty payloads skip the encoder: the stored text must still be ``json.dumps``'s,
    the same bytes the SQLAlchemy path writes, and read back as the same values."""
    engine = LocalEngine(Config(home=tmp_path))
    try:
        spec = TaskSpec(name="t", code="y = x * 2", inputs=("x",), outputs=("y",))
        x = engine.put_value(3, "input 'x'")
        request = RunRequest(
            spec=spec, config=TaskConfig(executor="inline"), inputs={"x": x}, values={"x": 3}
        )
        run = engine.run_task(request)
        events = engine.store.events(run.execution.id)
        raw = sqlite3.connect(tmp_path / "papercrane.db")
        try:
            stored = dict(
                raw.execute(
                    "SELECT seq, payload FROM events WHERE execution_id = ?", (run.execution.id,)
                ).fetchall()
            )
        finally:
            raw.close()
        assert any(e.payload == {} for e in events) and any(e.payload for e in events)
        for e in events:
            assert stored[e.seq] == json.dumps(e.payload)
    finally:
        engine.close()


@pytest.mark.parametrize(
    "value",
    [
        {"outputs": {"y": "a" * 64}, "references": {}, "display": None, "duration": 1.5e-05},
        {"name": "café ☕ 数据", "emoji": "\U0001f600", "quote": 'a "b" \\ c\n'},
        {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "floats": [0.1, 1e300, -0.0]},
        {"deep": {"er": {"est": [1, None, True, False, {"k": []}]}}, "n": None},
        {1: "int key", 2.5: "float key", None: "null key", False: "bool key"},
        [1, "two", 3.0, None],
        "just text",
        7,
        None,
        {},
        [],
        "",
    ],
)
def test_json_text_writes_what_json_dumps_writes(value: object) -> None:
    """``json_text`` keeps one encoder rather than ``json.dumps``'s new one per call:
    the text must be ``json.dumps``'s, non-ASCII, NaN and infinities included."""
    assert sqlite_rows.json_text(value) == json.dumps(value)


def test_json_text_raises_what_json_dumps_raises() -> None:
    """A value the shared encoder cannot write gets ``json.dumps``'s own error, and the
    encoder keeps working afterwards (it keeps no state from a failed call)."""
    circular: dict[str, object] = {}
    circular["self"] = circular
    with pytest.raises(ValueError, match="Circular reference detected"):
        sqlite_rows.json_text(circular)
    with pytest.raises(TypeError, match="Object of type object is not JSON serializable"):
        sqlite_rows.json_text({"a": [object()]})
    shared = {"x": 1}
    assert sqlite_rows.json_text({"a": shared, "b": shared}) == '{"a": {"x": 1}, "b": {"x": 1}}'


def test_json_text_needs_no_particular_c_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """``c_make_encoder`` is not a documented API: an interpreter where it takes other
    arguments, writes other text or is missing gets ``json.dumps`` for every value."""
    assert sqlite_rows._one_shot_encoder() is not None  # (this CPython's is the expected one)

    def other_signature(*args: object) -> object:
        raise TypeError("make_encoder() takes 10 arguments")

    def other_text(*args: object) -> object:
        return lambda value, level: ["{}"]

    for make in (other_signature, other_text, None):
        with monkeypatch.context() as patched:  # (json.dumps itself calls it too)
            patched.setattr(json.encoder, "c_make_encoder", make)
            encoder = sqlite_rows._one_shot_encoder()
        assert encoder is None
        monkeypatch.setattr(sqlite_rows, "_encode", encoder)
        assert sqlite_rows.json_text({"a": [1, "é"]}) == json.dumps({"a": [1, "é"]})


def test_batched_rows_are_stored_as_the_schema_reads_them(tmp_path: Path) -> None:
    """A map's rows are built without a dict per row (artifacts straight from their
    refs, one ``created_at`` per batch): what reads them back (SQLAlchemy, the driver)
    sees the same values, the JSON as ``json.dumps`` writes it, shown texts cut."""
    store = Store(f"sqlite:///{tmp_path / 'x.db'}")
    long = ArtifactRef("b" * 64, "h2", "u2", 2, "json", "m." + "T" * 300, "p" * 300)
    short = ArtifactRef("a" * 64, "h1", "u1", 1, "json", "int", "1")
    entries = [
        {
            "key": f"{i:064x}",
            "project": "default",
            "domain": "development",
            "task_name": "t",
            "task_version": "v",
            "outputs": {"y": short.to_dict()},
            "references": {"np": "numpy"} if i else {},
            "display": {"data": {"text/plain": "1"}, "metadata": {}} if i else None,
            "execution_id": "e",
        }
        for i in range(2)
    ]
    lineage = [
        {
            "artifact_id": short.id,
            "name": "y",
            "execution_id": "e",
            "node": f"t[{i}]",
            "attempt": 1,
            "task_name": "t",
            "task_version": "v",
            "inputs": {"x": {"id": long.id}},
        }
        for i in range(2)
    ]
    try:
        with store.transaction() as conn:
            store.put_artifacts(conn, [short, long, short])  # (one row per id)
            store.cache_put_many(conn, entries)
            store.put_lineage(conn, lineage)
        assert store.artifact(short.id) == short
        cut = store.artifact(long.id)
        assert cut is not None and len(cut.preview) == SHOWN_WIDTHS["preview"]
        assert cut.preview.endswith("…") and cut.python_type.endswith("…")
        listed = {e["key"]: e for e in store.cache_list()}  # through SQLAlchemy
        for entry in entries:
            got = store.cache_get(entry["key"], "default", "development")
            assert got == listed[entry["key"]] == {**entry, "created_at": got["created_at"]}
        rows = [
            {k: v for k, v in r.items() if k not in ("id", "created_at")}
            for r in store.producers(short.id)
        ]
        assert rows == lineage
    finally:
        store.close()
    raw = sqlite3.connect(tmp_path / "x.db")
    try:
        stored = raw.execute('SELECT outputs, "references", display FROM cache_entries').fetchall()
        assert sorted(stored) == sorted(
            tuple(json.dumps(e[c]) for c in ("outputs", "references", "display")) for e in entries
        )
        (count,) = raw.execute("SELECT COUNT(*) FROM artifacts").fetchone()
        assert count == 2
    finally:
        raw.close()


def test_a_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'x.db'}")
    ref = ArtifactRef("a" * 64, "h", "u", 1, "json", "int", "1")
    try:
        with pytest.raises(RuntimeError), store.transaction() as conn:
            store.put_artifacts(conn, [ref])
            raise RuntimeError("after the insert")
        assert store.artifact(ref.id) is None
        with store.transaction() as conn:  # the connection is usable again
            store.put_artifacts(conn, [ref])
        assert store.artifact(ref.id) == ref
    finally:
        store.close()


def test_single_reads_see_the_last_commit_from_any_connection(tmp_path: Path) -> None:
    """A lookup outside a transaction runs on this thread's writing connection once it
    exists (``Store._read_one``): it still sees what another store (another process)
    committed since, and never what a transaction of this thread has not committed."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    ours, theirs = Store(url), Store(url)
    entry = {
        "key": "k" * 64,
        "project": "p",
        "domain": "d",
        "task_name": "t",
        "task_version": "v" * 64,
        "outputs": {"y": "a" * 64},
        "references": {},
        "display": None,
        "execution_id": "e" * 16,
    }
    ref = ArtifactRef("a" * 64, "h", "u", 1, "json", "int", "1")
    try:
        with ours.transaction() as conn:  # this thread's writing connection is open
            ours.put_artifacts(conn, [ref])
        assert ours.cache_get("k" * 64, "p", "d") is None
        with theirs.transaction() as conn:
            theirs.cache_put(conn, entry)
        found = ours.cache_get("k" * 64, "p", "d")
        assert found is not None and found["outputs"] == {"y": "a" * 64}
        changed = {**entry, "outputs": {"y": "b" * 64}}
        with ours.transaction() as conn:
            ours.cache_put(conn, changed)
            assert ours.cache_get("k" * 64, "p", "d")["outputs"] == {"y": "a" * 64}
            assert ours.artifact(ref.id) == ref
        assert ours.cache_get("k" * 64, "p", "d")["outputs"] == {"y": "b" * 64}
        theirs.cache_delete("k" * 64, "p", "d")
        assert ours.cache_get("k" * 64, "p", "d") is None
    finally:
        ours.close()
        theirs.close()


def test_an_old_schema_is_migrated_on_open(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    engine = db.create_engine(url)
    db.upgrade(engine, "0004")
    assert db.current_revision(engine) == "0004"
    engine.dispose()
    Store(url).close()
    engine = db.create_engine(url)
    assert db.current_revision(engine) == db.SCHEMA_HEAD
    engine.dispose()


def test_a_cache_hit_does_not_load_sqlalchemy(tmp_path: Path) -> None:
    """A fresh process (a papermill run's kernel) whose task is a cache hit on a store at
    the schema's head: SQLAlchemy's import is most of such a run's start-up."""
    script = textwrap.dedent(
        """
        import sys
        from papercrane.backend.api import RunRequest
        from papercrane.backend.config import Config
        from papercrane.backend.engine import LocalEngine
        from papercrane.backend.model import TaskConfig, TaskSpec

        engine = LocalEngine(Config(home=sys.argv[1]))
        spec = TaskSpec(name="t", code="y = x * 2", inputs=("x",), outputs=("y",))
        x = engine.find_artifact(engine.artifacts.fingerprinter().value(3))
        x = x or engine.put_value(3, "input 'x'")
        config = TaskConfig(executor="inline", cache=True)
        request = RunRequest(spec=spec, config=config, inputs={"x": x}, values={"x": 3})
        result = engine.run_task(request)
        engine.close()
        print(result.execution.status.value, "sqlalchemy" in sys.modules)
        """
    )

    def run() -> str:
        done = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert run()[0] == "succeeded"  # a new store (migrated) and a miss
    assert run() == ["cached", "False"]


def test_a_store_upgraded_by_a_newer_papercrane_is_refused_clearly(tmp_path: Path) -> None:
    """Opening a store whose schema is newer than this papercrane says so and what to
    do (not Alembic's "Can't locate revision"), and leaves the store as it was."""
    path = tmp_path / "x.db"
    Store(f"sqlite:///{path}").close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099'")
        conn.commit()
    with pytest.raises(ConfigError, match=r"newer papercrane .*'0099'.*upgrade papercrane"):
        Store(f"sqlite:///{path}")
    engine = sa.create_engine(f"sqlite:///{path}")
    with pytest.raises(ConfigError, match="newer papercrane"):
        db.ensure_schema(engine)
    engine.dispose()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == ("0099",)


def _indexes(path: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}


def _revision(path: Path) -> str | None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return db.sqlite_revision(conn)


def _downgrade(path: Path, revision: str) -> None:
    from alembic import command

    cfg = db.alembic_config()
    engine = db.create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, revision)
            conn.commit()
    finally:
        engine.dispose()


def test_revision_0007_drops_two_unused_indexes_and_keeps_new_elements_from_going_back(
    tmp_path: Path,
) -> None:
    """0007 drops ``ix_artifacts_hash`` and ``ix_lineage_execution`` (no query used them).
    A store that recorded a map's elements the new way (``model.EventKind``) cannot go
    back to 0006, whose papercrane would read them as still running; one without can,
    and gets the indexes back."""
    path = tmp_path / "papercrane.db"
    engine = db.create_engine(f"sqlite:///{path}")
    db.upgrade(engine, "0006")
    engine.dispose()
    unused = {"ix_artifacts_hash", "ix_lineage_execution"}
    assert unused <= _indexes(path)
    papercrane = LocalEngine(Config(home=tmp_path))  # opening migrates to the head
    spec = TaskSpec(name="inc", code="y = x + 1", inputs=("x",), outputs=("y",))
    config = TaskConfig(executor="inline", cache=True)
    xs = papercrane.put_value([1, 2], "xs")
    papercrane.close()
    assert not unused & _indexes(path) and _revision(path) == db.SCHEMA_HEAD
    _downgrade(path, "0006")  # nothing recorded the new way yet
    assert unused <= _indexes(path)

    papercrane = LocalEngine(Config(home=tmp_path))
    request = WorkflowRequest(
        spec=assemble("wf", [CellTask(task=spec, config=config, map=MapSpec("xs", "x"))]),
        params={"xs": xs},
        param_values={"xs": [1, 2]},
    )
    assert papercrane.run_workflow(request).nodes["inc"].values["y"] == [2, 3]
    papercrane.close()
    with pytest.raises(RuntimeError, match="still running; keep the newer papercrane"):
        _downgrade(path, "0006")
    assert not unused & _indexes(path) and _revision(path) == "0007"


@pytest.mark.parametrize("n", [0, 1, 2, 31, 63, 64, 65, 200, 1000])
def test_multi_row_inserts_write_what_executemany_writes(
    n: int, request: pytest.FixtureRequest
) -> None:
    """Events go in multi-row INSERTs (64 rows each, the rest in one ``executemany``):
    every row once, in order, so their rowids are consecutive as ``executemany`` gives."""
    conn = sqlite3.connect(":memory:")
    request.addfinalizer(conn.close)
    conn.execute("CREATE TABLE multi_rows (seq INTEGER PRIMARY KEY, a TEXT, b INTEGER, c TEXT)")
    conn.execute("INSERT INTO multi_rows (a, b, c) VALUES ('first', 0, NULL)")
    t = sqlite_rows.table(conn, "multi_rows")
    rows = [(f"a{i}", i, None if i % 3 else json.dumps({"i": i})) for i in range(n)]
    cur = conn.cursor()
    sqlite_rows.insert_rows(cur, t, ("a", "b", "c"), rows)
    stored = conn.execute(
        "SELECT seq, a, b, c FROM multi_rows WHERE seq > 1 ORDER BY seq"
    ).fetchall()
    assert stored == [(i + 2, *row) for i, row in enumerate(rows)]
    last = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
    assert last == n + 1


def test_revision_0008_gives_each_storage_its_own_artifact_rows(tmp_path: Path) -> None:
    """Rows from before 0008 keep scope '' and stay readable: by the local engine, and
    by a server's engine (which reads its own scope first) as long as the bytes are in
    its storage. Once an id has rows in two scopes the store cannot go back to 0007."""
    path = tmp_path / "papercrane.db"
    engine = db.create_engine(f"sqlite:///{path}")
    db.upgrade(engine, "0007")
    engine.dispose()
    old = ArtifactRef("ab" * 32, "cd" * 32, "objects/cd/x", 3, "text", "str", "'old'")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("INSERT INTO artifacts VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (*astuple(old), 1.0))
        conn.commit()
    store = Store(f"sqlite:///{path}")  # opening migrates to the head
    try:
        assert _revision(path) == db.SCHEMA_HEAD
        assert store.artifact(old.id) == old
        assert store.artifact(old.id, "alpha/development") == old  # (the fallback)
        assert store.artifacts_by_prefix("abab", "alpha/development") == [old]
        mine = replace(old, hash="ef" * 32, uri="objects/ef/y")
        with store.transaction() as conn:
            store.put_artifacts(conn, [mine], "alpha/development")
        assert store.artifact(old.id, "alpha/development") == mine
        assert store.artifacts_by_prefix("abab", "alpha/development") == [mine]
        assert store.artifact(old.id) == old
        assert store.artifact(old.id, "beta/development") == old
    finally:
        store.close()
    with pytest.raises(RuntimeError, match="recorded for more than one project"):
        _downgrade(path, "0007")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("DELETE FROM artifacts WHERE scope = ''")
        conn.commit()
    _downgrade(path, "0007")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT id, hash FROM artifacts").fetchall() == [(mine.id, mine.hash)]
    assert _revision(path) == "0007"
