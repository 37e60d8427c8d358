"""Workflows in a real kernel: %workflow show/run/recover/defer, --map, %lineage."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from .kernel import Kernel

pytestmark = pytest.mark.kernel


def node_times(home: Path, execution: str) -> dict[str, tuple[float, float]]:
    with closing(sqlite3.connect(home / "papercrane.db")) as db:
        rows = db.execute(
            "SELECT node, kind, ts FROM events WHERE execution_id = ? ORDER BY seq", (execution,)
        ).fetchall()
    times: dict[str, list[float]] = {}
    for node, kind, ts in rows:
        if kind == "attempt_started":
            times.setdefault(node, [ts, ts])[0] = ts
        elif kind in ("node_succeeded", "node_failed"):
            times.setdefault(node, [ts, ts])[1] = ts
    return {k: (v[0], v[1]) for k, v in times.items()}


def last_execution(home: Path, kind: str = "workflow") -> str:
    with closing(sqlite3.connect(home / "papercrane.db")) as db:
        (eid,) = db.execute(
            "SELECT id FROM executions WHERE kind = ? ORDER BY created_at DESC", (kind,)
        ).fetchone()
    return eid


BRANCHES = [
    "%%task base --executor inline\nxs = list(range(n))",
    "%%task left\nimport time\ntime.sleep(1.5)\nleft = sum(xs)",
    "%%task right\nimport time\ntime.sleep(1.5)\nright = max(xs)",
    "%%task join --executor inline\ntotal = left + right",
]


def test_workflow_run_overlaps_branches_and_binds(kernel: Kernel, home: Path) -> None:
    kernel.run("n = 5").ok()
    for cell in BRANCHES:
        kernel.run(cell).ok()
    shown = kernel.run("%workflow show").ok()
    text = shown.displays[-1]["text/plain"]
    assert "join  <- left from left, right from right" in text
    assert "<svg" in shown.displays[-1]["text/html"]
    run = kernel.run("%workflow run -p n=10 --max-parallel 2").ok()
    assert "succeeded" in run.updates[-1]["text/plain"]
    assert kernel.run("print(total)").ok().stdout.strip() == "54"
    times = node_times(home, last_execution(home))
    (l0, l1), (r0, r1) = times["left"], times["right"]
    assert l0 < r1 and r0 < l1  # the two 1.5 s branches ran at the same time


def test_workflow_run_errors_name_things(kernel: Kernel) -> None:
    r = kernel.run("%workflow run")
    assert r.status == "error" and "no task cells yet" in r.error["evalue"]
    kernel.run("n = 3").ok()
    kernel.run("%%task a --executor inline\nx = n + 1").ok()
    r = kernel.run("%workflow run -p m=1")
    assert r.status == "error"
    assert "no parameter 'm'" in r.error["evalue"] and "parameters are: n" in r.error["evalue"]
    kernel.run("del n").ok()
    r = kernel.run("%workflow run")
    assert r.status == "error" and "workflow parameter 'n' has no value" in r.error["evalue"]
    r = kernel.run("%workflow recover nonexistent")
    assert r.status == "error" and "no execution 'nonexistent'" in r.error["evalue"]


def test_recover_reruns_only_the_failed_node(kernel: Kernel, home: Path, workdir: Path) -> None:
    log = workdir / "ran.log"
    flag = workdir / "fixed"
    kernel.run(f"LOG = {str(log)!r}\nFLAG = {str(flag)!r}").ok()
    write = "with open(LOG, 'a') as f:\n    f.write('{}\\n')\n"
    flag.write_text("ok")  # the cells work at first, so the notebook has all three
    kernel.run("%%task a --executor inline\n" + write.format("a") + "x = 1").ok()
    check = "assert os.path.exists(FLAG), 'no flag'\n"
    kernel.run("%%task b\nimport os\n" + write.format("b") + check + "y = x").ok()
    kernel.run("%%task c --executor inline\n" + write.format("c") + "z = y + 1").ok()
    log.unlink()
    flag.unlink()
    r = kernel.run("%workflow run")
    assert r.status == "error"
    tb = "\n".join(r.error["traceback"])
    assert "node 'b'" in tb and "AssertionError: no flag" in tb and "%workflow recover" in tb
    failed = last_execution(home)
    assert log.read_text().split() == ["a", "b"]
    flag.write_text("ok")
    kernel.run("%workflow recover").ok()  # (no id: the workflow's last run, which failed)
    assert log.read_text().split() == ["a", "b", "b", "c"]  # a came from the failed run
    assert kernel.run("print(z)").ok().stdout.strip() == "2"
    recovered = last_execution(home)
    assert recovered != failed
    r = kernel.run(f"%workflow recover {recovered}")
    assert r.status == "error" and "nothing to recover" in r.error["evalue"]
    r = kernel.run("%workflow recover")
    assert r.status == "error"
    assert f"no failed run to recover (its last run, {recovered}, succeeded)" in r.error["evalue"]


def test_a_failed_run_binds_what_finished_and_recover_runs_the_fixed_cell(
    kernel: Kernel, home: Path, workdir: Path
) -> None:
    """The advice a failed run gives ("fix the cell and run it, then recover") works: the
    nodes that succeeded are bound at once and reused, the fixed cell runs as it is now
    (not the code that failed), and so does what depends on it."""
    log = workdir / "ran.log"
    kernel.run(f"LOG = {str(log)!r}\nn = 4").ok()
    write = "with open(LOG, 'a') as f:\n    f.write('{}\\n')\n"
    kernel.run("%%task a --executor inline\n" + write.format("a") + "xa = n + 1").ok()
    kernel.run("%%task c --executor inline\n" + write.format("c") + "xc = 1 / (xa - 6)").ok()
    kernel.run("%%task d --executor inline\n" + write.format("d") + "xd = xc * 2").ok()
    kernel.run("%%task e --executor inline\n" + write.format("e") + "xe = n * 3").ok()
    log.unlink()
    r = kernel.run("%workflow run -p n=5 --failure-policy continue")
    assert r.status == "error"
    tb = "\n".join(r.error["traceback"])
    assert "ZeroDivisionError" in tb and "fix the cell and run it, then: %workflow recover" in tb
    failed = last_execution(home)
    # a and e succeeded with n=5: bound now, as cells above the failing one would be
    assert kernel.run("print(xa, xe)").ok().stdout.split() == ["6", "15"]
    fixed = "%%task c --executor inline\n" + write.format("c") + "xc = 1 / (xa - 7)"
    kernel.run(fixed).ok()  # the fixed cell, run on its own (n is 4 in the notebook)
    log.unlink()
    kernel.run("%workflow recover").ok()
    # a and e are reused from the failed run; c runs its new code, and d after it
    assert log.read_text().split() == ["c", "d"]
    assert kernel.run("print(xa, xc, xd, xe)").ok().stdout.split() == ["6", "-1.0", "-2.0", "15"]
    recovered = last_execution(home)
    with closing(sqlite3.connect(home / "papercrane.db")) as db:
        (source,) = db.execute(
            "SELECT payload FROM events WHERE execution_id = ? AND kind = 'execution_created'",
            (recovered,),
        ).fetchone()
    assert json.loads(source)["recovered_from"] == failed
    # Nothing to recover: said before any widget is drawn.
    r = kernel.run(f"%workflow recover {recovered}")
    assert r.status == "error" and "nothing to recover" in r.error["evalue"]
    assert not r.displays


def test_recover_without_an_id_never_picks_another_notebooks_run(
    kernel: Kernel, home: Path
) -> None:
    """Without the notebook's file (plain papermill, a console) every notebook's workflow
    is called "notebook": a failed run of another one, in the same store, is not this
    kernel's to recover."""
    other = (
        "from papercrane.backend.config import Config\n"
        "from papercrane.backend.engine import LocalEngine, WorkflowRequest\n"
        "from papercrane.backend.model import TaskConfig, TaskSpec\n"
        "from papercrane.backend.workflow import CellTask, assemble\n"
        "e = LocalEngine(Config(home=__import__('sys').argv[1]))\n"
        "t = TaskSpec(name='boom', code='x = 1 / 0', inputs=(), outputs=('x',))\n"
        "spec = assemble('notebook', [CellTask(t, TaskConfig(executor='inline'))])\n"
        "try:\n    e.run_workflow(WorkflowRequest(spec=spec, params={}))\n"
        "except Exception:\n    pass\n"
        "e.close()\n"
    )
    subprocess.run([sys.executable, "-c", other, str(home)], check=True)
    r = kernel.run("%workflow recover")
    assert r.status == "error"
    assert "this kernel has not run the workflow yet" in r.error["evalue"]
    assert "%workflow recover ID" in r.error["evalue"]


