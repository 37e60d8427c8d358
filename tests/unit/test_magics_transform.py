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
