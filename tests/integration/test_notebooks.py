"""Notebooks end to end under papermill and nbclient, in real kernels."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import nbformat
import papermill
import pytest

from papercrane.backend.store import Store

from .nbfiles import write_notebook

pytestmark = pytest.mark.kernel

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def task_widgets(nb: nbformat.NotebookNode) -> dict[str, str]:
    """Final text of each task cell's widget, by task name."""
    found = {}
    for cell in nb.cells:
        if cell.cell_type != "code" or not cell.source.startswith("%%task"):
            continue
        name = cell.source.split()[1]
        for out in cell.outputs:
            text = out.get("data", {}).get("text/plain", "")
            if text.startswith(f"{name}:"):
                found[name] = text
    return found


def run_papermill(src: Path, dst: Path, home: Path, **params: object) -> nbformat.NotebookNode:
    env_before = os.environ.get("PAPERCRANE_HOME")
    os.environ["PAPERCRANE_HOME"] = str(home)
    try:
        papermill.execute_notebook(
            str(src), str(dst), parameters=params, progress_bar=False, cwd=str(src.parent)
        )
    finally:
        if env_before is None:
            os.environ.pop("PAPERCRANE_HOME", None)
        else:
            os.environ["PAPERCRANE_HOME"] = env_before
    return nbformat.read(dst, as_version=4)


@pytest.mark.parametrize("notebook", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_every_example_notebook_runs(notebook: Path, home: Path, tmp_path: Path) -> None:
    run_papermill(notebook, tmp_path / "out.ipynb", home)


def test_quickstart_second_run_is_all_cache_hits(home: Path, tmp_path: Path) -> None:
    src = NOTEBOOKS / "quickstart.ipynb"
    first = task_widgets(run_papermill(src, tmp_path / "1.ipynb", home))
    assert set(first) == {"prepare", "fit", "evaluate"}
    assert all(": succeeded" in text for text in first.values()), first
    second_nb = run_papermill(src, tmp_path / "2.ipynb", home)
    second = task_widgets(second_nb)
    assert all(": cached" in text for text in second.values()), second
    printed = "".join(
        o.get("text", "") for c in second_nb.cells if c.cell_type == "code" for o in c.outputs
    )
    assert "training rows" not in printed  # task code did not run: no print happened
    assert "coefficients" in printed  # plain cells after the tasks did run


def test_papermill_parameters_reach_tasks(home: Path, tmp_path: Path) -> None:
    src = NOTEBOOKS / "quickstart.ipynb"
    run_papermill(src, tmp_path / "1.ipynb", home)
    nb = run_papermill(src, tmp_path / "2.ipynb", home, n_samples=200, degree=3)
    widgets = task_widgets(nb)
    assert all(": succeeded" in text for text in widgets.values()), widgets
    assert "160 training rows" in "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
    )


def _many_tasks_notebook(path: Path, tag: str) -> None:
    steps = [
        f"%%task step{i} --cache --executor {'inline' if i % 2 else 'local'}\n"
        f"acc = acc + {i}\nlabel = {tag!r}"
        for i in range(12)
    ]
    write_notebook(
        path, "%load_ext papercrane\nacc = 0", *steps, "assert acc == sum(range(12)), acc"
    )


def test_two_processes_share_one_store(home: Path, tmp_path: Path) -> None:
    """Two papermill runs at once on one PAPERCRANE_HOME: both finish, the database stays
    consistent and every execution's events fold to a terminal state."""
    paths = []
    for tag in ("a", "b"):
        p = tmp_path / f"{tag}.ipynb"
        _many_tasks_notebook(p, tag)
        paths.append(p)
    env = {**os.environ, "PAPERCRANE_HOME": str(home)}

    def run(p: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "papermill", str(p), str(p.with_suffix(".out.ipynb"))],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, paths))
    for r in results:
        assert r.returncode == 0, r.stderr[-3000:]
    with closing(sqlite3.connect(home / "papercrane.db")) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = db.execute("SELECT id, status FROM executions").fetchall()
    assert len(rows) == 24
    store = Store(f"sqlite:///{home / 'papercrane.db'}")
    try:
        for execution_id, status in rows:
            state = store.execution(execution_id)
            assert state is not None and state.status.terminal
            assert state.status.value == status
    finally:
        store.close()


def _deferred_notebook(path: Path, seconds: float) -> Path:
    """Batch mode under plain papermill: the last task is deferred and no later cell
    reads it, so it runs as the kernel exits (there is no `%workflow flush` cell)."""
    return write_notebook(
        path,
        "%load_ext papercrane\n%workflow defer",
        f"%%task tail\nimport time\ntime.sleep({seconds})\ntail = 1",
        "print('last cell')",
    )


