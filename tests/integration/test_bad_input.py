"""Every user mistake gets one clear line naming the cell or variable, and leaves nothing
behind in the store: no rows, no value files, no temporary files."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from .kernel import Kernel

pytestmark = pytest.mark.kernel

TABLES = ("tasks", "artifacts", "executions", "events", "cache_entries")


def snapshot(home: Path) -> dict[str, object]:
    counts: dict[str, object] = {}
    db = home / "papercrane.db"
    if db.exists():
        with closing(sqlite3.connect(db)) as conn:
            for table in TABLES:
                counts[table] = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    store = home / "store"
    counts["files"] = (
        sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.is_file())
        if store.exists()
        else []
    )
    return counts


@pytest.fixture
def primed(kernel: Kernel, home: Path) -> Kernel:
    """A kernel whose store exists (one good task ran), with some awkward variables."""
    kernel.run(
        "import threading\nlock = threading.Lock()\ngen = (i for i in range(3))\n"
        "fh = open(__file__ if '__file__' in dir() else '/dev/null')\nok = 1"
    ).ok()
    kernel.run("%%task warmup\nw = ok + 1").ok()
    return kernel


CASES = [
    ("%%task bad\nx = (1,\ny = 2", "syntax error on line 2", "'(' was never closed"),
    ("%%task t\ny = lock", "input 'lock' of type _thread.lock can't be serialized", "lock"),
    ("%%task t\ny = list(gen)", "input 'gen' of type generator can't be serialized", "list"),
    ("%%task t\ny = fh.read()", "input 'fh' of type _io.TextIOWrapper", "file name"),
    ("%%task t\ny = not_defined_anywhere + 1", "reads 'not_defined_anywhere'", "defines it"),
    ("%%task t --inputs ok,nope\ny = ok", "--inputs names 'nope'", "no variable 'nope'"),
    ("%%task t --frobnicate\ny = 1", "unrecognized arguments: --frobnicate", ""),
    ("%%task t --timeout soon\ny = 1", "--timeout 'soon' is not a duration", "30m"),
    ("%%task t --memory lots\ny = 1", "--memory 'lots' is not a memory size", "4Gi"),
    ("%%task t --cpu -1\ny = 1", "--cpu '-1' must be positive", ""),
    ("%%task t --retries -2\ny = 1", "--retries -2 must be 0 or more", ""),
    ("%%task t --executor cloud\ny = 1", "invalid choice: 'cloud'", "inline"),
    ("%%task t\n!ls\ny = 1", "line 2: '!ls' needs the kernel", "normal cell"),
    ("%%task t\n%time y = 1", "needs the kernel", ""),
    ("%%task t\nexec('y = 1')", "exec() hides which variables", "--inputs and --outputs"),
    ("%%task t\nfrom os.path import *", "'import *' hides which names", "--outputs"),
    (
        "%%task aw\nimport asyncio\nx = await asyncio.sleep(0, 1)",
        "task 'aw', line 3: 'x = await asyncio.sleep(0, 1)' awaits at the top level",
        "async function and call asyncio.run(...) on it inside the task",
    ),
    ("%%task t\nasync for v in gen:\n    pass", "line 2: 'async for v in gen:' awaits", ""),
    ("%%task t\ny = 1\nreturn y", "syntax error on line 3: 'return' outside function", ""),
    ("%%task 'bad name!'\ny = 1", "task name", "letters"),
    ("%%task has space\ny = 1", "task names can't contain spaces: 'has space'", "'has_space'"),
    ("%%task t --cache-version 2\ny = 1", "--cache-version 2 keys the cache", "add --cache"),
    ("%%task t --map ok --as k\ny = k", "--map ok: 'ok' is an int, which is not iterable", "list"),
    ("%%task t --map range(3) --as k\ny = k", "--map range(3): name a notebook variable", "="),
    ("%%task t --map okz\ny = 1", "--map okz, but the notebook has no variable 'okz'", "'ok'"),
    ("%%task t --map nope --as k\ny = k", "the notebook has no variable 'nope'", "cell above"),
    ("%%task t --map ok\ny = 1", "--map ok: can't tell what to call one element", "--as"),
    ("%workflow run --max-parallel 0", "--max-parallel 0 must be at least 1", ""),
    ("%%task t --project ../x\ny = 1", "project '../x' is not usable", "PAPERCRANE_PROJECT"),
    ("%%task t --domain 'a b'\ny = 1", "domain \"'a b'\" is not usable", "letters, digits"),
]


@pytest.mark.parametrize(("cell", "expected", "hint"), CASES, ids=[c[1][:30] for c in CASES])
def test_clear_error_and_nothing_written(
    primed: Kernel, home: Path, cell: str, expected: str, hint: str
) -> None:
    before = snapshot(home)
    r = primed.run(cell)
    assert r.status == "error"
    message = r.error["evalue"]
    assert r.error["ename"] == "UsageError"
    assert expected in message and hint in message, message
    assert len(r.error["traceback"]) <= 3  # one line, not a stack of papercrane frames
    assert snapshot(home) == before
    assert primed.run("print('usable')").ok().stdout.strip() == "usable"


def test_declared_output_not_assigned(primed: Kernel, home: Path) -> None:
    r = primed.run("%%task t --outputs y,z\ny = 1")
    assert r.status == "error"
    assert "--outputs names 'z' but the cell did not assign it" in "\n".join(r.error["traceback"])


def test_unwritable_storage(tmp_path: Path, workdir: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    k = Kernel({"PAPERCRANE_HOME": str(blocker / "home")}, workdir)
    try:
        k.run("%load_ext papercrane").ok()
        r = k.run("%%task t\ny = 1")
        assert r.status == "error"
        msg = r.error["evalue"]
        assert "not writable" in msg or "cannot create" in msg, msg
        assert "PAPERCRANE_HOME" in msg
    finally:
        k.shutdown()


def test_memory_storage_works_inline_and_explains_local(tmp_path: Path, workdir: Path) -> None:
    k = Kernel(
        {"PAPERCRANE_HOME": str(tmp_path / "h"), "PAPERCRANE_STORAGE": "memory://pc-test"},
        workdir,
    )
    try:
        k.run("%load_ext papercrane").ok()
        k.run("a = 2").ok()
        k.run("%%task t --executor inline --cache\nb = a * 21").ok()
        assert k.run("print(b)").ok().stdout.strip() == "42"
        hit = k.run("%%task t --executor inline --cache\nb = a * 21").ok()
        assert "cached" in hit.widget["text/plain"]
        r = k.run("%%task t2\nc = a")
        assert r.status == "error"
        assert "memory://pc-test" in r.error["evalue"] and "--executor inline" in r.error["evalue"]
    finally:
        k.shutdown()


def test_a_name_a_failed_task_was_to_assign_names_that_task(primed: Kernel, home: Path) -> None:
    """Not "no variable is defined": the cell that assigns it exists, and failed."""
    assert primed.run("%%task broken\nhalf = 1 / 0").status == "error"
    before = snapshot(home)
    r = primed.run("%%task after\nwhole = half * 2")
    assert r.status == "error" and r.error["ename"] == "UsageError"
    assert (
        "task 'after' reads 'half', which task 'broken' assigns, but its last run failed"
        in (r.error["evalue"])
    )
    assert "fix that cell and run it first" in r.error["evalue"]
    assert snapshot(home) == before


def test_a_workflow_name_the_server_would_refuse(primed: Kernel, home: Path) -> None:
    primed.run("%config Papercrane.workflow_name = 'my flow'").ok()
    r = primed.run("%workflow run")
    assert r.status == "error" and r.error["ename"] == "UsageError"
    assert "workflow name 'my flow' is not usable" in r.error["evalue"]
    assert "%config Papercrane.workflow_name" in r.error["evalue"]
    primed.run("%config Papercrane.workflow_name = 'my-flow'").ok()
    assert primed.run("%workflow run").status == "ok"


def test_the_task_help_shows_the_cell_magic(primed: Kernel) -> None:
    """``%%task?`` pages the magic's docstring: its usage line names the cell magic (two
    %), as it is written. (The pager's text comes in the reply's payload, which the test
    kernel does not keep: the docstring is read directly.)"""
    r = primed.run("print(get_ipython().find_cell_magic('task').__doc__)").ok()
    usage = [line.strip() for line in r.stdout.splitlines() if "task [" in line]
    assert usage and usage[0].startswith("%%task [--cache]"), r.stdout


@pytest.mark.parametrize("executor", ["local", "inline"])
def test_an_open_file_left_as_an_output_is_the_users_error(
    kernel: Kernel, home: Path, executor: str
) -> None:
    """A read-mode text file pickles (as its contents), but can't be fingerprinted: the
    task fails once as the user's error naming the variable, not as an engine failure
    retried as a system error (local) or an aborted execution (inline)."""
    kernel.run("open('notes.txt', 'w').write('first line\\n')").ok()
    r = kernel.run(f"%%task fo --executor {executor}\nf = open('notes.txt')\nheader = f.readline()")
    assert r.status == "error"
    text = r.text
    assert "output 'f' of type _io.TextIOWrapper can't be serialized" in text, text
    assert "open files can't be moved" in text and "del it at the end of the cell" in text
    assert "fingerprint.py" not in text and "Traceback" not in r.stderr, text
    with closing(sqlite3.connect(home / "papercrane.db")) as conn:
        rows = conn.execute("SELECT kind FROM events ORDER BY seq").fetchall()
        status = conn.execute("SELECT status FROM executions").fetchall()
    kinds = [k for (k,) in rows]
    assert kinds.count("attempt_started") == 1 and kinds[-1] == "execution_failed", kinds
    assert status == [("failed",)]
    kernel.run(
        f"%%task fo2 --executor {executor}\nwith open('notes.txt') as f:\n    h = f.read()"
    ).ok()
    assert kernel.run("print(h)").ok().stdout.strip() == "first line"