def test_a_parameter_the_workflow_also_assigns_is_pointed_out(kernel: Kernel) -> None:
    """``n = n + 1`` in a task makes ``n`` a parameter and an output: a run without -p
    starts from the n the last run left, so each run differs. The run says so."""
    kernel.run("n = 1").ok()
    kernel.run("%%task a --executor inline\nn = n + 1\nna = n").ok()
    kernel.run("%%task b --executor inline\nnb = n * 10").ok()
    first = kernel.run("%workflow run").ok()
    assert "parameter 'n' is also an output of task 'a'" in first.stdout, first.stdout
    assert "(2)" in first.stdout and "-p n=VALUE" in first.stdout
    assert kernel.run("print(n, na, nb)").ok().stdout.split() == ["3", "3", "30"]
    chosen = kernel.run("%workflow run -p n=100").ok()
    assert "also an output" not in chosen.stdout
    assert kernel.run("print(n, nb)").ok().stdout.split() == ["101", "1010"]


def test_a_parameter_value_with_spaces(kernel: Kernel) -> None:
    kernel.run("title = 'x'").ok()
    kernel.run("%%task shout --executor inline\nloud = title.upper()").ok()
    kernel.run('%workflow run -p "title=hello world"').ok()
    assert kernel.run("print(loud)").ok().stdout.strip() == "HELLO WORLD"
    r = kernel.run("%workflow run -p title='hello world'")
    assert r.status == "error" and '-p "title=hello world"' in r.error["evalue"]


