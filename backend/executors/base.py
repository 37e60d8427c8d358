"""The executor interface: run one attempt, stream its logs, stop it when asked."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from ..artifacts import ArtifactIO
from ..model import ArtifactRef, TaskConfig, TaskSpec
from ..plugins import PluginRegistry
from ..runner import AttemptResult


class LogSink(Protocol):
    def log(self, stream: str, text: str) -> None: ...


@dataclass
class AttemptSpec:
    execution_id: str
    node: str
    attempt: int
    task: TaskSpec
    task_key: str
    config: TaskConfig
    inputs: dict[str, ArtifactRef]
    #: In-memory input values, when the caller has them (inline runs skip the load).
    values: dict[str, Any] | None = field(default=None, repr=False)
    declared_outputs: tuple[str, ...] = ()
    #: "run" the task; or, for a map where values stay out of the scheduler's process,
    #: "expand" the list into elements / "collect" element outputs into lists.
    op: str = "run"
    layout: dict[str, Any] | None = None
    project: str = "default"
    domain: str = "development"

    @property
    def config_image(self) -> str | None:
        return self.config.image

    #: Check the captured environment before running (pods: their image may differ).
    strict_environment: bool = False

    @property
    def prefix(self) -> str:
        return f"runs/{self.execution_id}/{self.node}/{self.attempt}"

    @property
    def checkpoint_key(self) -> str:
        """Shared by every attempt of this node in this execution."""
        return f"runs/{self.execution_id}/{self.node}/checkpoint"

    def to_dict(
        self,
    ) -> dict[str, Any]:
        return {
            "execution_id": self.execution_id,
            "node": self.node,
            "attempt": self.attempt,
            "task_key": self.task_key,
            "task_version": self.task.version(),
            "inputs": {k: v.to_dict() for k, v in self.inputs.items()},
            "declared_outputs": list(self.declared_outputs),
            "prefix": self.prefix,
            "config": self.config.to_dict(),
            "op": self.op,
            "layout": self.layout,
            "checkpoint_key": self.checkpoint_key,
            "strict_environment": self.strict_environment,
            # The cell as it is now: the bundle (task_key) is written once per version,
            # which a re-run cell keeps (and an edit of comments or blank lines), so its
            # labels ("In[3]") and text are those of the first run. A traceback must name
            # the cell the user just ran, at the lines the notebook shows now.
            "cell": {
                "code": self.task.code,
                "first_line": self.task.first_line,
                "labels": {name: label for name, (label, _) in self.task.sources.items()},
            },
        }


class Executor(ABC):
    name: ClassVar[str]

    def __init__(self, artifacts: ArtifactIO) -> None:
        self.artifacts = artifacts
        self.storage = artifacts.storage

    #: Whether attempts run in the caller's thread (inline) rather than elsewhere: the
    #: scheduler runs those on its own thread, one at a time, and the others in workers.
    in_process: ClassVar[bool] = False
    #: Whether an attempt may run on the scheduler's own thread when it is the only
    #: work (no worker thread). False for executors that report progress (a pod's
    #: scheduling state) while they wait: those run on a worker so it shows live.
    quick_to_follow: ClassVar[bool] = True
    #: Whether a restarted scheduler can take over an attempt that was running.
    can_adopt: ClassVar[bool] = False
    #: Whether attempts run this very installation of papercrane (in this process, or a
    #: subprocess of this interpreter), so they read every storage layout it writes
    #: (packed values, ``packs.py``). False where the code may be another version (a
    #: pod's image) or is unknown (an executor from another package).
    shares_install: ClassVar[bool] = False

    @abstractmethod
    def run(
        self, attempt: AttemptSpec, sink: LogSink, cancel: threading.Event | None = None
    ) -> AttemptResult:
        """Run one attempt to the end. User errors and timeouts come back in the result.
        Setting ``cancel`` (from another thread) stops the attempt: the result's status
        is then "aborted". ``KeyboardInterrupt`` in the calling thread stops it too and
        propagates."""

    def close(self) -> None:  # noqa: B027 (a hook: most executors hold nothing)
        """Release what the executor holds between attempts (helper processes,
        connections). Called when its engine closes."""


def executor_registry() -> PluginRegistry:
    return PluginRegistry(
        "papercrane.executors",
        {
            "inline": "papercrane.backend.executors.inline:InlineExecutor",
            "local": "papercrane.backend.executors.local:LocalExecutor",
            "kubernetes": "papercrane.backend.executors.kubernetes:KubernetesExecutor",
        },
        "executor",
    )
