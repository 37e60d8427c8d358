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
    r = kernel.run("%%task m --map data\nout = 1")
    assert r.status == "error" and "--as" in r.error["evalue"]


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


def test_config_sets_project(kernel: Kernel, home: Path) -> None:
    kernel.run('%config Papercrane.project = "pricing"').ok()
    kernel.run("%%task p --executor inline\nv = 1").ok()
    with closing(sqlite3.connect(home / "papercrane.db")) as db:
        (project,) = db.execute(
            "SELECT project FROM executions ORDER BY created_at DESC"
        ).fetchone()
    assert project == "pricing"


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
