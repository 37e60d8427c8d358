"""``papercrane run NOTEBOOK`` end to end: the real CLI in a subprocess, real papermill,
real kernels and the real subprocess runner, each test on its own PAPERCRANE_HOME."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest

from .nbfiles import write_notebook

pytestmark = pytest.mark.kernel

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


# -- helpers ------------------------------------------------------------------------------
def papercrane(
    home: Path, *args: str, cwd: Path | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """Run the ``papercrane`` command line in a fresh process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAPERCRANE_")}
    env["PAPERCRANE_HOME"] = str(home)
    env["COLUMNS"] = "200"  # rich wraps messages at the console width
    return subprocess.run(
        [sys.executable, "-m", "papercrane.backend.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def as_json(home: Path, *args: str) -> Any:
    return json.loads(ok(papercrane(home, *args, "--json")).stdout)


def printed(nb: nbformat.NotebookNode) -> str:
    """Everything the notebook's code cells printed or displayed as text."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.append(out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def executions(home: Path) -> list[dict[str, Any]]:
    """Every execution in the home, oldest first."""
    return list(reversed(as_json(home, "executions", "list", "--limit", "1000")))


def counts(log: Path) -> dict[str, int]:
    """How many times each task's code ran, from the lines the tasks append to ``log``."""
    found: dict[str, int] = {}
    if log.exists():
        for line in log.read_text().split():
            found[line] = found.get(line, 0) + 1
    return found


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "papercrane-home"
    path.mkdir()
    return path


# A task that records that its code ran: one line in the log per run.
def _mark(name: str) -> str:
    return f"with open(log_path, 'a') as _log:\n    _log.write({name!r} + '\\n')\n"


# -- the branches example -----------------------------------------------------------------
def test_branches_example_runs_in_batch(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "branches.out.ipynb"
    result = ok(papercrane(home, "run", str(NOTEBOOKS / "branches.ipynb"), "-o", str(out)))
    assert "wrote" in result.stderr
    # The IPython kernel talks over Unix sockets, not localhost TCP (which ipykernel 7
    # warns about on every run).
    assert "Kernel is running over TCP" not in result.stderr
    nb = nbformat.read(out, as_version=4)
    assert not [c for c in nb.cells if "papercrane-flush" in c.metadata.get("tags", [])]
    assert not [c for c in nb.cells if "%workflow flush" in c.source]
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code_cells)
    assert "'units_per_price_step': -" in printed(nb)  # the last cell printed the report
    rows = executions(home)
    assert rows, "papercrane run recorded no execution"
    assert {r["name"] for r in rows} == {"branches"}
    assert {r["kind"] for r in rows} == {"workflow"}
    # The notebook's own `%workflow run` ran the deferred tasks, once, as its execution
    # (they were flushed first, then found cached by a second one).
    assert [r["status"] for r in rows] == ["succeeded"]
    first = as_json(home, "executions", "show", rows[0]["id"])
    assert first["nodes"].keys() == {"load", "trend", "price_effect", "stats", "combine"}
    assert {n["status"] for n in first["nodes"].values()} == {"succeeded"}
    table = {line.split("│")[1].strip(): line for line in result.stderr.splitlines() if "│" in line}
    for task in first["nodes"]:
        assert "succeeded" in table[task] and "cache hit" not in table[task], table[task]
        assert rows[0]["id"] in table[task]


def test_second_run_executes_no_task_code(home: Path, tmp_path: Path) -> None:
    log = tmp_path / "ran.log"
    src = write_notebook(
        tmp_path / "twice.ipynb",
        "%load_ext papercrane",
        (f"log_path = {str(log)!r}\nsize = 5", ["parameters"]),
        "%%task numbers --cache\n" + _mark("numbers") + "numbers = list(range(size))",
        "%%task squares --cache\n" + _mark("squares") + "squares = [n * n for n in numbers]",
        "%%task cubes --cache\n" + _mark("cubes") + "cubes = [n ** 3 for n in numbers]",
        "%%task total --cache\n" + _mark("total") + "total = sum(squares) + sum(cubes)",
        "print('total is', total)",
    )
    printed_ids = []
    for i in (1, 2):
        out = tmp_path / f"twice.{i}.ipynb"
        result = ok(papercrane(home, "run", str(src), "-o", str(out), "-q"))
        printed_ids += result.stdout.split()  # (-q: only the execution's id, for scripts)
        assert "total is 130" in printed(nbformat.read(out, as_version=4))
        assert counts(log) == {"numbers": 1, "squares": 1, "cubes": 1, "total": 1}
    rows = executions(home)
    assert [r["status"] for r in rows] == ["succeeded", "cached"]
    assert printed_ids == [r["id"] for r in rows]
    second = as_json(home, "executions", "show", rows[-1]["id"])
    assert {n: s["status"] for n, s in second["nodes"].items()} == dict.fromkeys(
        ["numbers", "squares", "cubes", "total"], "cached"
    )


def test_fanout_example_in_batch_then_all_elements_cached(home: Path, tmp_path: Path) -> None:
    """A --map node under batch mode, `%lineage` of a deferred task's output (it runs the
    pending tasks first), and a second run where every element is a cache hit."""
    for i in (1, 2):
        out = tmp_path / f"fanout.{i}.ipynb"
        ok(papercrane(home, "run", str(NOTEBOOKS / "fanout.ipynb"), "-o", str(out), "-q"))
        text = printed(nbformat.read(out, as_version=4))
        assert "best: {'degree': 3" in text
        assert "best = {'degree': 3" in text  # the %lineage widget
        assert "<- score @" in text and "<- make_data @" in text
    rows = executions(home)
    assert [r["status"] for r in rows] == ["succeeded", "cached"]
    second = as_json(home, "executions", "show", rows[-1]["id"])
    elements = {n: s for n, s in second["nodes"].items() if n.startswith("score[")}
    assert len(elements) == 12
    assert {s["status"] for s in elements.values()} == {"cached"}


# -- parallelism ----------------------------------------------------------------------------
def _node_times(home: Path, execution_id: str) -> dict[str, tuple[float, float]]:
    """(first attempt started, node finished) for each node, from the events."""
    data = as_json(home, "executions", "show", execution_id, "--events")
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    for event in data["events"]:
        if event["kind"] == "attempt_started":
            starts.setdefault(event["node"], event["ts"])
        elif event["kind"] == "node_succeeded":
            ends[event["node"]] = event["ts"]
    return {node: (starts[node], ends[node]) for node in ends}


def test_independent_tasks_overlap_in_time(home: Path, tmp_path: Path) -> None:
    src = write_notebook(
        tmp_path / "parallel.ipynb",
        "%load_ext papercrane",
        "%%task left\nimport time\ntime.sleep(1.5)\nleft = 'L'",
        "%%task right\nimport time\ntime.sleep(1.5)\nright = 'R'",
        "both = left + right\nprint(both)",
    )
    out = tmp_path / "parallel.out.ipynb"
    ok(papercrane(home, "run", str(src), "-o", str(out), "-q"))
    assert "LR" in printed(nbformat.read(out, as_version=4))
    (row,) = executions(home)
    times = _node_times(home, row["id"])
    (l0, l1), (r0, r1) = times["left"], times["right"]
    assert l1 - l0 >= 1.5 and r1 - r0 >= 1.5
    overlap = min(l1, r1) - max(l0, r0)
    span = max(l1, r1) - min(l0, r0)
    # One after the other they would take 3 s or more, with no overlap.
    assert overlap > 1.0, times
    assert span < 2.6, times


# -- parameters and bad input ---------------------------------------------------------------
def _param_notebook(tmp_path: Path) -> Path:
    return write_notebook(
        tmp_path / "params.ipynb",
        "%load_ext papercrane",
        ("factor = 2\nlabel = 'x'", ["parameters"]),
        "%%task scaled --cache\nscaled = factor * 21\ntitle = f'{label}={scaled}'",
        "print('result:', title)",
    )


def test_parameters_reach_tasks(home: Path, tmp_path: Path) -> None:
    src = _param_notebook(tmp_path)
    out = tmp_path / "params.out.ipynb"
    ok(papercrane(home, "run", str(src), "-o", str(out), "-q", "-p", "factor", "3"))
    assert "result: x=63" in printed(nbformat.read(out, as_version=4))
    ok(papercrane(home, "run", str(src), "-o", str(out), "-q", "-p", "label", "answer"))
    assert "result: answer=42" in printed(nbformat.read(out, as_version=4))
    (first, second) = executions(home)
    shown = as_json(home, "executions", "show", first["id"])
    assert shown["nodes"]["scaled"]["status"] == "succeeded"


def test_unknown_parameter_names_the_known_ones(home: Path, tmp_path: Path) -> None:
    src = _param_notebook(tmp_path)
    result = papercrane(home, "run", str(src), "-q", "-p", "nope", "1")
    assert result.returncode != 0
    assert "nope" in result.stderr
    assert "factor" in result.stderr and "label" in result.stderr
    assert "Traceback" not in result.stderr
    assert executions(home) == []  # refused before any kernel started


def test_the_known_parameters_are_the_notebooks_values(home: Path, tmp_path: Path) -> None:
    """Read from the file, with no kernel: the builtins a task calls, a module a plain
    cell imported and a map's element are not parameters; a plain cell's value is (the
    kernel would take it as an input), and so is a builtin's name the notebook rebinds.
    A value a plain cell sets after papermill's injected parameters is refused."""
    src = write_notebook(
        tmp_path / "names.ipynb",
        "%load_ext papercrane",
        ("n = 3", ["parameters"]),
        "import math\nxs = [1.0, 4.0]\nsum = 10",
        "%%task roots --map xs\nroot = math.sqrt(x) + len(str(n))\nprint(root)",
        "%%task total\ntotal = sum + max(root) + int(n)",
        "print('total:', total)",
    )
    result = papercrane(home, "run", str(src), "-q", "-p", "nope", "1")
    assert result.returncode == 1
    assert "its parameters are: n, xs, sum\n" in result.stderr, result.stderr
    # papermill would set ``sum``, then cell 3 would set it again: refused, not ignored.
    result = papercrane(home, "run", str(src), "-q", "-p", "sum", "20")
    assert result.returncode == 1
    assert "-p sum: cell 3 assigns 'sum' after the parameters are set" in result.stderr
    assert "tagged 'parameters'" in result.stderr
    out = tmp_path / "names.out.ipynb"
    ok(papercrane(home, "run", str(src), "-q", "-p", "n", "5", "-o", str(out)))
    assert "total: 18.0" in printed(nbformat.read(out, as_version=4))  # 10 + (2 + 1) + 5


@pytest.mark.parametrize(
    "content",
    ["this is { not json", '{"cells": 3, "metadata": {}}', "[1, 2, 3]"],
    ids=["not-json", "not-nbformat", "json-list"],
)
def test_invalid_notebook_file(home: Path, tmp_path: Path, content: str) -> None:
    bad = tmp_path / "bad.ipynb"
    bad.write_text(content)
    result = papercrane(home, "run", str(bad), "-q")
    assert result.returncode != 0
    assert "bad.ipynb is not a valid notebook" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_missing_notebook_file(home: Path, tmp_path: Path) -> None:
    result = papercrane(home, "run", str(tmp_path / "nowhere.ipynb"), "-q")
    assert result.returncode != 0
    assert "nowhere.ipynb: no such notebook" in result.stderr


def test_an_output_folder_that_does_not_exist_is_refused_first(home: Path, tmp_path: Path) -> None:
    """papermill finds out only when it writes, after the tasks have run."""
    src = write_notebook(tmp_path / "t.ipynb", "%load_ext papercrane", "%%task t\ny = 2")
    result = papercrane(home, "run", str(src), "-q", "-o", str(tmp_path / "nowhere" / "o.ipynb"))
    assert result.returncode != 0
    assert f"the folder {tmp_path / 'nowhere'} does not exist; create it first" in result.stderr
    assert executions(home) == []


def test_a_project_the_server_would_refuse_is_refused_first(home: Path, tmp_path: Path) -> None:
    src = write_notebook(tmp_path / "t.ipynb", "%load_ext papercrane", "%%task t\ny = 2")
    result = papercrane(home, "run", str(src), "-q", "--project", "team a")
    assert result.returncode != 0
    assert "project 'team a' is not usable: start with a letter" in result.stderr
    assert executions(home) == []


def test_a_notebook_without_a_kernelspec_needs_kernel(home: Path, tmp_path: Path) -> None:
    src = write_notebook(tmp_path / "scripted.ipynb", "%load_ext papercrane", "%%task t\ny = 2")
    nb = nbformat.read(src, 4)
    del nb.metadata["kernelspec"]
    nbformat.write(nb, src)
    refused = papercrane(home, "run", str(src), "-q")
    assert refused.returncode != 0
    assert "scripted.ipynb names no kernel" in refused.stderr
    assert "--kernel NAME" in refused.stderr and "Traceback" not in refused.stderr
    assert executions(home) == []  # refused before any kernel started
    unknown = papercrane(home, "run", str(src), "-q", "--kernel", "nosuchkernel")
    assert unknown.returncode != 0
    assert "no kernel named 'nosuchkernel' is installed (installed: " in unknown.stderr
    assert "python3" in unknown.stderr and "Traceback" not in unknown.stderr
    assert executions(home) == []
    ok(papercrane(home, "run", str(src), "-q", "--kernel", "python3"))
    assert [e["status"] for e in executions(home)] == ["succeeded"]


def test_a_failed_map_is_reported_with_its_element(home: Path, tmp_path: Path) -> None:
    src = write_notebook(
        tmp_path / "mapfail.ipynb",
        "%load_ext papercrane",
        "xs = [3, 1, 4]",
        "%%task inv --map xs --executor inline\nz = 1 / (x - 1)",
    )
    result = papercrane(home, "run", str(src), "-q")
    assert result.returncode == 1
    assert "task 'inv' failed in execution" in result.stderr
    assert "1 of 3 elements failed (allowed: 0); element 1: ZeroDivisionError" in result.stderr
    assert "z = 1 / (x - 1)" in result.stderr  # the element's own traceback
    assert "before its first attempt" not in result.stderr
    (execution,) = executions(home)
    shown = as_json(home, "executions", "show", execution["id"])
    assert (shown["kind"], len(shown["workflow_version"])) == ("workflow", 64)
    node = shown["nodes"]["inv"]
    assert (node["elements"], node["elements_failed"], node["status"]) == (3, 1, "failed")
    table = ok(papercrane(home, "executions", "show", execution["id"])).stdout
    # Not "0" attempts: its elements made them; and the element fail-fast dropped is
    # counted, though it has no row of its own.
    assert "map of 3: 1 done, 1 failed, 1 not run" in table
    assert shown["workflow_version"] in table.replace("\n", "")
    # The map's own logs are its elements'; the element fail-fast dropped has none.
    whole = papercrane(home, "logs", execution["id"], "inv")
    assert whole.returncode == 1 and "'inv' is a map: each element has its own logs" in whole.stderr
    dropped = papercrane(home, "logs", execution["id"], "inv[2]")
    assert "inv[2] never ran: the map stopped before it started" in dropped.stderr
    unknown = papercrane(home, "logs", execution["id"], "inv[7]")
    assert "has no node 'inv[7]'; nodes: inv, inv[0..2]" in unknown.stderr
    # A recovery lists the element that failed again, not those it reused.
    assert papercrane(home, "recover", execution["id"]).returncode == 1
    again = executions(home)[-1]["id"]
    rows = ok(papercrane(home, "executions", "show", again)).stdout
    assert "recovers" in rows and "│ inv[1] " in rows and "│ inv[0] " not in rows, rows


def test_the_progress_says_which_tasks_never_ran(home: Path, tmp_path: Path) -> None:
    src = write_notebook(
        tmp_path / "early.ipynb",
        "%load_ext papercrane",
        "%%task first\nfirst = 1",
        "raise ValueError('stopped here')",
        "%%task second\nsecond = first + 1",
    )
    result = papercrane(home, "run", str(src))  # with the progress display
    assert result.returncode == 1
    rows = {line.split("│")[1].strip(): line for line in result.stderr.splitlines() if "│" in line}
    assert "succeeded" in rows["first"]
    assert "not run" in rows["second"] and "waiting" not in rows["second"]
    assert "ValueError: stopped here" in result.stderr


def test_tasks_deferred_above_a_failed_cell_run_to_their_end(home: Path, tmp_path: Path) -> None:
    """Top to bottom, a task cell above the cell that fails has run before it. In batch
    mode nothing read its output yet, so it is still pending when the notebook stops:
    ``papercrane run`` runs it then, whole. (Left to the kernel's exit, a kernel manager
    would stop it 2.5 s in and it would be recorded as aborted.)"""
    log = tmp_path / "ran.log"
    src = write_notebook(
        tmp_path / "late.ipynb",
        "%load_ext papercrane",
        f"log_path = {str(log)!r}",
        f"%%task slow\nimport time\ntime.sleep(3.5)\n{_mark('slow')}slow = 1",
        "raise ValueError('boom')",
    )
    result = papercrane(home, "run", str(src))
    assert result.returncode == 1, result.stderr
    assert "In[4] failed: running the deferred task above it (slow) first" in result.stderr
    assert "the notebook failed: ValueError: boom" in result.stderr, result.stderr
    assert counts(log) == {"slow": 1}
    (execution,) = executions(home)
    assert execution["status"] == "succeeded"
    assert "recover with" not in result.stderr  # nothing to recover: the task is done


def test_a_kernel_that_dies_while_the_deferred_tasks_run_is_reported(
    home: Path, tmp_path: Path
) -> None:
    """``_run_deferred`` waits for the kernel with its own loop, not jupyter_client's
    ``execute_interactive`` (which waits for ever): a dead kernel ends the wait."""
    src = write_notebook(
        tmp_path / "dies.ipynb",
        "%load_ext papercrane",
        "%%task killer --executor inline\nimport os, signal\nos.kill(os.getpid(), signal.SIGKILL)"
        "\nk = 1",
        "raise ValueError('boom')",
    )
    result = papercrane(home, "run", str(src), "-q", timeout=120)
    assert result.returncode == 1
    assert "could not run the deferred tasks after the failure: the kernel died" in result.stderr
    assert "the notebook failed: ValueError: boom" in result.stderr


def test_a_deferred_task_failing_after_the_notebook_failed_is_reported_too(
    home: Path, tmp_path: Path
) -> None:
    src = write_notebook(
        tmp_path / "both.ipynb",
        "%load_ext papercrane",
        "%%task fine\nfine = 2",
        "%%task broken\nbroken = 1 / 0",
        "raise ValueError('boom')",
    )
    result = papercrane(home, "run", str(src), "-q")
    assert result.returncode == 1
    err = result.stderr
    assert "running the 2 deferred tasks above it (fine, broken) first" in err, err
    assert "the notebook failed: ValueError: boom" in err
    (execution,) = executions(home)
    assert f"task 'broken' failed in execution {execution['id']}, attempt 1" in err
    assert "ZeroDivisionError: division by zero" in err
    assert err.index("ValueError: boom") < err.index("task 'broken' failed")  # the cause first
    assert f"recover with: papercrane recover {execution['id']}" in err
    assert "After fixing a cell, run the notebook again" in " ".join(err.split())


def ctrl_c_once_started(home: Path, started: Path, *args: str) -> str:
    """``papercrane run ARGS``, given Ctrl-C (SIGINT) once the task has created
    ``started``: its stderr, after checking it exited 1 having interrupted the kernel."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAPERCRANE_")}
    env.update(PAPERCRANE_HOME=str(home), COLUMNS="200")
    argv = [sys.executable, "-m", "papercrane.backend.cli", "run", *args]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not started.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the task never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    stderr = err.decode()
    assert proc.returncode == 1, stderr
    assert "interrupting the notebook's kernel" in stderr
    return stderr


def test_ctrl_c_interrupts_the_running_task_and_says_how_to_go_on(
    home: Path, tmp_path: Path
) -> None:
    """Ctrl-C on ``papercrane run`` interrupts the notebook's kernel: the running task
    stops and is recorded as interrupted, the executed notebook is written, and the
    terminal says how to recover; not a bare "Aborted!" over a kernel left to die."""
    started = tmp_path / "started"
    src = write_notebook(
        tmp_path / "long.ipynb",
        "%load_ext papercrane",
        f"%%task long --executor local\nimport time\nopen({str(started)!r}, 'w')\n"
        "time.sleep(120)\nlong = 1",
        "print(long)",
    )
    out = tmp_path / "long.out.ipynb"
    stderr = ctrl_c_once_started(home, started, str(src), "-o", str(out))
    assert "was interrupted and recorded as aborted" in stderr
    (execution,) = executions(home)
    assert execution["status"] == "aborted"
    assert f"recover with: papercrane recover {execution['id']}" in stderr
    assert "Aborted!" not in stderr
    assert out.exists()


def test_ctrl_c_stops_the_deferred_tasks_run_after_a_failed_cell(
    home: Path, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    src = write_notebook(
        tmp_path / "late-long.ipynb",
        "%load_ext papercrane",
        f"%%task long --executor local\nimport time\nopen({str(started)!r}, 'w')\n"
        "time.sleep(120)\nlong = 1",
        "raise ValueError('boom')",
    )
    stderr = ctrl_c_once_started(home, started, str(src))
    assert "the notebook failed: ValueError: boom" in stderr
    (execution,) = executions(home)
    assert execution["status"] == "aborted"
    assert f"recover with: papercrane recover {execution['id']}" in stderr


def test_log_output_prints_what_cells_and_tasks_print(home: Path, tmp_path: Path) -> None:
    src = write_notebook(
        tmp_path / "talk.ipynb",
        "%load_ext papercrane",
        "print('plain says hi')",
        "%%task t --executor local\nimport sys\nfor i in range(3):\n    print('epoch', i)\n"
        "print('oops', file=sys.stderr)\nv = 1",
        "print('v is', v)\nprint('no newline', end='')",
    )
    logged = ok(papercrane(home, "run", str(src), "-q", "--log-output")).stderr
    lines = [line.strip() for line in logged.splitlines()]
    # In order within stdout; stderr is another pipe, so "oops" may pass an epoch line.
    expected = ["plain says hi", "epoch 0", "epoch 1", "epoch 2", "v is 1", "no newline"]
    assert [line for line in lines if line in expected] == expected, logged
    assert lines.index("oops") < lines.index("v is 1")  # (the task ended before that cell)
    assert "plain says hi" not in ok(papercrane(home, "run", str(src), "-q")).stderr
    # ... also from the tasks run after a cell failed (``_run_deferred``)
    late = write_notebook(
        tmp_path / "late-talk.ipynb",
        "%load_ext papercrane",
        "%%task u --executor local\nprint('late epoch')\nu = 1",
        "raise ValueError('boom')",
    )
    result = papercrane(home, "run", str(late), "-q", "--log-output")
    assert result.returncode == 1 and "late epoch" in result.stderr.splitlines(), result.stderr


def test_one_task_name_with_two_codes(home: Path, tmp_path: Path) -> None:
    src = write_notebook(
        tmp_path / "twice.ipynb",
        "%load_ext papercrane",
        "%%task twin\nx = 1",
        "y = 0",
        "%%task twin\nx = 2",
    )
    result = papercrane(home, "run", str(src), "-q")
    assert result.returncode != 0
    assert "'twin'" in result.stderr
    assert "cell 2 and cell 4" in result.stderr, result.stderr
    assert executions(home) == []


def test_failing_plain_cell_is_reported(home: Path, tmp_path: Path) -> None:
    src = write_notebook(
        tmp_path / "plain.ipynb",
        "%load_ext papercrane",
        "%%task value\nvalue = 41",
        "assert value == 42, f'value is {value}'",
    )
    result = papercrane(home, "run", str(src), "-q")
    assert result.returncode == 1
    assert "the notebook failed: AssertionError: value is 41" in result.stderr, result.stderr
    assert "assert value == 42" in result.stderr  # the cell


def test_a_notebook_that_does_not_load_papercrane_runs_and_is_told(
    home: Path, tmp_path: Path
) -> None:
    """Its kernel would not know ``%%task``: the run loads the extension in a cell of its
    own, says so, and leaves that cell out of the executed notebook."""
    src = write_notebook(tmp_path / "bare.ipynb", "x = 20", "%%task double\ny = x * 2", "print(y)")
    out = tmp_path / "out.ipynb"
    result = ok(papercrane(home, "run", str(src), "-o", str(out), "-q"))
    assert "has no `%load_ext papercrane` cell before its first task cell" in result.stderr
    nb = nbformat.read(out, as_version=4)
    assert [c.source for c in nb.cells] == ["x = 20", "%%task double\ny = x * 2", "print(y)"]
    assert "40" in printed(nb)
    # A notebook that loads it is left as it is, and not told.
    src = write_notebook(tmp_path / "loads.ipynb", "%load_ext papercrane", "%%task t\nz = 1")
    result = ok(papercrane(home, "run", str(src), "-o", str(out), "-q"))
    assert "load_ext" not in result.stderr
    assert [c.source for c in nbformat.read(out, as_version=4).cells][0] == "%load_ext papercrane"


def test_papercrane_error_in_a_cell_is_reported(home: Path, tmp_path: Path) -> None:
    """IPython shows a UsageError on stderr, not as an error output: papermill only knows
    that the cell failed, so the CLI reads the message from the cell."""
    src = write_notebook(tmp_path / "usage.ipynb", "%load_ext papercrane", "%lineage nothing_here")
    result = papercrane(home, "run", str(src), "-q")
    assert result.returncode == 1
    assert "there is no variable 'nothing_here'" in result.stderr, result.stderr
    assert "%lineage nothing_here" in result.stderr


def test_deferred_task_uses_a_module_an_earlier_deferred_task_imported(
    home: Path, tmp_path: Path
) -> None:
    src = write_notebook(
        tmp_path / "modules.ipynb",
        "%load_ext papercrane",
        "%%task radius\nimport math\nr = 2.0",
        "%%task area\narea = round(math.pi * r ** 2, 2)",
        "print('area', area)",
    )
    out = tmp_path / "modules.out.ipynb"
    ok(papercrane(home, "run", str(src), "-o", str(out), "-q"))
    assert "area 12.57" in printed(nbformat.read(out, as_version=4))


def test_a_deferred_tasks_value_is_shown_in_its_own_cell(home: Path, tmp_path: Path) -> None:
    """Its last expression shows in the task's cell, as when the cell runs at once: the
    value replaces the "deferred" note once the task has run (here, at the flush
    ``papercrane run`` adds at the end)."""
    src = write_notebook(
        tmp_path / "shown.ipynb",
        "%load_ext papercrane",
        "x5 = 5",
        "%%task disp\nx5 * 2",
        "print('end')",
    )
    out = tmp_path / "shown.out.ipynb"
    ok(papercrane(home, "run", str(src), "-o", str(out), "-q"))
    cell = nbformat.read(out, as_version=4).cells[2]
    shown = [o.get("data", {}).get("text/plain") for o in cell.outputs]
    assert shown == ["10"], cell.outputs


# -- a failing task, then recover -----------------------------------------------------------
def test_failing_task_then_recover_runs_only_what_failed(home: Path, tmp_path: Path) -> None:
    log = tmp_path / "ran.log"
    flag = tmp_path / "ready.flag"
    src = write_notebook(
        tmp_path / "fails.ipynb",
        "%load_ext papercrane",
        (f"log_path = {str(log)!r}\nflag_path = {str(flag)!r}", ["parameters"]),
        "%%task extract\n" + _mark("extract") + "rows = [3, 1, 2]",
        "%%task validate\n"
        + _mark("validate")
        + "import os\n"
        + "if not os.path.exists(flag_path):\n"
        + "    raise RuntimeError(f'the flag file {flag_path} is missing')\n"
        + "clean = sorted(rows)",
        "%%task publish\n" + _mark("publish") + "published = ','.join(map(str, clean))",
        "print('published', published)",
    )
    result = papercrane(home, "run", str(src), "-o", str(tmp_path / "out.ipynb"), "-q")
    assert result.returncode == 1, result.stderr
    err = result.stderr
    assert "task 'validate' failed" in err
    assert "attempt 1" in err
    assert "raise RuntimeError(f'the flag file {flag_path} is missing')" in err  # user's line
    assert f"RuntimeError: the flag file {flag} is missing" in err
    assert counts(log) == {"extract": 1, "validate": 1}
    (failed,) = executions(home)
    assert failed["status"] == "failed"
    assert f"papercrane recover {failed['id']}" in err

    flag.write_text("ok")  # fix the cause
    recovered = as_json(home, "recover", failed["id"])
    assert recovered["status"] == "succeeded"
    assert recovered["recovered_from"] == failed["id"]
    assert recovered["nodes"] == {
        "extract": "recovered",
        "validate": "succeeded",
        "publish": "succeeded",
    }
    # extract's output was reused, not recomputed; the failed node and the one it held
    # up ran once more.
    assert counts(log) == {"extract": 1, "validate": 2, "publish": 1}
    shown = ok(papercrane(home, "executions", "show", recovered["id"])).stdout
    assert f"recovers          {failed['id']} (reusing its successful nodes)" in shown
    again = papercrane(home, "recover", recovered["id"], "--json")
    assert again.returncode != 0 and "nothing to recover" in again.stderr


# -- lineage --------------------------------------------------------------------------------
def test_lineage_of_a_three_step_chain(home: Path, tmp_path: Path) -> None:
    src = write_notebook(
        tmp_path / "chain.ipynb",
        "%load_ext papercrane",
        ("start = 4", ["parameters"]),
        "%%task first --cache\nx = start + 1",
        "%%task second --cache\ny = x * 10",
        "%%task third --cache\nz = y - 8",
        "print('z =', z)",
    )
    out = tmp_path / "chain.out.ipynb"
    ok(papercrane(home, "run", str(src), "-o", str(out), "-q"))
    assert "z = 42" in printed(nbformat.read(out, as_version=4))
    (row,) = executions(home)
    shown = as_json(home, "executions", "show", row["id"])
    artifact = shown["nodes"]["third"]["outputs"]["z"]
    tree = as_json(home, "lineage", artifact)

    chain = []
    node = tree
    while node is not None and node.get("producer"):
        chain.append((node["name"], node["producer"]["task_name"]))
        assert node["producer"]["execution_id"] == row["id"]
        upstream = [i for i in node["inputs"] if i.get("producer")]
        assert len(upstream) <= 1
        node = upstream[0] if upstream else None
    assert chain == [("z", "third"), ("y", "second"), ("x", "first")]
    # The chain ends at the parameter the first task read.
    first = tree["inputs"][0]["inputs"][0]
    assert [(i["name"], i["artifact"]["preview"]) for i in first["inputs"]] == [("start", "4")]
    text = ok(papercrane(home, "lineage", artifact)).stdout
    assert f"lineage of {artifact[:12]}" in text
    for name in ("third", "second", "first"):
        assert f"<- {name} @ " in text
    assert text.count(f"(execution {row['id']}, attempt 1)") == 3


def test_an_ipython_kernel_gets_unix_sockets_others_tcp(tmp_path: Path) -> None:
    from papercrane.backend.run_kernel import kernel_manager

    ipython = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    km = kernel_manager("python3", ipython, tmp_path)
    if os.name == "posix":
        assert (km.transport, km.ip) == ("ipc", str(tmp_path / "kernel"))
    else:
        assert km.transport == "tcp"
    other = kernel_manager(
        "ir", ["R", "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}"], tmp_path
    )
    assert other.transport == "tcp"


def test_a_kernel_killed_mid_task_ends_the_run(home: Path, tmp_path: Path) -> None:
    """The notebook's kernel killed while a task runs (``kill -9``, the out-of-memory
    killer): the run ends at once, as papermill does, says the kernel died and how to
    recover the execution it left, and writes the notebook as far as it got."""
    started, pid_file = tmp_path / "started", tmp_path / "kernel.pid"
    src = write_notebook(
        tmp_path / "killed.ipynb",
        "%load_ext papercrane",
        f"import os\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\nprint('before')",
        f"%%task slow --executor local\nimport time\nopen({str(started)!r}, 'w')\n"
        "time.sleep(30)\nslow = 1",
        "print(slow)",
    )
    out = tmp_path / "killed.out.ipynb"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAPERCRANE_")}
    env.update(PAPERCRANE_HOME=str(home), COLUMNS="200")
    argv = [sys.executable, "-m", "papercrane.backend.cli", "run", str(src), "-o", str(out)]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not started.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the task never started"
        time.sleep(0.05)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    killed = time.monotonic()
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()  # (it hung here for ever before)
    stderr = err.decode()
    assert time.monotonic() - killed < 20, stderr  # (not the task's 30 s, nor for ever)
    assert proc.returncode == 1, stderr
    assert "the notebook failed: the notebook's kernel died" in stderr, stderr
    assert "(in cell In[4]: print(slow))" in stderr, stderr
    (execution,) = executions(home)
    assert execution["status"] == "aborted"
    assert f"recover with: papercrane recover {execution['id']}" in stderr
    assert "before" in printed(nbformat.read(out, as_version=4))


def test_a_notebook_without_task_cells_runs_as_under_papermill(home: Path, tmp_path: Path) -> None:
    """No task cell: nothing to flush at the end, and papercrane need not be loaded."""
    src = write_notebook(tmp_path / "plain.ipynb", "x = 1", "print('x is', x)")
    out = tmp_path / "plain.out.ipynb"
    ok(papercrane(home, "run", str(src), "-o", str(out), "-q"))
    nb = nbformat.read(out, as_version=4)
    assert [c.source for c in nb.cells] == ["x = 1", "print('x is', x)"]
    assert "x is 1" in printed(nb)


def test_a_parameter_a_later_cell_sets_again_is_refused(home: Path, tmp_path: Path) -> None:
    """papermill puts the ``-p`` values after the first cell tagged 'parameters': a later
    cell (plain, or tagged 'parameters' too) that sets the name again would replace the
    value given, silently. Refused before any kernel starts, naming that cell. A cell that
    uses the value (``n = int(n)``) is fine."""
    later = write_notebook(
        tmp_path / "laterassign.ipynb",
        "%load_ext papercrane",
        ("n = 3", ["parameters"]),
        "n = 10",
        "%%task used\nused = n * 2",
    )
    result = papercrane(home, "run", str(later), "-q", "-p", "n", "5")
    assert result.returncode == 1
    assert (
        "-p n: cell 3 assigns 'n' after the parameters are set (papermill sets them after "
        "cell 2, the first tagged 'parameters')" in result.stderr
    ), result.stderr
    assert "remove that assignment" in result.stderr
    second = write_notebook(
        tmp_path / "twoparams.ipynb",
        "%load_ext papercrane",
        ("m = 1", ["parameters"]),
        ("n = 3", ["parameters"]),
        "%%task used\nused = n * 2",
    )
    result = papercrane(home, "run", str(second), "-q", "-p", "n", "5")
    assert result.returncode == 1
    assert "-p n: cell 3 assigns 'n' after the parameters are set" in result.stderr
    assert "tag only one cell 'parameters' (move 'n' into cell 2)" in result.stderr
    assert executions(home) == []  # (no kernel ran)
    uses = write_notebook(
        tmp_path / "uses.ipynb",
        "%load_ext papercrane",
        ("n = '3'", ["parameters"]),
        "n = int(n)",
        "%%task used\nused = n * 2",
        "print('used', used)",
    )
    out = tmp_path / "uses.out.ipynb"
    ok(papercrane(home, "run", str(uses), "-q", "-p", "n", "'5'", "-o", str(out)))
    assert "used 10" in printed(nbformat.read(out, as_version=4))


def test_a_parameter_a_later_task_cell_sets_again_is_refused(home: Path, tmp_path: Path) -> None:
    """A task cell's assignments are bound into the notebook too: ``n = 7`` in a task
    after the parameters cell replaced ``-p n 5`` silently (rc 0, ``range(7)``). Refused
    like a plain cell's, naming that cell; a task that uses the value (``n = n + 1``) is
    fine."""
    from papercrane.backend.notebook_file import notebook_workflow

    src = write_notebook(
        tmp_path / "taskassign.ipynb",
        "%load_ext papercrane",
        ("n = 4", ["parameters"]),
        "%%task make\nn = 7\nitems = list(range(n))",
        "print(items)",
    )
    result = papercrane(home, "run", str(src), "-q", "-p", "n", "5")
    assert result.returncode == 1, result.stderr
    assert (
        "-p n: cell 3 assigns 'n' after the parameters are set (papermill sets them after "
        "cell 2, the first tagged 'parameters')" in result.stderr
    ), result.stderr
    assert "remove that assignment" in result.stderr
    assert executions(home) == []  # (refused before a kernel started)
    uses = write_notebook(
        tmp_path / "taskuses.ipynb",
        "%load_ext papercrane",
        ("n = 4", ["parameters"]),
        "%%task bump\nn = n + 1\nitems = list(range(n))",
        "%%task declared --outputs total\nn = 2\ntotal = n + 1",  # (n is not bound back)
    )
    later = notebook_workflow(uses).assigned_later
    assert later == {"items": 2, "total": 3}, later


def test_a_map_over_a_misspelt_variable_says_it_does_not_exist(home: Path, tmp_path: Path) -> None:
    """Not that the element of 'itemz' can't be named: the kernel (batch mode) says the
    variable does not exist, and which one was meant."""
    src = write_notebook(
        tmp_path / "typo.ipynb",
        "%load_ext papercrane",
        "items = [1, 2, 3]",
        "%%task o4 --map itemz\ny = item * 2",
        "print(y)",
    )
    result = papercrane(home, "run", str(src), "-q", "-o", str(tmp_path / "typo.out.ipynb"))
    assert result.returncode == 1, result.stderr
    assert "--map itemz, but the notebook has no variable 'itemz'" in result.stderr, result.stderr
    assert "(did you mean 'items'?)" in result.stderr
    assert "can't tell what to call" not in result.stderr


def test_two_runs_at_once_each_show_their_own_executions(home: Path, tmp_path: Path) -> None:
    """Two ``papercrane run``s in one project at the same time, of notebooks with the
    same file name (so the same workflow name) and a task named alike: each follows only
    the executions its own kernel created. A's task succeeds while B's fails in between:
    A's table shows its own success, and B points ``recover`` at its own execution."""
    started = tmp_path / "started"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = write_notebook(
        tmp_path / "a" / "conc.ipynb",
        "%load_ext papercrane",
        f"%%task prep\nimport os, time\nopen({str(started)!r}, 'w')\n"
        f"while not os.path.exists({str(tmp_path / 'b-done')!r}):\n    time.sleep(0.1)\n"
        "prep = 1",
        "print(prep)",
    )
    b = write_notebook(
        tmp_path / "b" / "conc.ipynb",
        "%load_ext papercrane",
        "%%task prep\nprep = 1 / 0",
        "print(prep)",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAPERCRANE_")}
    env.update(PAPERCRANE_HOME=str(home), COLUMNS="200")
    argv = [sys.executable, "-m", "papercrane.backend.cli", "run"]
    first = subprocess.Popen(
        [*argv, str(a)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert first.poll() is None and time.monotonic() < deadline, "A's task never started"
            time.sleep(0.05)
        second = papercrane(home, "run", str(b))
        (tmp_path / "b-done").touch()
        _, err = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == 0, err.decode()
    rows = executions(home)
    assert len(rows) == 2, rows
    ran_a = next(r["id"] for r in rows if r["status"] == "succeeded")
    ran_b = next(r["id"] for r in rows if r["status"] == "failed")
    table_a = [line for line in err.decode().splitlines() if line.startswith("│ prep")]
    assert table_a and "succeeded" in table_a[-1] and ran_a in table_a[-1], err.decode()
    assert ran_b not in err.decode()
    assert second.returncode == 1
    assert f"recover with: papercrane recover {ran_b}" in second.stderr, second.stderr
    assert ran_a not in second.stderr


def test_errors_are_not_wrapped_when_stderr_is_not_a_terminal(home: Path, tmp_path: Path) -> None:
    """``2>err.txt``, a CI log: a traceback's long source line stays whole, with its
    ``^^^`` markers on the next line (rich would wrap at 80 columns)."""
    line = "value = {'a_rather_long_key_name': 1}['another_rather_long_key_name_that_is_not_there']"
    src = write_notebook(
        tmp_path / "wide.ipynb", "%load_ext papercrane", f"%%task wide\n{line}", "print(value)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAPERCRANE_")}
    env.pop("COLUMNS", None)
    env["PAPERCRANE_HOME"] = str(home)
    err = tmp_path / "err.txt"
    with err.open("w") as stderr:
        argv = [sys.executable, "-m", "papercrane.backend.cli", "run", str(src)]
        code = subprocess.run(argv, env=env, stderr=stderr, timeout=240).returncode
    assert code == 1
    lines = err.read_text().splitlines()
    assert f"    {line}" in lines, err.read_text()
    if sys.version_info >= (3, 11):  # (3.10 draws no ^^^ markers under a line)
        markers = lines[lines.index(f"    {line}") + 1]
        assert markers.strip() and set(markers.strip()) <= {"^", "~"}, markers


def test_without_o_the_notebook_is_written_beside_it_and_named(home: Path, tmp_path: Path) -> None:
    """No ``-o``: NAME.out.ipynb beside the notebook, said on success and on failure
    (where the user looks for the failing cell's error), and in ``--help``."""
    src = write_notebook(tmp_path / "report.ipynb", "x = 2", "print('x is', x)")
    result = ok(papercrane(home, "run", str(src), "-q"))
    out = tmp_path / "report.out.ipynb"
    assert f"wrote {out}" in result.stderr, result.stderr
    assert "x is 2" in printed(nbformat.read(out, as_version=4))
    failing = write_notebook(tmp_path / "broken.ipynb", "raise ValueError('boom')")
    result = papercrane(home, "run", str(failing), "-q")
    assert result.returncode == 1
    out = tmp_path / "broken.out.ipynb"
    assert f"wrote {out} (with the error)" in result.stderr, result.stderr
    errors = [o for c in nbformat.read(out, as_version=4).cells for o in c.get("outputs", [])]
    assert [o["evalue"] for o in errors if o["output_type"] == "error"] == ["boom"]
    assert "NAME.out.ipynb" in ok(papercrane(home, "run", "--help")).stdout


def test_the_written_notebook_shows_what_the_final_flush_ran(home: Path, tmp_path: Path) -> None:
    """The tasks still deferred at the end run in the cell papercrane adds: the written
    notebook keeps that cell, marked as added, with what they printed, or their failure
    (where papermill's banner points)."""
    src = write_notebook(
        tmp_path / "prints.ipynb",
        "%load_ext papercrane",
        "%%task writer\nprint('the writer wrote this')\ndone = 1",
        "print('last plain cell')",
    )
    out = tmp_path / "prints.out.ipynb"
    ok(papercrane(home, "run", str(src), "-q", "-o", str(out)))
    nb = nbformat.read(out, as_version=4)
    added = nb.cells[-1]
    assert added.metadata["tags"] == ["papercrane-flush"]
    assert added.source.startswith("# Added by `papercrane run`")
    assert "the writer wrote this" in printed(nbformat.v4.new_notebook(cells=[added]))
    src = write_notebook(
        tmp_path / "fails.ipynb",
        "%load_ext papercrane",
        "%%task broken\nbroken = 1 / 0",
        "print('last plain cell')",
    )
    out = tmp_path / "fails.out.ipynb"
    assert papercrane(home, "run", str(src), "-q", "-o", str(out)).returncode == 1
    nb = nbformat.read(out, as_version=4)
    added = nb.cells[-1]
    assert added.metadata["tags"] == ["papercrane-flush"]
    (error,) = [o for o in added.outputs if o.output_type == "error"]
    assert "ZeroDivisionError" in error.evalue
    banner = nb.cells[0].source
    assert f"In [{added.execution_count}]" in banner, banner


def test_recover_runs_in_the_folder_the_execution_ran_in(home: Path, tmp_path: Path) -> None:
    """A task that reads a file beside its notebook, recovered from another shell's
    folder, finds it: recover runs where the execution ran."""
    folder = tmp_path / "project"
    folder.mkdir()
    src = write_notebook(
        folder / "relfile.ipynb",
        "%load_ext papercrane",
        "%%task load\ntext = open('data.txt').read()",
        "print(text)",
    )
    result = papercrane(home, "run", str(src), "-q", cwd=folder)
    assert result.returncode == 1 and "FileNotFoundError" in result.stderr
    (failed,) = executions(home)
    (folder / "data.txt").write_text("found")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    recovered = papercrane(home, "recover", failed["id"], cwd=elsewhere)
    assert recovered.returncode == 0, recovered.stderr
    assert f"running in {folder}, where execution {failed['id']} ran" in recovered.stderr
