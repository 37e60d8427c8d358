"""One kernel's papercrane session: turns a captured cell into a run through the engine
API, binds the results back into the notebook and shows the widget.

The engine is created on the first task, not when the extension loads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from papercrane.backend.api import RunRequest
from papercrane.backend.artifacts import unserializable_error
from papercrane.backend.errors import ExecutionAborted, TaskFailed
from papercrane.backend.model import ArtifactRef, TaskConfig, TaskSpec

from .capture import Captured
from .widgets import RunView, RunWidget, parts_usable, shared_parts


class TaskError(Exception):
    """Shown in the cell as the user's own traceback, not papercrane's frames."""

    def __init__(self, failure: TaskFailed, name: str) -> None:
        super().__init__(str(failure))
        self.failure = failure
        self.name = name

    def _render_traceback_(self) -> list[str]:
        f = self.failure
        lines = [f"Task {self.name!r} failed (execution {f.execution_id})"]
        body = f.traceback_text.rstrip("\n")
        if body:
            lines += body.splitlines()
        else:
            lines.append(f"{f.error_type}: {f.error_message}" if f.error_type else str(f))
        return lines


class TaskInterrupted(KeyboardInterrupt):
    def _render_traceback_(self) -> list[str]:
        return [f"KeyboardInterrupt: {self.args[0]}"]


class WorkflowError(Exception):
    """A workflow execution failed: shows each failed node with its user traceback."""

    def __init__(self, failure: Any) -> None:
        super().__init__(str(failure))
        self.failure = failure

    def _render_traceback_(self) -> list[str]:
        f = self.failure
        lines = [f"Workflow execution {f.execution_id} failed"]
        for node, error in f.failures:
            lines.append(f"--- node {node!r}")
            body = (error.get("traceback") or "").rstrip("\n")
            lines += body.splitlines() if body else [f"{error.get('type')}: {error.get('message')}"]
        if f.skipped:
            lines.append(f"skipped (never ran): {', '.join(f.skipped)}")
        lines.append(
            f"fix the cell and run it, then: %workflow recover {f.execution_id} (what "
            "succeeded is kept; the fixed cell and those after it run as they are now)"
        )
        return lines


@dataclass
class RunOptions:
    name: str | None
    config: TaskConfig
    project: str
    domain: str
    map: Any = None
    max_parallel: int = 4


@dataclass
class CellRecord:
    """The last capture of one task cell, kept to assemble the notebook's workflow."""

    key: str  # the cell id, or the task name when the front end sends no cell id
    cell_id: str
    order: int
    spec: TaskSpec
    options: RunOptions
    declared_outputs: tuple[str, ...]
    inputs: dict[str, ArtifactRef]
    values: dict[str, Any] = field(repr=False, default_factory=dict)
    deleted: frozenset[str] = frozenset()
    import_lines: tuple[str, ...] = ()
    import_names: frozenset[str] = frozenset()
    last_execution: str = ""
    last_status: str = "none"
    last_cache: str = ""
    last_detail: str = ""
    #: When the cell ran (``time.time()``): a saved notebook file newer than this and
    #: without the cell's id means the cell was deleted (``NotebookWorkflow.ordered``).
    recorded_at: float = field(default_factory=time.time)


