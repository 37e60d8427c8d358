"""%%task in a real Jupyter kernel: binding, display, streaming, retries, timeouts,
interrupts, and the records each leaves in the store."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from .kernel import Kernel

pytestmark = pytest.mark.kernel


def events(home: Path) -> list[tuple[str, str, int]]:
    with contextlib.closing(sqlite3.connect(home / "papercrane.db")) as db:
        return db.execute("SELECT execution_id, kind, attempt FROM events ORDER BY seq").fetchall()


def kinds(home: Path, execution: str | None = None) -> list[str]:
    rows = events(home)
    if execution is None:
        execution = rows[-1][0]
    return [k for e, k, _ in rows if e == execution]


def test_outputs_bound_and_last_expression_displayed(kernel: Kernel, home: Path) -> None:
    kernel.run("import numpy as np\nbase = np.arange(5)\ndef twice(v):\n    return v * 2").ok()
    r = kernel.run("%%task double\nprint('working')\ny = twice(base)\ntotal = int(y.sum())\ntotal")
    r.ok()
    assert "working" in r.stdout
    assert {"text/plain": "20"} in r.displays
    widget = r.updates[-1]
    assert "application/vnd.jupyter.widget-view+json" in widget
    assert "succeeded" in widget["text/plain"] and "total" in widget["text/plain"]
    check = kernel.run("print(type(y).__name__, y.tolist(), total)").ok()
    assert check.stdout.strip() == "ndarray [0, 2, 4, 6, 8] 20"
    assert kinds(home) == [
        "execution_created",
        "node_queued",
        "attempt_started",
        "log_stored",  # stdout only: nothing was written to stderr
        "attempt_succeeded",
        "node_succeeded",
        "execution_succeeded",
    ]


def test_a_name_bound_in_one_branch_keeps_the_notebooks_value_otherwise(
    kernel: Kernel,
) -> None:
    """As a plain cell: ``if retrain: model = ...`` leaves the notebook's ``model`` when
    ``retrain`` is false, so the task gets it; when the notebook has none, the branch
    that binds it is all the cell needs."""
    kernel.run("model = 'from the notebook'\nretrain = False").ok()
    cell = "%%task score\nif retrain:\n    model = 'retrained'\nscore = model.upper()"
    kernel.run(cell).ok()
    assert kernel.run("print(score)").ok().stdout.strip() == "FROM THE NOTEBOOK"
    kernel.run("del model\nretrain = True").ok()
    kernel.run(cell).ok()
    assert kernel.run("print(score, model)").ok().stdout.strip() == "RETRAINED retrained"


@pytest.mark.parametrize("executor", ["local", "inline"])
def test_a_rerun_cells_traceback_names_the_run_and_lines_of_now(
    kernel: Kernel, executor: str
) -> None:
    """A task re-run later keeps its version (and its bundle, written once), also after
    a comment is added: its traceback still names the In[] the user just ran and the
    line the notebook shows now, on any executor."""
    kernel.run("x = 1").ok()
    kernel.run(f"%%task ratio --executor {executor}\ny = 1 / x").ok()
    count = int(kernel.run("print(get_ipython().displayhook.prompt_count)").ok().stdout)
    kernel.run("x = 0").ok()
    r = kernel.run(f"%%task ratio --executor {executor}\n# x may be 0 now\ny = 1 / x")
    assert r.status == "error"
    tb = "\n".join(r.error["traceback"])
    assert f"Cell In[{count + 2}], line 3" in tb, tb
    assert "y = 1 / x" in tb and "ZeroDivisionError" in tb


@pytest.mark.parametrize("executor", ["local", "inline"])
def test_lines_count_from_the_cells_top_with_blank_lines_after_the_magic(
    kernel: Kernel, executor: str
) -> None:
    """IPython drops a cell's leading blank lines before the magic sees it; the line
    numbers of a traceback and of a refused cell still count them, as the notebook
    does."""
    r = kernel.run(f"%%task gap --executor {executor}\n\n\nx = 1\n1 / 0")
    assert r.status == "error"
    tb = "\n".join(r.error["traceback"])
    assert "line 5" in tb and "1 / 0" in tb, tb
    r = kernel.run("%%task gap2\n\n  \nx = (1,")
    assert r.status == "error"
    assert "syntax error on line 4" in "\n".join(r.error["traceback"]) + r.error["evalue"]


def test_inline_and_local_give_same_results_and_records(kernel: Kernel, home: Path) -> None:
    kernel.run("data = {'a': [1, 2, 3]}").ok()
    kernel.run("%%task agg --executor local\nout = sum(data['a'])").ok()
    local = kinds(home)
    kernel.run("r_local = out").ok()
    kernel.run("%%task agg --executor inline\nout = sum(data['a'])").ok()
    assert kinds(home) == local
    r = kernel.run("print(out, r_local, out == r_local)").ok()
    assert r.stdout.strip() == "6 6 True"


def test_a_slow_inline_task_shows_running_before_it_ends(kernel: Kernel, home: Path) -> None:
    """A quick inline task commits its start with its end; a slower one has its start
    committed while it runs, and its live widget shows it running."""
    r = kernel.run("%%task slow --executor inline\nimport time\ntime.sleep(0.6)\ny = 1").ok()
    values = [m["state"]["value"] for m in r.comms if "value" in m.get("state", {})]
    assert any(">running<" in v for v in values), values
    assert ">succeeded<" in values[-1] and "succeeded" in r.widget["text/plain"]
    assert kinds(home) == [
        "execution_created",
        "node_queued",
        "attempt_started",
        "attempt_succeeded",
        "node_succeeded",
        "execution_succeeded",
    ]


def test_stdout_streams_while_the_task_runs(kernel: Kernel) -> None:
    r = kernel.run(
        "%%task slowprint\nimport time\nprint('first', flush=True)\ntime.sleep(2)\nprint('second')"
    ).ok()
    times = {text.strip(): t for t, _, text in r.stream_times if text.strip()}
    assert times["second"] - times["first"] > 1.5


def test_logs_stored_per_attempt(kernel: Kernel, home: Path) -> None:
    kernel.run("%%task noisy\nimport sys\nprint('to out')\nprint('to err', file=sys.stderr)").ok()
    execution = events(home)[-1][0]
    run = home / "store" / "runs" / execution / "noisy" / "1"
    assert (run / "stdout.log").read_text() == "to out\n"
    assert (run / "stderr.log").read_text() == "to err\n"


def test_failure_shows_user_traceback_and_kernel_stays_usable(kernel: Kernel, home: Path) -> None:
    kernel.run("def ratio(a, b):\n    return a / b").ok()
    r = kernel.run("%%task broken\nx = 1\ny = ratio(x, 0)")
    assert r.status == "error"
    tb = "\n".join(r.error["traceback"])
    assert "Task 'broken' failed" in tb
    assert "line 3" in tb and "y = ratio(x, 0)" in tb  # cell line numbers (%%task is line 1)
    assert "return a / b" in tb and "ZeroDivisionError" in tb
    assert "papercrane" not in tb.replace("Task 'broken'", "")  # no internal frames
    assert "failed" in r.updates[-1]["text/plain"]
    assert kinds(home)[-1] == "execution_failed"
    assert kernel.run("print(1 + 1)").ok().stdout.strip() == "2"


@pytest.mark.parametrize("executor", ["local", "inline"])
def test_retries_succeed_after_transient_failures(
    kernel: Kernel, home: Path, workdir: Path, executor: str
) -> None:
    counter = workdir / f"attempts-{executor}.txt"
    code = f"""%%task flaky --retries 3 --executor {executor}
