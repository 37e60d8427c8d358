"""Batch mode (``%workflow defer``) in a real kernel: deferred task cells run later, in
parallel, yet the notebook means what it means run top to bottom."""

from __future__ import annotations

from pathlib import Path

import pytest

from .kernel import Kernel

pytestmark = pytest.mark.kernel


def test_a_deferred_task_sees_its_inputs_as_its_cell_saw_them(kernel: Kernel) -> None:
    """An inline task gets the notebook's objects: deferred, a plain cell after it could
    change one in place before it ran, and the cache would keep the result of the
    changed value under the key of the value the cell saw."""
    kernel.run("%workflow defer").ok()
    kernel.run('cfg = {"a": 1}').ok()
    kernel.run('%%task tpoison --executor inline --cache\nouti = cfg["a"]').ok()
    kernel.run('cfg["a"] = 2').ok()  # (reads cfg, which no deferred task outputs)
    assert kernel.run("print(outi)").ok().stdout.strip() == "1"
    kernel.run("%workflow defer off").ok()
    kernel.run('cfg = {"a": 1}').ok()
    hit = kernel.run('%%task tpoison --executor inline --cache\nouti = cfg["a"]').ok()
    assert "cache: hit" in hit.widget["text/plain"], hit.widget["text/plain"]
    assert kernel.run("print(outi)").ok().stdout.strip() == "1"


def test_an_unchanged_input_reaches_an_inline_task_as_the_same_object(kernel: Kernel) -> None:
    kernel.run("%workflow defer").ok()
    kernel.run("class Box:\n    pass\nbox = Box()").ok()
    kernel.run("%%task same --executor inline\nsame = id(box)").ok()
    assert kernel.run("print(same == id(box))").ok().stdout.strip() == "True"


# The deferred task's cell, the plain (and task) cells after it, what the last one
# prints, and what ``y`` holds once nothing is left deferred.
TOP_TO_BOTTOM = {
    "assigned": ("y = 1", ["y = 100", "print(y)"], "100", "100"),
    "assigned, then read by a task": (
        "y = 1",
        ["y = 5", "%%task tb --executor inline\nz = y * 2", "print(z)"],
        "10",
        "5",
    ),
    "augmented": ("y = 1", ["y += 1", "print(y)"], "2", "2"),
    "deleted": ("y = 1", ["del y", "print('y' in dir())"], "False", "-"),
    "a loop variable": ("y = 1", ["for y in range(3):\n    pass", "print(y)"], "2", "2"),
    "imported": ("y = 1", ["import string as y", "print(y.__name__)"], "string", "string"),
    "changed in place": ("y = [1]", ["y.append(2)", "print(y)"], "[1, 2]", "[1, 2]"),
    "read": ("y = 1", ["print(y)"], "1", "1"),
    "read through eval": ("y = 1", ["print(eval('y'))"], "1", "1"),
    "read through globals()": ("y = 1", ["print(globals()['y'])"], "1", "1"),
}


@pytest.mark.parametrize("case", list(TOP_TO_BOTTOM))
def test_plain_cells_after_a_deferred_task_see_it_as_run_above_them(
    kernel: Kernel, case: str
) -> None:
    """A plain cell that reads, assigns, deletes or changes a name a deferred task
    outputs runs the deferred tasks first: run later, the task would bind its value over
    the cell's (and a later task would read the task's)."""
    task, cells, printed, after = TOP_TO_BOTTOM[case]
    kernel.run("%workflow defer").ok()
    kernel.run(f"%%task ta --executor inline\n{task}").ok()
    for cell in cells:
        r = kernel.run(cell).ok()
    assert r.stdout.strip() == printed
    kernel.run("%workflow flush").ok()  # nothing is left to run over what the cells did
    shown = "y.__name__ if hasattr(y, '__name__') else y"
    r = kernel.run(f"print(({shown}) if 'y' in dir() else '-')").ok()
    assert r.stdout.strip() == after


# Plain cells that bind y where analysis can't see it, and what their cell runs.
OUT_OF_SIGHT = {
    "a function's global": "set_y(5)",
    "the shell's namespace": "get_ipython().user_ns['y'] = 5",
}


@pytest.mark.parametrize("case", list(OUT_OF_SIGHT))
def test_a_deferred_output_bound_again_out_of_sight_keeps_the_later_value(
    kernel: Kernel, case: str
) -> None:
    kernel.run("def set_y(v):\n    global y\n    y = v").ok()
    kernel.run("%workflow defer").ok()
    kernel.run("%%task ta --executor inline\ny = 1").ok()
    kernel.run(OUT_OF_SIGHT[case]).ok()
    kernel.run("%%task tb --executor inline\nz = y * 2").ok()
    assert kernel.run("print(z, y)").ok().stdout.strip() == "10 5"


