"""The server against the embedded engine: events ingested per second, executions created
per second, and dependent-node transition latency (target through the server: <= 50 ms;
Flyte re-evaluates workflows every 5-30 s), on SQLite and on PostgreSQL.

    python benchmarks/bench_server.py [--no-postgres] [--chain 20]

Run with a Python that has papercrane installed with its test extras (the dev venv).
PostgreSQL: a throwaway server is started like the tests do (Debian's postgresql
package), or give PAPERCRANE_TEST_PG_URL. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.server_fixture and the PostgreSQL helper


def _events_per_second(db_url: str, n: int = 20_000, batch: int = 200) -> float:
    """Store.append of scheduler-sized batches: the rate the store ingests events."""
    from papercrane.backend.model import Event, EventKind, ExecutionState
    from papercrane.backend.projection import apply
    from papercrane.backend.store import Store

    store = Store(db_url)
    state = ExecutionState(id="bench" + os.urandom(4).hex())
    first = Event(state.id, EventKind.EXECUTION_CREATED, payload={"name": "bench"})
    apply(state, first)
    with store.write() as conn:
        store.append(conn, [first], state)
    start = time.perf_counter()
    for i in range(0, n, batch):
        events = [
            Event(state.id, EventKind.ATTEMPT_STATUS, f"node[{i + j}]", 1, {"message": "x"})
            for j in range(batch)
        ]
        for e in events:
            apply(state, e)
        with store.write() as conn:
            store.append(conn, events, state)
    rate = n / (time.perf_counter() - start)
    store.close()
    return rate


def _chain_cells(n: int) -> list[Any]:
    from papercrane.backend.model import TaskConfig, TaskSpec
    from papercrane.backend.workflow import CellTask

    cells = [
        CellTask(
            TaskSpec(name="n0", code="x0 = 0", inputs=(), outputs=("x0",)),
            TaskConfig(executor="local"),
        )
    ]
    for i in range(1, n):
        cells.append(
            CellTask(
                TaskSpec(
                    name=f"n{i}",
                    code=f"x{i} = x{i - 1} + 1",
                    inputs=(f"x{i - 1}",),
                    outputs=(f"x{i}",),
                ),
                TaskConfig(executor="local"),
            )
        )
    return cells


def _transitions(events: list[Any]) -> list[float]:
    """Gaps between a node's attempt_succeeded and the next node's attempt_started (s)."""
    done: dict[str, float] = {}
    started: dict[str, float] = {}
    for e in events:
        if e.kind.value == "attempt_succeeded":
            done[e.node] = e.ts
        elif e.kind.value == "attempt_started":
            started.setdefault(e.node, e.ts)
    gaps = []
    for i in range(1, len(started)):
        a, b = f"n{i - 1}", f"n{i}"
        if a in done and b in started:
            gaps.append(started[b] - done[a])
    return gaps


def _embedded(db_url: str, home: Path, chain: int, creations: int) -> dict[str, float]:
    from papercrane.backend.api import RunRequest
    from papercrane.backend.config import Config
    from papercrane.backend.engine import LocalEngine, WorkflowRequest
    from papercrane.backend.model import TaskConfig, TaskSpec
    from papercrane.backend.workflow import assemble

    engine = LocalEngine(Config(home=home, db_url=db_url))
    spec = TaskSpec(name="noop", code="y = 1", inputs=(), outputs=("y",))
    start = time.perf_counter()
    for _ in range(creations):  # recorded, not run: the cost of creating an execution
        engine.task_run(
            RunRequest(spec=spec, config=TaskConfig(executor="local"), inputs={}, want_values=False)
        ).begin()
    created = creations / (time.perf_counter() - start)
    result = engine.run_workflow(
        WorkflowRequest(
            spec=assemble("chain", _chain_cells(chain)),
            params={},
            max_parallel=1,
            want_values=False,
        )
    )
    gaps = _transitions(engine.events(result.execution.id))
    engine.close()
    return {"created": created, "gap_ms": statistics.median(gaps) * 1000}


def _server(db_url: str, home: Path, chain: int, creations: int) -> dict[str, float]:
    import httpx

    from papercrane.backend.client import RemoteEngine
    from papercrane.backend.engine import WorkflowRequest
    from papercrane.backend.workflow import assemble
    from tests.server_fixture import ServerProcess

    server = ServerProcess(home, db_url, extra=["--max-running", "2"]).start()
    token = server.token("bench")
    client = RemoteEngine(server.url, token, "bench")
    try:
        body = {
            "task": {
                "name": "noop",
                "code": "y = 1",
                "outputs": ["y"],
                "environment": {"python": "cpython"},
            },
            "config": {"executor": "local"},
        }
        http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"})
        path = "/api/v1/projects/bench/domains/development/executions"
        start = time.perf_counter()
        for _ in range(creations):
            http.post(path, json=body).raise_for_status()
        created = creations / (time.perf_counter() - start)
        execution_id = client.submit_workflow(
            WorkflowRequest(
                spec=assemble("chain", _chain_cells(chain)),
                params={},
                project="bench",
                max_parallel=1,
            )
        )
        client.follow(execution_id)
        gaps = _transitions(client.events(execution_id))
        return {"created": created, "gap_ms": statistics.median(gaps) * 1000}
    finally:
        client.close()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--chain", type=int, default=20, help="nodes in the dependent chain")
    parser.add_argument("--creations", type=int, default=100, help="executions to create")
    args = parser.parse_args()

    backends: list[tuple[str, Any]] = [("SQLite", None)]
    pg = None
    if not args.no_postgres:
        url = os.environ.get("PAPERCRANE_TEST_PG_URL")
        if not url:
            from tests.conftest import PostgresServer, _bindir

            bindir = _bindir()
            if bindir is not None:
                pg = PostgresServer(bindir)
                pg.start()
                url = pg.admin_conninfo()
        if url:
            backends.append(("PostgreSQL", url))
    rows = []
    try:
        for label, admin in backends:
            with tempfile.TemporaryDirectory() as tmp:
                tmpdir = Path(tmp)

                def db(name: str, tmpdir: Path = tmpdir, admin: Any = admin) -> str:
                    if admin is None:
                        return f"sqlite:///{tmpdir / name}.db"
                    from tests.conftest import PostgresDatabases

                    return PostgresDatabases(admin).create()

                events = _events_per_second(db("events"))
                emb = _embedded(db("embedded"), tmpdir / "emb", args.chain, args.creations)
                srv = _server(db("server"), tmpdir / "srv", args.chain, args.creations)
                rows.append((label, events, emb, srv))
    finally:
        if pg is not None:
            pg.cleanup()

    print(f"\n{'':<12}{'events/s (store)':>18}{'executions/s':>26}{'transition (median)':>34}")
    print(f"{'':<12}{'':>18}{'embedded':>13}{'server':>13}{'embedded':>17}{'server':>17}")
    for label, events, emb, srv in rows:
        print(
            f"{label:<12}{events:>18,.0f}{emb['created']:>13,.0f}{srv['created']:>13,.0f}"
            f"{emb['gap_ms']:>14.1f} ms{srv['gap_ms']:>14.1f} ms"
        )
    print(
        "\ntarget: dependent-node transition through the server <= 50 ms "
        "(Flyte: 5-30 s between workflow evaluations)"
    )
    print(
        f"chain of {args.chain} trivial local tasks; {args.creations} executions created "
        "(embedded: recorded only; server: POST /executions, then run in the background)"
    )


if __name__ == "__main__":
    main()
