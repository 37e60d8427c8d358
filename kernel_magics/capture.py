"""From a ``%%task`` cell and the notebook's namespace to a task: interface, imports and
input values. Static analysis (``analysis.py``) says which names; this module looks at
the values those names hold now and reports every problem with the cell's name."""

from __future__ import annotations

import ast
import builtins
import functools
import re
import sys
from dataclasses import dataclass, field
from typing import Any

from papercrane.backend import config
from papercrane.backend.environment import import_reference
from papercrane.backend.errors import CaptureError, InputError, MissingName

from .analysis import CellAnalysis, analyze

_IPYTHON_NAMES = {
    "In",
    "Out",
    "get_ipython",
    "exit",
    "quit",
    "_ih",
    "_oh",
    "_dh",
    "_i",
    "_ii",
    "_iii",
    "__",
    "___",
    "_",
}
_IPYTHON_HISTORY = re.compile(r"^_(i)?\d+$")


def is_ipython_name(name: str) -> bool:
    return name in _IPYTHON_NAMES or bool(_IPYTHON_HISTORY.match(name))


def _ipython_use(label: str, name: str) -> str:
    """Why a task can't read one of IPython's own names, and what to do instead: a
    task runs outside the kernel, which is all these names are about."""
    if name in ("exit", "quit"):
        return (
            f"{label} uses {name!r}, which is IPython's command to end the kernel, not "
            "something a task can do; to make the task fail, raise an exception"
        )
    if name == "get_ipython":
        return (
            f"{label} uses 'get_ipython', which is the kernel's own shell, and a task "
            "runs outside the kernel; do what needs the shell in a normal cell and pass "
            "the task what it produced in a variable"
        )
    return (
        f"{label} uses {name!r}, which is IPython's own history; a task runs outside "
        "the kernel, so assign the value you need to a variable in a normal cell"
    )


def _is_ipython_builtin(name: str, user_ns: dict[str, Any]) -> bool:
    """Whether ``name`` holds, in the notebook, what IPython itself put there in place of
    a builtin: its own ``open`` (which refuses fds 0-2). That is the builtin for the
    task, not an input to ship and hash into the cache key. Checked by identity, so a
    variable of the user's that happens to be called ``open`` is still an input."""
    if name != "open" or name not in user_ns:
        return False
    shell = sys.modules.get("IPython.core.interactiveshell")
    ipython_open = getattr(shell, "_modified_open", None)
    return ipython_open is not None and user_ns[name] is ipython_open


@dataclass
class Captured:
    name: str
    code: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    imports: tuple[str, ...]
    values: dict[str, Any] = field(repr=False)
    modules: set[str]
    deleted: set[str]
    declared_outputs: tuple[str, ...]
    display_last: bool
    #: The cell's top-level import statements and the names they bind: batch mode runs
    #: them in the notebook at once, so later cells see modules, not pending outputs.
    import_lines: tuple[str, ...] = ()
    import_names: frozenset[str] = frozenset()


def split_names(text: str | None, flag: str) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.replace(" ", ",").split(",") if n.strip()]
    for n in names:
        if not n.isidentifier():
            raise CaptureError(f"{flag} {n!r} is not a variable name")
    return names


def default_name(analysis: CellAnalysis, explicit_outputs: list[str] | None) -> str:
    outs = explicit_outputs or [
        n
        for n in analysis.bound
        if not n.startswith("_")
        and n not in analysis.import_bound
        and n not in analysis.context_bound
    ]
    return "_".join(outs[:3]) or "cell"


def check_name(name: str) -> str:
    return config.check_name("task name", name, error=CaptureError)


def _syntax_error(exc: SyntaxError, cell: str, label: str) -> CaptureError:
    lineno = (exc.lineno or 1) + 1  # +1: the %%task line is the cell's line 1
    lines = cell.splitlines()
    text = lines[exc.lineno - 1] if exc.lineno and exc.lineno <= len(lines) else ""
    caret = ""
    if text and exc.offset:
        caret = "\n    " + " " * (exc.offset - 1) + "^"
    return CaptureError(
        f"{label} has a syntax error on line {lineno}: {exc.msg}\n    {text}{caret}"
    )


