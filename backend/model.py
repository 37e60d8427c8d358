"""The nouns of papercrane as plain dataclasses: specs, artifacts, events, states.

Dataclasses (not pydantic) keep ``%load_ext papercrane`` cheap; the server's API models
are a separate layer. Every spec has a ``to_dict``/``from_dict`` pair because the same
spec crosses process boundaries (runner subprocess, pod, HTTP) as JSON.
"""

from __future__ import annotations

import ast
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from enum import Enum
from functools import cached_property
from typing import Any

from .hashing import sha256_json


class Status(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CACHED = "cached"
    ABORTED = "aborted"
    SKIPPED = "skipped"  # a node that never ran: an upstream failed, or fail-fast stopped
    RECOVERED = "recovered"  # a node whose outputs were taken from the recovered execution

    @property
    def terminal(self) -> bool:
        return self not in (Status.QUEUED, Status.RUNNING)

    @property
    def ok(self) -> bool:
        """Finished with outputs that downstream nodes can use."""
        return self in (Status.SUCCEEDED, Status.CACHED, Status.RECOVERED)


class EventKind(str, Enum):
    """What an event records. A node's life: ``node_queued``, then ``cache_hit`` (its end),
    or ``cache_miss`` and its attempts (``attempt_started`` ... ``attempt_succeeded`` or
    ``attempt_failed``, ``retry_scheduled``), then ``node_succeeded`` or ``node_failed``.

    A map element (node ``name[i]``) records less, as a map has thousands: a hit is one
    ``cache_hit``; otherwise its attempts, the first ``attempt_started`` naming the cache
    key that missed (``cache_key`` in its payload), and a successful attempt is the
    element's end (no ``node_succeeded``). An element that fails for good still ends with
    ``node_failed``. Stores written before 2026-12-07 also have each element's
    ``cache_miss`` and ``node_succeeded``; ``projection.fold`` reads both forms."""

    EXECUTION_CREATED = "execution_created"
    NODE_QUEUED = "node_queued"
    CACHE_HIT = "cache_hit"
    CACHE_MISS = "cache_miss"
    CACHE_INVALID = "cache_invalid"
    ATTEMPT_STARTED = "attempt_started"
    #: Where a started attempt is: "pending: Unschedulable: 0/1 nodes ...", "running".
    ATTEMPT_STATUS = "attempt_status"
    LOG_STORED = "log_stored"
    ATTEMPT_SUCCEEDED = "attempt_succeeded"
    ATTEMPT_FAILED = "attempt_failed"
    RETRY_SCHEDULED = "retry_scheduled"
    NODE_SUCCEEDED = "node_succeeded"
    NODE_FAILED = "node_failed"
    NODE_SKIPPED = "node_skipped"
    NODE_RECOVERED = "node_recovered"
    MAP_EXPANDED = "map_expanded"
    EXECUTION_SUCCEEDED = "execution_succeeded"
    EXECUTION_FAILED = "execution_failed"
    EXECUTION_ABORTED = "execution_aborted"


class ErrorKind(str, Enum):
    USER = "user"
    SYSTEM = "system"


@dataclass(frozen=True)
class Resources:
    cpu: float | None = None
    memory: int | None = None
    gpu: int | None = None


@dataclass(frozen=True)
class TaskConfig:
    """How to run a task. Not part of its version: retrying more does not change code."""

    cache: bool = False
    cache_version: str = ""
    retries: int = 0
    system_retries: int = 2
    timeout: float | None = None
    #: "" means the engine's default (``local`` embedded; the server's ``--executor``).
    executor: str = ""
    resources: Resources = field(default_factory=Resources)
    #: Container image for pod executors (default: the project's, or the server's).
    image: str | None = None

    def to_dict(self) -> dict[str, Any]:
        # Every field is a scalar or ``Resources`` (scalars): ``asdict``'s deep copy
        # cost more than the rest of recording a cache hit's execution.
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["resources"] = {n: getattr(self.resources, n) for n in Resources.__dataclass_fields__}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskConfig:
        """Tolerates extra keys (an execution's recorded config also holds its map)."""
        known = {f for f in cls.__dataclass_fields__}
        data = {k: v for k, v in data.items() if k in known}
        data["resources"] = Resources(**data.get("resources") or {})
        return cls(**data)


@dataclass(frozen=True)
class Environment:
    """What the code needs around it: interpreter and imported distributions.

    ``packages`` maps distribution name to version; ``local_modules`` maps an importable
    module that belongs to no distribution (a helper .py next to the notebook) to the
    hash of its source, so editing that file invalidates the cache as well.
    """

    python: str = field(default_factory=lambda: python_version())
    packages: dict[str, str] = field(default_factory=dict)
    local_modules: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Environment:
        return cls(**data)


def python_version() -> str:
    impl = sys.implementation.name
    v = sys.version_info
    return f"{impl}-{v.major}.{v.minor}.{v.micro}"


@dataclass(frozen=True)
class TaskSpec:
    """A captured cell. Immutable; its version is a hash of everything but config."""

    name: str
    code: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    input_types: dict[str, str] = field(default_factory=dict)
    imports: tuple[str, ...] = ()
    environment: Environment = field(default_factory=Environment)
    source: str = ""
    display_last: bool = False
    #: Line of the cell where ``code`` starts (2: after the ``%%task`` line), so that
    #: tracebacks point at the line numbers the notebook shows.
    first_line: int = 2
    #: Source text and a display label ("In[3]") of the cells that defined functions
    #: the task calls, so tracebacks from another process still show those lines.
    #: Not part of the version: only the code's structure is.
    sources: dict[str, tuple[str, str]] = field(default_factory=dict)

    @cached_property
    def _identity(self) -> dict[str, Any]:
        return {
            "code": self.normalized_code(),
            "interface": self.interface(),
            "imports": sorted(self.imports),
            "environment": self.environment.to_dict(),
        }

    @cached_property
    def _version(self) -> str:
        return sha256_json({"name": self.name, **self._identity})

    def normalized_code(self) -> str:
        """The AST, not the text: whitespace and comments do not make a new version."""
        return ast.dump(ast.parse(self.code), annotate_fields=False)

    def interface(self) -> dict[str, Any]:
        return {
            # Input types are recorded but not hashed: the inputs' fingerprints already
            # say what they are, and a deferred (batch) capture cannot know the type of a
            # value an upstream task has yet to produce.
            # Outputs are bound back by name, so ``--outputs c,d`` and ``--outputs d,c``
            # are one task and share a cache entry.
            "inputs": sorted(self.inputs),
            "outputs": sorted(set(self.outputs)),
            "display_last": self.display_last,
        }

    def identity(self) -> dict[str, Any]:
        """Code structure, interface, imports and environment: what the version hashes."""
        return dict(self._identity)

    def version(self) -> str:
        return self._version

    def cache_identity(self, cache_version: str) -> str:
        """Like the version but without the name: renaming a task keeps its cache.
        Remembered per cache version: a re-run cell keeps its spec (and this)."""
        found = self._cache_identities.get(cache_version)
        if found is None:
            found = sha256_json({**self._identity, "cache_version": cache_version})
            self._cache_identities[cache_version] = found
        return found

    @cached_property
    def _cache_identities(self) -> dict[str, str]:
        return {}

    def reusing(self, earlier: TaskSpec | None) -> TaskSpec:
        """``earlier`` itself when it is the same spec; this spec with ``earlier``'s
        computed identity when they differ only in ``sources`` (a re-run cell has a
        new ``In[n]`` label, which the version leaves out). Either way a re-run cell
        does not dump and hash its code again."""
        if earlier is None:
            return self
        if earlier == self:
            return earlier
        if all(
            getattr(earlier, name) == getattr(self, name)
            for name in self.__dataclass_fields__
            if name != "sources"
        ):
            for cached in ("_identity", "_version", "_cache_identities"):
                if cached in earlier.__dict__:
                    self.__dict__[cached] = earlier.__dict__[cached]
        return self

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["environment"] = self.environment.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskSpec:
        data = dict(data)
        data["environment"] = Environment.from_dict(data["environment"])
        for key in ("inputs", "outputs", "imports"):
            data[key] = tuple(data[key])
        data["sources"] = {k: tuple(v) for k, v in data.get("sources", {}).items()}
        return cls(**data)


@dataclass(frozen=True)
class ArtifactRef:
    """One stored value. ``id`` is the value's fingerprint (stable for equal values, also
    for functions whose pickle bytes differ); ``hash`` is the digest of the stored bytes
    (sha256, or ``blake3-...`` past ``hashing.LARGE``) and addresses them in storage."""

    id: str
    hash: str
    uri: str
    size: int
    serializer: str
    python_type: str
    preview: str = ""

    def to_dict(self) -> dict[str, Any]:
        # Spelled out: ``asdict`` deep-copies field by field, and a map turns thousands
        # of refs into dicts (events, cache entries, artifact rows).
        return {
            "id": self.id,
            "hash": self.hash,
            "uri": self.uri,
            "size": self.size,
            "serializer": self.serializer,
            "python_type": self.python_type,
            "preview": self.preview,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArtifactRef:
        return cls(**data)


@dataclass(frozen=True)
class Event:
    execution_id: str
    kind: EventKind
    node: str = ""
    attempt: int = 0
    payload: dict[str, Any] = field(default_factory=dict)
    ts: float = field(default_factory=time.time)
    seq: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = self.kind.value
        return data


#: Each ``EventKind`` by its value.
_KINDS: dict[str, EventKind] = {k.value: k for k in EventKind}


class EventColumns:
    """One execution's events waiting for their transaction, kept field by field.

    A map emits two events per element, and a scheduling round keeps hundreds to
    thousands of them until its flush: long enough for Python's collector to move them
    to its oldest generation, whose full collections (tens of ms with a notebook's heap)
    are triggered by how many objects got there. An ``Event`` is two container objects
    (itself and its ``__dict__``); here the fields sit in six lists of strings, numbers
    and payload dicts, and a payload of strings and numbers alone (a map element's
    ``attempt_started``) is not a container the collector tracks. The events handed to the
    listener after the commit are equal to the ones emitted."""

    __slots__ = ("execution_id", "kinds", "nodes", "attempts", "stamps", "payloads")
    #: The per-event lists, which move together.
    _COLUMNS = ("kinds", "nodes", "attempts", "stamps", "payloads")

    def __init__(self, execution_id: str) -> None:
        self.execution_id = execution_id
        self.kinds: list[str] = []
        self.nodes: list[str] = []
        self.attempts: list[int] = []
        self.stamps: list[float] = []
        self.payloads: list[dict[str, Any]] = []

    @classmethod
    def of(cls, events: list[Event]) -> EventColumns:
        """``events`` (all of one execution) as columns."""
        columns = cls(events[0].execution_id if events else "")
        for event in events:
            columns.add(event)
        return columns

    def add(self, event: Event) -> None:
        self.append(event.kind.value, event.node, event.attempt, event.ts, event.payload)

    def append(
        self, kind: str, node: str, attempt: int, ts: float, payload: dict[str, Any]
    ) -> None:
        """One event, by its fields (``kind`` as its value): what the scheduler emits,
        with no ``Event`` built for it."""
        self.kinds.append(kind)
        self.nodes.append(node)
        self.attempts.append(attempt)
        self.stamps.append(ts)
        self.payloads.append(payload)

    def __len__(self) -> int:
        return len(self.kinds)

    def take(self) -> EventColumns:
        """The events so far, as a batch of their own; this one is left empty."""
        batch = EventColumns(self.execution_id)
        for name in self._COLUMNS:
            setattr(batch, name, getattr(self, name))
            setattr(self, name, [])
        return batch

    def pop(self) -> None:
        """Drop the latest event."""
        for name in self._COLUMNS:
            getattr(self, name).pop()

    def clear(self) -> None:
        for name in self._COLUMNS:
            getattr(self, name).clear()

    def put_back(self, batch: EventColumns) -> None:
        """Return a batch ``take`` gave (its write failed) before the events since."""
        for name in self._COLUMNS:
            getattr(self, name)[:0] = getattr(batch, name)

    def has(self, kind: EventKind) -> bool:
        return kind.value in self.kinds

    def rows(self, payload: Any) -> list[tuple[str, str, int, str, float, Any]]:
        """(execution_id, node, attempt, kind, ts, ``payload(payload)``) per event."""
        eid = self.execution_id
        return [
            (eid, node, attempt, kind, ts, payload(p))
            for node, attempt, kind, ts, p in zip(
                self.nodes, self.attempts, self.kinds, self.stamps, self.payloads
            )
        ]

    def numbered(self, seqs: list[int]) -> Iterator[Event]:
        """The events, with the sequence numbers the store gave them, one at a time."""
        eid = self.execution_id
        for kind, node, attempt, ts, payload, seq in zip(
            self.kinds, self.nodes, self.attempts, self.stamps, self.payloads, seqs
        ):
            event = object.__new__(Event)
            fields = event.__dict__
            fields["execution_id"] = eid
            fields["kind"] = _KINDS[kind]
            fields["node"] = node
            fields["attempt"] = attempt
            fields["payload"] = payload
            fields["ts"] = ts
            fields["seq"] = seq
            yield event


@dataclass
class ErrorInfo:
    kind: ErrorKind
    type: str
    message: str
    traceback: str = ""
    #: False: another attempt would fail the same way (a missing image), so the task's
    #: --retries were not spent on it. Written only when False.
    retryable: bool = True

    def to_dict(self) -> dict[str, Any]:
        data = {
            "kind": self.kind.value,
            "type": self.type,
            "message": self.message,
            "traceback": self.traceback,
        }
        if not self.retryable:
            data["retryable"] = False
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ErrorInfo:
        return cls(
            ErrorKind(data["kind"]),
            data["type"],
            data["message"],
            data["traceback"],
            data.get("retryable", True) is not False,
        )


@dataclass
class NodeState:
    """The projection of one node's events; never stored as truth, always rebuildable."""

    node: str
    status: Status = Status.QUEUED
    attempt: int = 0
    user_failures: int = 0
    system_failures: int = 0
    cache: str = "off"  # off | hit | miss | invalid
    cache_key: str = ""
    cache_source: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    references: dict[str, str] = field(default_factory=dict)
    display: dict[str, Any] | None = None
    error: ErrorInfo | None = None
    started_at: float | None = None
    ended_at: float | None = None
    logs: dict[int, dict[str, str]] = field(default_factory=dict)
    #: The latest ATTEMPT_STATUS message (a pod's scheduling reason, say).
    where: str = ""
    #: The executor its latest attempt ran on (ATTEMPT_STARTED's ``executor``): the
    #: engine's default when the task named none, which only the engine knows.
    executor: str = ""
    #: Map nodes: how many elements, and how many finished well or badly so far.
    elements: int = 0
    elements_done: int = 0
    elements_failed: int = 0
    elements_cached: int = 0


@dataclass
class ExecutionState:
    id: str
    project: str = "default"
    domain: str = "development"
    name: str = ""
    kind: str = "task"  # task | workflow
    task_version: str = ""
    workflow_version: str = ""
    recovered_from: str = ""
    #: The process running it when the engine runs in the kernel (``owner``); empty
    #: for a server's executions and for those recorded before runners were.
    runner: dict[str, Any] = field(default_factory=dict)
    status: Status = Status.QUEUED
    created_at: float = 0.0
    ended_at: float | None = None
    inputs: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    nodes: dict[str, NodeState] = field(default_factory=dict)
    error: ErrorInfo | None = None
    last_seq: int = 0

    @property
    def duration(self) -> float | None:
        if self.ended_at is None:
            return None
        return self.ended_at - self.created_at
