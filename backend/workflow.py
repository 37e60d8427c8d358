"""Workflows: the task cells of a notebook as a versioned DAG.

A node's input binds to the nearest earlier node that outputs that name; inputs no node
produces are workflow parameters. Binding only to *earlier* nodes makes cycles
impossible by construction. A workflow version is the hash of its nodes' task versions,
configs and bindings, so changing one cell makes a new version in which every unchanged
node keeps its task version (and its cache).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from .errors import CaptureError, UserError
from .hashing import sha256_json
from .model import TaskConfig, TaskSpec


@dataclass(frozen=True)
class Binding:
    """Where an input comes from: an upstream node's output, or a parameter."""

    node: str = ""  # "" for a workflow parameter
    output: str = ""  # the upstream output name, or the parameter name

    @property
    def is_param(self) -> bool:
        return not self.node

    def to_dict(self) -> dict[str, str]:
        return {"node": self.node, "output": self.output}

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> Binding:
        return cls(data.get("node", ""), data["output"])


@dataclass(frozen=True)
class MapSpec:
    """``--map NAME``: run the cell once per element of input ``over``, bound as
    ``as_name``; collect each output into a list in element order."""

    over: str
    as_name: str
    min_success_ratio: float = 1.0
    concurrency: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "over": self.over,
            "as_name": self.as_name,
            "min_success_ratio": self.min_success_ratio,
            "concurrency": self.concurrency,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> MapSpec | None:
        return cls(**data) if data else None


@dataclass(frozen=True)
class NodeSpec:
    id: str
    task: TaskSpec
    config: TaskConfig
    bindings: dict[str, Binding]
    map: MapSpec | None = None
    cell_id: str = ""
    declared_outputs: tuple[str, ...] = ()

    @property
    def data_inputs(self) -> list[str]:
        """Inputs the node receives (for a map node: the list, not the element)."""
        return list(self.bindings)

    def identity(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "task": self.task.version(),
            "config": self.config.to_dict(),
            "bindings": {k: v.to_dict() for k, v in sorted(self.bindings.items())},
            "map": self.map.to_dict() if self.map else None,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.identity(),
            "cell_id": self.cell_id,
            "declared_outputs": list(self.declared_outputs),
        }


@dataclass(frozen=True)
class WorkflowSpec:
    name: str
    nodes: tuple[NodeSpec, ...]
    #: Names produced by more than one node: {name: [node ids in document order]}.
    shadowed: dict[str, list[str]] = field(default_factory=dict)

    def node(self, node_id: str) -> NodeSpec:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    def parameters(self) -> list[str]:
        seen: list[str] = []
        for n in self.nodes:
            for b in n.bindings.values():
                if b.is_param and b.output not in seen:
                    seen.append(b.output)
        return seen

    def edges(self) -> list[tuple[str, str, list[str]]]:
        """(upstream, downstream, [variable names]) in document order."""
        found: dict[tuple[str, str], list[str]] = {}
        for n in self.nodes:
            for name, b in n.bindings.items():
                if not b.is_param:
                    found.setdefault((b.node, n.id), []).append(
                        name if name == b.output else f"{b.output}→{name}"
                    )
        return [(a, b, names) for (a, b), names in found.items()]

    def version(self) -> str:
        return self._version

    @cached_property
    def _version(self) -> str:
        # (cached: a widget asks on every refresh, and a 100,000-node spec is costly to hash)
        return sha256_json({"nodes": [n.identity() for n in self.nodes]})

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "nodes": [n.to_dict() for n in self.nodes],
            "shadowed": self.shadowed,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], tasks: dict[str, TaskSpec]) -> WorkflowSpec:
        nodes = tuple(
            NodeSpec(
                id=n["id"],
                task=tasks[n["task"]],
                config=TaskConfig.from_dict(n["config"]),
                bindings={k: Binding.from_dict(v) for k, v in n["bindings"].items()},
                map=MapSpec.from_dict(n.get("map")),
                cell_id=n.get("cell_id", ""),
                declared_outputs=tuple(n.get("declared_outputs", ())),
            )
            for n in data["nodes"]
        )
        return cls(data["name"], nodes, data.get("shadowed", {}))


@dataclass
class CellTask:
    """One task cell as the assembler sees it, in document order."""

    task: TaskSpec
    config: TaskConfig
    map: MapSpec | None = None
    cell_id: str = ""
    declared_outputs: tuple[str, ...] = ()
    #: Outputs the cell may bind (its interface's outputs).
    outputs: tuple[str, ...] = ()
    position: str = ""  # "cell 4" for messages


