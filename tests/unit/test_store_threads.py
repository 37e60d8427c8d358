"""The store's per-thread connections: threads come and go (one per execution on a
server, a request pool) without draining the connection pool."""

from __future__ import annotations

import threading
from pathlib import Path

from papercrane.backend.model import ArtifactRef
from papercrane.backend.store import Store

REF = ArtifactRef("a" * 64, "h", "u", 1, "json", "int", "1")


def exercise_threads(store: Store) -> None:
    """Many short-lived threads, then more live threads at once than may keep pins;
    each reads and writes. A drained pool would make a thread wait, then fail."""
    store.engine.pool._timeout = 5  # type: ignore[attr-defined]  (fail fast, not in 30 s)
    errors: list[BaseException] = []

    def work(barrier: threading.Barrier | None = None) -> None:
        try:
            if barrier is not None:
                barrier.wait(30)
            with store.write() as conn:
                conn.exec_driver_sql("DELETE FROM cache_entries WHERE key = 'none'")
            assert store.list_executions() == []
            # The driver's connections (a task run's statements on a SQLite file) too.
            with store.transaction() as conn:
                store.put_artifacts(conn, [REF])
            assert store.artifact(REF.id) == REF
            assert store.cache_get("none", "p", "d") is None
            if barrier is not None:
                barrier.wait(30)  # every thread holds its connections here at once
            with store.write() as conn:
                conn.exec_driver_sql("DELETE FROM cache_entries WHERE key = 'none'")
        except BaseException as exc:  # reported below
            errors.append(exc)

    for _ in range(3 * store.PINNED_THREADS):  # one after another, like executions
        t = threading.Thread(target=work)
        t.start()
        t.join()
    assert not errors, errors
    n = 3 * store.PINNED_THREADS
    barrier = threading.Barrier(n)
    threads = [threading.Thread(target=work, args=(barrier,)) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    work()  # this thread too
    assert not errors, errors
    kept = {id(t) for t, _ in store._open}
    assert len(kept) <= store.PINNED_THREADS


def test_threads_do_not_drain_the_pool(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        exercise_threads(store)
    finally:
        store.close()