def test_a_failed_flush_binds_the_deferred_tasks_that_succeeded(kernel: Kernel) -> None:
    kernel.run("%workflow defer\nn = 4").ok()
    kernel.run("%%task a --executor inline\nxa = n + 1").ok()
    kernel.run("%%task c --executor inline\nxc = 1 / (xa - 5)").ok()
    kernel.run("%%task d --executor inline\nxd = n * 3\nxd").ok()
    r = kernel.run("print(xd)")
    assert r.status == "error" and "ZeroDivisionError" in "\n".join(r.error["traceback"])
    # d's last expression still shows in its own cell (an update of its "deferred" note)
    assert "12" in [u.get("text/plain") for u in r.updates]
    assert kernel.run("print(xa, xd)").ok().stdout.split() == ["5", "12"]
    # ... so the failing cell, fixed and run again, finds its input.
    kernel.run("%workflow defer off").ok()
    kernel.run("%%task c --executor inline\nxc = 1 / (xa - 6)").ok()
    assert kernel.run("print(xc)").ok().stdout.strip() == "-1.0"


def test_recovering_a_failed_task_that_fails_again_shows_its_traceback(
    kernel: Kernel, home: Path
) -> None:
    assert kernel.run("%%task bad1 --executor inline\nx = 1\ny = x / 0").status == "error"
    failed = last_execution(home, kind="task")
    r = kernel.run(f"%workflow recover {failed}")
    assert r.status == "error"
    tb = "\n".join(r.error["traceback"])
    assert "Task 'bad1' failed" in tb and "y = x / 0" in tb and "ZeroDivisionError" in tb


def test_a_deleted_task_cell_leaves_the_workflow_once_the_notebook_is_saved(
    kernel: Kernel, workdir: Path
) -> None:
    """JupyterLab sends each cell's id; the saved notebook says which cells still exist."""
    import nbformat

    path = workdir / "nb.ipynb"
    kernel.run(f"import os\nos.environ['PAPERCRANE_NOTEBOOK'] = {str(path)!r}").ok()
    kernel.run("%%task a --executor inline\nx = 1", cell_id="cell-a").ok()
    kernel.run("%%task b --executor inline\ny = x + 1", cell_id="cell-b").ok()
    kernel.run("%%task c --executor inline\nz = x + 2", cell_id="cell-c").ok()
    nb = nbformat.v4.new_notebook()
    for cell_id, source in (("cell-c", "%%task c"), ("cell-a", "%%task a")):
        nb.cells.append(nbformat.v4.new_code_cell(source, id=cell_id))
    nbformat.write(nb, path)  # saved without b, and with c moved above a
    kernel.run("%%task d --executor inline\nw = z + 1", cell_id="cell-d").ok()  # not saved yet
    shown = kernel.run("%workflow show").ok()
    text = shown.displays[-1]["text/plain"]
    assert "] b" not in text and "] d  <- z from c" in text, text
    assert "left out of the workflow: task 'b'" in shown.stdout
    assert "deleted" in shown.stdout


