"""One kernel's papercrane session: turns a captured cell into a run through the engine
API, binds the results back into the notebook and shows the widget.

The engine is created on the first task, not when the extension loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from papercrane.backend.artifacts import unserializable_error
from papercrane.backend.errors import ExecutionAborted, InputError, TaskFailed
from papercrane.backend.model import ArtifactRef, TaskConfig, TaskSpec

from .capture import Captured


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


@dataclass
class RunOptions:
    name: str | None
    config: TaskConfig
    inputs: list[str] | None
    outputs: list[str] | None
    project: str
    domain: str


class Session:
    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self._engine: Any = None
        self._probe: Any = None
        #: Artifacts this session stored or loaded, by fingerprint: re-using a value
        #: as an input then costs a fingerprint, not a store lookup.
        self._known: dict[str, ArtifactRef] = {}

    @property
    def engine(self) -> Any:
        if self._engine is None:
            from papercrane.backend.engine import LocalEngine

            self._engine = LocalEngine()
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def _fingerprints(self, cap: Captured, fingerprinter: Any) -> dict[str, str]:
        fps = {}
        for name, value in cap.values.items():
            try:
                fps[name] = fingerprinter.value(value)
            except Exception as exc:
                raise unserializable_error(
                    value, f"task {cap.name!r}: input {name!r}", exc
                ) from None
        return fps

    def build(self, cap: Captured) -> tuple[TaskSpec, dict[str, str]]:
        from papercrane.backend.environment import EnvironmentProbe

        if self._probe is None:
            self._probe = EnvironmentProbe()
        fingerprinter = self.engine.artifacts.fingerprinter()
        fps = self._fingerprints(cap, fingerprinter)
        env = self._probe.environment(cap.modules | fingerprinter.modules)
        sources = self._sources(cap.name, fingerprinter.code_files)
        from papercrane.backend.serializers import python_type_name

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

    def _input_refs(self, cap: Captured, fps: dict[str, str]) -> dict[str, ArtifactRef]:
        engine = self.engine
        refs = {}
        for name, value in cap.values.items():
            fp = fps[name]
            ref = self._known.get(fp)
            if ref is None or not engine.artifacts.intact(ref):
                ref = engine.find_artifact(fp) or engine.put_value(
                    value, f"task {cap.name!r}: input {name!r}", fp
                )
            self._known[fp] = ref
            refs[name] = ref
        return refs

    def run(self, cap: Captured, options: RunOptions, *, live_widget: bool = True) -> Any:
        from papercrane.backend.api import RunRequest
        from papercrane.backend.environment import resolve_reference

        from .widgets import RunView, RunWidget

        spec, fps = self.build(cap)
        config = options.config
        try:
            inputs = self._input_refs(cap, fps)
        except InputError:
            raise
        view = RunView(
            name=spec.name,
            version=spec.version(),
            executor=config.executor,
            max_attempts=config.retries + 1,
        )
        widget = RunWidget(view, live=live_widget)
        widget.show()
        request = RunRequest(
            spec=spec,
            config=config,
            inputs=inputs,
            values=cap.values,
            project=options.project,
            domain=options.domain,
            declared_outputs=cap.declared_outputs,
        )
        try:
            result = self.engine.run_task(request, listener=widget)
        except TaskFailed as failure:
            widget.finish()
            raise TaskError(failure, spec.name) from None
        except ExecutionAborted as aborted:
            widget.finish()
            raise TaskInterrupted(str(aborted)) from None
        view.outputs = result.outputs
        view.references = result.references
        widget.finish()

        ns = self.shell.user_ns
        for ref in result.outputs.values():
            self._known[ref.id] = ref
        ns.update(result.values)
        for name, ref in result.references.items():
            ns[name] = resolve_reference(ref)
        for name in cap.deleted:
            if name not in result.outputs and name not in result.references:
                ns.pop(name, None)
        if result.display:
            from IPython.display import publish_display_data

            publish_display_data(result.display["data"], result.display.get("metadata") or {})
        return result