def test_a_plain_cell_that_touches_no_deferred_output_leaves_the_tasks_deferred(
    kernel: Kernel,
) -> None:
    kernel.run("%workflow defer").ok()
    kernel.run("%%task ta --executor inline\ny = 1").ok()
    kernel.run("w = 3\nprint(w)").ok()
    shown = kernel.run("%workflow show").ok().displays[-1]["text/plain"]
    assert "[deferred] ta" in shown, shown


def test_a_deferred_tasks_last_expression_is_shown_in_its_own_cell(kernel: Kernel) -> None:
    """Its "deferred" note is a display that the value replaces once the task has run
    (front ends and papermill apply the update to the task's cell)."""
    kernel.run("%workflow defer").ok()
    kernel.run("x5 = 5").ok()
    deferred = kernel.run("%%task disp --executor inline\nout5 = x5\nx5 * 2").ok()
    assert "deferred" in deferred.displays[-1]["text/plain"]
    flushing = kernel.run("print(out5)").ok()
    assert flushing.stdout.strip() == "5"
    assert [u["text/plain"] for u in flushing.updates if "text/plain" in u][-1] == "10"
    assert not [d for d in flushing.displays if d.get("text/plain") == "10"]


def test_what_a_deferred_local_task_displays_shows_where_it_runs(kernel: Kernel) -> None:
    """A local task's ``display()`` output shows in the cell that ran it, as an inline
    task's does; its last expression still replaces its own "deferred" note."""
    kernel.run("%workflow defer").ok()
    kernel.run("%%task dl --executor local\nout6 = 6\ndisplay('from dl')\nout6 * 2").ok()
    flushing = kernel.run("print(out6)").ok()
    assert flushing.stdout.strip() == "6"
    assert [d for d in flushing.displays if d.get("text/plain") == "'from dl'"]
    assert [u["text/plain"] for u in flushing.updates if "text/plain" in u][-1] == "12"


def test_a_deferred_output_read_out_of_sight_says_it_is_deferred(kernel: Kernel) -> None:
    """A function defined before the task cell reads the output: the cell that calls it
    names no output, so nothing runs first, and the NameError says why and what to do."""
    kernel.run("def f():\n    return y").ok()
    kernel.run("%workflow defer").ok()
    kernel.run("%%task ta --executor inline\ny = 1").ok()
    r = kernel.run("f()")
    assert r.status == "error" and r.error["ename"] == "NameError"
    assert "output of the deferred task 'ta', which has not run yet" in r.error["evalue"]
    assert "run `%workflow flush` first" in r.error["evalue"]
    kernel.run("%workflow flush").ok()
    assert kernel.run("print(f())").ok().stdout.strip() == "1"
    r = kernel.run("f2()")  # other NameErrors are as they were
    assert r.status == "error" and r.error["evalue"] == "name 'f2' is not defined"


def test_two_deferred_cells_with_one_task_name_both_run(kernel: Kernel) -> None:
    """papermill sends no cell ids: the kernel tells the two cells apart only by name, so
    the second used to replace the first, which never ran."""
    kernel.run("%workflow defer\nx = 1").ok()
    kernel.run("%%task dup --executor inline\na = x + 1").ok()
    kernel.run("%%task dup --executor inline\nb = x + 2").ok()
    assert kernel.run("print(a, b)").ok().stdout.split() == ["2", "3"]


def test_defer_off_is_off_even_when_the_tasks_it_runs_fail(kernel: Kernel) -> None:
    kernel.run("%workflow defer").ok()
    kernel.run("%%task bad --executor inline\nx = 1 / 0").ok()  # deferred
    assert kernel.run("%workflow defer off").status == "error"  # runs it: it fails
    r = kernel.run("%%task good --executor inline\ny = 2").ok()
    assert "deferred" not in r.widget.get("text/plain", ""), r.widget
    assert kernel.run("print(y)").ok().stdout.strip() == "2"


