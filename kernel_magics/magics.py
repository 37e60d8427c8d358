"""The ``%%task``, ``%workflow`` and ``%lineage`` magics.

Arguments are parsed with IPython's ``magic_arguments``, so a bad flag is a one-line
``UsageError``. Every user mistake papercrane detects (a bad cell, an undefined or
unserializable input, an unusable setting) is re-raised as ``UsageError`` too: one line
that names the cell and the variable, no traceback from papercrane's insides.
"""

from __future__ import annotations

import ast
import functools
import os
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from .config import Papercrane
from .gc_freeze import Freezer


def _user_errors(method: Callable[..., Any]) -> Callable[..., Any]:
    """Papercrane's own errors become a one-line UsageError; task failures keep their
    own rendering (the user's traceback)."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any) -> Any:
        from papercrane.backend.errors import PapercraneError

        try:
            return method(self, *args)
        except PapercraneError as exc:
            raise UsageError(str(exc)) from None

    return wrapper


class _FlushBeforeReads(ast.NodeTransformer):
    """Batch mode: a cell that reads a deferred task's output runs the pending workflow
    first, as the cell's first statement (so a failure fails this cell).

    An AST transformer rather than an input transformer: the call is added as a node that
    shares the first statement's line, so the user's own lines keep their numbers in
    tracebacks. IPython drops a transformer that raises, so this one never does.
    """

    _MAGIC_CALLS = (
        "get_ipython().run_cell_magic('task'",
        "get_ipython().run_line_magic('workflow'",
    )

    def __init__(self, magics: PapercraneMagics) -> None:
        self.magics = magics

    def visit_Module(self, node: ast.Module) -> ast.Module:  # noqa: N802 (ast's name)
        magics = self.magics
        session = magics._session
        if magics._capturing or session is None or not session.workflow.pending or not node.body:
            return node
        try:
            source = ast.unparse(node)
        except Exception:  # an AST we can't print back is not one we can analyze
            return node
        if source.lstrip().startswith(self._MAGIC_CALLS):
            return node
        if not session.workflow.needs_flush(source):
            return node
        flush = ast.parse("get_ipython().run_line_magic('workflow', 'flush')").body[0]
        for part in ast.walk(flush):
            ast.copy_location(part, node.body[0])
        node.body.insert(0, flush)
        return node


@magics_class
class PapercraneMagics(Magics):
    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.settings = Papercrane(parent=shell)
        shell.configurables.append(self.settings)
        self._session: Any = None
        self._capturing = False
        self._flusher = _FlushBeforeReads(self)
        shell.ast_transformers.append(self._flusher)
        self._parsed: dict[str, Any] = {}
        self._static: dict[tuple[Any, ...], str] = {}  # ``_transform``'s memo
        self._freezer = Freezer()
        if self.settings.gc_freeze:
            self._freezer.freeze_if_safe(shell)
        self.settings.observe(self._gc_freeze_changed, "gc_freeze")

    def _gc_freeze_changed(self, change: Any) -> None:
        if change["new"]:
            self._freezer.freeze_if_safe(self.shell)
        else:
            self._freezer.thaw()

    @property
    def session(self) -> Any:
        if self._session is None:
            from .session import Session

            self._session = Session(self.shell, self.settings)
        return self._session

    def close(self) -> None:
        if self._flusher in self.shell.ast_transformers:
            self.shell.ast_transformers.remove(self._flusher)
        if self.settings in self.shell.configurables:
            self.shell.configurables.remove(self.settings)
        self._freezer.thaw()
        if self._session is not None:
            self._session.close()

    # -- %%task ---------------------------------------------------------------------------
    @magic_arguments("%task")  # (the help's usage line adds one "%": a cell magic has two)
    @argument("name", nargs="?", default=None, help="task name (default: from its outputs)")
    @argument("--cache", action="store_true", help="reuse outputs when code and inputs match")
    @argument("--cache-version", default="", help="bump to invalidate the cache by hand")
    @argument("--retries", type=int, default=0, help="re-run a failed attempt up to N times")
    @argument("--timeout", default=None, help="stop an attempt after e.g. 90s, 30m, 1h30m")
    @argument("--inputs", default=None, help="comma-separated input names (skip inference)")
    @argument("--outputs", default=None, help="comma-separated output names (skip inference)")
    @argument(
        "--executor",
        choices=["inline", "local", "kubernetes"],
        default=None,
        help="inline: in this kernel; local: a subprocess per attempt (default); "
        "kubernetes: a pod per attempt",
    )
    @argument("--image", default=None, help="container image for kubernetes attempts")
    @argument("--cpu", default=None, help="CPU request, e.g. 2 or 500m")
    @argument("--memory", default=None, help="memory request, e.g. 512Mi or 4Gi")
    @argument("--gpu", default=None, help="number of GPUs")
    @argument(
        "--map",
        dest="map_over",
        default=None,
        metavar="NAME",
        help="run once per element of NAME; outputs become lists",
    )
    @argument(
        "--as",
        dest="map_as",
        default=None,
        metavar="ELEMENT",
        help="the name of one element in the cell (default: NAME's singular)",
    )
    @argument(
        "--min-success-ratio",
        type=float,
        default=None,
        help="with --map: the share of elements that must succeed (default 1)",
    )
    @argument(
        "--map-concurrency",
        type=int,
        default=None,
        help="with --map: elements running at once (default: --max-parallel)",
    )
    @argument("--project", default=None, help="project (default: %%config Papercrane.project)")
    @argument("--domain", default=None, help="domain (default: %%config Papercrane.domain)")
    @no_var_expand  # (``_expanded`` expands it, as IPython would)
    @cell_magic
    def task(self, line: str, cell: str) -> None:
        """Run this cell as a captured, cached, isolated task.

        Inputs are the notebook variables the cell reads; outputs are the names it
        assigns. They are bound back into the notebook when the task finishes.
        """
        self._task(self._task_args(self._expanded(line)), cell)

    def _expanded(self, line: str) -> str:
        """The ``%%task`` line with ``$name`` and ``{expression}`` expanded, as IPython
        expands a magic's line before calling it (``InteractiveShell.var_expand``, over
        the notebook's namespace and the same caller's frame). A line without ``$``,
        ``{`` or ``}`` is what expanding it gives, so it is taken as it is: expanding
        copies the notebook's whole namespace first, on every task run."""
        if "$" not in line and "{" not in line and "}" not in line:
            return line
        # The frame IPython's run_cell_magic reads (its depth 2), seen from var_expand
        # called here: var_expand, _expanded, task, run_cell_magic, its caller, ...
        return self.shell.var_expand(line, 4)  # type: ignore[no-any-return]

    def _task_args(self, line: str) -> Any:
        """``%%task`` flags, parsed once per distinct line: argparse is a fair share of
        a fast task's overhead, and a notebook re-runs the same few lines. Each call
        gets its own copy; a bad line raises every time (errors are not kept)."""
        import argparse

        found = self._parsed.get(line)
        if found is None:
            found = self._parse_task_line(line)
            if len(self._parsed) >= 256:
                self._parsed.clear()
            self._parsed[line] = found
        copy = argparse.Namespace()
        vars(copy).update(vars(found))  # (the keyword constructor sets them one by one)
        return copy

    def _parse_task_line(self, line: str) -> Any:
        """The flags; a name of several words (``%%task has space``) is refused as such,
        not as argparse's "unrecognized arguments: space"."""
        try:
            return parse_argstring(self.task, line)
        except UsageError as exc:
            if not str(exc).startswith("unrecognized arguments:"):
                raise
            from IPython.utils.process import arg_split

            # (the line split as parse_argstring splits it; its partial= is IPython 9's)
            known, extra = self.task.parser.parse_known_args(arg_split(line))
            words = [w for w in extra if not w.startswith("-")]
            if known.name is None or not words:
                raise
            name = " ".join([known.name, *words])
            raise UsageError(
                f"task names can't contain spaces: {name!r}; write it as "
                f"{'_'.join(name.split())!r} (one word: letters, digits, _, - or .)"
            ) from None

    def _transform(self, cell: str) -> str:
        """``shell.transform_cell(cell)``, with its static part memoized by the text.

        The static part (``input_transformer_manager``: cleanup, cell-magic and token
        transforms) is a pure function of the text for IPython's own transforms, and
        the costliest part of transforming a small cell; a notebook re-runs the same
        cells. It is memoized only while the manager is IPython's, with the transforms
        it had when the text was memoized, and the shell's ``transform_cell`` is
        IPython's (otherwise it is called as is). The rest runs every time, as
        ``InteractiveShell.transform_cell`` runs it: a one-line cell goes through the
        prefilter (which depends on the namespace: automagic, autocall), then
        ``input_transformers_post``."""
        from IPython.core.inputtransformer2 import TransformerManager
        from IPython.core.interactiveshell import InteractiveShell

        shell = self.shell
        manager = shell.input_transformer_manager
        if (
            type(shell).transform_cell is not InteractiveShell.transform_cell
            or type(manager) is not TransformerManager
        ):
            return shell.transform_cell(cell)
        key = (
            cell,
            *manager.cleanup_transforms,
            None,
            *manager.line_transforms,
            None,
            *manager.token_transformers,
        )
        static = self._static.get(key)
        if static is None:
            static = manager.transform_cell(cell)
            if len(self._static) >= 256:
                self._static.clear()
            self._static[key] = static
        if len(static.splitlines()) == 1:
            with shell.builtin_trap:
                static = shell.prefilter_manager.prefilter_lines(static) + "\n"
        lines = static.splitlines(keepends=True)
        for transform in shell.input_transformers_post:
            lines = transform(lines)
        return "".join(lines)

    @_user_errors
    def _task(self, args: Any, cell: str) -> None:
        d = _task_imports()
        if args.retries < 0:
            raise d.CaptureError(f"--retries {args.retries} must be 0 or more")
        executor = args.executor or self.settings.executor  # "": the engine's default
        if executor not in ("", "inline", "local", "kubernetes"):
            raise d.CaptureError(
                f"executor {executor!r} (from PAPERCRANE_EXECUTOR or %config) is not an "
                "executor; use inline, local or kubernetes"
            )
        if args.cache_version and not args.cache:
            raise d.CaptureError(
                f"--cache-version {args.cache_version} keys the cache, which is off: add --cache"
            )
        config = d.TaskConfig(
            cache=args.cache,
            cache_version=unquoted(args.cache_version),
            retries=args.retries,
            timeout=d.parse_duration(args.timeout) if args.timeout else None,
            executor=executor,
            image=args.image,
            resources=d.Resources(
                cpu=d.parse_cpu(args.cpu) if args.cpu else None,
                memory=d.parse_memory(args.memory) if args.memory else None,
                gpu=d.parse_gpu(args.gpu) if args.gpu is not None else None,
            ),
        )
        ns = self.shell.user_ns
        mapping = None
        if args.map_over:
            # Whether the variable exists first: a typo (``--map itemz``) is not a name
            # whose singular can't be told, which is what map_spec would say of it.
            wf = self._session.workflow if self._session is not None else None
            deferred = wf.pending_outputs() if wf is not None and wf.deferring else frozenset()
            _check_map_over(args.map_over, args.name, ns, deferred)
            mapping = d.map_spec(
                args.map_over, args.map_as, args.min_success_ratio, args.map_concurrency
            )
        elif args.map_as or args.min_success_ratio is not None or args.map_concurrency:
            raise d.CaptureError("--as, --min-success-ratio and --map-concurrency need --map NAME")
        project = args.project or self.settings.project
        domain = args.domain or self.settings.domain
        d.check_scope(project, domain)
        session = self.session
        workflow = session.workflow
        if workflow.deferring and workflow.rebound():
            # A plain cell bound a deferred output again out of analysis's sight: the
            # deferred tasks ran before it, so this cell reads what that cell left.
            workflow.flush()
        pending = workflow.pending_outputs() if workflow.deferring else frozenset()
        self._capturing = True
        try:
            transformed = _keeping_leading_blank_lines(cell, self._transform(cell))
        finally:
            self._capturing = False
        try:
            cap = d.capture(
                cell,
                transformed,
                ns,
                name=args.name,
                inputs=d.split_names(args.inputs, "--inputs"),
                outputs=d.split_names(args.outputs, "--outputs"),
                pending=pending,
                provided=frozenset([mapping.as_name]) if mapping else frozenset(),
            )
        except d.MissingName as missing:
            raise _from_a_failed_task(missing, session) from None
        if mapping is not None:
            over = mapping.over
            _check_map_over(over, cap.name, ns, pending)  # (a deferred task's, if it failed)
            if over in ns and over not in pending:
                if not hasattr(ns[over], "__iter__") and not hasattr(ns[over], "__getitem__"):
                    # (refused here, before any execution records the mistake)
                    raise d.InputError(f"task {cap.name!r}: {d.not_iterable(over, ns[over])}")
                if over not in cap.values:
                    cap.values[over] = ns[over]  # the list reaches the scheduler, not each one
            cap = d.replace(
                cap, inputs=tuple(i for i in cap.inputs if i != over or over in _reads(transformed))
            )
        options = d.RunOptions(
            name=cap.name,
            config=config,
            project=project,
            domain=domain,
            map=mapping,
            max_parallel=args.map_concurrency or self.settings.max_parallel,
        )
        session.task_cell(cap, options)

    # -- %workflow ------------------------------------------------------------------------
    @magic_arguments()
    @argument(
        "action",
        choices=["show", "run", "recover", "defer", "flush"],
        help="show the DAG; run it; recover a failed execution; batch mode on/off; "
        "run the deferred tasks now",
    )
    @argument(
        "target",
        nargs="?",
        default=None,
        help="recover: the execution id (default: the workflow's last run, if it failed); "
        "defer: on (default) or off",
    )
    @argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="run: override a workflow parameter (repeatable)",
    )
    @argument("--max-parallel", type=int, default=None, help="run: nodes at the same time")
    @argument(
        "--remote",
        action="store_true",
        help="run/flush: on the server at $PAPERCRANE_URL (an error if it is unset)",
    )
    @argument(
        "--detach",
        action="store_true",
        help="run/flush on a server: submit, print the execution id and URL, don't wait",
    )
    @argument(
        "--failure-policy",
        choices=["fail-fast", "continue"],
        default="fail-fast",
        help="run: stop at the first failed node, or finish independent branches",
    )
    @line_magic
    def workflow(self, line: str) -> Any:
        """The notebook's task cells as one workflow (a DAG): show it, run it in
        parallel, recover a failed run, or batch task cells up (defer)."""
        try:
            args = parse_argstring(self.workflow, line)
        except UsageError as exc:
            if "unrecognized arguments" in str(exc) and "-p" in line.split():
                raise UsageError(
                    f"{exc}. A parameter value with spaces goes in quotes around the whole "
                    """parameter: -p "title=hello world" (or -p "title='hello world'")"""
                ) from None
            raise
        return self._workflow(args)

    @_user_errors
    def _workflow(self, args: Any) -> Any:
        from papercrane.backend.errors import UserError

        from .notebook import parse_param

        wf = self.session.workflow
        if (args.remote or args.detach) and not os.environ.get("PAPERCRANE_URL"):
            raise UserError(
                "--remote and --detach run on a papercrane server: set PAPERCRANE_URL (and "
                "PAPERCRANE_TOKEN) before loading papercrane"
            )
        wf.detach = args.detach
        if args.action == "show":
            wf.show()
        elif args.action == "run":
            overrides = dict(parse_param(p) for p in args.param)
            if args.max_parallel is not None and args.max_parallel < 1:
                raise UserError(f"--max-parallel {args.max_parallel} must be at least 1")
            wf.run(overrides, args.max_parallel, args.failure_policy)
        elif args.action == "recover":
            wf.recover(args.target or wf.last_failed())
        elif args.action == "defer":
            target = (args.target or "on").lower()
            if target not in ("on", "off"):
                raise UserError(f"%workflow defer {target}: use on or off")
            if target == "off":
                wf.defer_override = False  # (off even if the tasks it runs now fail)
                wf.flush()
            wf.defer_override = target == "on"
        else:
            wf.flush()
        return None

    # -- %lineage -------------------------------------------------------------------------
    @magic_arguments()
    @argument("variable", help="a notebook variable produced by a task")
    @line_magic
    def lineage(self, line: str) -> None:
        """Show the chain of tasks, versions, executions and inputs behind a value."""
        args = parse_argstring(self.lineage, line)
        self._lineage(args.variable)

    @_user_errors
    def _lineage(self, variable: str) -> None:
        from IPython.display import display

        from .lineage_widget import lineage_display

        session = self.session
        if variable in session.workflow.pending_outputs():
            session.workflow.flush()  # batch mode: the value comes from a deferred task
        artifact_id, origin = session.artifact_of(variable)
        scope = session.scopes.get(variable)
        engine = session.engine_for(*scope) if scope else session.engine
        tree = engine.lineage(artifact_id, via=origin)
        display(lineage_display(tree, variable))


