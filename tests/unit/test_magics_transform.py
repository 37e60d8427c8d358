"""``%%task``'s cell transformation (IPython's, with its static part memoized) on a
real IPython shell, without a kernel."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from papercrane.magics import PapercraneMagics

CELLS = [
    "y = x + 1\n",
    "y = x + 1",
    "!ls\nx = 1\n",
    "a = !ls\nb = %pwd\n",
    "  x = 1\n  y = 2\n",
    ">>> x = 1\n>>> y = 2\n",
    "%time x = 1\n",
    "x?\n",
    "",
    "\n\nz = 3",
    "pwd\n",
]


@pytest.fixture
def shell() -> Iterator[Any]:
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    try:
        yield ip
    finally:
        InteractiveShell.clear_instance()


@pytest.fixture
def magics(shell: Any) -> Iterator[PapercraneMagics]:
    m = PapercraneMagics(shell)
    try:
        yield m
    finally:
        m.close()


def test_same_as_ipython_first_time_and_memoized(shell: Any, magics: PapercraneMagics) -> None:
    for cell in CELLS:
        assert magics._transform(cell) == shell.transform_cell(cell), cell
        assert magics._transform(cell) == shell.transform_cell(cell), cell


def test_one_line_cells_still_see_the_namespace(shell: Any, magics: PapercraneMagics) -> None:
    """The prefilter (automagic here) depends on the notebook's names: never memoized."""
    shell.automagic = True
    assert "run_line_magic('pwd'" in magics._transform("pwd\n")
    shell.user_ns["pwd"] = "a variable now"
    try:
        assert magics._transform("pwd\n") == shell.transform_cell("pwd\n") == "pwd\n"
    finally:
        del shell.user_ns["pwd"]


def test_added_transforms_apply(shell: Any, magics: PapercraneMagics) -> None:
    cell = "y = 1\nz = 2\n"
    magics._transform(cell)

    def shout(lines: list[str]) -> list[str]:
        return [line.replace("y", "Y") for line in lines]

    manager = shell.input_transformer_manager
    manager.cleanup_transforms.append(shout)
    try:
        assert magics._transform(cell) == "Y = 1\nz = 2\n" == shell.transform_cell(cell)
    finally:
        manager.cleanup_transforms.remove(shout)
    shell.input_transformers_post.append(shout)
    try:
        assert magics._transform(cell) == "Y = 1\nz = 2\n" == shell.transform_cell(cell)
    finally:
        shell.input_transformers_post.remove(shout)
    assert magics._transform(cell) == cell


def test_the_task_line_is_expanded_as_ipython_expands_magic_lines(
    shell: Any, magics: PapercraneMagics, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``%%task`` expands ``$name`` and ``{expression}`` itself (only when the line has
    them): the same result, from the same frames, as IPython gives a cell magic."""
    from IPython.core.magic_arguments import parse_argstring

    monkeypatch.setenv("PAPERCRANE_HOME", str(tmp_path))
    shell.register_magics(magics)
    probed: list[str] = []
    shell.register_magic_function(lambda line, cell: probed.append(line), "cell", "probe")
    shell.user_ns.update(x=1, v="notebook")
    versions = []

    def caller(line: str) -> None:
        v = "caller"  # noqa: F841 (what expanding could read from this frame)
        shell.run_cell_magic("probe", line, "y = x + 1\n")
        shell.run_cell_magic("task", line, "y = x + 1\n")
        versions.append(magics.session.records["task:y"].options.config.cache_version)

    def outer(line: str) -> None:
        v = "callers-caller"  # noqa: F841
        caller(line)

    lines = ["{v}", "$v", "{v.upper()}-{1+1}", "a}b", "$$v", "plain", "{undefined}"]
    for line in lines:
        outer(f"--executor inline --cache --cache-version {line}")
        caller(f"--executor inline --cache --cache-version {line}")
    expected = [parse_argstring(magics.task, line).cache_version for line in probed]
    assert versions == expected
    assert "callers-caller" in expected and "notebook" in expected
    magics.session.close()