from pathlib import Path
p = Path({str(counter)!r})
n = int(p.read_text()) + 1 if p.exists() else 1
p.write_text(str(n))
if n < 3:
    raise RuntimeError(f"transient failure {{n}}")
result = n"""
    r = kernel.run(code).ok()
    assert kernel.run("print(result)").ok().stdout.strip() == "3"
    assert "attempt: 3 of 4" in r.updates[-1]["text/plain"]
    ks = kinds(home)
    assert ks.count("attempt_failed") == 2 and ks.count("retry_scheduled") == 2
    assert ks[-1] == "execution_succeeded"


def test_retries_exhausted_fail(kernel: Kernel, home: Path) -> None:
    r = kernel.run("%%task never --retries 1\nraise ValueError('nope')")
    assert r.status == "error" and "ValueError: nope" in "\n".join(r.error["traceback"])
    ks = kinds(home)
    assert ks.count("attempt_started") == 2 and ks[-1] == "execution_failed"


@pytest.mark.parametrize("executor", ["local", "inline"])
def test_timeout_stops_the_attempt(
    kernel: Kernel, home: Path, workdir: Path, executor: str
) -> None:
    pidfile = workdir / "pid"
    marker = workdir / "finished"
    code = f"""%%task sleepy --timeout 1s --executor {executor}
