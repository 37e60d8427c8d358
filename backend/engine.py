"""The embedded engine: registration, cache, attempts with retries, events.

Everything a run does is an event appended in a transaction together with the rows it
depends on (task, artifacts, cache entry); listeners hear about events only after they
are committed, so what the widget shows is always what the store holds.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from .api import EngineAPI, NullListener, RunListener, RunRequest, RunResult
from .artifacts import ArtifactIO
from .config import Config
from .errors import (
    ConfigError,
    CorruptArtifact,
    ExecutionAborted,
    NotFound,
    TaskFailed,
)
from .executors.base import AttemptSpec, Executor, executor_registry
from .hashing import sha256_json
from .model import ArtifactRef, ErrorKind, Event, EventKind, ExecutionState, TaskSpec
from .projection import apply
from .runner import AttemptResult
from .storage import Storage
from .store import Store

K = EventKind


def new_execution_id() -> str:
    return uuid.uuid4().hex[:16]


def cache_key(spec: TaskSpec, cache_version: str, inputs: dict[str, ArtifactRef]) -> str:
    """Code + interface + environment + cache version + the inputs' fingerprints."""
    return sha256_json(
        {
            "task": spec.cache_identity(cache_version),
            "inputs": {name: ref.id for name, ref in sorted(inputs.items())},
        }
    )


class _Recorder:
    """Folds events into the live state, commits them, then tells the listener."""

    def __init__(self, engine: LocalEngine, state: ExecutionState, listener: RunListener) -> None:
        self.engine = engine
        self.store = engine.store
        self.state = state
        self.listener = listener

    def event(self, kind: EventKind, node: str = "", attempt: int = 0, **payload: Any) -> Event:
        return Event(self.state.id, kind, node, attempt, payload)

    def commit(self, batch: list[Event], before: Any = None) -> None:
        for e in batch:
            apply(self.state, e)
        try:
            with self.store.write() as conn:
                if before is not None:
                    before(conn)
                numbered = self.store.append(conn, batch, self.state)
        except BaseException:
            self.engine._rolled_back()
            raise
        self.engine._committed()
        for e in numbered:
            self.listener.on_event(e, self.state)


class _LogForward:
    def __init__(self, listener: RunListener) -> None:
        self.listener = listener

    def log(self, stream: str, text: str) -> None:
        self.listener.on_log(stream, text)