def _papermill_cli(src: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAPERCRANE_")}
    env["PAPERCRANE_HOME"] = str(home)
    argv = [sys.executable, "-m", "papermill", str(src), str(src.with_suffix(".out.ipynb"))]
    return subprocess.run(
        [*argv, "--no-progress-bar"], env=env, capture_output=True, text=True, timeout=120
    )


def _threads_start_at_exit() -> bool:
    """Whether this Python (the kernels') starts a thread in an atexit handler: 3.12
    refuses (CPython issue 113964), 3.10, 3.11 and 3.13 do."""
    probe = (
        "import atexit, threading\n"
        "def probe():\n"
        "    try:\n"
        "        threading.Thread(target=print).start()\n"
        "    except RuntimeError:\n"
        "        print('refused')\n"
        "atexit.register(probe)\n"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    return "refused" not in run.stdout


THREADS_AT_EXIT = _threads_start_at_exit()


def _executions(home: Path) -> list[dict]:
    store = Store(f"sqlite:///{home / 'papercrane.db'}")
    try:
        return store.list_executions()
    finally:
        store.close()


def test_deferred_tasks_left_at_the_end_run_as_the_kernel_exits(home: Path, tmp_path: Path) -> None:
    result = _papermill_cli(_deferred_notebook(tmp_path / "quick.ipynb", 0), home)
    assert result.returncode == 0, result.stderr
    if THREADS_AT_EXIT:
        (row,) = _executions(home)
        assert row["status"] == "succeeded"
    else:  # Python 3.12: they cannot run then; the terminal says so and what to do instead
        assert "the deferred tasks (tail) did not run: this Python" in result.stderr
        assert "End the notebook with a `%workflow flush` cell" in result.stderr
        assert _executions(home) == []  # nothing recorded half-way


def test_a_workflow_of_deferred_tasks_left_at_the_end_runs_as_the_kernel_exits(
    home: Path, tmp_path: Path
) -> None:
    """Two nodes or more run on a thread pool, which ``concurrent.futures`` closes as the
    interpreter begins to exit: the deferred tasks run before that, and the terminal
    says that a kernel manager gives them little time and what to do instead."""
    src = write_notebook(
        tmp_path / "two.ipynb",
        "%load_ext papercrane\n%workflow defer",
        "%%task one\none = 1",
        "%%task two\ntwo = 2",
        "print('last cell')",
    )
    result = _papermill_cli(src, home)
    assert result.returncode == 0, result.stderr
    if not THREADS_AT_EXIT:  # Python 3.12: as for one task, above
        assert "the deferred tasks (one, two) did not run: this Python" in result.stderr
        assert _executions(home) == []
        return
    assert "the deferred tasks (one, two) run now, as the kernel exits" in result.stderr
    assert "end the notebook with a `%workflow flush` cell" in result.stderr
    (row,) = _executions(home)
    assert row["status"] == "succeeded", result.stderr
    assert f"ran at exit: execution {row['id']} succeeded" in result.stderr
    store = Store(f"sqlite:///{home / 'papercrane.db'}")
    try:
        state = store.execution(row["id"])
    finally:
        store.close()
    assert state is not None
    assert {n: s.status.value for n, s in state.nodes.items()} == {
        "one": "succeeded",
        "two": "succeeded",
    }


def test_a_kernel_stopped_during_its_exit_flush_records_the_run_aborted(
    home: Path, tmp_path: Path
) -> None:
    """papermill's kernel manager sends SIGTERM 2.5 s into the kernel's shutdown: a
    deferred task still running then is stopped and recorded as aborted, not left
    "running" in the store for ever, and the terminal says what to do."""
    if not THREADS_AT_EXIT:
        # (the test above checks what happens there instead: the tasks never start)
        pytest.skip("this Python (3.12) starts no thread at exit, so no run to stop")
    result = _papermill_cli(_deferred_notebook(tmp_path / "slow.ipynb", 60), home)
    assert result.returncode == 0, result.stderr
    assert "the kernel was stopped while its deferred tasks (tail) ran at exit" in result.stderr
    assert "end the notebook with a `%workflow flush` cell" in result.stderr
    store = Store(f"sqlite:///{home / 'papercrane.db'}")
    try:
        (row,) = store.list_executions()
        state = store.execution(row["id"])
    finally:
        store.close()
    assert row["status"] == "aborted"
    assert state is not None and state.nodes["tail"].status.value == "aborted"