def test_two_cells_with_one_task_name_are_named_by_what_the_user_sees(kernel: Kernel) -> None:
    kernel.run("a = 3").ok()
    kernel.run("%%task dup --executor inline\nout1 = a + 1", cell_id="first").ok()
    kernel.run("%%task dup --executor inline\nout2 = a * 100", cell_id="second").ok()
    r = kernel.run("%workflow show")
    assert r.status == "error"
    assert "the cell that ran as In[3] and the cell that ran as In[4]" in r.error["evalue"]


def test_a_name_two_cells_assign_is_shown_with_the_rule(kernel: Kernel) -> None:
    kernel.run("%%task first --executor inline\nimport json\nx = 1").ok()
    kernel.run("%%task second --executor inline\nimport json\nx = 2").ok()
    kernel.run("%%task third --executor inline\ny = x + 1").ok()
    shown = kernel.run("%workflow show").ok().displays[-1]
    assert "json is assigned" not in shown["text/plain"]  # a module: environment, not data
    note = "x is assigned by 2 task cells (first, second): each task reading it gets the nearest"
    assert "[succeeded] third  <- x from second" in shown["text/plain"]
    assert f"note: {note}" in shown["text/plain"]
    assert note in shown["text/html"]


def test_map_in_the_kernel(kernel: Kernel) -> None:
    kernel.run("words = ['a', 'bb', 'ccc']\nbad = 5").ok()
    kernel.run("%%task lens --map words --cache\nsize = len(word)").ok()
    assert kernel.run("print(size)").ok().stdout.strip() == "[1, 2, 3]"
    again = kernel.run("%%task lens --map words --cache\nsize = len(word)").ok()
    assert "cached" in again.widget["text/plain"]
    shown = kernel.run("%workflow show").ok().displays[-1]
    assert "[cached] lens  (map over words; cache hit" in shown["text/plain"]
    assert "map over words" in shown["text/html"]  # the node's tooltip
    r = kernel.run("%%task m --map bad --as b\nout = b")
    assert r.status == "error" and r.error["ename"] == "UsageError"  # refused before a run
    assert "'bad' is an int, which is not iterable" in r.error["evalue"]
    r = kernel.run("%%task m --map data\nout = 1")  # (a typo is told apart: no 'data')
    assert r.status == "error" and "no variable 'data'" in r.error["evalue"]
    kernel.run("data = [1, 2]").ok()
    r = kernel.run("%%task m --map data\nout = 1")  # (exists; its element has no name)
    assert r.status == "error" and "--as" in r.error["evalue"]
    assert "can't tell what to call one element of 'data'" in r.error["evalue"]


def test_ten_thousand_element_map_in_a_kernel(kernel: Kernel) -> None:
    kernel.run("xs = list(range(10_000))").ok()
    kernel.run("%%task inc --map xs --as x --executor inline\ny = x + 1", timeout=600).ok()
    r = kernel.run("print(len(y), y[0], y[-1])").ok()
    assert r.stdout.split() == ["10000", "1", "10000"]


def test_deferred_batch_runs_in_parallel_when_needed(kernel: Kernel, home: Path) -> None:
    kernel.run("%workflow defer").ok()
    kernel.run("n = 4").ok()
    for cell in BRANCHES:
        r = kernel.run(cell).ok()
        assert "deferred" in r.displays[-1]["text/plain"]
    # (not globals(): a cell that calls it may read any output, so it runs them first)
    assert kernel.run("print('total' in dir())").ok().stdout.strip() == "False"
    shown = kernel.run("%workflow show").ok().displays[-1]["text/plain"]
    assert "[deferred] left" in shown and "[deferred] join" in shown, shown  # not "not run"
    r = kernel.run("print(total)").ok()  # needs an output: the pending DAG runs first
    assert r.stdout.strip() == "9"  # 0+1+2+3 and 3
    times = node_times(home, last_execution(home))
    (l0, l1), (r0, r1) = times["left"], times["right"]
    assert l0 < r1 and r0 < l1


