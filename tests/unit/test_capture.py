"""From a cell and a notebook namespace to a captured task, without a kernel."""

from __future__ import annotations

import builtins
import json
import math
import os.path
import textwrap
from typing import Any

import pytest

from papercrane.backend.errors import CaptureError, InputError, UserError
from papercrane.capture import Captured, capture, check_name, is_ipython_name, split_names


def notebook(**values: Any) -> dict[str, Any]:
    """A user namespace like IPython's: builtins and dunders are there too."""
    return {"__name__": "__main__", "__builtins__": builtins, "__doc__": None, **values}


def run_capture(
    source: str,
    ns: dict[str, Any],
    *,
    name: str | None = None,
    inputs: list[str] | None = None,
    outputs: list[str] | None = None,
) -> Captured:
    source = textwrap.dedent(source)
    return capture(source, source, ns, name=name, inputs=inputs, outputs=outputs)


def define(ns: dict[str, Any], source: str) -> None:
    """Run a 'notebook cell' in ``ns`` (functions get ``ns`` as their globals)."""
    exec(textwrap.dedent(source), ns)


# -- inference ---------------------------------------------------------------------------


def test_inputs_are_names_read_that_the_notebook_defines() -> None:
    ns = notebook(x=1, w=2, unused=3)
    cap = run_capture("y = x + w\nz = y * 2", ns)
    assert cap.inputs == ("x", "w")
    assert cap.values == {"x": 1, "w": 2}
    assert cap.outputs == ("y", "z")
    assert cap.name == "y_z"
    assert cap.imports == ()
    assert cap.display_last is False


def test_builtins_are_not_inputs() -> None:
    cap = run_capture("n = len(items) + abs(-1)", notebook(items=[1, 2]))
    assert cap.inputs == ("items",)


def test_shadowed_builtin_from_the_notebook_is_an_input() -> None:
    cap = run_capture("n = len(items)", notebook(items=[1], len=lambda v: 42))
    assert cap.inputs == ("len", "items")


def test_modules_become_imports_not_values() -> None:
    ns = notebook(x=[1, 2], np=json, path=os.path)
    cap = run_capture("y = np.dumps(x)\nz = path.join('a', 'b')", ns)
    assert cap.inputs == ("x",)
    assert "np" not in cap.values
    assert cap.imports == ("np=json", f"path={os.path.__name__}")
    assert {"json", os.path.__name__.partition(".")[0]} <= cap.modules


def test_importable_functions_become_imports() -> None:
    ns = notebook(sqrt=math.sqrt, dumps=json.dumps, x=4)
    cap = run_capture("y = sqrt(x)\ns = dumps(y)", ns)
    assert cap.inputs == ("x",)
    assert cap.imports == ("dumps=json:dumps", "sqrt=math:sqrt")
    assert {"math", "json"} <= cap.modules


def test_notebook_function_is_a_value_input() -> None:
    ns = notebook(offset=10)
    define(ns, "def helper(v):\n    return v + offset\n")
    cap = run_capture("y = helper(1)", ns)
    assert cap.inputs == ("helper",)
    assert cap.values["helper"] is ns["helper"]


def test_imports_inside_the_cell_are_modules_and_outputs() -> None:
    cap = run_capture("import json as j\ny = j.dumps(1)", notebook())
    assert cap.modules == {"json"}
    assert cap.inputs == ()
    assert cap.outputs == ("j", "y")
    assert cap.name == "y"  # imports don't name the task


def test_undefined_name_raises_input_error_naming_it() -> None:
    with pytest.raises(InputError, match=r"reads 'missing_thing'.*no variable 'missing_thing'"):
        run_capture("y = missing_thing + 1", notebook())


def test_maybe_bound_name_that_the_notebook_lacks_is_not_an_error() -> None:
    cap = run_capture(
        """
        if flag:
            y = 1
        print(y)
        """,
        notebook(flag=True),
    )
    assert cap.inputs == ("flag",)
    assert cap.outputs == ("y",)


def test_maybe_bound_name_stays_the_cells_own_across_runs() -> None:
    """The first run binds ``last`` in the notebook; the second run must capture the same
    interface, or it would miss the cache."""
    source = """
        for i in range(n):
            last = i
        print(last)
        """
    first = run_capture(source, notebook(n=3))
    second = run_capture(source, notebook(n=3, i=2, last=2))
    assert first.inputs == second.inputs == ("n",)
    assert first.outputs == second.outputs == ("i", "last")


def test_deferred_reads_are_inputs_only_when_the_notebook_has_them() -> None:
    ns = notebook(scale=2)
    cap = run_capture(
        """
        def f(v):
            return v * scale + not_yet_defined
        """,
        ns,
    )
    assert cap.inputs == ("scale",)
    assert cap.outputs == ("f",)


def test_dunder_names_are_never_inputs() -> None:
    ns = notebook()
    cap = run_capture(
        """
        where = __name__
        def f():
            return __name__, __doc__
        """,
        ns,
    )
    assert cap.inputs == ()
    assert cap.values == {}


