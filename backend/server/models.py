"""The HTTP API's request and response models (pydantic), apart from the engine's own
dataclasses: they validate what clients send (unknown fields are refused, not ignored)
and document the API in OpenAPI."""

from __future__ import annotations

import ast
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .. import config
from ..model import ArtifactRef, Environment, ExecutionState, Resources, TaskConfig, TaskSpec
from ..workflow import Binding, MapSpec, NodeSpec, WorkflowSpec

NAME_PATTERN = config.NAME_PATTERN
ID_PATTERN = config.ID_PATTERN
#: A content digest: sha256 hex, or BLAKE3 hex behind "blake3-" (backend/hashing.py).
DIGEST_PATTERN = r"^(blake3-)?[0-9a-f]{64}$"
NAME_LENGTH = config.NAME_LENGTH  # (as ``%%task NAME``; why: backend/config.py)
Name = Field(min_length=1, max_length=NAME_LENGTH, pattern=NAME_PATTERN)
Id = Field(min_length=1, max_length=64, pattern=ID_PATTERN)
#: A node of an execution: a node id, or one element of a map node (``fit[3]``).
NODE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.\-\[\]:]*$"
#: Free text shown to people (previews, type names): any characters but NUL.
TEXT_PATTERN = r"^[^\x00]*$"


def _unstorable(value: Any, path: str = "") -> str | None:
    """The path of the first string (key or value) that can't be stored as text: a NUL
    (PostgreSQL refuses it) or a lone UTF-16 surrogate (not encodable as UTF-8)."""
    if isinstance(value, str):
        if "\x00" in value:
            return f"{path or 'value'} contains a NUL character"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{path or 'value'} contains a lone surrogate (not valid UTF-8)"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _unstorable(key, f"a key of {path or 'the body'}") or _unstorable(
                item, f"{path}.{key}" if path else str(key)
            )
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = _unstorable(item, f"{path}[{i}]")
            if found:
                return found
    return None


def _identifiers(names: list[str], field: str) -> list[str]:
    for name in names:
        if not name.isidentifier() or len(name) > NAME_LENGTH:
            raise ValueError(
                f"{field} must be Python variable names of at most {NAME_LENGTH} "
                f"characters; {name[:60]!r} is not one"
            )
    return names