def test_workflow_run_runs_the_deferred_cells_once(kernel: Kernel, workdir: Path) -> None:
    """``%workflow run`` with cells still deferred runs them as part of its one
    execution: it flushed them first, then ran the whole workflow, every task twice. A
    refused ``-p`` leaves them deferred."""
    log = workdir / "ran.log"
    kernel.run("%workflow defer").ok()
    kernel.run("n = 3").ok()
    for name, code in (("a", "x = n + 1"), ("b", "y = x * 2")):
        body = f"open({str(log)!r}, 'a').write('{name}\\n')\n{code}"
        kernel.run(f"%%task {name} --executor inline\n{body}").ok()
    refused = kernel.run("%workflow run -p m=1")
    assert refused.status == "error" and "no parameter 'm'" in refused.text, refused.text
    assert not log.exists()
    ran = kernel.run("%workflow run").ok()
    assert "succeeded" in ran.text, ran.text
    assert log.read_text().split() == ["a", "b"]
    assert kernel.run("print(x, y)").ok().stdout.strip() == "4 8"
    kernel.run("%workflow defer off").ok()  # (nothing is left to run)
    assert log.read_text().split() == ["a", "b"]


def test_workflow_recover_runs_the_deferred_fix_once(kernel: Kernel, workdir: Path) -> None:
    """A fixed task cell, deferred, then ``%workflow recover``: the recovery runs the
    fix, and takes it out of batch mode's hands. Left deferred, the next plain cell ran
    it a second time, as a new workflow."""
    log = workdir / "ran.log"
    kernel.run("%workflow defer").ok()
    kernel.run("n = 3\nok = False").ok()
    kernel.run("%%task a --executor inline\nbase = n").ok()
    b = "%%task b --executor inline\nopen({log!r}, 'a').write('{tag}\\n')\n{body}res = base + 1"
    kernel.run(b.format(log=str(log), tag="b", body="assert ok, 'not ok'\n")).ok()
    assert kernel.run("print('res', res)").status == "error"  # (flushes: b fails)
    kernel.run("ok = True").ok()
    kernel.run(b.format(log=str(log), tag="b fixed", body="")).ok()  # deferred again
    recovered = kernel.run("%workflow recover").ok()
    assert "succeeded" in recovered.text, recovered.text
    assert kernel.run("print('res after recover', res)").ok().stdout.strip().endswith("4")
    assert log.read_text().splitlines() == ["b", "b fixed"]
    shown = kernel.run("%workflow show").ok().displays[-1]["text/plain"]
    assert "[deferred]" not in shown, shown


def test_a_refused_recover_leaves_the_deferred_fix_to_run(kernel: Kernel, workdir: Path) -> None:
    """The fixed cell reads a variable the failed run did not have: the recovery is
    refused before anything runs, so the cell stays deferred and the next cell runs it."""
    log = workdir / "ran.log"
    kernel.run("%workflow defer").ok()
    kernel.run("n = 3\nok = False\nm = 10").ok()
    kernel.run("%%task a --executor inline\nbase = n").ok()
    b = "%%task b --executor inline\nopen({log!r}, 'a').write('{tag}\\n')\n{body}"
    kernel.run(b.format(log=str(log), tag="b", body="assert ok\nres = base + 1")).ok()
    assert kernel.run("print(res)").status == "error"  # (flushes: b fails)
    kernel.run(b.format(log=str(log), tag="b fixed", body="res = base + m")).ok()
    refused = kernel.run("%workflow recover")
    assert refused.status == "error" and "parameter(s) m" in refused.text, refused.text
    shown = kernel.run("%workflow show").ok().displays[-1]["text/plain"]
    assert "[deferred] b" in shown, shown
    assert kernel.run("print(res)").ok().stdout.strip() == "13"
    assert log.read_text().splitlines() == ["b", "b fixed"]


def test_a_map_over_a_misspelt_variable_says_it_does_not_exist(kernel: Kernel) -> None:
    """Deferred, ``--map itemz`` said it could not tell what to call one element of
    'itemz': the variable does not exist, a deferred task's output counts as existing."""
    kernel.run("%workflow defer").ok()
    kernel.run("%%task mk --executor inline\nitems = [1, 2, 3]").ok()
    r = kernel.run("%%task o4 --map itemz --executor inline\ny = item")
    assert r.status == "error" and r.error["ename"] == "UsageError", r.text
    assert (
        "task 'o4': --map itemz, but the notebook has no variable 'itemz' (did you mean 'items'?)"
        in r.error["evalue"]
    ), r.error["evalue"]
    kernel.run("%%task o4 --map items --executor inline\ny = item * 2").ok()
    assert kernel.run("print(y)").ok().stdout.strip() == "[2, 4, 6]"