def test_global_counter_updated_by_a_cell_function_is_an_input() -> None:
    cap = run_capture(
        """
        def bump():
            global counter
            counter += 1
        bump()
        """,
        notebook(counter=0),
    )
    assert cap.inputs == ("counter",)
    assert cap.outputs == ("counter", "bump")


def test_mutated_input_is_also_an_output() -> None:
    cap = run_capture("items.append(1)\nconfig['k'] = 2", notebook(items=[], config={}))
    assert cap.inputs == ("items", "config")
    assert cap.outputs == ("items", "config")
    assert cap.name == "cell"


def test_mutated_module_is_not_an_output() -> None:
    cap = run_capture("j.x = 1", notebook(j=json))
    assert cap.outputs == ()
    assert cap.imports == ("j=json",)
    assert hasattr(json, "x") is False  # capture never runs the cell


def test_underscore_names_are_not_outputs_but_can_be_inputs() -> None:
    ns = notebook(_private=1, _items=[])
    cap = run_capture("_tmp = _private * 2\ny = _tmp\n_items.append(1)", ns)
    assert cap.inputs == ("_private", "_items")
    assert cap.outputs == ("y",)


def test_underscore_mutated_input_is_not_an_output() -> None:
    cap = run_capture("_cache.clear()", notebook(_cache={}))
    assert cap.inputs == ("_cache",)
    assert cap.outputs == ()


def test_with_as_resource_is_not_an_output() -> None:
    # After the block the file is closed: storing it would fail the task.
    cap = run_capture(
        """
        with open(path) as fh:
            text = fh.read()
        """,
        notebook(path="data.txt"),
    )
    assert cap.outputs == ("text",)
    assert cap.name == "text"


def test_with_as_resource_can_still_be_asked_for() -> None:
    cap = run_capture("with timer() as t:\n    pass\n", notebook(timer=object), outputs=["t"])
    assert cap.outputs == ("t",)


def test_deleted_names_are_reported() -> None:
    cap = run_capture("del old\ny = 1", notebook(old=1))
    assert cap.deleted == {"old"}
    assert cap.inputs == ("old",)
    assert cap.outputs == ("y",)


def test_last_expression_is_displayed_unless_semicolon() -> None:
    ns = notebook(x=1)
    assert run_capture("y = x\ny", ns).display_last is True
    assert run_capture("y = x\ny;", ns).display_last is False


# -- explicit --inputs / --outputs ----------------------------------------------------------


def test_explicit_inputs_override_inference() -> None:
    cap = run_capture("y = x + z", notebook(x=1, z=2), inputs=["x"])
    assert cap.inputs == ("x",)


def test_explicit_input_that_is_a_module_becomes_an_import() -> None:
    cap = run_capture("y = j.dumps(1)", notebook(j=json), inputs=["j"])
    assert cap.inputs == ()
    assert cap.imports == ("j=json",)


def test_explicit_input_unknown_to_the_notebook_raises_naming_it() -> None:
    with pytest.raises(InputError, match=r"--inputs names 'nope'.*no variable 'nope'"):
        run_capture("y = 1", notebook(x=1), inputs=["x", "nope"])


def test_explicit_outputs_override_inference() -> None:
    cap = run_capture("y = 1\nz = 2", notebook(), outputs=["z"])
    assert cap.outputs == ("z",)
    assert cap.declared_outputs == ("z",)
    assert cap.name == "z"


def test_inferred_outputs_are_not_declared() -> None:
    assert run_capture("y = 1", notebook()).declared_outputs == ()


# -- cells that can't be inferred -------------------------------------------------------------


@pytest.mark.parametrize("call", ["exec('y = 1')", "y = eval('1')", "g = globals()", "v = vars()"])
def test_dynamic_code_without_explicit_interface_raises(call: str) -> None:
    with pytest.raises(CaptureError, match=r"line 3: .*--inputs and --outputs"):
        run_capture("a = 1\n" + call, notebook())


def test_dynamic_code_with_only_inputs_still_raises() -> None:
    with pytest.raises(CaptureError, match="--inputs and --outputs"):
        run_capture("exec(code)", notebook(code="y = 1"), inputs=["code"])


def test_dynamic_code_with_both_flags_is_accepted() -> None:
    cap = run_capture("exec(code)", notebook(code="y = 1"), inputs=["code"], outputs=["y"])
    assert cap.inputs == ("code",)
    assert cap.outputs == ("y",)


def test_star_import_needs_outputs() -> None:
    with pytest.raises(CaptureError, match=r"line 2: 'import \*'.*--outputs"):
        run_capture("from os.path import *", notebook())
    # With outputs given, names the star import may provide are not errors.
    cap = run_capture("from os.path import *\ny = join('a')", notebook(), outputs=["y"])
    assert cap.outputs == ("y",)
    assert cap.inputs == ()
    assert "os" in cap.modules