def capture(
    cell: str,
    transformed: str,
    user_ns: dict[str, Any],
    *,
    name: str | None,
    inputs: list[str] | None,
    outputs: list[str] | None,
    pending: frozenset[str] = frozenset(),
    provided: frozenset[str] = frozenset(),
) -> Captured:
    """``pending``: names that deferred tasks will produce (inputs without a value yet);
    ``provided``: names the runner binds itself (a map's element)."""
    label = f"task {name!r}" if name else "this task cell"
    try:
        analysis, top_imports = _analyzed(transformed)
    except SyntaxError as exc:
        if _awaits_at_top_level(transformed):
            raise _top_level_await(exc, cell, label) from None
        raise _syntax_error(exc, cell, label) from None
    name = check_name(name or default_name(analysis, outputs))
    label = f"task {name!r}"
    lines = cell.splitlines()

    if analysis.ipython_calls:
        lineno = analysis.ipython_calls[0]
        text = lines[lineno - 1].strip() if lineno <= len(lines) else ""
        raise CaptureError(
            f"{label}, line {lineno + 1}: {text!r} needs the kernel (shell commands with "
            "!, line magics and get_ipython() do), but a task runs on its own; move it "
            "to a normal cell, or use subprocess.run(...) inside the task"
        )
    if analysis.dynamic and (inputs is None or outputs is None):
        lineno, what = analysis.dynamic[0]
        raise CaptureError(
            f"{label}, line {lineno + 1}: {what} hides which variables the cell reads "
            "and writes, so they can't be inferred; list them with --inputs and --outputs"
        )
    if analysis.star_imports and outputs is None:
        raise CaptureError(
            f"{label}, line {analysis.star_imports[0] + 1}: 'import *' hides which names "
            "the cell defines; import names explicitly or list outputs with --outputs"
        )

    if inputs is not None:
        for n in inputs:
            if n not in user_ns and n not in pending and n not in provided:
                raise InputError(
                    f"{label}: --inputs names {n!r}, but the notebook has no variable {n!r}; "
                    "run the cell that defines it first, or fix the name"
                )
        input_names = list(inputs)
    else:
        input_names = _inferred_inputs(analysis, user_ns, label, pending | provided)

    values: dict[str, Any] = {}
    imports: list[str] = []
    modules: set[str] = set(analysis.imported_modules)
    edges: list[str] = []
    for n in input_names:
        if n in provided or n in pending:  # no value yet: it comes from upstream
            edges.append(n)
            continue
        value = user_ns[n]
        ref = import_reference(value)
        if ref is not None:
            imports.append(f"{n}={ref}")
            modules.add(ref.partition(":")[0].partition(".")[0])
        else:
            values[n] = value

    if outputs is not None:
        output_names = list(outputs)
    else:
        # ``with open(p) as f``: f is a closed file afterwards, which can't be stored.
        output_names = [
            n for n in analysis.bound if not n.startswith("_") and n not in analysis.context_bound
        ]
        output_names += [
            n
            for n in analysis.mutated
            if n in values and n not in output_names and not n.startswith("_")
        ]
    return Captured(
        name=name,
        code=transformed,
        inputs=tuple(values) + tuple(n for n in edges if n not in values),
        outputs=tuple(output_names),
        imports=tuple(sorted(imports)),
        values=values,
        modules=modules,
        deleted=analysis.deleted,
        declared_outputs=tuple(outputs or ()),
        display_last=analysis.last_expr,
        **top_imports,
    )


@functools.lru_cache(maxsize=256)
def _analyzed(source: str) -> tuple[CellAnalysis, dict[str, Any]]:
    """The analysis of a cell's code, which depends on its text alone: re-running a
    cell (the common case) skips parsing it twice and walking its AST. Callers only
    read the result. (A SyntaxError is not cached: it is raised again each time.)"""
    analysis = analyze(source)
    # What only the compiler refuses ('await' or 'return' outside a function, say) is
    # refused here too, before anything is stored, not when the task runs and fails.
    compile(source, "<task>", "exec", dont_inherit=True)
    return analysis, _top_level_imports(source)


def _awaits_at_top_level(source: str) -> bool:
    """Whether the code compiles once top-level ``await`` (``async for``, ``async with``)
    is allowed, as IPython allows it in a normal cell: then that is what is wrong."""
    try:
        compile(source, "<task>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
    except SyntaxError:
        return False
    return True


def _top_level_await(exc: SyntaxError, cell: str, label: str) -> CaptureError:
    """A task's code runs as a module, where top-level ``await`` is a syntax error (only
    IPython's own cells run in its event loop); said before anything is recorded, with
    the way out."""
    lineno = (exc.lineno or 1) + 1  # +1: the %%task line is the cell's line 1
    lines = cell.splitlines()
    text = lines[exc.lineno - 1].strip() if exc.lineno and exc.lineno <= len(lines) else ""
    return CaptureError(
        f"{label}, line {lineno}: {text!r} awaits at the top level of the cell, which only "
        "a normal cell can do; put it in an async function and call asyncio.run(...) on "
        "it inside the task (under the local executor: an inline task is inside the "
        "kernel's running event loop, where asyncio.run can't start another)"
    )


def _top_level_imports(source: str) -> dict[str, Any]:
    lines, names = [], set()
    for stmt in ast.parse(source).body:
        if isinstance(stmt, ast.Import) or (isinstance(stmt, ast.ImportFrom) and not stmt.level):
            lines.append(ast.unparse(stmt))
            for alias in stmt.names:
                if alias.name != "*":
                    names.add(alias.asname or alias.name.partition(".")[0])
    return {"import_lines": tuple(lines), "import_names": frozenset(names)}


def _inferred_inputs(
    analysis: CellAnalysis, user_ns: dict[str, Any], label: str, known: frozenset[str]
) -> list[str]:
    names: list[str] = []
    for n in analysis.reads:
        if _is_dunder(n):
            continue  # __name__ and friends: the runner provides its own
        if is_ipython_name(n):
            raise CaptureError(_ipython_use(label, n))
        if _is_ipython_builtin(n, user_ns):
            continue
        if n in user_ns or n in known:
            names.append(n)
        elif not (hasattr(builtins, n) or n in analysis.ever_bound or analysis.star_imports):
            # (with ``import *`` in the cell, any unknown name may come from it)
            raise MissingName(
                f"{label} reads {n!r}, but no variable {n!r} is defined in the notebook; "
                "run the cell that defines it first, or fix the name",
                n,
                label,
            )
    for n in analysis.deferred_reads:
        if (
            (n in user_ns or n in known)
            and not is_ipython_name(n)
            and not _is_ipython_builtin(n, user_ns)
            and not _is_dunder(n)
            and n not in names
        ):
            names.append(n)
    return names


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")