def test_deferred_flush_keeps_the_cells_line_numbers(kernel: Kernel) -> None:
    kernel.run("%workflow defer").ok()
    kernel.run("%%task make --executor inline\nv = 2").ok()
    r = kernel.run("# reads v, so the deferred task runs first\nw = v * 10\nz = w / 0")
    assert r.status == "error" and r.error["ename"] == "ZeroDivisionError"
    tb = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(r.error["traceback"]))
    assert "----> 3 z = w / 0" in tb  # the line of the cell the user wrote, not one added before it
    assert kernel.run("print(v, w)").ok().stdout.strip() == "2 20"


def test_lineage_of_a_three_step_workflow(kernel: Kernel) -> None:
    kernel.run("n = 2").ok()
    kernel.run("%%task load --executor inline\nraw = [n, n + 1]").ok()
    kernel.run("%%task clean\ngood = [v * 2 for v in raw]").ok()
    kernel.run("%%task summarize --executor inline\nanswer = sum(good)").ok()
    r = kernel.run("%lineage answer").ok()
    text = r.displays[-1]["text/plain"]
    for task in ("summarize", "clean", "load"):
        assert f"<- {task} @" in text
    assert text.index("summarize") < text.index("clean") < text.index("load")
    r = kernel.run("%lineage n")
    assert r.status == "error" and "not produced by a task" in r.error["evalue"]


def test_lineage_of_a_value_a_cell_changed_says_how_and_which_task_made_it(
    kernel: Kernel,
) -> None:
    """One message served every case ("not produced by a task (or was changed since)"):
    the user had to guess whether the value was never a task's, or which cell undid it."""
    kernel.run("n = 2").ok()
    kernel.run("%%task load --executor inline\nraw = [n, n + 1]\nother = [n]").ok()
    kernel.run("raw.append(9)\nother = [2]").ok()
    r = kernel.run("%lineage raw")
    assert r.status == "error"
    assert (
        "'raw' was changed since task 'load' produced it (in place, by a cell)"
        in (r.error["evalue"])
    )
    r = kernel.run("%lineage other")
    assert r.status == "error"
    assert (
        "'other' was changed since task 'load' produced it (a cell assigned it again)"
        in (r.error["evalue"])
    )
    r = kernel.run("%lineage n")
    assert (
        r.status == "error"
        and "'n' was not produced by a task: it has no lineage" in (r.error["evalue"])
    )


def test_lineage_of_equal_values_is_the_one_each_variable_came_from(kernel: Kernel) -> None:
    """12 made by two tasks is one artifact: each variable's lineage is its own task's,
    and a 12 typed by hand has none."""
    kernel.run("n = 5\nm = 7").ok()
    kernel.run("%%task first --executor inline\np = n + 7").ok()
    kernel.run("%%task second --executor inline\nq = m + 5").ok()
    kernel.run("%%task third --executor inline\nr = p * 2").ok()
    shown = kernel.run("%lineage p").ok().displays[-1]["text/plain"]
    assert "<- first @" in shown and "second" not in shown, shown
    shown = kernel.run("%lineage q").ok().displays[-1]["text/plain"]
    assert "<- second @" in shown and "first" not in shown, shown
    shown = kernel.run("%lineage r").ok().displays[-1]["text/plain"]  # r's input p: first's
    assert "<- third @" in shown and "<- first @" in shown and "second" not in shown, shown
    kernel.run("typed = 12").ok()
    r = kernel.run("%lineage typed")
    assert r.status == "error" and "not produced by a task" in r.error["evalue"]


def test_config_sets_project(kernel: Kernel, home: Path) -> None:
    kernel.run('%config Papercrane.project = "pricing"').ok()
    kernel.run("%%task p --executor inline\nv = 1").ok()
    with closing(sqlite3.connect(home / "papercrane.db")) as db:
        (project,) = db.execute(
            "SELECT project FROM executions ORDER BY created_at DESC"
        ).fetchone()
    assert project == "pricing"


def test_a_workflow_whose_cells_name_different_projects_says_where_it_runs(
    kernel: Kernel, home: Path
) -> None:
    kernel.run("%%task first --executor inline --project pricing\nv = 1").ok()
    kernel.run("%%task second --executor inline\nw = v + 1").ok()
    r = kernel.run("%workflow run").ok()
    assert "runs in default/development, its last task cell's" in r.stdout, r.stdout
    assert "'first' (pricing/development)" in r.stdout
    with closing(sqlite3.connect(home / "papercrane.db")) as db:
        (project,) = db.execute(
            "SELECT project FROM executions ORDER BY created_at DESC"
        ).fetchone()
    assert project == "default"
    kernel.run("%%task first --executor inline\nv = 1").ok()  # one project again
    assert "note:" not in kernel.run("%workflow run").ok().stdout