def test_get_ipython_call_raises_with_the_cell_line() -> None:
    from IPython.core.inputtransformer2 import TransformerManager

    cell = "y = 1\n!ls -l\n"
    transformed = TransformerManager().transform_cell(cell)
    with pytest.raises(CaptureError, match=r"line 3: '!ls -l' needs the kernel"):
        capture(cell, transformed, notebook(), name=None, inputs=None, outputs=None)


@pytest.mark.parametrize("history", ["_", "__", "_i3", "_12", "Out", "In"])
def test_reading_ipython_history_raises(history: str) -> None:
    with pytest.raises(CaptureError, match="IPython's own history"):
        run_capture(f"y = {history}", notebook(**{history: 1}))


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("exit", "IPython's command to end the kernel.*raise an exception"),
        ("quit", "IPython's command to end the kernel.*raise an exception"),
        ("get_ipython", "the kernel's own shell.*normal cell"),
    ],
)
def test_reading_ipython_commands_says_what_they_are(name: str, says: str) -> None:
    with pytest.raises(CaptureError, match=says) as info:
        run_capture(f"f = {name}", notebook(**{name: object()}))
    assert f"task 'f' uses {name!r}" in str(info.value) and "history" not in str(info.value)


def ipython_open() -> Any:
    """The ``open`` a real IPython shell puts in the notebook's namespace."""
    from IPython.core.interactiveshell import InteractiveShell

    created = not InteractiveShell.initialized()
    try:
        opener = InteractiveShell.instance().user_ns["open"]
    finally:
        if created:
            InteractiveShell.clear_instance()
    assert opener is not builtins.open  # (else these tests prove nothing)
    return opener


def test_ipythons_own_open_is_the_builtin_not_an_input() -> None:
    ns = notebook(open=ipython_open(), path="/etc/hostname")
    cap = run_capture("txt = open(path).read()", ns)
    assert cap.inputs == ("path",) and "open" not in cap.values
    define(ns, "def read(p):\n    return open(p).read()")
    cap = run_capture("def again(p):\n    return open(p)\ntxt = read(path)", ns)
    assert cap.inputs == ("read", "path")  # (open read inside a function: not either)


def test_a_users_own_variable_named_open_is_still_an_input() -> None:
    mine = lambda p: "mine"  # noqa: E731
    cap = run_capture("txt = open('x')", notebook(open=mine))
    assert cap.inputs == ("open",) and cap.values["open"] is mine


# -- syntax errors -------------------------------------------------------------------------


def test_syntax_error_reports_the_notebook_line_number() -> None:
    # The %%task line is line 1 of the notebook cell, so body line 2 is cell line 3.
    with pytest.raises(CaptureError) as info:
        run_capture("a = 1\nb = (2,\nc = 3\n", notebook(), name="bad")
    message = str(info.value)
    assert message.startswith("task 'bad' has a syntax error on line 3:")
    assert "b = (2," in message


def test_syntax_error_on_first_body_line_is_line_two() -> None:
    with pytest.raises(CaptureError, match=r"this task cell has a syntax error on line 2: "):
        run_capture("def f(:\n    pass\n", notebook())


def test_syntax_error_shows_a_caret_under_the_column() -> None:
    with pytest.raises(CaptureError) as info:
        run_capture("y = 1 +* 2\n", notebook())
    lines = str(info.value).splitlines()
    assert lines[1] == "    y = 1 +* 2"
    assert lines[2].index("^") == 4 + lines[1][4:].index("*")


def test_capture_errors_are_user_errors() -> None:
    assert issubclass(CaptureError, UserError)
    assert issubclass(InputError, UserError)


# -- names ---------------------------------------------------------------------------------


def test_explicit_name_is_checked() -> None:
    assert run_capture("y = 1", notebook(), name="train-v2.1").name == "train-v2.1"
    with pytest.raises(CaptureError, match="task name 'bad name!' is not usable"):
        run_capture("y = 1", notebook(), name="bad name!")


@pytest.mark.parametrize("good", ["a", "_x", "Train_2", "a.b-c", "x" * 150])
def test_check_name_accepts(good: str) -> None:
    assert check_name(good) == good


@pytest.mark.parametrize("bad", ["", "1abc", "-a", "a b", "a/b", "x" * 151])
def test_check_name_refuses(bad: str) -> None:
    with pytest.raises(CaptureError):
        check_name(bad)


def test_default_name_uses_up_to_three_outputs() -> None:
    cap = run_capture("a = 1\nb = 2\nc = 3\nd = 4", notebook())
    assert cap.name == "a_b_c"


def test_split_names() -> None:
    assert split_names(None, "--inputs") is None
    assert split_names("a,b", "--inputs") == ["a", "b"]
    assert split_names(" a , b c ", "--inputs") == ["a", "b", "c"]
    assert split_names("", "--outputs") == []
    with pytest.raises(CaptureError, match="--outputs '1x' is not a variable name"):
        split_names("a,1x", "--outputs")


def test_is_ipython_name() -> None:
    assert is_ipython_name("_i7")
    assert is_ipython_name("_42")
    assert is_ipython_name("Out")
    assert not is_ipython_name("_private")
    assert not is_ipython_name("x_1")
