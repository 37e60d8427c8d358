"""The embedded engine: registration, values, the cache, and running executions.

A single task run is a one-node workflow: both go through the scheduler
(``scheduler.py``), which records every step as an event, committed together with the
rows it depends on (tasks, artifacts, cache entries, lineage). Listeners hear about
events only after they are committed, so what the widget shows is what the store holds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from typing import Any

from . import owner
from .api import EngineAPI
from .artifacts import ArtifactIO
from .config import ANY_SCOPE, Config, check_scope
from .engine_lineage import Lineage
from .engine_runs import API, Runs, WorkflowRequest, check_recoverable
from .errors import CorruptArtifact, NotFound, UserError
from .executors.base import Executor, executor_registry
from .hashing import canonical_json, sha256_json
from .model import (
    ArtifactRef,
    Event,
    EventKind,
    ExecutionState,
    Status,
    TaskSpec,
)
from .projection import apply
from .scheduler import RunOptions
from .serializers import SerializerRegistry
from .storage import Storage
from .store import Store
from .workflow import WorkflowSpec


def cache_key(spec: TaskSpec, cache_version: str, inputs: dict[str, ArtifactRef]) -> str:
    """Code + interface + environment + cache version + the inputs' fingerprints."""
    return sha256_json(
        {
            "task": spec.cache_identity(cache_version),
            "inputs": {name: ref.id for name, ref in sorted(inputs.items())},
        }
    )


def element_cache_keys(
    spec: TaskSpec,
    cache_version: str,
    shared: dict[str, ArtifactRef],
    name: str,
    elements: list[ArtifactRef],
) -> list[str]:
    """``cache_key`` of each element of a map (``shared`` inputs plus the element as
    ``name``), the same strings, with the canonical JSON built once around a
    placeholder instead of once per element."""
    placeholder = "\x00element\x00"
    text = canonical_json(
        {
            "task": spec.cache_identity(cache_version),
            "inputs": {**{n: r.id for n, r in shared.items()}, name: placeholder},
        }
    )
    head, tail = text.split(json.dumps(placeholder, ensure_ascii=False).encode())
    quote = json.JSONEncoder(ensure_ascii=False).encode
    return [
        hashlib.sha256(b"".join((head, quote(ref.id).encode(), tail))).hexdigest()
        for ref in elements
    ]


#: An artifact may be named by its first this many characters (or more).
ARTIFACT_PREFIX = 6
#: Where people find artifact ids, for a message about one that is not found.
ARTIFACT_HINT = (
    f"give its id or at least {ARTIFACT_PREFIX} of its first characters (the outputs of "
    "papercrane executions show EXECUTION --json, or %lineage VARIABLE in a notebook)"
)


def _any(scope: str | None) -> str | None:
    """A project or domain to filter by: None for every one (``ANY_SCOPE``)."""
    return None if scope in (None, ANY_SCOPE) else scope