def unquoted(text: str) -> str:
    """An option's value without the quotes around it: IPython splits a magic's line at
    spaces outside quotes that open a word and keeps those quotes (``--cache-version "2"``
    arrives as ``"2"``, ``-p "s=a b"`` as ``"s=a b"``); they are the user's shell habit,
    not part of the value."""
    if len(text) > 1 and text[0] in "'\"" and text[-1] == text[0]:
        return text[1:-1]
    return text


@functools.cache
def _task_imports() -> SimpleNamespace:
    """What ``%%task`` uses from the backend and the session, imported at its first run
    (loading the extension imports none of it), then handed over as one namespace:
    eight import statements in ``_task`` cost ~4 µs on every run, even with the modules
    loaded. (The names reach ``_task`` through ``locals()``.)"""
    from dataclasses import replace  # noqa: F401

    from papercrane.backend.config import check_scope  # noqa: F401
    from papercrane.backend.errors import (  # noqa: F401
        CaptureError,
        InputError,
        MissingName,
        not_iterable,
    )
    from papercrane.backend.model import Resources, TaskConfig  # noqa: F401
    from papercrane.backend.units import parse_cpu, parse_duration, parse_gpu, parse_memory  # noqa: F401
    from papercrane.backend.workflow import map_spec  # noqa: F401

    from .capture import capture, split_names  # noqa: F401
    from .session import RunOptions  # noqa: F401

    return SimpleNamespace(**locals())


