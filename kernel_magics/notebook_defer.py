"""Batch mode (``%workflow defer``): task cells recorded rather than run, then run as
one workflow when a later cell needs an output, at ``%workflow flush`` or as the kernel
exits. Part of ``notebook.NotebookWorkflow``."""

from __future__ import annotations

import atexit
import contextlib
import uuid
from collections.abc import Callable
from typing import Any

from .session import CellRecord, WorkflowError

_UNBOUND = object()  # (a name with no value in the notebook)


class Deferring:
    """``NotebookWorkflow``'s batch mode."""

    def pending_outputs(self) -> frozenset[str]:
        names: set[str] = set()
        for rec in self.pending:
            names.update(n for n in rec.spec.outputs if n not in rec.import_names)
        return frozenset(names)

    def defer(self, rec: CellRecord) -> None:
        # A parameter that changed value since an earlier deferred cell captured it:
        # run what is pending first, so each cell sees the value it saw in order.
        for other in self.pending:
            for name, ref in rec.inputs.items():
                old = other.inputs.get(name)
                if old is not None and old.id != ref.id and name not in self.pending_outputs():
                    self.flush()
                    break
        earlier = next((p for p in self.pending if p.key == rec.key), None)
        if earlier is not None and earlier.spec.version() != rec.spec.version():
            # Another cell with this task name (papermill sends no cell ids, so both have
            # the name as their key), or this cell edited and run again: what ran above
            # runs first, as top to bottom, rather than being silently replaced.
            self.flush()
        self.pending = [p for p in self.pending if p.key != rec.key] + [rec]
        ns = self.session.shell.user_ns
        for name in rec.spec.outputs:
            if name not in rec.import_names:
                self._held.setdefault(name, ns.get(name, _UNBOUND))
        # Modules the cell imports at top level are bound now, as the flush would: later
        # cells then capture them as imports (as interactively), not as pending data.
        for line in rec.import_lines:
            # (if the import fails here, the task itself reports it when it runs)
            with contextlib.suppress(ImportError):
                exec(line, self.session.shell.user_ns)
        if not self._atexit:
            _at_exit(self._flush_at_exit)
            self._atexit = True
            shell = self.session.shell
            if not shell.custom_exceptions:  # (one handler per shell: never replace another's)
                shell.set_custom_exc((NameError,), self._name_error)
        from IPython.display import display

        from .widgets import deferred_note

        display_id = None
        if rec.spec.display_last:
            display_id = f"papercrane-deferred-{uuid.uuid4().hex}"
            self._value_displays[rec.spec.name] = display_id
        display(deferred_note(rec.spec.name, len(self.pending)), display_id=display_id)

    def _name_error(
        self, shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: Any = None
    ) -> list[str]:
        """A NameError for an output of a deferred task says so. A cell that names it
        runs the tasks first, but not one that reads it out of sight (in a function
        defined before the task cell): plain "not defined" would be a puzzle there."""
        name = getattr(value, "name", None)
        producers = [rec.spec.name for rec in self.pending if name in rec.spec.outputs]
        if producers and value.args and "deferred task" not in str(value.args[0]):
            value.args = (
                f"{value.args[0]}: it is an output of the deferred task {producers[-1]!r}, "
                "which has not run yet (this cell reads it where papercrane can't see, "
                "such as in a function defined earlier); run `%workflow flush` first",
            )
        return shell.InteractiveTB.structured_traceback(  # type: ignore[no-any-return]
            etype, value, tb, tb_offset=tb_offset
        )

    def needs_flush(self, source: str) -> bool:
        """Must the deferred tasks run before this (plain) cell, for the notebook to mean
        what it means top to bottom? Yes when the cell touches a name a deferred task
        outputs: reads it (it needs the value), or assigns, deletes or changes it (run
        later, the task would bind its value over the cell's: ``y = 100`` then
        ``print(y)`` would show the task's ``y``, and a later task would read it too).
        Also when the cell reads or writes names in ways analysis can't see
        (``eval``, ``exec``, ``globals()``, ``import *``): then any of them may be one."""
        if not self.pending:
            return False
        from .analysis import analyze

        try:
            found = analyze(source)
        except SyntaxError:
            return False
        if found.dynamic or found.star_imports:
            return True
        touched = (
            set(found.reads)
            | set(found.deferred_reads)
            | found.ever_bound
            | found.deleted
            | set(found.mutated)
        )
        return not touched.isdisjoint(self.pending_outputs())

    def rebound(self) -> frozenset[str]:
        """Deferred outputs that a plain cell bound or deleted since, where analysis
        could not see it (the cell would have run the tasks first otherwise)."""
        ns = self.session.shell.user_ns
        return frozenset(n for n, held in self._held.items() if ns.get(n, _UNBOUND) is not held)

    def flush(self, live: bool = True) -> Any:
        """Run every deferred task cell now, as one workflow, and bind the outputs. A
        name a later plain cell bound again keeps that cell's value, as top to bottom."""
        if not self.pending:
            return None
        records, later, shown = self._take_pending()
        spec = self.spec(records)
        params: dict[str, Any] = {}
        values: dict[str, Any] = {}
        scope = self._options(records)
        for rec in records:
            elsewhere = (rec.options.project, rec.options.domain) != scope
            for name, ref in rec.inputs.items():
                if elsewhere and name in rec.values and name not in params:
                    # Stored in the cell's own project; the workflow runs in the last's.
                    what = f"task {rec.spec.name!r}: input {name!r}"
                    ref = self.session.value_ref(rec.values[name], what, ref.id, scope)
                params.setdefault(name, ref)
                if name in rec.values:
                    values.setdefault(name, rec.values[name])
        values = self._unchanged(params, values)
        return self._settled(
            lambda: self._execute(spec, params, values, records, live=live), later, shown, live
        )

    def _take_pending(self) -> tuple[list[CellRecord], dict[str, Any], dict[str, str]]:
        """The deferred cells, taken out of batch mode's hands to run now: their records,
        the names a later plain cell bound again (with that cell's value), and where
        each task's value is to be shown."""
        ns = self.session.shell.user_ns
        later = {n: ns.get(n, _UNBOUND) for n in self.rebound()}
        records, self.pending, self._held = self.pending, [], {}
        shown = {rec.spec.name: self._value_displays.pop(rec.spec.name, "") for rec in records}
        return records, later, shown

    def _settled(
        self, execute: Any, later: dict[str, Any], shown: dict[str, str], live: bool = True
    ) -> Any:
        """``execute()`` a run that includes deferred cells, then, as top to bottom: a
        name a later plain cell bound again keeps that cell's value, and each deferred
        task's value is shown in its own cell (those that finished, if the run failed)."""
        ns = self.session.shell.user_ns
        try:
            result = execute()
        except WorkflowError as error:  # the tasks that finished still show their values
            partial = error.failure.result
            if partial is not None and live:
                self._show_values(partial, shown)
            raise
        finally:  # (whatever the run bound, a failed one included)
            for name, value in later.items():
                if value is _UNBOUND:
                    ns.pop(name, None)
                else:
                    ns[name] = value
        if result is not None and live:
            self._show_values(result, shown)
        return result

    @staticmethod
    def _show_values(result: Any, display_ids: dict[str, str]) -> None:
        """Each deferred task's last expression, shown where it would have been, had the
        cell run at once: in the task's own cell, in place of its "deferred" note (an
        update of that display, which Jupyter front ends and papermill apply to the
        earlier cell's output)."""
        from IPython.display import publish_display_data

        for name, run in result.nodes.items():
            display_id = display_ids.get(name)
            if not run.display:
                continue
            # What the task's display() calls kept (a task outside the kernel) shows
            # where the run happens, as an inline task's display() does.
            for bundle in run.display.get("displayed") or []:
                publish_display_data(bundle["data"], bundle["metadata"])
            if run.display.get("data") and display_id:
                publish_display_data(
                    run.display["data"],
                    run.display.get("metadata") or {},
                    transient={"display_id": display_id},
                    update=True,
                )

    def _unchanged(self, params: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
        """The deferred inputs whose objects still hold what their cells captured. A
        plain cell may have changed one in place since (``cfg["a"] = 2``): the task must
        see the value its cell saw, the one its input artifact (and cache key) was made
        of, so a changed object is left out and the run loads the stored value instead.
        (Batch mode only: a task that runs at once gets the objects as they are.)"""
        artifacts = self.session.engine.artifacts
        fingerprinter = artifacts.fingerprinter()
        known = getattr(artifacts, "known_fingerprint", None)  # (a server's has none)
        kept = {}
        for name, value in values.items():
            try:
                fp = (known and known(value)) or fingerprinter.value(value)
            except Exception:  # (it was fingerprinted when deferred: the stored one is safe)
                continue
            if fp == params[name].id:
                kept[name] = value
        return kept

    def _flush_at_exit(self) -> None:
        """The end of a notebook whose last deferred tasks no cell read: they run as the
        interpreter begins to exit (``_at_exit``). A kernel manager (papermill's,
        nbconvert's, JupyterLab's) gives a shutting-down kernel a few seconds
        (``shutdown_wait_time``: SIGTERM after half of its 5 s), so a SIGTERM meanwhile
        stops the run like an interrupt: recorded as aborted, its subprocesses stopped,
        rather than killed mid-run and left "running" in the store. What happened goes to
        the kernel's stderr (the terminal that ran papermill): by then the notebook has
        no cell to show it."""
        if not self.pending:
            return
        import platform
        import signal
        import sys

        names = ", ".join(rec.spec.name for rec in self.pending)
        if not _threads_start():
            # (before anything is recorded: no execution is left half-written)
            print(
                f"papercrane: the deferred tasks ({names}) did not run: this Python "
                f"({platform.python_version()}) cannot start a thread while the kernel exits, "
                "and running them needs one. End the notebook with a `%workflow flush` cell, "
                "or run it with `papercrane run` (which adds that cell).",
                file=sys.__stderr__,
            )
            return

        print(
            f"papercrane: the deferred tasks ({names}) run now, as the kernel exits: no cell "
            "read their outputs. A kernel manager (papermill's, nbconvert's) stops a kernel "
            "2.5 s after asking it to exit, and a run still going then is recorded as "
            "aborted. To run them as a cell, end the notebook with a `%workflow flush` "
            "cell, or run it with `papercrane run`.",
            file=sys.__stderr__,
            flush=True,
        )

        def stopped(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt("the kernel was stopped (SIGTERM)")

        previous: Any = None
        with contextlib.suppress(ValueError):  # (only the main thread may; atexit runs there)
            previous = signal.signal(signal.SIGTERM, stopped)
        try:
            result = self.flush(live=False)
            if result is not None:
                state = result.execution
                print(
                    f"papercrane: the deferred tasks ({names}) ran at exit: execution "
                    f"{state.id} {state.status.value}",
                    file=sys.__stderr__,
                )
        except KeyboardInterrupt as exc:  # (TaskInterrupted: the run was recorded aborted)
            print(
                f"papercrane: the kernel was stopped while its deferred tasks ({names}) ran at "
                f"exit: {exc}. To run them as a cell, not during the kernel's shutdown, end "
                "the notebook with a `%workflow flush` cell, or run it with `papercrane run` "
                "(which adds that cell, and runs them after a failed cell too).",
                file=sys.__stderr__,
            )
        except Exception as exc:  # the kernel is going away: say why, don't raise
            print(f"papercrane: deferred tasks failed at exit: {exc}", file=sys.__stderr__)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


def _at_exit(hook: Callable[[], None]) -> None:
    """Call ``hook`` as the interpreter begins to exit, while thread pools still take
    work. An ``atexit`` handler is too late for a workflow of two nodes or more:
    ``concurrent.futures`` registers its own exit hook with ``threading._register_atexit``,
    whose hooks run before atexit handlers, and after it a ThreadPoolExecutor refuses
    work ("cannot schedule new futures after interpreter shutdown"). Those hooks run in
    reverse order, so one registered once ``concurrent.futures.thread`` is imported runs
    before its own. (A private function of ``threading``, there since Python 3.9:
    without it, or once the interpreter exits, ``atexit`` is the fallback.)"""
    import concurrent.futures.thread  # noqa: F401  (registers its hook: ours then runs first)
    import threading

    register = getattr(threading, "_register_atexit", None)
    try:
        if register is not None:
            register(hook)
            return
    except RuntimeError:  # the interpreter is exiting already
        pass
    atexit.register(hook)


def _threads_start() -> bool:
    """Whether this process can still start a thread. Python 3.12 refuses once the
    interpreter has begun to exit, its exit hooks included (CPython issue 113964);
    3.10, 3.11 and 3.13 allow it."""
    import threading

    try:
        probe = threading.Thread(target=lambda: None, name="papercrane-probe", daemon=True)
        probe.start()
    except RuntimeError:
        return False
    probe.join()
    return True
