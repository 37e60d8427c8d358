"""A notebook file read without a kernel: its task cells, their DAG and its parameters.

``papercrane run`` uses it to check a notebook before starting a kernel (is it valid
nbformat? does each ``-p`` name a parameter? do two cells define one task name with
different code?) and to list the nodes it then follows. The values the tasks need come
later, from the kernel that runs the notebook.
"""

from __future__ import annotations

import ast
import builtins
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import workflow_name
from .errors import UserError

_LOADS = re.compile(r"^\s*%(re)?load_ext\s+papercrane\s*$", re.MULTILINE)


@dataclass
class FileTask:
    name: str
    index: int  # the cell's position in the notebook (0-based)
    inputs: list[str]
    outputs: list[str]
    upstream: dict[str, str] = field(default_factory=dict)  # input -> producing task
    map_over: str = ""


@dataclass
class FileWorkflow:
    name: str
    tasks: list[FileTask]
    #: Names assigned in the cell tagged "parameters" (what papermill's -p overrides).
    parameters: list[str]
    #: The kernel the notebook names (``metadata.kernelspec.name``), "" if none.
    kernel: str = ""
    #: Names a cell (plain, ``%%task``, or a second one tagged "parameters") assigns after
    #: the first parameters cell, where papermill puts the ``-p`` values, with that cell's
    #: index: a ``-p`` value for one would be replaced. A cell that reads the name before it
    #: assigns it (``n = int(n)``) uses the value given, and is not counted.
    assigned_later: dict[str, int] = field(default_factory=dict)
    #: The indexes of the cells tagged "parameters"; papermill puts the values after the
    #: first one (at the top if there is none).
    parameters_cells: list[int] = field(default_factory=list)
    #: Whether a cell before the first task cell runs ``%load_ext papercrane``: without
    #: it the kernel does not know ``%%task``.
    loads_papercrane: bool = False

    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]


def read_notebook(path: str | Path) -> object:
    import nbformat

    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such notebook")
    try:
        nb = nbformat.read(str(path), as_version=4)
        nbformat.validate(nb)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path} is not a valid notebook (nbformat 4): {reason}") from None
    return nb


def notebook_workflow(path: str | Path) -> FileWorkflow:
    from IPython.core.inputtransformer2 import TransformerManager
    from IPython.core.magic_arguments import parse_argstring

    from papercrane.analysis import analyze
    from papercrane.magics import PapercraneMagics

    from .workflow import singular

    nb = read_notebook(path)
    transformer = TransformerManager()
    tasks: list[FileTask] = []
    producers: dict[str, str] = {}
    codes: dict[str, str] = {}
    parameters: list[str] = []
    bound: set[str] = set()  # names the cells before this one assign
    modules: set[str] = set()  # ... and import (and do not assign again)
    later: dict[str, int] = {}
    tagged: list[int] = []
    loads = False
    for index, cell in enumerate(nb.cells):  # type: ignore[attr-defined]
        if cell.cell_type != "code":
            continue
        source = cell.source
        if not tasks and _LOADS.search(source):
            loads = True
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            names = _assigned(source)
            parameters += names
            tagged.append(index)
            if len(tagged) == 1:  # papermill puts the -p values after the first one
                later = {}
                bound |= set(names)
                continue
        if not source.startswith("%%task"):
            assigned, imported, read = _bound(transformer, source)
            for name in assigned - read:
                later.setdefault(name, index)
            bound |= assigned
            modules = (modules | imported) - assigned
            continue
        first, _, body = source.partition("\n")
        try:
            args = parse_argstring(PapercraneMagics.task, first[len("%%task") :])
        except Exception as exc:
            raise UserError(f"{path}, cell {index + 1}: {first!r}: {exc}") from None
        try:
            found = analyze(transformer.transform_cell(body))
        except SyntaxError as exc:
            raise UserError(
                f"{path}, cell {index + 1}: syntax error on line {(exc.lineno or 0) + 1}: {exc.msg}"
            ) from None
        outputs = (
            [n.strip() for n in args.outputs.split(",") if n.strip()]
            if args.outputs
            else [n for n in found.bound if not n.startswith("_")]
        )
        name = (
            args.name or "_".join([n for n in outputs if n not in found.import_bound][:3]) or "cell"
        )
        normalized = ast.dump(ast.parse(transformer.transform_cell(body)))
        if name in codes and codes[name] != normalized:
            raise UserError(
                f"{path}: two cells define task {name!r} with different code (cell "
                f"{tasks[[t.name for t in tasks].index(name)].index + 1} and cell {index + 1});"
                " give one of them another name"
            )
        codes[name] = normalized
        # As in the kernel: a builtin the cell calls (``len``, ``print``) is not an input
        # unless the notebook binds that name itself, a module an earlier cell imported is
        # the task's import (not a value), and a map's element is bound per element.
        element = (args.map_as or singular(args.map_over) or "") if args.map_over else ""
        inputs = [
            n
            for n in dict.fromkeys([*found.reads, *found.deferred_reads])
            if n not in found.import_bound
            and n != element
            and (n not in modules or n in producers)
            and not (hasattr(builtins, n) and n not in bound and n not in producers)
        ]
        if args.map_over and args.map_over not in inputs:
            inputs.append(args.map_over)
        bound |= set(found.bound) - found.import_bound
        # Its outputs are bound into the notebook, as a plain cell's assignments are: a
        # -p value for one would be replaced too, unless the cell reads it first.
        for out in outputs:
            if out not in found.import_bound and out not in found.reads:
                later.setdefault(out, index)
        task = FileTask(name, index, inputs, outputs, map_over=args.map_over or "")
        task.upstream = {n: producers[n] for n in inputs if n in producers}
        if task.map_over and task.map_over in producers:
            task.upstream[task.map_over] = producers[task.map_over]
        tasks.append(task)
        for out in outputs:
            producers[out] = name
    kernel = nb.metadata.get("kernelspec", {}).get("name") or ""  # type: ignore[attr-defined]
    return FileWorkflow(
        workflow_name(path),
        tasks,
        parameters,
        kernel=str(kernel),
        assigned_later=later,
        loads_papercrane=loads,
        parameters_cells=tagged,
    )


def _bound(transformer: Any, source: str) -> tuple[set[str], set[str], set[str]]:
    """Names a plain cell assigns (or defines), names it binds by import, and names it
    reads before binding them; none if it is not Python the analysis can read (the
    kernel will say so when it runs)."""
    from papercrane.analysis import analyze

    try:
        found = analyze(transformer.transform_cell(source))
    except Exception:
        return set(), set(), set()
    return set(found.bound) - found.import_bound, set(found.import_bound), set(found.reads)


def _assigned(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names: list[str] = []
    for stmt in tree.body:
        targets = (
            stmt.targets
            if isinstance(stmt, ast.Assign)
            else ([stmt.target] if isinstance(stmt, (ast.AnnAssign, ast.AugAssign)) else [])
        )
        for t in targets:
            names += [n.id for n in ast.walk(t) if isinstance(n, ast.Name)]
    return names