def test_interrupting_a_parallel_workflow_aborts_it(
    kernel: Kernel, home: Path, workdir: Path
) -> None:
    pids = workdir / "pids"
    pids.mkdir()
    body = f"import os, time\nopen(os.path.join({str(pids)!r}, str(os.getpid())), 'w').close()\n"
    kernel.run("%workflow defer").ok()  # record the cells; run them together below
    kernel.run("%%task one --executor inline\nx = 1").ok()
    kernel.run(f"%%task slow_a\n{body}time.sleep(60)\na = x").ok()
    kernel.run(f"%%task slow_b\n{body}time.sleep(60)\nb = x").ok()
    kernel.kc.execute("%workflow flush")
    deadline = time.monotonic() + 30
    while len(list(pids.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    kernel.send_interrupt()
    reply = kernel.kc.get_shell_msg(timeout=30)
    assert reply["content"]["status"] == "error"
    with closing(sqlite3.connect(home / "papercrane.db")) as db:
        (status,) = db.execute(
            "SELECT status FROM executions WHERE kind = 'workflow' ORDER BY created_at DESC"
        ).fetchone()
    assert status == "aborted"
    time.sleep(0.5)
    for f in pids.iterdir():
        with pytest.raises(ProcessLookupError):
            os.kill(int(f.name), 0)
    assert kernel.run("print('ok')").ok().stdout.strip() == "ok"


def test_a_packed_map_read_by_other_processes(kernel: Kernel, home: Path) -> None:
    """An inline map packs its elements and outputs; a ``local`` task's process, the
    ``papercrane lineage`` command and a cache hit in a new kernel all read them."""
    kernel.run("xs = [5, 6, 7]").ok()
    kernel.run("%%task inc --map xs --executor inline --cache\ny = x + 1").ok()
    kernel.run("%%task total --executor local\ns = sum(y)").ok()
    assert kernel.run("print(s)").ok().stdout.strip() == "21"
    with closing(sqlite3.connect(home / "papercrane.db")) as db:
        uris = dict(db.execute("SELECT preview, uri FROM artifacts"))
        (element_out,) = db.execute(
            "SELECT artifact_id FROM lineage WHERE node = 'inc[1]'"
        ).fetchone()
    assert uris["7"].startswith("packs/") and uris["[6, 7, 8]"].startswith("packs/")
    env = {**os.environ, "PAPERCRANE_HOME": str(home)}
    shown = subprocess.run(
        [sys.executable, "-m", "papercrane.backend.cli", "lineage", element_out, "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    tree = json.loads(shown.stdout)
    assert tree["producer"]["node"] == "inc[1]"
    assert [(i["name"], i["artifact"]["preview"]) for i in tree["inputs"]] == [("x", "6")]
    other = Kernel({"PAPERCRANE_HOME": str(home)}, home.parent / "work")
    try:
        other.run("%load_ext papercrane").ok()
        other.run("xs = [5, 6, 7]").ok()
        again = other.run("%%task inc --map xs --executor inline --cache\ny = x + 1").ok()
        assert "cached" in again.widget["text/plain"]
        assert other.run("print(y)").ok().stdout.strip() == "[6, 7, 8]"
    finally:
        other.shutdown()


def test_what_a_failed_node_displayed_shows_with_the_failed_run(
    kernel: Kernel, workdir: Path
) -> None:
    """A node in its own process that displays, then fails: ``%workflow run`` shows
    what it displayed above the run's tracebacks, as the task's own cell would."""
    flag = workdir / "ok"
    flag.write_text("ok")
    kernel.run(f"FLAG = {str(flag)!r}").ok()
    cell = (
        "%%task shows\nimport os\ndisplay('rows checked: 17')\n"
        "assert os.path.exists(FLAG), 'no flag'\nv = 1"
    )
    kernel.run(cell).ok()
    flag.unlink()
    r = kernel.run("%workflow run")
    assert r.status == "error"
    texts = [d.get("text/plain") for d in r.displays]
    assert "'rows checked: 17'" in texts, texts
    assert "no flag" in "\n".join(r.error["traceback"])