import os, time
open({str(pidfile)!r}, 'w').write(str(os.getpid()))
time.sleep(4)
open({str(marker)!r}, 'w').write('done')"""
    start = time.monotonic()
    r = kernel.run(code)
    assert r.status == "error"
    assert time.monotonic() - start < 3.5
    assert "timeout of 1 s" in "\n".join(r.error["traceback"])
    time.sleep(4)
    assert not marker.exists()  # the task did not go on in the background
    if executor == "local":
        pid = int(pidfile.read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    failed = [k for k in kinds(home) if k == "attempt_failed"]
    assert failed and kinds(home)[-1] == "execution_failed"
    assert kernel.run("print('alive')").ok().stdout.strip() == "alive"


@pytest.mark.parametrize("executor", ["local", "inline"])
def test_interrupt_aborts_the_execution(
    kernel: Kernel, home: Path, workdir: Path, executor: str
) -> None:
    pidfile = workdir / "pid"
    code = f"""%%task endless --executor {executor}
import os, time
open({str(pidfile)!r}, 'w').write(str(os.getpid()))
time.sleep(60)"""
    msg_id = kernel.kc.execute(code)
    deadline = time.monotonic() + 30
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pidfile.exists()
    kernel.send_interrupt()
    reply = kernel.kc.get_shell_msg(timeout=30)
    assert reply["parent_header"]["msg_id"] == msg_id
    assert reply["content"]["status"] == "error"
    assert kinds(home)[-1] == "execution_aborted"
    if executor == "local":
        time.sleep(0.5)
        with pytest.raises(ProcessLookupError):
            os.kill(int(pidfile.read_text()), 0)
    # ipykernel aborts the requests that reach it within its stop-on-error window after
    # the interrupted cell's error (a busy machine can stretch it): those get "aborted",
    # which says nothing about papercrane. The kernel must answer the next one.
    deadline = time.monotonic() + 30
    after = kernel.run("print('still here')")
    while after.status == "aborted" and time.monotonic() < deadline:
        time.sleep(0.2)
        after = kernel.run("print('still here')")
    assert after.ok().stdout.strip() == "still here"


def test_a_run_whose_kernel_was_killed_is_found_lost(home: Path, workdir: Path) -> None:
    """A kernel killed mid-task (a restart, ``kill -9``, the OOM killer) cannot record
    anything: whoever reads the execution afterwards finds its process gone, records it
    as aborted (once) and can recover it; it is not left "running" for ever."""
    from papercrane.backend.config import Config
    from papercrane.backend.engine import LocalEngine

    hold = workdir / "hold"
    hold.write_text("")
    k = Kernel({"PAPERCRANE_HOME": str(home)}, workdir)
    try:
        k.run("%load_ext papercrane").ok()
        k.kc.execute(
            "%%task slow --executor inline\nimport os, time\n"
            f"while os.path.exists({str(hold)!r}):\n    time.sleep(0.05)\nslow = 1"
        )
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(sqlite3.OperationalError):  # (no store yet)
                if "attempt_started" in [kind for _, kind, _ in events(home)]:
                    break
            assert time.monotonic() < deadline, "the task never started"
            time.sleep(0.05)
        k.km.signal_kernel(signal.SIGKILL)  # no chance to record anything
        k.km.shutdown_kernel(now=True)  # (reaps it)
    finally:
        k.kc.stop_channels()
    (execution,) = {e for e, _, _ in events(home)}
    assert kinds(home, execution)[-1] == "attempt_started"  # as the kill left it

    engine = LocalEngine(Config(home=home))
    try:
        assert engine.list_executions(status="running") == []
        (row,) = engine.list_executions()
        assert (row["id"], row["status"]) == (execution, "aborted")
        state = engine.execution(execution)
        assert state.error is not None and state.error.message.startswith(
            "lost: the process that ran it"
        )
        assert state.nodes["slow"].status.value == "aborted"
        # It ended no later than the kill, not when it was found: its last step is its end.
        assert state.ended_at == state.nodes["slow"].started_at
        assert row["ended_at"] == state.ended_at
        engine.execution(execution)  # read again: nothing more is recorded
        assert kinds(home, execution).count("execution_aborted") == 1
        hold.unlink()
        recovered = engine.recover(execution)
        assert recovered.execution.status.value == "succeeded"
    finally:
        engine.close()


def test_del_and_in_place_changes_reach_the_notebook(kernel: Kernel) -> None:
    kernel.run("items = [1, 2]\nscratch = 'tmp'").ok()
    kernel.run("%%task tidy\nitems.append(3)\ndel scratch").ok()
    r = kernel.run("print(items, 'scratch' in globals())").ok()
    assert r.stdout.strip() == "[1, 2, 3] False"


def test_load_ext_imports_nothing_heavy(tmp_path: Path) -> None:
    k = Kernel({"PAPERCRANE_HOME": str(tmp_path / "h")}, tmp_path)
    try:
        r = k.run(
            "import sys\nbefore = set(sys.modules)\n%load_ext papercrane\n"
            "heavy = {'sqlalchemy', 'pandas', 'numpy', 'kubernetes', 'fsspec', 'alembic', "
            "'ipywidgets', 'cloudpickle', 'pyarrow'}\n"
            "print(sorted({m.split('.')[0] for m in set(sys.modules) - before} & heavy))"
        ).ok()
        assert r.stdout.strip() == "[]"
        assert not (tmp_path / "h").exists()  # nothing created until a task runs
    finally:
        k.shutdown()


def test_resources_are_validated_and_recorded(kernel: Kernel, home: Path) -> None:
    kernel.run("%%task sized --cpu 500m --memory 4Gi --gpu 1\nz = 1").ok()
    with contextlib.closing(sqlite3.connect(home / "papercrane.db")) as db:
        (payload,) = db.execute(
            "SELECT payload FROM events WHERE kind = 'execution_created' ORDER BY seq DESC"
        ).fetchone()
    import json

    resources = json.loads(payload)["config"]["resources"]
    assert resources == {"cpu": 0.5, "memory": 4 * 2**30, "gpu": 1}


def test_a_map_rebinds_its_outputs_even_with_no_element_to_show(kernel: Kernel) -> None:
    """Re-running a map over an empty list rebinds its output to [] (the old list must
    not linger); a map whose every element failed (allowed) binds a list of None and
    says why; a module the cell imports stays a module."""
    kernel.run("items = [1, 2, 3]").ok()
    cell = "%%task sq --map items --cache\nimport math\nr = item * 2"
    assert "[2, 4, 6]" in kernel.run(cell).ok().widget["text/plain"]
    kernel.run("items = []").ok()
    widget = kernel.run(cell).ok().widget["text/plain"]
    assert "-> r (list" in widget and "cache: 0 of 0 elements cached" in widget
    check = kernel.run("print(r, type(math).__name__)").ok()
    assert check.stdout.strip() == "[] module"
    kernel.run("vals = [0, 0]").ok()
    r = kernel.run("%%task allfail --map vals --as v --min-success-ratio 0\nz = 1 / v").ok()
    assert "elements: 0 of 2 elements succeeded; elements 0, 1 failed" in r.widget["text/plain"]
    assert "element 0: ZeroDivisionError: division by zero" in r.widget["text/html"]
    assert kernel.run("print(z)").ok().stdout.strip() == "[None, None]"


@pytest.mark.parametrize("executor", ["local", "inline"])
def test_sys_exit_in_a_task_fails_it_once_as_the_users_error(
    kernel: Kernel, home: Path, executor: str
) -> None:
    """``sys.exit()`` in the cell is a failure of the cell: recorded, one attempt (no
    system retries), the user's traceback, the kernel still usable."""
    r = kernel.run(f"%%task ex1 --executor {executor}\nimport sys\nsys.exit(1)")
    assert r.status == "error"
    tb = "\n".join(r.error["traceback"])
    assert "Task 'ex1' failed" in tb and "sys.exit(1)" in tb
    assert "SystemExit: the task called sys.exit(1);" in tb
    assert "runner.py" not in tb and "zygote" not in tb and "zygote" not in r.stderr
    assert "attempt: 1 of 1" in r.widget["text/plain"] and "failed" in r.widget["text/plain"]
    ks = kinds(home)
    assert ks.count("attempt_started") == 1 and ks[-1] == "execution_failed"
    assert kernel.run("print('still here')").ok().stdout.strip() == "still here"