def assemble(name: str, cells: Iterable[CellTask]) -> WorkflowSpec:
    """Bind each input to the nearest earlier producer; the rest are parameters."""
    nodes: list[NodeSpec] = []
    producers: dict[str, list[str]] = {}
    by_name: dict[str, CellTask] = {}
    for cell in cells:
        node_id = cell.task.name
        if node_id in by_name:
            other = by_name[node_id]
            if other.task.normalized_code() != cell.task.normalized_code():
                raise UserError(
                    f"two cells define task {node_id!r} with different code "
                    f"({other.position or 'an earlier cell'} and {cell.position or 'a later one'})"
                    "; give one of them another name (%%task NAME)"
                )
            node_id = _unique(node_id, by_name)
        by_name[node_id] = cell
        bindings = {}
        wanted = list(cell.task.inputs)
        if cell.map is not None and cell.map.over not in wanted:
            wanted.append(cell.map.over)  # the list itself, even if the cell never reads it
        for inp in wanted:
            if cell.map is not None and inp == cell.map.as_name:
                continue
            sources = producers.get(inp)
            bindings[inp] = Binding(sources[-1], inp) if sources else Binding("", inp)
        nodes.append(
            NodeSpec(
                id=node_id,
                task=cell.task,
                config=cell.config,
                bindings=bindings,
                map=cell.map,
                cell_id=cell.cell_id,
                declared_outputs=cell.declared_outputs,
            )
        )
        for out in cell.outputs or cell.task.outputs:
            producers.setdefault(out, []).append(node_id)
    shadowed = {k: v for k, v in producers.items() if len(v) > 1}
    return WorkflowSpec(name, tuple(nodes), shadowed)


def changed_nodes(before: WorkflowSpec, after: WorkflowSpec) -> frozenset[str]:
    """The nodes of ``after`` whose results an execution of ``before`` cannot stand for:
    a node that is new, whose task changed (its version: code, interface, environment),
    that reads its inputs from elsewhere or maps differently, and every node downstream
    of one of those. Recovering onto an edited notebook runs these again and reuses the
    rest; a retry or executor setting alone changes no result, so it is not compared."""
    old = {n.id: n for n in before.nodes}
    changed: set[str] = set()
    for n in after.nodes:
        o = old.get(n.id)
        if (
            o is None
            or o.task.version() != n.task.version()
            or o.bindings != n.bindings
            or _mapping(o.map) != _mapping(n.map)
        ):
            changed.add(n.id)
    grown = True
    while grown:  # everything downstream, whatever order the nodes come in
        grown = False
        for n in after.nodes:
            if n.id not in changed and any(b.node in changed for b in n.bindings.values()):
                changed.add(n.id)
                grown = True
    return frozenset(changed)


def _mapping(m: MapSpec | None) -> tuple[str, str] | None:
    return (m.over, m.as_name) if m is not None else None


def _unique(node_id: str, taken: dict[str, Any]) -> str:
    i = 2
    while f"{node_id}-{i}" in taken:
        i += 1
    return f"{node_id}-{i}"


_NOT_PLURAL = {"series", "species", "news", "data", "means", "physics", "mathematics"}
_PLURALS = [
    (re.compile(r"(.*[^aeiou])ies$"), r"\1y"),
    (re.compile(r"(.*(?:s|x|z|ch|sh))es$"), r"\1"),
    (re.compile(r"(.*[^s])s$"), r"\1"),
]


def singular(name: str) -> str | None:
    """'files' -> 'file', 'batches' -> 'batch', 'categories' -> 'category'; None if the
    name has no obvious singular (then ``--as`` must say what to call an element)."""
    if name in _NOT_PLURAL or name.endswith(("us", "ss", "is")):
        return None
    for pattern, repl in _PLURALS:
        if pattern.fullmatch(name):
            single = pattern.sub(repl, name)
            return single if single.isidentifier() and single != name else None
    return None


def map_spec(
    over: str, as_name: str | None, min_ratio: float | None, concurrency: int | None
) -> MapSpec:
    if not over.isidentifier():  # (``--map range(3)``, ``--map data["xs"]``)
        raise CaptureError(
            f"--map {over}: name a notebook variable that holds the elements "
            "(assign them to one first, e.g. items = ...)"
        )
    element = as_name or singular(over)
    if not element:
        raise CaptureError(
            f"--map {over}: can't tell what to call one element of {over!r}; "
            f"name it with --as (for example --as item)"
        )
    if not element.isidentifier():
        raise CaptureError(f"--as {element!r} is not a variable name")
    ratio = 1.0 if min_ratio is None else min_ratio
    if not 0.0 <= ratio <= 1.0:
        raise CaptureError(f"--min-success-ratio {min_ratio} must be between 0 and 1")
    if concurrency is not None and concurrency < 1:
        raise CaptureError(f"--map-concurrency {concurrency} must be at least 1")
    return MapSpec(over, element, ratio, concurrency)