class LocalEngine(EngineAPI):
    """The in-process engine over SQLite (or any SQLAlchemy URL) and fsspec storage."""

    def __init__(self, config: Config | None = None) -> None:
        self.config = config or Config.from_env()
        self.storage = Storage(self.config.storage_url)
        self.storage.check_writable()
        self.store = Store(self.config.db_url)
        self.artifacts = ArtifactIO(self.storage)
        self._executors: dict[str, Executor] = {}
        self._registry = executor_registry()
        self._registered: set[str] = set()
        #: Artifact rows this engine has written: no need to insert-ignore them again.
        self._recorded: set[str] = set()
        self._pending_recorded: list[str] = []

    def close(self) -> None:
        self.store.close()

    # -- registration and values ------------------------------------------------------------
    def executor(self, name: str) -> Executor:
        ex = self._executors.get(name)
        if ex is None:
            ex = self._executors[name] = self._registry.load(name)(self.artifacts)
        return ex

    def _bundle(self, spec: TaskSpec) -> tuple[str, str]:
        version = spec.version()
        key = f"tasks/{version}.json"
        if version not in self._registered and not self.storage.exists(key):
            self.storage.write_bytes(key, json.dumps(spec.to_dict()).encode())
        return version, key

    def _task_row(self, spec: TaskSpec, version: str, key: str, project: str, domain: str):  # type: ignore[no-untyped-def]
        def write(conn):  # type: ignore[no-untyped-def]
            if version not in self._registered:
                self.store.put_task(
                    conn,
                    {
                        "version": version,
                        "name": spec.name,
                        "project": project,
                        "domain": domain,
                        "bundle_key": key,
                        "spec": spec.to_dict(),
                    },
                )

        return write

    def _record_artifacts(self, conn, refs) -> None:  # type: ignore[no-untyped-def]
        """Insert artifact rows not yet known to be in the store. They are remembered
        only once the transaction commits (see ``_Recorder.commit``)."""
        new = [r for r in refs if r.id not in self._recorded]
        if new:
            self.store.put_artifacts(conn, new)
            self._pending_recorded.extend(r.id for r in new)

    def _committed(self) -> None:
        self._recorded.update(self._pending_recorded)
        self._pending_recorded.clear()

    def _rolled_back(self) -> None:
        self._pending_recorded.clear()

    def register_task(self, spec: TaskSpec, project: str, domain: str) -> str:
        version, key = self._bundle(spec)
        if version not in self._registered:
            with self.store.write() as conn:
                self._task_row(spec, version, key, project, domain)(conn)
            self._registered.add(version)
        return version

    def put_value(self, value: Any, what: str, fingerprint: str | None = None) -> ArtifactRef:
        return self.artifacts.put(value, what, fingerprint)

    def find_artifact(self, artifact_id: str) -> ArtifactRef | None:
        ref = self.store.artifact(artifact_id)
        if ref is not None and self.artifacts.intact(ref):
            return ref
        return None

    def artifact(self, artifact_id: str) -> ArtifactRef:
        ref = self.store.artifact(artifact_id)
        if ref is None:
            matches = self.store.artifacts_by_prefix(artifact_id) if len(artifact_id) >= 6 else []
            if len(matches) == 1:
                return matches[0]
            raise NotFound(f"no artifact {artifact_id!r}")
        return ref

    def load(self, ref: ArtifactRef) -> Any:
        return self.artifacts.load(ref)

    # -- queries ----------------------------------------------------------------------------------
    def execution(self, execution_id: str) -> ExecutionState:
        state = self.store.execution(execution_id)
        if state is None:
            raise NotFound(f"no execution {execution_id!r}")
        return state

    def events(self, execution_id: str, after: int = 0) -> list[Event]:
        return self.store.events(execution_id, after)

    def list_executions(self, limit: int = 50, **filters: Any) -> list[dict[str, Any]]:
        return self.store.list_executions(limit=limit, **filters)

    def logs(self, execution_id: str, node: str, attempt: int, stream: str = "stdout") -> str:
        key = f"runs/{execution_id}/{node}/{attempt}/{stream}.log"
        try:
            return self.storage.read_bytes(key).decode("utf-8", "replace")
        except CorruptArtifact:
            raise NotFound(f"no {stream} log for {execution_id}/{node} attempt {attempt}") from None

    # -- running ---------------------------------------------------------------------------
    def run_task(self, request: RunRequest, listener: RunListener | None = None) -> RunResult:
        listener = listener or NullListener()
        spec, config = request.spec, request.config
        executor = self.executor(config.executor)
        if config.executor == "inline" and request.values is None:
            raise ConfigError(
                "the inline executor runs in the caller's process and needs its values"
            )
        if config.executor != "inline" and not self.storage.shareable:
            raise ConfigError(
                f"storage {self.storage.url_root} lives inside this process, so the "
                f"{config.executor!r} executor can't reach it; use --executor inline or "
                "a file or object-store URL"
            )
        version, task_key = self._bundle(spec)
        node = spec.name
        state = ExecutionState(id=new_execution_id())
        rec = _Recorder(self, state, listener)
        key = cache_key(spec, config.cache_version, request.inputs) if config.cache else ""

        def register(conn):  # type: ignore[no-untyped-def]
            self._task_row(spec, version, task_key, request.project, request.domain)(conn)
            self._record_artifacts(conn, request.inputs.values())

        created = [
            rec.event(
                K.EXECUTION_CREATED,
                project=request.project,
                domain=request.domain,
                name=spec.name,
                task_version=version,
                inputs={n: r.id for n, r in request.inputs.items()},
                config=config.to_dict(),
            ),
            rec.event(K.NODE_QUEUED, node, cache=config.cache),
        ]
        try:
            if config.cache:
                hit = self._cache_hit(rec, node, key, request, created, register)
                if hit is not None:
                    self._registered.add(version)
                    return hit
                if created[-1].kind is not K.CACHE_INVALID:
                    created.append(rec.event(K.CACHE_MISS, node, cache_key=key))
            return self._attempts(
                rec, node, version, task_key, key, request, executor, created, register
            )
        except KeyboardInterrupt:
            if state.created_at:
                rec.commit([rec.event(K.EXECUTION_ABORTED, reason="interrupted")])
            raise ExecutionAborted(
                f"execution {state.id} was interrupted and recorded as aborted"
            ) from None

    def _cache_hit(self, rec, node, key, request, created, register):  # type: ignore[no-untyped-def]
        entry = self.store.cache_get(key, request.project, request.domain)
        if entry is None:
            return None
        outputs = {n: ArtifactRef.from_dict(d) for n, d in entry["outputs"].items()}
        values: dict[str, Any] = {}
        try:
            for name, ref in outputs.items():
                if not self.artifacts.intact(ref):
                    raise CorruptArtifact(f"output {name!r} is missing from storage")
                if request.want_values:
                    values[name] = self.artifacts.load(ref)
        except CorruptArtifact as exc:
            # Never serve a broken entry: forget it, run the task, store a fresh one.
            self.store.cache_delete(key, request.project, request.domain)
            created.append(rec.event(K.CACHE_INVALID, node, cache_key=key, reason=str(exc)))
            return None
        batch = [
            *created,
            rec.event(
                K.CACHE_HIT,
                node,
                cache_key=key,
                outputs={n: r.id for n, r in outputs.items()},
                references=entry["references"],
                display=entry["display"],
                source_execution=entry["execution_id"],
                source_created_at=entry["created_at"],
            ),
            rec.event(K.EXECUTION_SUCCEEDED),
        ]
        rec.commit(batch, before=register)
        return RunResult(rec.state, outputs, dict(entry["references"]), values, entry["display"])

    def _attempts(self, rec, node, version, task_key, key, request, executor, created, register):  # type: ignore[no-untyped-def]
        config = request.config
        user_failures = system_failures = 0
        attempt = 0
        pending = list(created)
        before = register
        while True:
            attempt += 1
            pending.append(rec.event(K.ATTEMPT_STARTED, node, attempt, executor=executor.name))
            rec.commit(pending, before=before)
            self._registered.add(version)
            pending, before = [], None
            spec = AttemptSpec(
                execution_id=rec.state.id,
                node=node,
                attempt=attempt,
                task=request.spec,
                task_key=task_key,
                config=config,
                inputs=request.inputs,
                values=request.values,
                declared_outputs=request.declared_outputs,
            )
            result = executor.run(spec, _LogForward(rec.listener))
            logs = [
                rec.event(K.LOG_STORED, node, attempt, stream=stream, uri=key)
                for stream, key in sorted(result.logs.items())
            ]
            if result.status == "succeeded":
                return self._succeeded(rec, node, attempt, key, request, result, logs)
            error = result.error or {}
            failed = rec.event(K.ATTEMPT_FAILED, node, attempt, error=error)
            if error.get("kind") == ErrorKind.SYSTEM.value:
                system_failures += 1
                retry, budget = system_failures <= config.system_retries, "system"
            else:
                user_failures += 1
                retry, budget = user_failures <= config.retries, "user"
            if retry:
                pending = [
                    *logs,
                    failed,
                    rec.event(K.RETRY_SCHEDULED, node, attempt, budget=budget),
                ]
                continue
            rec.commit(
                [
                    *logs,
                    failed,
                    rec.event(K.NODE_FAILED, node, attempt),
                    rec.event(K.EXECUTION_FAILED, error=error),
                ]
            )
            raise TaskFailed(
                f"task {request.spec.name!r} failed after {attempt} attempt"
                f"{'s' if attempt > 1 else ''}: {error.get('type')}: {error.get('message')}",
                error.get("traceback", ""),
                rec.state.id,
                error.get("type", ""),
                error.get("message", ""),
            )

    def _succeeded(self, rec, node, attempt, key, request, result: AttemptResult, logs):  # type: ignore[no-untyped-def]
        outputs = result.outputs
        values = result.values
        if request.want_values and not values:
            # Written moments ago by the runner, which hashed them as it wrote.
            values = {n: self.artifacts.load(r, verify=False) for n, r in outputs.items()}

        def persist(conn):  # type: ignore[no-untyped-def]
            self._record_artifacts(conn, outputs.values())
            if key:
                self.store.cache_put(
                    conn,
                    {
                        "key": key,
                        "project": request.project,
                        "domain": request.domain,
                        "task_name": request.spec.name,
                        "task_version": rec.state.task_version,
                        "outputs": {n: r.to_dict() for n, r in outputs.items()},
                        "references": result.references,
                        "display": result.display,
                        "execution_id": rec.state.id,
                    },
                )

        rec.commit(
            [
                *logs,
                rec.event(
                    K.ATTEMPT_SUCCEEDED,
                    node,
                    attempt,
                    outputs={n: r.id for n, r in outputs.items()},
                    references=result.references,
                    display=result.display,
                    duration=result.ended_at - result.started_at,
                ),
                rec.event(K.NODE_SUCCEEDED, node, attempt),
                rec.event(K.EXECUTION_SUCCEEDED),
            ],
            before=persist,
        )
        return RunResult(rec.state, outputs, result.references, values, result.display)