def test_a_notebook_function_under_lru_cache_reaches_a_local_task(kernel: Kernel) -> None:
    """The C wrapper pickles by name, which the task's process can't resolve; its
    function travels by value instead and is wrapped again there (its cache empty)."""
    cell = (
        "import functools\n@functools.lru_cache(maxsize=8)\ndef fib(n):\n"
        "    return n if n < 2 else fib(n - 1) + fib(n - 2)\nfib(5)"
    )
    kernel.run(cell).ok()
    kernel.run("%%task lc --executor local\nr = fib(25), fib.cache_parameters()").ok()
    r = kernel.run("print(r)").ok()
    assert r.stdout.strip() == "(75025, {'maxsize': 8, 'typed': False})"


def test_a_notebook_object_that_pickles_by_name_is_refused_once_with_what_to_do(
    kernel: Kernel,
) -> None:
    """cloudpickle ships notebook functions and classes by value, but an object whose
    pickle is a name can't be rebuilt in the task's process. One attempt, a user
    error, and what to do; not three "storage" attempts."""
    cell = "class Named:\n    def __reduce__(self):\n        return 'base'\nbase = Named()"
    kernel.run(cell).ok()
    r = kernel.run("%%task lc --executor local\nr = base")
    assert r.status == "error"
    text = "\n".join(r.error["traceback"])
    assert "input 'base' could not be loaded here" in text, text
    assert "pickles by name" in text and "--executor inline" in text
    assert "after 3 attempt" not in text and "StorageError" not in text