class Strict(BaseModel):
    """Unknown fields are refused, values of another type are not coerced (``false`` is
    not 0, ``"1"`` is not 1), and text no database can store is refused."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        problem = _unstorable(data)
        if problem:
            raise ValueError(problem)
        return data


class EnvironmentModel(Strict):
    python: str = Field(max_length=100)
    packages: dict[str, str] = {}
    local_modules: dict[str, str] = {}


class TaskSpecModel(Strict):
    name: str = Name
    code: str = Field(max_length=1_000_000)
    inputs: list[str] = []
    outputs: list[str] = []
    input_types: dict[str, str] = {}
    imports: list[str] = []
    environment: EnvironmentModel
    source: str = ""
    display_last: bool = False
    first_line: int = Field(2, ge=1, le=10_000_000)
    #: {function name: [source text, label]} (a pair: JSON has no tuples)
    sources: dict[str, Annotated[list[str], Field(min_length=2, max_length=2)]] = {}

    @field_validator("code")
    @classmethod
    def _parses(cls, code: str) -> str:
        """The version hashes the code's syntax tree: code that doesn't parse has none."""
        try:
            ast.parse(code)
        except SyntaxError as exc:
            where = f" on line {exc.lineno}" if exc.lineno else ""
            raise ValueError(f"is not valid Python: syntax error{where}: {exc.msg}") from None
        except ValueError as exc:  # e.g. text that is not valid UTF-8
            raise ValueError(f"is not valid Python: {exc}") from None
        return code

    @field_validator("inputs", "outputs")
    @classmethod
    def _names(cls, names: list[str], info: Any) -> list[str]:
        return _identifiers(names, info.field_name)

    def to_spec(self) -> TaskSpec:
        data = self.model_dump()
        data["environment"] = Environment(**data["environment"])
        for key in ("inputs", "outputs", "imports"):
            data[key] = tuple(data[key])
        data["sources"] = {k: (v[0], v[1]) for k, v in data["sources"].items()}
        return TaskSpec(**data)


class ResourcesModel(Strict):
    cpu: float | None = Field(None, gt=0, le=100_000)
    memory: int | None = Field(None, gt=0, le=1 << 60)
    gpu: int | None = Field(None, ge=0, le=1024)


class TaskConfigModel(Strict):
    cache: bool = False
    cache_version: str = Field("", max_length=200)
    retries: int = Field(0, ge=0, le=100)
    system_retries: int = Field(2, ge=0, le=100)
    timeout: float | None = Field(None, gt=0, le=1e9)
    #: "" for the server's default (``papercrane server --executor``).
    executor: str = Field("", max_length=50)
    resources: ResourcesModel = ResourcesModel()
    #: Container image for pod executors (default: the project's, or the server's).
    image: str | None = Field(None, min_length=1, max_length=500, pattern=r"^\S+$")

    def to_config(self) -> TaskConfig:
        data = self.model_dump()
        data["resources"] = Resources(**data["resources"])
        return TaskConfig(**data)


class MapModel(Strict):
    over: str = Name
    as_name: str = Name
    min_success_ratio: float = Field(1.0, ge=0, le=1)
    concurrency: int | None = Field(None, ge=1, le=100_000)

    def to_map(self) -> MapSpec:
        return MapSpec(**self.model_dump())


class BindingModel(Strict):
    #: The upstream node's id, or "" for a workflow parameter.
    node: str = Field("", max_length=200)
    output: str = Name


class NodeModel(Strict):
    id: str = Name
    task: TaskSpecModel
    config: TaskConfigModel = TaskConfigModel()
    bindings: dict[str, BindingModel] = {}
    map: MapModel | None = None
    declared_outputs: list[str] = []
    cell_id: str = Field("", max_length=200)

    @field_validator("declared_outputs")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        return _identifiers(names, "declared_outputs")

    @field_validator("bindings")
    @classmethod
    def _inputs(cls, bindings: dict[str, BindingModel]) -> dict[str, BindingModel]:
        _identifiers(list(bindings), "bindings' keys (the node's inputs)")
        return bindings

    @model_validator(mode="after")
    def _mapped_input(self) -> NodeModel:
        if self.map is not None and self.map.over not in self.bindings:
            raise ValueError(
                f"node {self.id!r} maps over {self.map.over!r}, which is not one of its "
                f"inputs ({', '.join(sorted(self.bindings)) or 'none'})"
            )
        return self


class WorkflowModel(Strict):
    name: str = Name
    nodes: list[NodeModel] = Field(min_length=1, max_length=200_000)

    @model_validator(mode="after")
    def _acyclic(self) -> WorkflowModel:
        """Every binding reads an earlier node (so there is no cycle) by its id."""
        earlier: set[str] = set()
        for i, n in enumerate(self.nodes):
            if n.id in earlier:
                raise ValueError(f"nodes[{i}]: node id {n.id!r} is used twice")
            for name, b in sorted(n.bindings.items()):
                if b.node and b.node not in earlier:
                    which = "itself" if b.node == n.id else f"{b.node!r}"
                    raise ValueError(
                        f"node {n.id!r} binds input {name!r} to {which}, which is not an "
                        "earlier node of this workflow (nodes are listed in order; an input "
                        'reads an upstream node\'s output, or a parameter with node "")'
                    )
            earlier.add(n.id)
        return self

    def to_spec(self) -> WorkflowSpec:
        nodes = tuple(
            NodeSpec(
                id=n.id,
                task=n.task.to_spec(),
                config=n.config.to_config(),
                bindings={k: Binding(b.node, b.output) for k, b in n.bindings.items()},
                map=n.map.to_map() if n.map else None,
                cell_id=n.cell_id,
                declared_outputs=tuple(n.declared_outputs),
            )
            for n in self.nodes
        )
        return WorkflowSpec(self.name, nodes)


class RegisterTask(Strict):
    spec: TaskSpecModel
    #: If given, must equal the version the server computes from ``spec``.
    version: str | None = None


class RegisterWorkflow(Strict):
    spec: WorkflowModel
    version: str | None = None


class Registered(BaseModel):
    version: str


class VersionRow(BaseModel):
    version: str
    name: str
    created_at: float


class VersionOut(BaseModel):
    version: str
    name: str
    spec: dict[str, Any]


class Aborting(BaseModel):
    id: str
    status: Literal["aborting"]


class Source(Strict):
    execution: str = ""
    node: str = ""


class CreateExecution(Strict):
    """Either a single ``task`` (with ``config`` and ``inputs``) or a ``workflow``
    (with ``params``); inputs and params name artifact ids uploaded beforehand."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"oneOf": [{"required": ["task"]}, {"required": ["workflow"]}]},
    )

    task: TaskSpecModel | None = None
    config: TaskConfigModel = TaskConfigModel()
    inputs: dict[str, str] = {}
    map: MapModel | None = None
    declared_outputs: list[str] = []
    workflow: WorkflowModel | None = None
    params: dict[str, str] = {}
    max_parallel: int = Field(4, ge=1, le=10_000)
    failure_policy: Literal["fail-fast", "continue"] = "fail-fast"
    sources: dict[str, Source] = {}

    @model_validator(mode="after")
    def _one_thing(self) -> CreateExecution:
        if (self.task is None) == (self.workflow is None):
            raise ValueError("give exactly one of 'task' or 'workflow'")
        if self.workflow is not None and (self.inputs or self.map or self.declared_outputs):
            raise ValueError(
                "'inputs', 'map' and 'declared_outputs' are for a single task; a workflow "
                "takes 'params' (and each node its own map and outputs)"
            )
        if self.task is not None and self.params:
            raise ValueError("'params' are for a workflow; a single task takes 'inputs'")
        if self.map is not None and self.map.over not in self.inputs:
            raise ValueError(
                f"map over {self.map.over!r}: it is not one of the inputs "
                f"({', '.join(sorted(self.inputs)) or 'none'})"
            )
        _identifiers(list(self.inputs), "inputs' keys")
        _identifiers(self.declared_outputs, "declared_outputs")
        return self