class LocalEngine(Runs, Lineage, EngineAPI):
    """The in-process engine over SQLite (or any SQLAlchemy URL) and fsspec storage."""

    #: Whether this process may decode user values (the kernel and CLI may; a shared
    #: server must not: pickles are code). When False, map steps run in runners and no
    #: output values are loaded here.
    unpickles: bool = True
    #: Shared limits on running attempts across executions (a server's fair share);
    #: None: each execution is limited only by its own --max-parallel.
    gate: Any = None
    #: Whether the executions this engine runs live and die with this process (a kernel,
    #: ``papercrane run``): they record it (``owner``), so one it left running when it
    #: was killed is found and recorded as aborted. A server resumes its own instead.
    runs_in_process: bool = True

    def __init__(self, config: Config | None = None, store: Store | None = None) -> None:
        self.config = config or Config.from_env()
        self.storage = Storage(self.config.storage_url)
        self.storage.check_writable()
        #: A server's engines (one per project and domain) share one store.
        self._owns_store = store is None
        self.store = store if store is not None else Store(self.config.db_url)
        self.artifacts = ArtifactIO(
            self.storage,
            SerializerRegistry(self.config.home / "cache" / "serializer-entry-points.json"),
        )
        self._executors: dict[str, Executor] = {}
        self._registry = executor_registry()
        #: Task and workflow versions known to be in the store (and storage).
        self._registered: set[str] = set()
        #: Artifact rows this engine has written: no need to insert-ignore them again.
        self._recorded: set[str] = set()
        self._pending_recorded: list[str] = []
        self._pending_registered: list[str] = []
        #: Held around each write transaction (``recording``): the pending lists above
        #: belong to one transaction at a time, and an inline task's start may be
        #: written from a helper thread (``WorkflowRun._write_start``).
        self._writing = threading.RLock()

    def close(self) -> None:
        for executor in self._executors.values():
            executor.close()
        if self._owns_store:
            self.store.close()

    @staticmethod
    def new_execution_id() -> str:
        """16 random hex digits (64 bits; ``uuid4`` costs several times more, per run)."""
        return os.urandom(8).hex()

    # -- registration ---------------------------------------------------------------------
    #: The executor of tasks that don't name one.
    default_executor: str = "local"
    #: A server's engine serves one project: its lineage stays inside it.
    scope_project: str | None = None
    #: The storage this engine's artifact rows belong to: '' where a store's projects
    #: share one storage, "project/domain" on a server (schema revision 0008). An id
    #: names a value, not its bytes (a function's pickle differs per kernel), so each
    #: storage keeps its own row for it.
    artifact_scope: str = ""

    def executor(self, name: str) -> Executor:
        name = name or self.default_executor
        ex = self._executors.get(name)
        if ex is None:
            ex = self._executors[name] = self._registry.load(name)(self.artifacts)
        return ex

    def bundle(self, spec: TaskSpec) -> tuple[str, str]:
        """(version, storage key) of the task's bundle, written once: runners read it."""
        version = spec.version()
        key = f"tasks/{version}.json"
        if version not in self._registered and not self.storage.exists(key):
            self.storage.write_bytes(key, json.dumps(spec.to_dict()).encode())
        return version, key

    def record_task(
        self, conn: Any, spec: TaskSpec, version: str, key: str, options: RunOptions
    ) -> None:
        scoped = f"{version}@{options.project}/{options.domain}"
        if scoped in self._registered:
            return
        self.store.put_task(
            conn,
            {
                "version": version,
                "name": spec.name,
                "project": options.project,
                "domain": options.domain,
                "bundle_key": key,
                "spec": spec.to_dict(),
            },
        )
        self._pending_registered += [version, scoped]

    def record_workflow(self, conn: Any, spec: WorkflowSpec, options: RunOptions) -> str:
        version = spec.version()
        scoped = f"{version}@{options.project}/{options.domain}"
        if scoped not in self._registered:
            self.store.put_workflow(
                conn,
                {
                    "version": version,
                    "name": spec.name,
                    "project": options.project,
                    "domain": options.domain,
                    "spec": spec.to_dict(),
                },
            )
            self._pending_registered += [version, scoped]
        return version

    def _record_artifacts(self, conn: Any, refs: Any) -> None:
        """Insert artifact rows not yet known to be in the store. They are remembered
        only once the transaction commits (``_committed``)."""
        new = [r for r in refs if r.id not in self._recorded]
        if new:
            self.store.put_artifacts(conn, new, self.artifact_scope)
            self._pending_recorded.extend(r.id for r in new)

    @contextlib.contextmanager
    def recording(self) -> Iterator[Any]:
        """One write transaction of this engine's: the rows it inserts are remembered
        as stored (``_recorded``, ``_registered``) only once it commits."""
        with self._writing:
            try:
                with self.store.transaction() as conn:
                    yield conn
            except BaseException:
                self._rolled_back()
                raise
            self._committed()

    def _committed(self) -> None:
        self._recorded.update(self._pending_recorded)
        self._registered.update(self._pending_registered)
        self._pending_recorded.clear()
        self._pending_registered.clear()

    def _rolled_back(self) -> None:
        self._pending_recorded.clear()
        self._pending_registered.clear()

    def register_task(self, spec: TaskSpec, project: str, domain: str) -> str:
        check_scope(project, domain, where=API)
        version, key = self.bundle(spec)
        with self.recording() as conn:
            self.record_task(conn, spec, version, key, RunOptions(project, domain))
        return version

    def register_workflow(self, spec: WorkflowSpec, project: str, domain: str) -> str:
        """Register a workflow and its tasks; the same content twice is a no-op."""
        check_scope(project, domain, where=API)
        options = RunOptions(project, domain)
        bundles = [self.bundle(n.task) for n in spec.nodes]
        with self.recording() as conn:
            for n, (version, key) in zip(spec.nodes, bundles):
                self.record_task(conn, n.task, version, key, options)
            version = self.record_workflow(conn, spec, options)
        return version

    def workflow(self, version: str) -> WorkflowSpec:
        row = self.store.workflow(version)
        if row is None:
            raise NotFound(f"no workflow version {version!r}")
        versions = [n["task"] for n in row["spec"]["nodes"]]
        tasks = {v: TaskSpec.from_dict(r["spec"]) for v, r in self.store.tasks(versions).items()}
        return WorkflowSpec.from_dict(row["spec"], tasks)

    # -- values ---------------------------------------------------------------------------
    def put_value(self, value: Any, what: str, fingerprint: str | None = None) -> ArtifactRef:
        """Store a value (bytes in storage, a row in the store), findable by its id."""
        ref = self.artifacts.put(value, what, fingerprint)
        if ref.id not in self._recorded:
            self.register_artifacts([ref])
        return ref

    def register_artifacts(self, refs: list[ArtifactRef]) -> None:
        """Record stored values (an upload) so executions can name them."""
        with self.recording() as conn:
            self._record_artifacts(conn, refs)

    def register_upload(self, ref: ArtifactRef) -> None:
        """Record an uploaded value, in place of this storage's row for its id if that
        row's bytes are lost (an insert would keep the row that names them)."""
        with self.recording() as conn:
            self.store.replace_artifact(conn, ref, self.artifact_scope)
            self._pending_recorded.append(ref.id)

    def find_artifact(self, artifact_id: str) -> ArtifactRef | None:
        """The value's row, if its bytes are in this engine's storage."""
        ref = self.store.artifact(artifact_id, self.artifact_scope)
        if ref is not None and self.artifacts.intact(ref):
            return ref
        return None

    def artifact(self, artifact_id: str) -> ArtifactRef:
        """An artifact by its id, or by its first ``ARTIFACT_PREFIX`` characters or more
        where they are one artifact's alone."""
        ref = self.store.artifact(artifact_id, self.artifact_scope)
        if ref is not None:
            return ref
        if len(artifact_id) < ARTIFACT_PREFIX:
            raise NotFound(f"no artifact {artifact_id!r}; {ARTIFACT_HINT}")
        matches = self.store.artifacts_by_prefix(artifact_id, self.artifact_scope)
        if len(matches) > 1:
            raise UserError(
                f"{artifact_id!r} is the start of several artifacts' ids: "
                f"{', '.join(m.id[:16] for m in matches)}...; give more characters"
            )
        if not matches:
            raise NotFound(f"no artifact {artifact_id!r}; {ARTIFACT_HINT}")
        return matches[0]

    def load(self, ref: ArtifactRef) -> Any:
        return self.artifacts.load(ref)

    # -- the cache ------------------------------------------------------------------------
    @staticmethod
    def cache_key(spec: TaskSpec, cache_version: str, inputs: dict[str, ArtifactRef]) -> str:
        return cache_key(spec, cache_version, inputs)

    element_cache_keys = staticmethod(element_cache_keys)

    def cache_lookup(
        self,
        key: str,
        project: str,
        domain: str,
        want_values: bool,
        prefetched: dict[str, dict[str, Any]] | None = None,
    ) -> tuple[tuple[dict[str, Any], dict[str, ArtifactRef], dict[str, Any]] | None, str]:
        """((entry, outputs, values), "") on a good hit; (None, reason) when an entry
        existed but its values are damaged or gone: it is deleted, never served.
        ``prefetched``: entries already read for a batch of keys (a map's elements)."""
        if prefetched is not None:
            entry = prefetched.get(key)
        else:
            entry = self.store.cache_get(key, project, domain)
        if entry is None:
            return None, ""
        outputs = {n: ArtifactRef.from_dict(d) for n, d in entry["outputs"].items()}
        values: dict[str, Any] = {}
        try:
            for name, ref in outputs.items():
                if want_values:  # reading verifies the hash: missing or damaged raises
                    values[name] = self.artifacts.load(ref)
                elif not self.artifacts.intact(ref):
                    raise CorruptArtifact(f"output {name!r} is missing from storage")
        except CorruptArtifact as exc:
            self.store.cache_delete(key, project, domain)
            return None, str(exc)
        return (entry, outputs, values), ""

    # -- queries --------------------------------------------------------------------------
    def execution(self, execution_id: str) -> ExecutionState:
        """An execution by its id, or by the start of it (``complete_execution_id``)."""
        state = self.store.execution(execution_id)
        if state is None:
            state = self.store.execution(self.complete_execution_id(execution_id))
            if state is None:  # (deleted in between)
                raise NotFound(f"no execution {execution_id!r}")
        return self._settle_lost(state)

    def events(self, execution_id: str, after: int = 0) -> list[Event]:
        return self.store.events(execution_id, after)

    def list_executions(self, limit: int | None = 50, **filters: Any) -> list[dict[str, Any]]:
        rows = self.store.list_executions(limit=limit, **filters)
        if not self.runs_in_process:  # (a server's store holds only its own executions)
            return rows
        for row in rows:
            # (a running one is checked from its first event: a listing polled while a
            # big map runs must not replay the map's events each time)
            if row["status"] in ("queued", "running") and owner.gone(self.store.runner(row["id"])):
                state = self.execution(row["id"])
                row.update(status=state.status.value, ended_at=state.ended_at)
        if filters.get("status"):
            rows = [r for r in rows if r["status"] == filters["status"]]
        return rows

    def _settle_lost(self, state: ExecutionState) -> ExecutionState:
        """An execution still "running" whose process is gone (``owner``) is recorded as
        aborted, once: the check and the event share one write transaction, so two
        readers finding it at once write one event between them."""
        if (
            state.status.terminal
            or not state.runner
            or not self.runs_in_process
            or not owner.gone(state.runner)
        ):
            return state
        runner = state.runner
        reason = (
            f"lost: the process that ran it (pid {runner.get('pid')} on {runner.get('host')}) "
            "ended before it did (a kernel restart, a kill or a crash)"
        )
        with self.recording() as conn:  # (holds the write lock: one reader settles it)
            current = self.store.execution(state.id)
            if current is None or current.status.terminal:
                return current or state
            # Its end is its last sign of life, not this read (which may come days later).
            seen = [current.created_at]
            seen += [t for n in current.nodes.values() for t in (n.started_at, n.ended_at) if t]
            payload = {"reason": reason, "ended_at": max(seen)}
            event = Event(state.id, EventKind.EXECUTION_ABORTED, payload=payload)
            apply(current, event)
            self.store.append(conn, [event], current)
        return current

    def logs(self, execution_id: str, node: str, attempt: int, stream: str = "stdout") -> str:
        key = f"runs/{execution_id}/{node}/{attempt}/{stream}.log"
        try:
            return self.storage.read_bytes(key).decode("utf-8", "replace")
        except CorruptArtifact:
            state = self.execution(execution_id)
            found = state.nodes.get(node)
            if found is not None and 0 < attempt <= found.attempt:
                if found.logs.get(attempt, {}).get(stream):
                    # Recorded as stored, and gone: not an attempt that printed nothing.
                    raise NotFound(
                        f"the {stream} of node {node!r}, attempt {attempt}, in {execution_id} "
                        f"was stored, but the storage at {self.storage.url_root} does not "
                        f"have it ({key}): deleted, or PAPERCRANE_STORAGE names another "
                        "storage than the one it ran with"
                    ) from None
                return ""  # the attempt ran and wrote nothing to this stream
            raise NotFound(f"no attempt {attempt} of node {node!r} in {execution_id}") from None

    def cache_list(
        self,
        task_name: str | None = None,
        limit: int | None = None,
        project: str | None = None,
        domain: str | None = None,
    ) -> list[dict[str, Any]]:
        """Cache entries, newest first: of ``project`` and ``domain`` when given (None or
        ``ANY_SCOPE``: every one this store holds)."""
        project, domain = _any(project), _any(domain)
        return self.store.cache_list(
            project=project, domain=domain, task_name=task_name, limit=limit
        )

    def cache_clear(
        self, task_name: str | None = None, project: str | None = None, domain: str | None = None
    ) -> int:
        """Forget cache entries of ``project`` and ``domain`` (None or ``ANY_SCOPE``: in
        every one); how many."""
        project, domain = _any(project), _any(domain)
        return self.store.cache_clear(project=project, domain=domain, task_name=task_name)


__all__ = [
    "LocalEngine",
    "WorkflowRequest",
    "cache_key",
    "check_recoverable",
    "element_cache_keys",
    "Status",
]
