"""The warm-up thread after ``%load_ext papercrane`` (``kernel_magics/warmup.py``), on a
real IPython shell and real imports."""

from __future__ import annotations

import ast
import importlib.util
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from papercrane.warmup import MODULES, WarmUp, warm


@pytest.fixture
def shell() -> Iterator[Any]:
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    try:
        yield ip
    finally:
        InteractiveShell.clear_instance()


@pytest.fixture
def modules_dir(tmp_path: Path) -> Iterator[Path]:
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.startswith("pc_warm_")]:
            del sys.modules[name]


def test_a_failed_import_is_forgotten_and_the_kernel_thread_imports_it_again(
    modules_dir: Path,
) -> None:
    # Fails when imported off the main thread, works on it: the warm-up swallows the
    # error, and the module is not left half-imported for the task.
    (modules_dir / "pc_warm_flaky.py").write_text(
        "import threading\n"
        "if threading.current_thread() is not threading.main_thread():\n"
        "    raise RuntimeError('not here')\n"
        "VALUE = 42\n"
    )
    (modules_dir / "pc_warm_fine.py").write_text("VALUE = 7\n")
    thread = threading.Thread(
        target=warm, args=(("pc_warm_missing", "pc_warm_flaky", "pc_warm_fine"),)
    )
    thread.start()
    thread.join()
    assert "pc_warm_flaky" not in sys.modules
    assert sys.modules["pc_warm_fine"].VALUE == 7  # later modules still imported
    import pc_warm_flaky  # type: ignore[import-not-found]

    assert pc_warm_flaky.VALUE == 42


def test_starts_after_the_cell_that_loaded_the_extension(shell: Any) -> None:
    warm_up = WarmUp(shell)
    assert warm_up.thread is None  # nothing while the loading cell runs
    shell.run_cell("x = 1")
    assert warm_up.thread is not None
    warm_up.thread.join(timeout=60)
    assert "papercrane.backend.engine" in sys.modules
    first = warm_up.thread
    shell.run_cell("y = 2")
    assert warm_up.thread is first  # once per shell


def test_cancelled_before_the_cell_ends_never_starts(shell: Any) -> None:
    warm_up = WarmUp(shell)
    warm_up.cancel()
    shell.run_cell("x = 1")
    assert warm_up.thread is None


def test_load_and_unload_in_one_cell_starts_nothing(shell: Any) -> None:
    shell.run_cell("%load_ext papercrane\n%unload_ext papercrane")
    shell.run_cell("x = 1")
    magics = shell.magics_manager.registry["PapercraneMagics"]
    assert magics.warm_up.thread is None


def _module_level_imports(name: str) -> set[str]:
    """papercrane modules ``name`` imports when it is imported (not in functions, not
    under ``if TYPE_CHECKING``), including a package it takes names from (``from .
    import x`` where ``x`` is defined by the package's ``__init__``: it must have run).
    ``from . import submodule`` needs only the submodule: should the package be
    half-initialized by the other thread then, Python still imports the submodule and
    the import works (``repo.py``'s ``from . import db, sqlite_rows`` is such a case)."""
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin is not None
    is_package = spec.submodule_search_locations is not None
    base = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = base.split(".")
                    package = ".".join(parts[: len(parts) - node.level + 1])
                    module = f"{package}.{node.module}" if node.module else package
                else:
                    module = node.module or ""
                names = {f"{module}.{alias.name}" for alias in node.names}
                found.update(names)
                if not all(_is_module(n) for n in names):
                    found.add(module)

    with open(spec.origin, encoding="utf-8") as f:
        visit(ast.parse(f.read()).body)
    return {m for m in found if m.startswith("papercrane") and _is_module(m)}


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # ``module.attribute``: not a package
        return False


def test_the_warmed_modules_have_no_import_cycle() -> None:
    """What makes importing them on two threads at once safe (``warmup.py``)."""
    graph: dict[str, set[str]] = {}
    todo = ["papercrane.magics", *MODULES]
    while todo:
        name = todo.pop()
        if name not in graph:
            graph[name] = _module_level_imports(name) - {name}
            todo.extend(graph[name])
    assert "papercrane.backend.engine" in graph and "papercrane.backend.store.repo" in graph

    done: set[str] = set()

    def walk(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, " -> ".join((*path, name))
        if name in done:
            return
        for dep in graph[name]:
            walk(dep, (*path, name))
        done.add(name)

    for name in graph:
        walk(name, ())