def test_lists_and_dicts_of_big_arrays_and_frames_go_in_and_out_of_tasks(
    kernel: Kernel,
) -> None:
    """Pickle protocol 5 hands a buffer of 64 KiB or more to the writer on its own (a
    ``PickleBuffer``): an array in a list as an input or an output, and the frames a map
    collects from its elements, are stored like any other value."""
    kernel.run("import numpy as np\nimport pandas as pd\nl1 = [np.ones(10000)]\nkeys = [1, 2]").ok()
    kernel.run(
        "%%task t1\ns1 = float(l1[0].sum())\n"
        "l2 = [l1[0] * 2, {'m': np.asfortranarray(np.ones((200, 200)))}]"
    ).ok()
    r = kernel.run("print(s1, float(l2[0].sum()), l2[1]['m'].flags.f_contiguous)").ok()
    assert r.stdout.strip() == "10000.0 20000.0 True"
    cell = "%%task frames --map keys --as k\ndf = pd.DataFrame({'k': k, 'x': np.arange(20_000)})"
    kernel.run(cell).ok()
    r = kernel.run("print([len(d) for d in df], int(df[1]['k'].sum()), df[0]['x'].dtype)").ok()
    assert r.stdout.strip() == "[20000, 20000] 40000 int64"


@pytest.mark.parametrize("executor", ["local", "inline"])
def test_a_users_baseexception_fails_the_task_once_as_the_users_error(
    kernel: Kernel, home: Path, executor: str
) -> None:
    """An exception class of the user's deriving from ``BaseException`` is the cell's
    failure like any other: its traceback, one attempt (no system retries), recorded."""
    code = f"%%task be --executor {executor}\nclass Stop(BaseException):\n    pass\nraise Stop('x')"
    r = kernel.run(code)
    assert r.status == "error"
    tb = "\n".join(r.error["traceback"])
    assert "Task 'be' failed" in tb and "raise Stop('x')" in tb and "Stop: x" in tb
    assert "LostProcess" not in tb and "runner.py" not in tb and "Stop" not in r.stderr
    assert "attempt: 1 of 1" in r.widget["text/plain"] and "failed" in r.widget["text/plain"]
    ks = kinds(home)
    assert ks.count("attempt_started") == 1 and ks[-1] == "execution_failed"
    assert kernel.run("print('still here')").ok().stdout.strip() == "still here"


