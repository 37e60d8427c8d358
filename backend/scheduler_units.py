"""The bookkeeping a workflow run keeps on its thread: its options, its nodes, the units
it schedules (a node, or one element of a map node), and its result."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .model import ArtifactRef, ExecutionState, Status
from .runner import AttemptResult
from .workflow import NodeSpec

#: Longest wait for a worker result before the next scheduling round.
ROUND = 0.05
#: How long an inline task may run before its start is committed on its own (``_run_here``).
START_GRACE = ROUND
FAIL_FAST = "the execution stopped at an earlier failure (fail-fast)"


@dataclass
class RunOptions:
    project: str = "default"
    domain: str = "development"
    max_parallel: int = 4
    failure_policy: str = "fail-fast"  # or "continue"
    want_values: bool = True


@dataclass
class Unit:
    """One schedulable piece: a whole node, or element ``index`` of a map node."""

    node: NodeRun
    key: str
    index: int | None
    inputs: dict[str, ArtifactRef]
    values: dict[str, Any] | None
    cache_key: str = ""
    attempt: int = 0
    user_failures: int = 0
    system_failures: int = 0
    op: str = "run"  # or "expand" / "collect" (a map's steps, out of this process)
    layout: dict[str, Any] | None = None
    #: A resumed attempt still running elsewhere (a pod): follow it, don't start one.
    adopt: bool = False


@dataclass
class NodeRun:
    spec: NodeSpec
    status: Status = Status.QUEUED
    waiting_on: set[str] = field(default_factory=set)
    outputs: dict[str, ArtifactRef] = field(default_factory=dict)
    references: dict[str, str] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    display: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    # map nodes
    elements: list[AttemptResult | None] = field(default_factory=list)
    element_inputs: list[dict[str, ArtifactRef]] = field(default_factory=list)
    open_units: int = 0
    failed_units: int = 0
    running: int = 0
    #: Units of this node waiting to start (attempts and retries), oldest first; a map
    #: element's first attempt as its index (``plan``), its ``Unit`` built when taken.
    queued: deque[Unit | int] = field(default_factory=deque)
    plan: ElementPlan | None = None
    #: What elements whose last attempt failed displayed, by index (made when needed).
    failed_displays: dict[int, dict[str, Any]] | None = None

    @property
    def id(self) -> str:
        return self.spec.id


@dataclass
class ElementPlan:
    """What a map element's first unit is made of, kept once per map node.

    A queued element is its index rather than a ``Unit`` with its own inputs dict: the
    queue of a 1,000-element map lives as long as the map runs, long enough for Python's
    collector to move such objects to its oldest generation, whose full collections
    (tens of ms in a notebook's heap) come sooner the more objects get there."""

    shared: dict[str, ArtifactRef]
    shared_values: dict[str, Any] | None
    name: str
    refs: list[ArtifactRef]
    values: list[Any] | None
    keys: list[str] | None

    def unit(self, run: NodeRun, i: int) -> Unit:
        values = None
        if self.shared_values is not None and self.values is not None:
            values = {**self.shared_values, self.name: self.values[i]}
        inputs = {**self.shared, self.name: self.refs[i]}
        key = self.keys[i] if self.keys is not None else ""
        return Unit(run, f"{run.id}[{i}]", i, inputs, values, cache_key=key)

    @staticmethod
    def fresh(unit: Unit) -> bool:
        """Whether ``unit`` is one ``unit`` would build again (no attempt made yet)."""
        return (
            unit.attempt == 0
            and not unit.user_failures
            and not unit.system_failures
            and not unit.adopt
            and unit.op == "run"
        )


@dataclass
class WorkflowResult:
    execution: ExecutionState
    nodes: dict[str, NodeRun]

    def outputs(self) -> dict[str, ArtifactRef]:
        """Every node's outputs by name; a later node wins, as cells run top to bottom."""
        merged: dict[str, ArtifactRef] = {}
        for run in self.nodes.values():
            merged.update(run.outputs)
        return merged