class Created(BaseModel):
    id: str
    url: str


class Recover(Strict):
    max_parallel: int = Field(4, ge=1, le=10_000)
    #: A registered version of the same workflow, edited since the execution ran: its
    #: changed nodes (and what is downstream of them) run again too.
    workflow_version: str | None = Field(None, min_length=1, max_length=64)


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorOut(BaseModel):
    """Every error: ``detail`` says what is wrong and names the field or object;
    a request that fails validation also lists each problem in ``errors``."""

    detail: str
    errors: list[FieldError] | None = None
    #: A 413's limit, in bytes (``--max-upload``, or the API's body limit).
    limit: int | None = None


class ErrorModel(BaseModel):
    kind: str
    type: str
    message: str
    traceback: str = ""
    # False: not retried, another attempt would fail the same way (a missing image)
    retryable: bool = True


class NodeModelOut(BaseModel):
    status: str
    attempt: int
    cache: str
    cache_key: str = ""
    outputs: dict[str, str] = {}
    error: ErrorModel | None = None
    started_at: float | None = None
    ended_at: float | None = None
    elements: int = 0
    elements_done: int = 0
    elements_failed: int = 0
    #: Where a started attempt is ("pending: Unschedulable: ...", "running").
    where: str = ""


class ExecutionOut(BaseModel):
    id: str
    project: str
    domain: str
    name: str
    kind: str
    status: str
    task_version: str = ""
    workflow_version: str = ""
    recovered_from: str = ""
    created_at: float
    ended_at: float | None = None
    inputs: dict[str, str] = {}
    nodes: dict[str, NodeModelOut] = {}
    error: ErrorModel | None = None
    last_seq: int = 0

    @classmethod
    def of(cls, s: ExecutionState) -> ExecutionOut:
        return cls(
            id=s.id,
            project=s.project,
            domain=s.domain,
            name=s.name,
            kind=s.kind,
            status=s.status.value,
            task_version=s.task_version,
            workflow_version=s.workflow_version,
            recovered_from=s.recovered_from,
            created_at=s.created_at,
            ended_at=s.ended_at,
            inputs=s.inputs,
            nodes={
                k: NodeModelOut(
                    status=n.status.value,
                    attempt=n.attempt,
                    cache=n.cache,
                    cache_key=n.cache_key,
                    outputs=n.outputs,
                    error=ErrorModel(**n.error.to_dict()) if n.error else None,
                    started_at=n.started_at,
                    ended_at=n.ended_at,
                    elements=n.elements,
                    elements_done=n.elements_done,
                    elements_failed=n.elements_failed,
                    where=n.where,
                )
                for k, n in s.nodes.items()
            },
            error=ErrorModel(**s.error.to_dict()) if s.error else None,
            last_seq=s.last_seq,
        )


class ExecutionRow(BaseModel):
    id: str
    project: str
    domain: str
    name: str
    kind: str
    status: str
    created_at: float
    ended_at: float | None = None


class ExecutionPage(BaseModel):
    items: list[ExecutionRow]
    #: Pass as ``before`` to get the next (older) page; null at the end.
    next_before: float | None = None


class EventOut(BaseModel):
    seq: int
    execution_id: str
    kind: str
    node: str
    attempt: int
    ts: float
    payload: dict[str, Any]


class ArtifactOut(BaseModel):
    id: str
    hash: str
    uri: str
    size: int
    serializer: str
    python_type: str
    preview: str = ""

    @classmethod
    def of(cls, ref: ArtifactRef) -> ArtifactOut:
        return cls(**ref.to_dict())


class CacheEntryOut(BaseModel):
    key: str
    project: str
    domain: str
    task_name: str
    task_version: str
    execution_id: str
    created_at: float
    outputs: dict[str, Any]


class Cleared(BaseModel):
    cleared: int


class Whoami(BaseModel):
    project: str
    role: str
    name: str = ""
