"""Map nodes in a workflow run: a list split into elements (each a unit with its own
cache entry and retries), and the elements' outputs collected into lists in order.
Part of ``scheduler.WorkflowRun``."""

from __future__ import annotations

from typing import Any

from .displays import joined_displays
from .errors import not_iterable
from .model import ArtifactRef, EventKind, Status
from .runner import AttemptResult, import_bound
from .scheduler_units import ElementPlan, NodeRun, Unit
from .store.sqlite_rows import json_text

K = EventKind


class Maps:
    """``WorkflowRun``'s part that expands map nodes and collects their elements."""

    def _expand(
        self, run: NodeRun, inputs: dict[str, ArtifactRef], values: dict[str, Any] | None
    ) -> None:
        m = run.spec.map
        assert m is not None
        all_values = self._values(run, inputs, values)
        over = all_values.get(m.over)
        try:
            elements = list(over)  # type: ignore[arg-type]
        except TypeError:
            self._fail_node(
                run,
                {
                    "kind": "user",
                    "type": "TypeError",
                    "message": not_iterable(m.over, over),
                    "traceback": "",
                },
            )
            return
        with self.engine.storage.pack_checks():  # one look at each pack, not each element
            element_refs = [
                self.engine.artifacts.put(element, f"element {i} of {m.over!r}")
                for i, element in enumerate(elements)
            ]
            self._elements(run, inputs, element_refs, all_values, elements)

    def _elements(
        self,
        run: NodeRun,
        inputs: dict[str, ArtifactRef],
        element_refs: list[ArtifactRef],
        all_values: dict[str, Any] | None = None,
        elements: list[Any] | None = None,
    ) -> None:
        m = run.spec.map
        assert m is not None
        run.elements = [None] * len(element_refs)
        run.open_units = len(element_refs)
        self.emit(K.MAP_EXPANDED, run.id, elements=len(element_refs))
        if not element_refs:
            self._map_done(run)
            return
        self.new_artifacts.extend(element_refs)
        # The whole list goes to each element only if the cell itself reads it.
        keep = set(run.spec.task.inputs)
        shared = {n: r for n, r in inputs.items() if n != m.over or n in keep}
        shared_values = (
            {n: v for n, v in all_values.items() if n in shared} if all_values is not None else None
        )
        config = run.spec.config
        keys = None
        prefetched = None
        if config.cache:  # one query for all the elements' entries, not one each
            keys = self.engine.element_cache_keys(
                run.spec.task, config.cache_version, shared, m.as_name, element_refs
            )
            prefetched = self.engine.store.cache_get_many(
                keys, self.options.project, self.options.domain
            )
        values = elements if shared_values is not None else None
        run.plan = plan = ElementPlan(shared, shared_values, m.as_name, element_refs, values, keys)
        # An element with nothing earlier to reuse (no resume, no recovery) and no cache
        # entry is queued as its index straight away: what ``_cache_or_queue`` does for
        # it, without a ``Unit`` that would live only until queued (its miss is recorded
        # by its attempt, ``_begin``). Entries found (hits, damaged ones) go through
        # ``_cache_or_queue``.
        plain = self.resume is None and self.recover_from is None
        for i in range(len(element_refs)):
            if plain and (keys is None or (prefetched is not None and keys[i] not in prefetched)):
                self._push(run, i)
            else:
                self._cache_or_queue(plan.unit(run, i), prefetched)

    def _step_done(self, unit: Unit, result: AttemptResult) -> None:
        """An out-of-process map step finished: elements to run, or the node's lists."""
        run = unit.node
        outputs = result.outputs
        self.emit(
            K.ATTEMPT_SUCCEEDED,
            unit.key,
            unit.attempt,
            outputs={n: r.id for n, r in outputs.items()},
        )
        self.emit(K.NODE_SUCCEEDED, unit.key, unit.attempt)
        if unit.op == "expand":
            refs = [outputs[str(i)] for i in range(len(outputs))]
            self._elements(run, run.element_inputs[0], refs)
        else:
            self._map_finish(run, outputs, {})

    @staticmethod
    def _elements_displayed(run: NodeRun) -> dict[str, Any] | None:
        """What the elements displayed, in element order: a failed element's last
        attempt's too, as an inline map shows each element's while it runs."""
        failed = run.failed_displays or {}
        return joined_displays(
            [r.display if r is not None else failed.get(i) for i, r in enumerate(run.elements)]
        )

    def _map_done(self, run: NodeRun) -> None:
        """Collect each output into a list in element order (None for failed elements).

        Every output of the task gets its list, whether or not an element produced it:
        an empty map gives empty lists and a map whose elements all failed (allowed by
        its ``min_success_ratio``) lists of None, which replace the notebook's old values
        and bind downstream inputs. Names an element stored as a reference (a module),
        and names the cell binds by ``import`` (the reference it would store), get none."""
        if run.status is Status.FAILED:
            return
        produced: set[str] = set()
        refs: dict[str, str] = {}
        for result in run.elements:
            if result is None:
                continue
            produced.update(result.outputs)
            refs.update(result.references)
        run.references = refs
        imported = import_bound(run.spec.task)
        names = [
            n
            for n in run.spec.task.outputs
            if n in produced or (n not in refs and n not in imported)
        ]
        if not self.engine.unpickles:  # a runner builds the lists
            inputs = {
                f"{n}[{i}]": result.outputs[n]
                for i, result in enumerate(run.elements)
                if result is not None
                for n in names
                if n in result.outputs
            }
            layout = {"names": names, "count": len(run.elements)}
            step = Unit(run, f"{run.id}:collect", None, inputs, None, op="collect", layout=layout)
            self._enqueue(step)
            return
        collected: dict[str, list[Any]] = {n: [] for n in names}
        for result in run.elements:
            for n in names:
                if result is None or n not in result.outputs:
                    collected[n].append(None)
                elif n in result.values:
                    collected[n].append(result.values[n])
                else:
                    collected[n].append(self.engine.artifacts.load(result.outputs[n], verify=False))
        outputs = {
            n: self.engine.artifacts.put(v, f"collected output {n!r} of {run.id!r}")
            for n, v in collected.items()
        }
        self._map_finish(run, outputs, collected)

    def _map_finish(
        self, run: NodeRun, outputs: dict[str, ArtifactRef], values: dict[str, Any]
    ) -> None:
        run.outputs, run.values = outputs, values
        all_cached = bool(run.elements) and all(
            self.state.nodes[f"{run.id}[{i}]"].status is Status.CACHED
            for i in range(len(run.elements))
        )
        run.status = Status.CACHED if all_cached else Status.SUCCEEDED
        inputs = json_text(self._provenance(run, self._node_inputs(run)))
        self.new_artifacts.extend(outputs.values())
        self.new_lineage.extend(
            {
                "artifact_id": r.id,
                "name": n,
                "execution_id": self.state.id,
                "node": run.id,
                "attempt": 0,
                "task_name": run.spec.task.name,
                "task_version": run.spec.task.version(),
                "inputs": inputs,
            }
            for n, r in outputs.items()
        )
        m = run.spec.map
        payload = {
            "outputs": {n: r.id for n, r in outputs.items()},
            "references": run.references,
            "map_over": m.over if m else "",
        }
        # What elements outside the kernel displayed, in element order, as an inline
        # map's elements show it while they run.
        run.display = self._elements_displayed(run)
        if run.display:
            payload["display"] = run.display
        if all_cached:
            self.emit(K.CACHE_HIT, run.id, cache_key="", **payload)
        else:
            self.emit(K.ATTEMPT_SUCCEEDED, run.id, 0, **payload)
            self.emit(K.NODE_SUCCEEDED, run.id, 0)
        self._node_done(run)