def _from_a_failed_task(missing: Any, session: Any) -> Exception:
    """A name the notebook lacks because the task cell that assigns it did not succeed:
    say so, rather than that nothing defines it."""
    for rec in reversed(list(session.records.values())):
        if missing.name in rec.spec.outputs and rec.last_status in ("failed", "aborted"):
            return type(missing)(
                f"{missing.reader} reads {missing.name!r}, which task {rec.spec.name!r} "
                f"assigns, but its last run {rec.last_status} (execution "
                f"{rec.last_execution}); fix that cell and run it first",
                missing.name,
                missing.reader,
            )
    return missing


def _keeping_leading_blank_lines(cell: str, transformed: str) -> str:
    """``transformed`` with the blank lines IPython's cleanup took off the cell's start
    put back (as empty lines: the code's structure, and so its version, is the same),
    so that a line of the code is the cell's line: a traceback, a syntax error or any
    message naming a line points at the one the notebook shows."""
    blank = len(cell) - len(cell.lstrip("\r\n\t\f\v "))
    lines = cell[:blank].count("\n")  # whole blank lines; the first code line's indent stays
    stripped = lines - (len(transformed) - len(transformed.lstrip("\n")))
    return "\n" * stripped + transformed if stripped > 0 else transformed


def _check_map_over(
    over: str, task: str | None, ns: dict[str, Any], pending: frozenset[str]
) -> None:
    """``--map OVER`` must name a variable the notebook has, or one a deferred task
    assigns: refused here, naming the cell's task and a near name if there is one (a
    typo), before anything runs. (Not a variable name at all: map_spec says what to do.)"""
    if not over.isidentifier() or over in ns or over in pending:
        return
    import difflib

    from papercrane.backend.errors import InputError

    names = [n for n in [*ns, *pending] if not n.startswith("_")]
    near = difflib.get_close_matches(over, names, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    who = f"task {task!r}: " if task else ""
    raise InputError(
        f"{who}--map {over}, but the notebook has no variable {over!r}{hint}; --map names "
        "the variable that holds the elements: assign it in a cell above this one"
    )


def _reads(source: str) -> set[str]:
    from .analysis import analyze

    found = analyze(source)
    return set(found.reads) | set(found.deferred_reads)