@pytest.mark.parametrize("executor", ["local", "inline"])
def test_display_in_a_task_shows_in_the_cell(kernel: Kernel, executor: str) -> None:
    """``display()``, a builtin in a notebook cell, works in a task on any executor: what
    it shows reaches the cell, rich formats included, before the last expression's value."""
    code = (
        f"%%task displocal --executor {executor}\n"
        "from IPython.display import HTML\n"
        "display(HTML('<b>shown</b>'))\n"
        "display({'a': 1}, 'two')\n"
        "res2 = 1\n"
        "res2 + 1"
    )
    r = kernel.run(code).ok()
    shown = [d for d in r.displays if "application/vnd.jupyter.widget-view+json" not in d]
    assert [d.get("text/html") for d in shown] == ["<b>shown</b>", None, None, None], shown
    assert [d["text/plain"] for d in shown[1:]] == ["{'a': 1}", "'two'", "2"]
    assert "succeeded" in r.widget["text/plain"]
    assert kernel.run("print(res2)").ok().stdout.strip() == "1"


@pytest.mark.parametrize("executor", ["local", "inline"])
def test_what_a_failing_task_displayed_shows_above_its_traceback(
    kernel: Kernel, executor: str
) -> None:
    """A cell that raises still shows what it displayed first; so does a task, also from
    a process of its own, where only its last attempt's displays are shown."""
    r = kernel.run(
        f"%%task dispfail --executor {executor}\n"
        "display('progress so far')\n"
        "raise ValueError('bad row 17')"
    )
    assert r.status == "error"
    shown = [d for d in r.displays if "application/vnd.jupyter.widget-view+json" not in d]
    assert [d["text/plain"] for d in shown] == ["'progress so far'"], shown
    assert "bad row 17" in "\n".join(r.error["traceback"])


def test_a_list_shuffled_by_a_local_task_comes_back_shuffled(kernel: Kernel) -> None:
    """``random.shuffle(deck)`` in a task of its own process changes the process's copy:
    it comes back as an output, as ``deck.sort()`` would."""
    kernel.run("deck = list(range(10))").ok()
    kernel.run(
        "%%task deal --executor local\nimport random\nrandom.seed(3)\nrandom.shuffle(deck)"
    ).ok()
    expected = list(range(10))
    __import__("random").Random(3).shuffle(expected)
    shown = kernel.run("print(deck)").ok().stdout.strip()
    assert shown == str(expected) and shown != str(list(range(10)))


def test_what_a_local_maps_elements_display_shows_in_element_order(kernel: Kernel) -> None:
    """An inline map's elements display as they run; elements in processes of their
    own show theirs once the map ends, in element order, and again on a cache hit."""
    kernel.run("items = [3, 1, 2]").ok()
    cell = (
        "%%task sq --executor local --map items --cache\ndisplay(f'element {item}')\nsq = item * 2"
    )
    for _ in range(2):  # misses, then hits
        r = kernel.run(cell).ok()
        shown = [
            d["text/plain"] for d in r.displays if d.get("text/plain", "").startswith("'element")
        ]
        assert shown == ["'element 3'", "'element 1'", "'element 2'"], shown


def test_a_progress_display_updated_by_a_local_task_shows_its_last_state(
    kernel: Kernel,
) -> None:
    """Notebook code that updates a display (``display(..., display_id=True)`` and
    ``handle.update``) runs in a process of its own too, and the cell shows the display
    as it was last updated."""
    r = kernel.run(
        "%%task prog --executor local\n"
        "h = display('0 of 3', display_id=True)\n"
        "for i in range(3):\n"
        "    h.update(f'{i + 1} of 3')\n"
        "del h\n"
        "done = True"
    ).ok()
    shown = [d["text/plain"] for d in r.displays if d.get("text/plain", "").endswith("of 3'")]
    assert shown == ["'3 of 3'"], r.displays
