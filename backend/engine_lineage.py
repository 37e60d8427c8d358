"""Lineage: the chain of attempts and inputs that produced an artifact. Part of
``engine.LocalEngine``."""

from __future__ import annotations

from typing import Any

from .errors import NotFound
from .model import ArtifactRef


class Lineage:
    """``LocalEngine``'s part that walks the lineage rows back from an artifact."""

    def has_lineage(self, artifact_id: str) -> bool:
        return bool(self.store.producers(artifact_id, self.scope_project))

    def lineage(
        self, artifact_id: str, depth: int = 30, via: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """The chain that produced an artifact: the attempt that made it, that attempt's
        inputs, their producers, and so on. An input is followed only to the attempt it
        really came from (an upstream node, or the execution that produced a notebook
        variable); a value typed into the notebook ends the chain.

        ``via``: the execution and node a notebook variable was bound from. Equal values
        are one artifact, which several tasks may have produced (``p = n + 7`` and ``q =
        m + 5``, both 12): the variable's lineage is the one it came from, not the last."""
        ref = self.artifact(artifact_id)
        producers = self.store.producers(ref.id, self.scope_project)
        producer = producers[-1] if producers else None
        if via and via.get("execution") and via.get("node"):
            producer = self._producer_of(producers, via["execution"], via["node"]) or producer
        return self._lineage(ref, "", producer, depth, set())

    def _lineage(
        self,
        ref: ArtifactRef,
        name: str,
        producer: dict[str, Any] | None,
        depth: int,
        seen: set[tuple[str, str]],
    ) -> dict[str, Any]:
        node: dict[str, Any] = {
            "name": name,
            "artifact": ref.to_dict(),
            "producer": None,
            "inputs": [],
        }
        if producer is None or depth <= 0:
            return node
        keys = ("execution_id", "node", "attempt", "task_name", "task_version", "created_at")
        node["producer"] = {k: producer[k] for k in keys}
        node["name"] = name or producer["name"]
        mark = (producer["execution_id"], producer["node"])
        if mark in seen:
            node["repeated"] = True
            return node
        seen.add(mark)
        for input_name, source in sorted(producer["inputs"].items()):
            try:
                input_ref = self.artifact(source["id"])
            except NotFound:
                continue
            upstream = None
            if source.get("execution") and source.get("node"):
                upstream = self._producer_of(
                    self.store.producers(input_ref.id, self.scope_project),
                    source["execution"],
                    source["node"],
                )
            node["inputs"].append(self._lineage(input_ref, input_name, upstream, depth - 1, seen))
        return node

    def _producer_of(
        self, producers: list[dict[str, Any]], execution: str, node: str
    ) -> dict[str, Any] | None:
        """The producer row of ``execution``'s ``node``, or, when that node ran nothing
        there (a cache hit or a recovered node, which record no lineage row of their
        own), of the execution its outputs came from, and so on back: a cached ``load``
        feeding a map that collected again would otherwise end the map's chain at its
        input, as if the notebook had typed it in."""
        seen = set()
        while execution and execution not in seen:
            seen.add(execution)
            found = _producer_in(producers, execution, node)
            if found is not None:
                return found
            state = self.store.execution(execution)
            ran = state.nodes.get(node) if state is not None else None
            if ran is None or not ran.cache_source:
                return None
            execution = ran.cache_source.get("execution_id", "")
            # (the entry's node may have another name there: any producer of this value
            # in that execution is where it came from)
            here = [p for p in producers if p["execution_id"] == execution]
            if here and _producer_in(here, execution, node) is None:
                return here[-1]
        return None


def _producer_in(
    producers: list[dict[str, Any]], execution: str, node: str
) -> dict[str, Any] | None:
    """The producer row of ``execution``'s ``node`` (or one of its map elements)."""
    return next(
        (
            p
            for p in producers
            if p["execution_id"] == execution and p["node"].partition("[")[0] == node
        ),
        None,
    )
