"""Running executions: a task alone, a workflow, the recovery of a failed execution,
and the resumption of one whose scheduler died. Part of ``engine.LocalEngine``: each
builds the ``WorkflowRun`` that ``scheduler.py`` runs, from a request or from what the
store holds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .api import NullListener, RunListener, RunRequest, RunResult
from .config import check_scope
from .errors import ConfigError, Conflict, NotFound, UserError
from .model import ArtifactRef, ExecutionState, Status, TaskConfig, TaskSpec
from .scheduler import RunOptions, WorkflowResult, WorkflowRun
from .workflow import Binding, MapSpec, NodeSpec, WorkflowSpec, changed_nodes


@dataclass
class WorkflowRequest:
    spec: WorkflowSpec
    #: Parameter values as stored artifacts, by parameter name.
    params: dict[str, ArtifactRef]
    #: The same values live, when the caller has them (inline nodes then skip a load).
    param_values: dict[str, Any] | None = field(default=None, repr=False)
    project: str = "default"
    domain: str = "development"
    max_parallel: int = 4
    failure_policy: str = "fail-fast"
    want_values: bool = True
    #: Where parameter values came from, when the caller knows (see ``RunRequest``).
    sources: dict[str, dict[str, str]] = field(default_factory=dict)


#: Where a project or domain the engine refuses came from, for callers of its API (the
#: kernel, the CLI and the server check theirs first, naming their own options).
API = "the engine request's project= and domain="


def check_recoverable(source: ExecutionState) -> None:
    """Refuse to recover an execution that has nothing to recover (it succeeded) or
    has not ended: the same words from every front door, before anything is shown."""
    if source.status.ok:
        how = "was a cache hit" if source.status is Status.CACHED else "succeeded"
        raise Conflict(f"execution {source.id} {how}; there is nothing to recover")
    if not source.status.terminal:
        raise Conflict(
            f"execution {source.id} is still {source.status.value}; wait for it to "
            "finish (or abort it) before recovering it"
        )


class Runs:
    """``LocalEngine``'s part that builds and runs executions."""

    def _check_executors(self, nodes: Any) -> None:
        for n in nodes:
            executor = self.executor(n.config.executor)
            if not executor.in_process and not self.storage.shareable:
                raise ConfigError(
                    f"storage {self.storage.url_root} lives inside this process, so the "
                    f"{executor.name!r} executor can't reach it; use --executor inline "
                    "or a file or object-store URL"
                )

    def task_run(self, request: RunRequest, listener: RunListener | None = None) -> WorkflowRun:
        """A single task's execution, ready to ``begin()`` and ``proceed()``."""
        spec, config = request.spec, request.config
        check_scope(request.project, request.domain, where=API)
        if self.executor(config.executor).in_process and request.values is None:
            raise ConfigError(
                "the inline executor runs in the caller's process and needs its values"
            )
        node = NodeSpec(
            id=spec.name,
            task=spec,
            config=config,
            bindings={name: Binding("", name) for name in request.inputs},
            declared_outputs=request.declared_outputs,
            map=request.map,
        )
        self._check_executors([node])
        options = RunOptions(
            project=request.project,
            domain=request.domain,
            max_parallel=request.max_parallel if request.map else 1,
            want_values=request.want_values,
        )
        return WorkflowRun(
            self,
            WorkflowSpec(spec.name, (node,)),
            request.inputs,
            request.values,
            options,
            listener or NullListener(),
            kind="task",
            sources=request.sources,
        )

    def run_task(self, request: RunRequest, listener: RunListener | None = None) -> RunResult:
        result = self.task_run(request, listener).run()
        node_run = result.nodes[request.spec.name]
        return RunResult(
            result.execution,
            node_run.outputs,
            node_run.references,
            node_run.values,
            node_run.display,
        )

    def workflow_run(
        self, request: WorkflowRequest, listener: RunListener | None = None
    ) -> WorkflowRun:
        spec = request.spec
        missing = [p for p in spec.parameters() if p not in request.params]
        if missing:
            raise UserError(
                f"workflow {spec.name!r} has no value for parameter(s) {', '.join(missing)}; "
                "define them in the notebook or pass them with -p NAME=VALUE"
            )
        check_scope(request.project, request.domain, where=API)
        if request.max_parallel < 1:
            raise UserError(f"--max-parallel {request.max_parallel} must be at least 1")
        if request.failure_policy not in ("fail-fast", "continue"):
            raise UserError(
                f"--failure-policy {request.failure_policy!r}: use fail-fast or continue"
            )
        self._check_executors(spec.nodes)
        options = RunOptions(
            project=request.project,
            domain=request.domain,
            max_parallel=request.max_parallel,
            failure_policy=request.failure_policy,
            want_values=request.want_values,
        )
        return WorkflowRun(
            self,
            spec,
            {p: request.params[p] for p in spec.parameters()},
            request.param_values,
            options,
            listener or NullListener(),
            sources=request.sources,
        )

    def run_workflow(
        self, request: WorkflowRequest, listener: RunListener | None = None
    ) -> WorkflowResult:
        return self.workflow_run(request, listener).run()

    def _rebuild(
        self, source: ExecutionState, max_parallel: int, want_values: bool
    ) -> tuple[WorkflowSpec, dict[str, ArtifactRef], RunOptions]:
        """What an execution ran (spec, parameters, options), from the store alone."""
        params = {name: self.artifact(aid) for name, aid in source.inputs.items()}
        if source.kind == "task":
            task = self.store.task(source.task_version)
            if task is None:
                raise NotFound(f"execution {source.id}'s task is not registered")
            spec = TaskSpec.from_dict(task["spec"])
            node = NodeSpec(
                id=spec.name,
                task=spec,
                config=TaskConfig.from_dict(source.config),
                bindings={name: Binding("", name) for name in params},
                map=MapSpec.from_dict(source.config.get("map")),
            )
            workflow = WorkflowSpec(spec.name, (node,))
        else:
            workflow = self.workflow(source.workflow_version)
            max_parallel = source.config.get("max_parallel", max_parallel)
        options = RunOptions(
            project=source.project,
            domain=source.domain,
            max_parallel=max_parallel,
            failure_policy=source.config.get("failure_policy", "fail-fast"),
            want_values=want_values,
        )
        self._check_executors(workflow.nodes)
        return workflow, params, options

    def recover_run(
        self,
        execution_id: str,
        listener: RunListener | None = None,
        *,
        max_parallel: int = 4,
        want_values: bool = True,
        workflow: WorkflowSpec | None = None,
    ) -> WorkflowRun:
        """``recover``'s run, ready to ``begin()`` or ``run()``: refused here, before
        anything runs, if the execution cannot be recovered."""
        source = self.execution(execution_id)
        check_recoverable(source)
        stored, params, options = self._rebuild(source, max_parallel, want_values)
        stale: frozenset[str] = frozenset()
        if workflow is not None:
            if source.kind != "workflow":
                raise UserError(
                    f"execution {execution_id} ran task {source.name!r} alone, not a "
                    "workflow; recover it as it ran, or run the cell again"
                )
            new = sorted(set(workflow.parameters()) - set(params))
            if new:
                raise UserError(
                    f"the workflow now has parameter(s) {', '.join(new)} that execution "
                    f"{execution_id} did not have, so it cannot be recovered onto it; run it "
                    "with %workflow run (-p NAME=VALUE)"
                )
            self._check_executors(workflow.nodes)
            stale = changed_nodes(stored, workflow)
            stored, params = workflow, {p: params[p] for p in workflow.parameters()}
        return WorkflowRun(
            self,
            stored,
            params,
            None,
            options,
            listener or NullListener(),
            kind=source.kind,
            recover_from=source,
            stale=stale,
        )

    def recover(
        self,
        execution_id: str,
        listener: RunListener | None = None,
        *,
        max_parallel: int = 4,
        want_values: bool = True,
        workflow: WorkflowSpec | None = None,
    ) -> WorkflowResult:
        """Re-run a failed (or aborted) execution: every node that succeeded keeps its
        outputs; only what failed or never ran runs again, as a new execution.

        ``workflow``: the same workflow as it is now, after the user fixed a cell (a
        notebook's "fix the cell, then recover"). Its changed nodes and everything
        downstream of them run again too (``workflow.changed_nodes``), with the
        execution's parameters; without it the execution's own version runs again."""
        run = self.recover_run(
            execution_id,
            listener,
            max_parallel=max_parallel,
            want_values=want_values,
            workflow=workflow,
        )
        return run.run()

    def resume_run(self, execution_id: str, listener: RunListener | None = None) -> WorkflowRun:
        """Continue an execution that was running when its scheduler died (same id)."""
        state = self.execution(execution_id)
        workflow, params, options = self._rebuild(state, 4, want_values=False)
        return WorkflowRun(
            self,
            workflow,
            params,
            None,
            options,
            listener or NullListener(),
            kind=state.kind,
            resume=state,
        )
