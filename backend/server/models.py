"""The HTTP API's request and response models (pydantic), apart from the engine's own
dataclasses: they validate what clients send (unknown fields are refused, not ignored)
and document the API in OpenAPI."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..model import ArtifactRef, Environment, ExecutionState, Resources, TaskConfig, TaskSpec
from ..workflow import Binding, MapSpec, NodeSpec, WorkflowSpec

Name = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
Id = Field(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
    first_line: int = Field(2, ge=1)
    sources: dict[str, tuple[str, str]] = {}

    def to_spec(self) -> TaskSpec:
        data = self.model_dump()
        data["environment"] = Environment(**data["environment"])
        for key in ("inputs", "outputs", "imports"):
            data[key] = tuple(data[key])
        return TaskSpec(**data)


class ResourcesModel(Strict):
    cpu: float | None = Field(None, gt=0)
    memory: int | None = Field(None, gt=0)
    gpu: int | None = Field(None, ge=0)


class TaskConfigModel(Strict):
    cache: bool = False
    cache_version: str = Field("", max_length=200)
    retries: int = Field(0, ge=0, le=100)
    system_retries: int = Field(2, ge=0, le=100)
    timeout: float | None = Field(None, gt=0)
    executor: str = Field("local", max_length=50)
    resources: ResourcesModel = ResourcesModel()

    def to_config(self) -> TaskConfig:
        data = self.model_dump()
        data["resources"] = Resources(**data["resources"])
        return TaskConfig(**data)


class MapModel(Strict):
    over: str = Name
    as_name: str = Name
    min_success_ratio: float = Field(1.0, ge=0, le=1)
    concurrency: int | None = Field(None, ge=1)

    def to_map(self) -> MapSpec:
        return MapSpec(**self.model_dump())


class BindingModel(Strict):
    node: str = ""
    output: str = Name


class NodeModel(Strict):
    id: str = Name
    task: TaskSpecModel
    config: TaskConfigModel = TaskConfigModel()
    bindings: dict[str, BindingModel] = {}
    map: MapModel | None = None
    declared_outputs: list[str] = []
    cell_id: str = ""


class WorkflowModel(Strict):
    name: str = Name
    nodes: list[NodeModel] = Field(min_length=1, max_length=200_000)

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


class Source(Strict):
    execution: str = ""
    node: str = ""


class CreateExecution(Strict):
    """Either a single ``task`` (with ``config`` and ``inputs``) or a ``workflow``
    (with ``params``); inputs and params name artifact ids uploaded beforehand."""

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


class Created(BaseModel):
    id: str
    url: str


class Recover(Strict):
    max_parallel: int = Field(4, ge=1, le=10_000)


class ErrorModel(BaseModel):
    kind: str
    type: str
    message: str
    traceback: str = ""


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
