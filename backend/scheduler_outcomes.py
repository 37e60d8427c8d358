"""What a workflow run does with an attempt's outcome: a success recorded with its
artifacts, lineage and cache entry; a failure retried on its budget, or failing its
node and skipping what depends on it. Part of ``scheduler.WorkflowRun``."""

from __future__ import annotations

import math
from typing import Any

from .model import ArtifactRef, ErrorKind, EventKind, Status
from .runner import AttemptResult, system_error
from .scheduler_units import FAIL_FAST, NodeRun, Unit
from .store.sqlite_rows import json_text

K = EventKind


class Outcomes:
    """``WorkflowRun``'s part that records outcomes, retries and failures."""

    def _handle(self, unit: Unit, result: AttemptResult) -> None:
        if result.logs:
            for stream, key in sorted(result.logs.items()):
                self.emit(K.LOG_STORED, unit.key, unit.attempt, stream=stream, uri=key)
        if result.status == "succeeded" and unit.op != "run":
            self._step_done(unit, result)
            return
        if result.status == "succeeded":
            self.emit(
                K.ATTEMPT_SUCCEEDED,
                unit.key,
                unit.attempt,
                outputs={n: r.id for n, r in result.outputs.items()},
                references=result.references,
                display=result.display,
                duration=result.ended_at - result.started_at,
            )
            if unit.index is None:  # (an element's successful attempt is its end)
                self.emit(K.NODE_SUCCEEDED, unit.key, unit.attempt)
            self._persist(unit, result)
            self._unit_ok(unit, result, cached=False)
            return
        if result.status == "aborted":
            return
        error = result.error or system_error("the attempt failed without a reason")
        # What it displayed before failing is shown with the traceback.
        shown = {"display": result.display} if result.display else {}
        self.emit(K.ATTEMPT_FAILED, unit.key, unit.attempt, error=error, **shown)
        if result.display:
            if unit.index is None:
                unit.node.display = result.display
            else:
                if unit.node.failed_displays is None:
                    unit.node.failed_displays = {}
                unit.node.failed_displays[unit.index] = result.display
        config = unit.node.spec.config
        if error.get("kind") == ErrorKind.SYSTEM.value:
            unit.system_failures += 1
            retry, budget = unit.system_failures <= config.system_retries, "system"
        else:
            unit.user_failures += 1
            retry, budget = unit.user_failures <= config.retries, "user"
            # (an executor marks a failure every attempt would repeat: a missing image)
            retry = retry and error.get("retryable", True) is not False
        if retry and not self.stopping:
            self.emit(K.RETRY_SCHEDULED, unit.key, unit.attempt, budget=budget)
            self._enqueue(unit)
            return
        self.emit(K.NODE_FAILED, unit.key, unit.attempt, error=error)
        self._unit_failed(unit, error)

    def _settle(self, run: NodeRun) -> None:
        """After fail-fast dropped a node's queued units: once none of its units is
        still running, the node is skipped (it can neither finish nor fail now)."""
        if not self.stopping:
            return  # (the usual case: every element of a map comes here)
        stuck = run.status is Status.RUNNING and not run.running and not run.queued
        if stuck and run.open_units:
            run.open_units = 0
            self._skip(run, FAIL_FAST, force=True)

    def _persist(self, unit: Unit, result: AttemptResult) -> None:
        """Queue the attempt's artifact, lineage and cache rows for the next flush. Their
        JSON values are encoded now (``json_text``, the text the store would write): a
        map keeps a lineage and a cache row per element until the flush, and a dict of
        strings and numbers alone is not tracked by Python's collector, whose full
        collections are triggered by how many tracked objects live long."""
        task = unit.node.spec.task
        version = task.version()
        outputs = result.outputs
        key = unit.cache_key
        inputs = json_text(self._provenance(unit.node, unit.inputs))
        self.new_artifacts.extend(outputs.values())
        lineage = self.new_lineage
        for name, ref in outputs.items():
            lineage.append(
                {
                    "artifact_id": ref.id,
                    "name": name,
                    "execution_id": self.state.id,
                    "node": unit.key,
                    "attempt": unit.attempt,
                    "task_name": task.name,
                    "task_version": version,
                    "inputs": inputs,
                }
            )
        if key and not result.uncacheable:
            self.new_cache.append(
                {
                    "key": key,
                    "project": self.options.project,
                    "domain": self.options.domain,
                    "task_name": task.name,
                    "task_version": version,
                    "outputs": json_text({n: r.to_dict() for n, r in outputs.items()}),
                    "references": json_text(result.references),
                    "display": json_text(result.display),
                    "execution_id": self.state.id,
                }
            )

    def _unit_ok(self, unit: Unit, result: AttemptResult, cached: bool) -> None:
        run = unit.node
        if unit.index is None:
            run.outputs = dict(result.outputs)
            run.references = dict(result.references)
            run.values = dict(result.values)
            run.display = result.display
            run.status = Status.CACHED if cached else Status.SUCCEEDED
            run.open_units = 0
            self._node_done(run)
            return
        run.elements[unit.index] = result
        run.open_units -= 1
        if run.open_units == 0:
            self._map_done(run)
        else:
            self._settle(run)

    def _unit_failed(self, unit: Unit, error: dict[str, Any]) -> None:
        run = unit.node
        if unit.index is None:
            run.open_units = 0
            self._fail_node(run, error)
            return
        run.failed_units += 1
        run.open_units -= 1
        run.error = run.error or error
        allowed = math.floor(len(run.elements) * (1 - run.spec.map.min_success_ratio) + 1e-9)
        if run.failed_units > allowed:
            if run.status is not Status.FAILED:
                # Too many elements failed: the node fails; its other elements stop.
                self._drop(run)
                run.display = self._elements_displayed(run)
                self._fail_node(
                    run,
                    {
                        **error,
                        "message": f"{run.failed_units} of {len(run.elements)} elements failed "
                        f"(allowed: {allowed}); element {unit.index}: {error.get('type')}: "
                        f"{error.get('message')}",
                    },
                )
            return
        if run.open_units == 0:
            self._map_done(run)
        else:
            self._settle(run)

    def _provenance(self, run: NodeRun, inputs: dict[str, ArtifactRef]) -> dict[str, Any]:
        """Each input's artifact and, when known, the attempt's node that produced it."""
        found: dict[str, Any] = {}
        for name, ref in inputs.items():
            b = run.spec.bindings.get(name)
            if b is not None and not b.is_param:
                source = {"execution": self.state.id, "node": b.node}
                if self.nodes[b.node].status is Status.RECOVERED and self.recover_from:
                    source = {"execution": self.recover_from.id, "node": b.node}
            elif b is not None:
                source = self.sources.get(b.output, {})
            else:  # a map element: it came out of the list input
                source = {}
            found[name] = {"id": ref.id, **source}
        return found

    def _node_inputs(self, run: NodeRun) -> dict[str, ArtifactRef]:
        found = {}
        for name, b in run.spec.bindings.items():
            source = self.params if b.is_param else self.nodes[b.node].outputs
            if b.output in source:
                found[name] = source[b.output]
        return found

    def _node_done(self, run: NodeRun) -> None:
        for down_id in self.downstream[run.id]:
            down = self.nodes[down_id]
            down.waiting_on.discard(run.id)
            if not down.waiting_on and down.status is Status.QUEUED and not down.open_units:
                self._start(down)

    def _fail_node(self, run: NodeRun, error: dict[str, Any]) -> None:
        run.status = Status.FAILED
        run.error = error
        if run.spec.map is not None or self.state.nodes[run.id].status is not Status.FAILED:
            # (a map's carries what its elements displayed)
            shown = {"display": run.display} if run.spec.map is not None and run.display else {}
            self.emit(K.NODE_FAILED, run.id, error=error, **shown)
        if self.options.failure_policy == "fail-fast":
            self.stopping = True
            for other in self.nodes.values():  # nothing new starts; what runs finishes
                self._drop(other)
            for other in self.nodes.values():
                if other is not run:
                    self._skip(other, FAIL_FAST)
                    self._settle(other)
        else:
            self._skip_downstream(run)

    def _skip_downstream(self, run: NodeRun) -> None:
        for down_id in self.downstream[run.id]:
            down = self.nodes[down_id]
            if down.status is Status.QUEUED:
                self._skip(down, f"upstream node {run.id!r} failed")
                self._skip_downstream(down)

    def _skip(self, run: NodeRun, reason: str, force: bool = False) -> None:
        """Mark a node that will never run. A started node only by ``_settle``."""
        if run.status.terminal or (run.status is Status.RUNNING and not force):
            return
        run.status = Status.SKIPPED
        self.emit(K.NODE_SKIPPED, run.id, reason=reason)