class Session:
    def __init__(self, shell: Any, settings: Any) -> None:
        self.shell = shell
        self.settings = settings
        #: The embedded engine; with a server, one client per (project, domain) a task
        #: asked for. ``_remote``: whether there is a server (None until first asked).
        self._engine: Any = None
        self._engines: dict[tuple[str, str], Any] = {}
        self._remote: bool | None = None
        self._probe: Any = None
        self._parts: dict[str, Any] | None = None
        #: Artifacts this session stored or loaded, by store (``_scope``) and
        #: fingerprint: re-using a value as an input then costs a fingerprint, not a
        #: store lookup. Per store: a server's projects do not share their artifacts.
        self._known: dict[tuple[str, str], dict[str, ArtifactRef]] = {}
        #: Task cells seen, by cell id (or name), in the order they first ran.
        self.records: dict[str, CellRecord] = {}
        #: Variables bound from task outputs: name -> (id of the object, artifact id).
        self.bound: dict[str, tuple[int, str]] = {}
        #: Which execution and node produced the value each variable was bound from: a
        #: later task reading it records that as its input's source, and %lineage starts
        #: there. Per name, not per artifact: equal values are one artifact, which
        #: several tasks may have produced.
        self.origins: dict[str, dict[str, str]] = {}
        #: The project and domain each of those variables' values was made in: its
        #: lineage is asked of that project's store.
        self.scopes: dict[str, tuple[str, str]] = {}
        from .notebook import NotebookWorkflow

        self.workflow = NotebookWorkflow(self)

    @property
    def engine(self) -> Any:
        """The engine for the current settings' project and domain (``engine_for``)."""
        return self.engine_for(self.settings.project, self.settings.domain)

    def engine_for(self, project: str, domain: str) -> Any:
        """The engine a task of ``project``/``domain`` runs on: the one embedded engine
        (which records the project with each execution), or, when ``PAPERCRANE_URL`` is
        set, a client for that project and domain of the server, made at first use. A
        server scopes everything by project: a client made for the first task's project
        would run every later task (and store its inputs) there."""
        if self._remote is None:
            import os

            self._remote = bool(os.environ.get("PAPERCRANE_URL"))
        if not self._remote:
            if self._engine is None:
                from papercrane.backend.engine import LocalEngine

                self._engine = LocalEngine()
            return self._engine
        engine = self._engines.get((project, domain))
        if engine is None:
            from papercrane.backend.client import RemoteEngine

            engine = self._engines[(project, domain)] = RemoteEngine.from_env(project, domain)
        return engine

    def _scope(self, project: str, domain: str) -> tuple[str, str]:
        """The key of the store a project's values go to: one for the embedded engine."""
        return (project, domain) if self._remote else ("", "")

    def close(self) -> None:
        for engine in [self._engine, *self._engines.values()]:
            if engine is not None:
                engine.close()
        self._engine = None
        self._engines.clear()
        self._remote = None

    # -- building a task ------------------------------------------------------------------
    def _fingerprints(self, cap: Captured, fingerprinter: Any, engine: Any) -> dict[str, str]:
        # A big array bound from a task's output and unchanged since has a known one.
        known = getattr(engine.artifacts, "known_fingerprint", None)
        fps = {}
        for name, value in cap.values.items():
            try:
                fps[name] = (known and known(value)) or fingerprinter.value(value)
            except Exception as exc:
                raise unserializable_error(
                    value, f"task {cap.name!r}: input {name!r}", exc
                ) from None
        return fps

    def build(self, cap: Captured, engine: Any = None) -> tuple[TaskSpec, dict[str, str]]:
        """The cell's task and its inputs' fingerprints (``engine``: the one it runs on,
        by default the current settings')."""
        from papercrane.backend.environment import EnvironmentProbe
        from papercrane.backend.serializers import python_type_name

        engine = engine or self.engine
        if self._probe is None:
            home = getattr(getattr(engine, "config", None), "home", None)
            self._probe = EnvironmentProbe(home / "cache" / "module-dists.json" if home else None)
        fingerprinter = engine.artifacts.fingerprinter()
        fps = self._fingerprints(cap, fingerprinter, engine)
        env = self._probe.environment(cap.modules | fingerprinter.modules)
        sources = self._sources(cap.name, fingerprinter.code_files)
        spec = TaskSpec(
            name=cap.name,
            code=cap.code,
            inputs=cap.inputs,
            outputs=cap.outputs,
            input_types={n: python_type_name(v) for n, v in cap.values.items()},
            imports=cap.imports,
            environment=env,
            display_last=cap.display_last,
            sources=sources,
        )
        return spec, fps

    def _sources(self, name: str, files: set[str]) -> dict[str, tuple[str, str]]:
        """Cell texts and labels ("In[3]") for tracebacks shown from another process."""
        import linecache

        from papercrane.backend.runner import cell_filename

        compiler = getattr(self.shell, "compile", None)
        # During a cell, the displayhook's count is the cell's own In[] number.
        count = getattr(getattr(self.shell, "displayhook", None), "prompt_count", None)
        sources = {cell_filename(name): (f"In[{count}]" if count else "", "")}
        for filename in sorted(files):
            lines = linecache.getlines(filename)
            label = ""
            if compiler is not None and hasattr(compiler, "format_code_name"):
                try:
                    named = compiler.format_code_name(filename)
                except Exception:
                    named = None
                if named:
                    label = named[1]
            sources[filename] = (label, "".join(lines))
        return sources

    def value_ref(
        self,
        value: Any,
        what: str,
        fp: str | None = None,
        scope: tuple[str, str] | None = None,
    ) -> ArtifactRef:
        """The artifact for a notebook value, stored only if the store lacks it: the
        store of ``scope`` (project, domain; None: the current settings')."""
        project, domain = scope or (self.settings.project, self.settings.domain)
        engine = self.engine_for(project, domain)
        if fp is None:
            try:
                fp = engine.artifacts.fingerprinter().value(value)
            except Exception as exc:
                raise unserializable_error(value, what, exc) from None
        known = self._known.setdefault(self._scope(project, domain), {})
        ref = known.get(fp)
        if ref is None or not engine.artifacts.intact(ref):
            ref = engine.find_artifact(fp) or engine.put_value(value, what, fp)
        known[fp] = ref
        return ref

    def _input_refs(
        self, cap: Captured, fps: dict[str, str], options: RunOptions
    ) -> dict[str, ArtifactRef]:
        scope = (options.project, options.domain)
        return {
            name: self.value_ref(value, f"task {cap.name!r}: input {name!r}", fps[name], scope)
            for name, value in cap.values.items()
        }

    def cell_key(self, name: str) -> tuple[str, str]:
        """(record key, cell id): the front end's cell id when it sends one."""
        header = getattr(self.shell, "parent_header", None) or {}
        cell_id = (header.get("metadata") or {}).get("cellId") or ""
        return (cell_id or f"task:{name}"), cell_id

    def record(self, cap: Captured, options: RunOptions) -> CellRecord:
        """Build the cell's task, store its inputs and keep the record."""
        rec, fps = self.prepare(cap, options)
        return self.keep(rec, cap, fps)

    def prepare(self, cap: Captured, options: RunOptions) -> tuple[CellRecord, dict[str, str]]:
        """The cell's record, with its inputs' fingerprints but not their artifacts: a
        run shows its widget from here on, so that a refused upload shows there too."""
        spec, fps = self.build(cap, self.engine_for(options.project, options.domain))
        key, cell_id = self.cell_key(spec.name)
        old = self.records.get(key)
        spec = spec.reusing(old.spec if old else None)  # a re-run: no second hash of the code
        rec = CellRecord(
            key=key,
            cell_id=cell_id,
            order=old.order if old else len(self.records),
            spec=spec,
            options=options,
            declared_outputs=cap.declared_outputs,
            inputs={},
            values=dict(cap.values),
            deleted=frozenset(cap.deleted),
            import_lines=cap.import_lines,
            import_names=cap.import_names,
        )
        return rec, fps

    def keep(self, rec: CellRecord, cap: Captured, fps: dict[str, str]) -> CellRecord:
        """Store the inputs the store lacks (uploads, with a server), then keep the
        record: a cell whose inputs could not be stored leaves its last record as it was."""
        rec.inputs = self._input_refs(cap, fps, rec.options)
        self.records[rec.key] = rec
        return rec

    # -- running one task cell ------------------------------------------------------------
    def task_cell(self, cap: Captured, options: RunOptions) -> Any:
        if self.workflow.deferring:
            rec = self.record(cap, options)
            self.workflow.defer(rec)
            return None
        rec, fps = self.prepare(cap, options)
        widget = self._run_widget(rec)
        try:
            self.keep(rec, cap, fps)
        except BaseException as exc:
            widget.refuse(exc)
            raise
        return self.run(rec, widget=widget)

    def _run_widget(self, rec: CellRecord, live: bool = True) -> RunWidget:
        """The run's widget, shown now unless the run may be a cache hit (then at its
        first event, or at its end: see ``RunWidget``)."""
        config = rec.options.config
        view = RunView(
            name=rec.spec.name,
            version=rec.spec.version(),
            executor=config.executor or "default",
            max_attempts=config.retries + 1,
        )
        widget = RunWidget(view, live=live, parts=self._widget_parts() if live else None)
        if not config.cache:
            widget.show()  # its code runs: the widget goes above what the code prints
        return widget

    def run(
        self, rec: CellRecord, *, live_widget: bool = True, widget: RunWidget | None = None
    ) -> Any:
        """Run a recorded cell's task, its widget (``widget``, or a new one) following."""
        spec, config = rec.spec, rec.options.config
        if widget is None:
            widget = self._run_widget(rec, live_widget)
        view = widget.view
        request = RunRequest(
            spec=spec,
            config=config,
            inputs=rec.inputs,
            values=rec.values,
            project=rec.options.project,
            domain=rec.options.domain,
            declared_outputs=rec.declared_outputs,
            map=rec.options.map,
            max_parallel=rec.options.max_parallel,
            sources=self.sources(rec.inputs, rec.values),
        )
        try:
            engine = self.engine_for(rec.options.project, rec.options.domain)
            result = engine.run_task(request, listener=widget)
        except TaskFailed as failure:
            widget.finish()
            self._remember(rec, widget.view.state)
            publish_display(failure.display)  # above the traceback, as a cell that raised shows it
            raise TaskError(failure, spec.name) from None
        except ExecutionAborted as aborted:
            state = widget.view.state
            if state is None or not state.status.terminal:
                # Before the execution existed, or its abort not heard of yet (a server
                # still stopping it): it ends here, aborted, not "running" for ever.
                widget.refuse(aborted)
            else:
                widget.finish()
            self._remember(rec, widget.view.state)
            raise TaskInterrupted(str(aborted)) from None
        except BaseException as exc:
            if widget.view.state is None:
                widget.refuse(exc)  # refused before the execution existed
            else:
                widget.finish()  # whatever the store last said, with the time it took
            raise
        view.outputs = result.outputs
        view.references = result.references
        widget.finish()
        self._remember(rec, result.execution)
        origin = {"execution": result.execution.id, "node": spec.name}
        scope = (rec.options.project, rec.options.domain)
        self.bind(result.outputs, result.values, result.references, rec.deleted, origin, scope)
        publish_display(result.display)
        return result

    def _widget_parts(self) -> dict[str, Any]:
        """The Layout and style this session's run widgets share (``shared_parts``)."""
        if not parts_usable(self._parts):
            self._parts = shared_parts()
        return self._parts

    def _remember(self, rec: CellRecord, state: Any) -> None:
        if state is None:
            return
        rec.last_execution = state.id
        node = state.nodes.get(rec.spec.name)
        if node is not None:
            rec.last_status, rec.last_cache = node.status.value, node.cache

    def bind(
        self,
        outputs: dict[str, ArtifactRef],
        values: dict[str, Any],
        references: dict[str, str],
        deleted: frozenset[str] = frozenset(),
        origin: dict[str, str] | None = None,
        scope: tuple[str, str] | None = None,
    ) -> None:
        """Put task outputs into the notebook, and remember where each came from (and
        that ``scope``'s store, project and domain, has them: None, the settings')."""
        from papercrane.backend.environment import resolve_reference

        ns = self.shell.user_ns
        scope = scope or (self.settings.project, self.settings.domain)
        known = self._known.setdefault(self._scope(*scope), {})
        for name, ref in outputs.items():
            known[ref.id] = ref
            if name in values:
                ns[name] = values[name]
                self.bound[name] = (id(values[name]), ref.id)
                self.scopes[name] = scope
                if origin:
                    self.origins[name] = origin
                else:
                    self.origins.pop(name, None)
        for name, ref in references.items():
            ns[name] = resolve_reference(ref)
        for name in deleted:
            if name not in outputs and name not in references:
                ns.pop(name, None)

    def sources(
        self, inputs: dict[str, ArtifactRef], values: dict[str, Any]
    ) -> dict[str, dict[str, str]]:
        """Inputs that are notebook variables still holding a task's output object: their
        source is that execution's node. (Name and object must both match: equal values
        typed in by hand share the artifact but not the history.)"""
        found = {}
        for name, ref in inputs.items():
            bound = self.bound.get(name)
            if (
                bound is not None
                and bound[1] == ref.id
                and name in values
                and id(values[name]) == bound[0]
                and name in self.origins
            ):
                found[name] = self.origins[name]
        return found

    # -- lineage --------------------------------------------------------------------------
    def artifact_of(self, name: str) -> tuple[str, dict[str, str] | None]:
        """The artifact of a notebook variable's value, and the execution and node it
        was bound from. Only a value a task produced has lineage: one typed in by hand
        has none, even if it equals some task's output (``12`` is one artifact)."""
        from papercrane.backend.errors import UserError

        ns = self.shell.user_ns
        if name not in ns:
            raise UserError(f"there is no variable {name!r} in the notebook")
        value = ns[name]
        known = self.bound.get(name)
        if known is None:
            raise UserError(
                f"{name!r} was not produced by a task: it has no lineage (a plain cell "
                "or a parameter gave it its value)"
            )
        origin = self.origins.get(name)
        by = f"task {origin['node'].partition('[')[0]!r}" if origin else "a task"
        if known[0] != id(value):
            raise UserError(
                f"{name!r} was changed since {by} produced it (a cell assigned it again): "
                "the value it holds now has no lineage"
            )
        # Always hash what the variable holds now: the bound object itself may have been
        # changed in place since the task produced it (``a[0] += 1`` in a plain cell).
        try:
            fp = self.engine.artifacts.fingerprinter().value(value)
        except Exception:
            fp = ""
        if not fp or fp != known[1]:
            raise UserError(
                f"{name!r} was changed since {by} produced it (in place, by a cell): the "
                "value it holds now has no lineage"
            )
        return fp, origin


def publish_display(display: dict[str, Any] | None) -> None:
    """Show in the cell what a task outside the kernel displayed, and its last value."""
    if not display:
        return
    from IPython.display import publish_display_data

    from papercrane.backend.displays import shown_bundles

    for bundle in shown_bundles(display):
        publish_display_data(bundle["data"], bundle["metadata"])
