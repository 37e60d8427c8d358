"""Starting a workflow run's nodes: their inputs, a cache hit or a queued unit, an
earlier execution's outputs reused (resume, recover), and the queue of units waiting
to run. Part of ``scheduler.WorkflowRun``."""

from __future__ import annotations

from typing import Any

from .errors import UserError
from .model import ArtifactRef, EventKind, Status
from .runner import AttemptResult, system_error
from .scheduler_units import FAIL_FAST, ElementPlan, NodeRun, Unit

K = EventKind


class Starting:
    """``WorkflowRun``'s part that starts nodes and queues their units."""

    def _start(self, run: NodeRun) -> None:
        if self.stopping:
            self._skip(run, FAIL_FAST)
            return
        run.status = Status.RUNNING
        source = self._recovered(run)
        if source is not None:
            return
        try:
            inputs, values = self._inputs(run)
        except UserError as exc:
            self._fail_node(
                run,
                {"kind": "user", "type": type(exc).__name__, "message": str(exc), "traceback": ""},
            )
            return
        if run.spec.map is None:
            unit = Unit(run, run.id, None, inputs, values)
            run.open_units = 1
            self._cache_or_queue(unit)
        elif self.engine.unpickles:
            self._expand(run, inputs, values)
        else:  # values stay out of this process: a runner splits the list
            over = run.spec.map.over
            step = Unit(run, f"{run.id}:expand", None, {over: inputs[over]}, None, op="expand")
            run.element_inputs = [inputs]  # kept for the elements' shared inputs
            self._enqueue(step)

    def _earlier(self, key: str) -> tuple[Any, str] | None:
        """A node (or element) that already finished well: in the execution being
        resumed (no new event), or in the one being recovered (a NODE_RECOVERED)."""
        for source, how in ((self.resume, "resume"), (self.recover_from, "recover")):
            if source is None:
                continue
            if how == "recover" and key.partition("[")[0].partition(":")[0] in self.stale:
                continue  # (an element ``node[3]``, a step ``node:collect``: the node's)
            old = source.nodes.get(key)
            if old is not None and old.status.ok and old.outputs:
                return old, how
        return None

    def _recovered(self, run: NodeRun) -> NodeRun | None:
        found = self._earlier(run.id)
        if found is None:
            return None
        old, how = found
        run.outputs = {n: self.engine.artifact(i) for n, i in old.outputs.items()}
        run.references = dict(getattr(old, "references", {}) or {})
        run.status = Status.RECOVERED if how == "recover" else old.status
        if how == "recover":
            self.emit(
                K.NODE_RECOVERED,
                run.id,
                outputs=old.outputs,
                source_execution=self.recover_from.id,  # type: ignore[union-attr]
            )
        self._node_done(run)
        return run

    def _inputs(self, run: NodeRun) -> tuple[dict[str, ArtifactRef], dict[str, Any] | None]:
        inputs: dict[str, ArtifactRef] = {}
        values: dict[str, Any] = {}
        have_all = True
        for name, b in run.spec.bindings.items():
            if b.is_param:
                if b.output not in self.params:
                    raise UserError(
                        f"node {run.id!r} needs parameter {b.output!r}, which has no value"
                    )
                inputs[name] = self.params[b.output]
                if b.output in self.param_values:
                    values[name] = self.param_values[b.output]
                else:
                    have_all = False
            else:
                up = self.nodes[b.node]
                if b.output not in up.outputs:
                    raise UserError(
                        f"node {run.id!r} reads {b.output!r} from {b.node!r}, which did not "
                        f"assign it; assign it in {b.node!r} or give the input another source"
                    )
                inputs[name] = up.outputs[b.output]
                if b.output in up.values:
                    values[name] = up.values[b.output]
                else:
                    have_all = False
        return inputs, values if have_all else None

    def _values(
        self, run: NodeRun, inputs: dict[str, ArtifactRef], values: dict[str, Any] | None
    ) -> dict[str, Any]:
        if values is not None:
            return values
        return {n: self.engine.artifacts.load(r) for n, r in inputs.items()}

    def _reuse(self, unit: Unit) -> bool:
        """Resume or recover: an element or node that finished well keeps its outputs.
        A resumed unit otherwise continues its attempt numbering and failure counts."""
        found = self._earlier(unit.key)
        if found is not None:
            old, how = found
            outputs = {n: self.engine.artifact(i) for n, i in old.outputs.items()}
            if how == "recover":
                self.emit(
                    K.NODE_RECOVERED,
                    unit.key,
                    outputs=old.outputs,
                    source_execution=self.recover_from.id,  # type: ignore[union-attr]
                )
            self._unit_ok(unit, AttemptResult("succeeded", outputs=outputs), cached=False)
            return True
        if self.resume is not None and unit.key in self.resume.nodes:
            old = self.resume.nodes[unit.key]
            unit.attempt = old.attempt
            unit.user_failures, unit.system_failures = old.user_failures, old.system_failures
            unit.adopt = unit.key in self.adopted
            config = unit.node.spec.config
            if old.system_failures > config.system_retries or old.user_failures > config.retries:
                error = old.error.to_dict() if old.error else system_error("attempts exhausted")
                self.emit(K.NODE_FAILED, unit.key, unit.attempt, error=error)
                self._unit_failed(unit, error)
                return True
        return False

    def _cache_or_queue(
        self, unit: Unit, prefetched: dict[str, dict[str, Any]] | None = None
    ) -> None:
        if (self.resume is not None or self.recover_from is not None) and self._reuse(unit):
            return
        config = unit.node.spec.config
        if config.cache:
            if not unit.cache_key:
                unit.cache_key = self.engine.cache_key(
                    unit.node.spec.task, config.cache_version, unit.inputs
                )
            hit, problem = self.engine.cache_lookup(
                unit.cache_key,
                self.options.project,
                self.options.domain,
                want_values=self.options.want_values,
                prefetched=prefetched,
            )
            if hit is not None:
                entry, outputs, values = hit
                outputs = _in_order(outputs, unit.node.spec.task.outputs)
                self.emit(
                    K.CACHE_HIT,
                    unit.key,
                    cache_key=unit.cache_key,
                    outputs={n: r.id for n, r in outputs.items()},
                    references=entry["references"],
                    display=entry["display"],
                    source_execution=entry["execution_id"],
                    source_created_at=entry["created_at"],
                )
                result = AttemptResult(
                    "succeeded",
                    outputs=outputs,
                    references=entry["references"],
                    display=entry["display"],
                    values=values,
                )
                self._unit_ok(unit, result, cached=True)
                return
            if problem:
                self.emit(K.CACHE_INVALID, unit.key, cache_key=unit.cache_key, reason=problem)
            elif unit.index is None:  # (an element's miss is recorded by its attempt)
                self.emit(K.CACHE_MISS, unit.key, cache_key=unit.cache_key)
        self._enqueue(unit)

    def _ready_for(self, run: NodeRun) -> dict[int, NodeRun]:
        executor = self.engine.executor(run.spec.config.executor)
        return self.ready_inline if executor.in_process else self.ready_out

    def _first(self) -> NodeRun:
        for ready in (self.ready_inline, self.ready_out):
            for run in ready.values():
                return run
        raise LookupError("nothing is queued")

    def _enqueue(self, unit: Unit) -> None:
        run = unit.node
        index = unit.index
        compact = index is not None and run.plan is not None and ElementPlan.fresh(unit)
        self._push(run, index if compact else unit)  # type: ignore[arg-type]

    def _push(self, run: NodeRun, entry: Unit | int) -> None:
        """Queue a unit, or a map element's first unit as its index (``ElementPlan``)."""
        if not run.queued:
            self._ready_for(run)[id(run)] = run
        run.queued.append(entry)
        self.queued += 1

    def _take(self, run: NodeRun) -> Unit:
        entry = run.queued.popleft()
        self.queued -= 1
        if not run.queued:
            self._ready_for(run).pop(id(run), None)
        if type(entry) is int:
            assert run.plan is not None
            return run.plan.unit(run, entry)
        return entry  # type: ignore[return-value]

    def _drop(self, run: NodeRun) -> None:
        """Forget a node's queued units (it failed, or fail-fast stopped the run)."""
        if run.queued:
            self.queued -= len(run.queued)
            run.queued.clear()
            self._ready_for(run).pop(id(run), None)


def _in_order(outputs: dict[str, ArtifactRef], names: tuple[str, ...]) -> dict[str, ArtifactRef]:
    """A cache entry's outputs in the order this cell lists them: the entry may come from
    the same cell with ``--outputs`` in another order (one cache key), and the widget
    should show them as the cell asks."""
    ordered = {n: outputs[n] for n in names if n in outputs}
    return ordered if len(ordered) == len(outputs) else {**ordered, **outputs}
