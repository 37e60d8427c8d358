"""The engine API over HTTP, for ``papercrane server``: what the magics and the CLI use
when ``PAPERCRANE_URL`` (and ``PAPERCRANE_TOKEN``) are set.

Values are serialized and fingerprinted here, uploaded once (only what the server lacks),
and decoded here: the server only ever sees bytes and hashes. Runs are submitted and
followed over server-sent events; an interrupt asks the server to abort.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from . import config
from .api import (
    EngineAPI,
    NullListener,
    RunListener,
    RunRequest,
    RunResult,
    tell_connection,
)
from .artifacts import typed_fingerprint, unserializable_error
from .errors import (
    ConfigError,
    Conflict,
    CorruptArtifact,
    ExecutionAborted,
    NotFound,
    PapercraneError,
    SystemError_,
    TaskFailed,
    TooLarge,
    UserError,
    WorkflowFailed,
)
from .hashing import HashingReader, HashingWriter, algorithm_of
from .model import ArtifactRef, Event, EventKind, ExecutionState, Status, TaskSpec
from .projection import apply
from .serializers import CloudpickleSerializer, SerializerRegistry, preview, python_type_name
from .units import format_size
from .workflow import WorkflowSpec

_TERMINAL = (EventKind.EXECUTION_SUCCEEDED, EventKind.EXECUTION_FAILED, EventKind.EXECUTION_ABORTED)


_ID = re.compile(config.ID_PATTERN)


def _execution(execution_id: str) -> str:
    """An execution's API path. An id that is no id (the server answers its pattern
    with a 422 about a path parameter) is an unknown execution, as the embedded engine
    says it."""
    if not _ID.fullmatch(execution_id):
        raise NotFound(f"no execution {execution_id!r}")
    return f"/api/v1/executions/{execution_id}"


@dataclass
class _Stream:
    """One connection to an execution's event stream: whether it was answered, and what
    to call when it is."""

    on_open: Callable[[], None]
    opened: bool = False


@dataclass
class RemoteNode:
    """What a notebook needs of a finished node: its outputs, loaded here."""

    id: str
    status: Status
    outputs: dict[str, ArtifactRef] = field(default_factory=dict)
    references: dict[str, str] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict, repr=False)
    display: dict[str, Any] | None = None


@dataclass
class RemoteResult:
    execution: ExecutionState
    nodes: dict[str, RemoteNode]


class RemoteArtifacts:
    """Fingerprints, presence checks and decoding, done on the client's side."""

    def __init__(self, engine: RemoteEngine) -> None:
        self.engine = engine
        self.registry = SerializerRegistry()

    def fingerprinter(self) -> Any:
        from .fingerprint import Fingerprinter

        return Fingerprinter(self.registry)

    def intact(self, ref: ArtifactRef) -> bool:
        return self.engine.find_artifact(ref.id) is not None

    def load(self, ref: ArtifactRef, verify: bool = True) -> Any:
        serializer = self.registry.get(ref.serializer)
        with tempfile.SpooledTemporaryFile(max_size=32 << 20) as spool:
            with self.engine._http.stream(
                "GET", f"{self.engine._scope}/artifacts/{ref.id}/bytes"
            ) as response:
                self.engine._check(response)
                for chunk in response.iter_bytes(1 << 20):
                    spool.write(chunk)
            spool.seek(0)
            reader = HashingReader(spool, algorithm_of(ref.hash))
            value = serializer.load(reader)  # type: ignore[arg-type]
            reader.drain()
        if reader.hexdigest() != ref.hash:
            raise CorruptArtifact(f"downloaded bytes of {ref.id} do not match their hash")
        return value


class RemoteEngine(EngineAPI):
    unpickles = True  # decoding happens here, in the user's own process

    def __init__(
        self,
        url: str,
        token: str,
        project: str = "default",
        domain: str = "development",
        timeout: float = 60.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.project = project
        self.domain = domain
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout, read=None),
        )
        self._scope = f"/api/v1/projects/{project}/domains/{domain}"
        self.artifacts = RemoteArtifacts(self)
        self._known: dict[str, ArtifactRef] = {}

    @classmethod
    def from_env(cls, project: str | None = None, domain: str | None = None) -> RemoteEngine:
        url = os.environ.get("PAPERCRANE_URL", "")
        token = os.environ.get("PAPERCRANE_TOKEN", "")
        if not token:
            raise ConfigError(
                f"PAPERCRANE_URL is set ({url}) but PAPERCRANE_TOKEN is not; create a token "
                "with `papercrane token create --project P` on the server and export it"
            )
        return cls(
            url,
            token,
            project or os.environ.get("PAPERCRANE_PROJECT", "default"),
            domain or os.environ.get("PAPERCRANE_DOMAIN", "development"),
        )

    def close(self) -> None:
        self._http.close()

    # -- HTTP ----------------------------------------------------------------------------------
    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code < 400:
            return response
        if response.is_stream_consumed is False:
            response.read()
        body: Any = None
        try:
            body = response.json()
            detail = body.get("detail", response.text) if isinstance(body, dict) else body
        except ValueError:
            detail = _excerpt(response)
        if not isinstance(detail, str):
            detail = json.dumps(detail)
        status = response.status_code
        where = f"papercrane server {self.url}"
        if status == 404 and "papercrane-error" not in response.headers:
            # Not papercrane's "no such object": its routes are not at this address.
            asked = f"{response.request.method} {response.request.url.path}"
            raise ConfigError(
                f"no papercrane API at {self.url} ({asked} answered 404: {_clip(detail)}); "
                "check PAPERCRANE_URL: the server's address, as `papercrane server` prints "
                "it, with no path after it"
            )
        if status == 403 and "no access to project" in detail:
            # (A notebook's task asked for a project the token was not made for.)
            raise ConfigError(
                f"{where} refused the token: {detail}; set PAPERCRANE_TOKEN to a token for "
                f"project {self.project!r} (`papercrane token create --project {self.project}` "
                "on the server), or use a project this token has (%%task --project P, "
                "%config Papercrane.project = 'P', --project)"
            )
        if status == 403 and "this needs" in detail:
            # (A read token asked to run, a write token to manage tokens.)
            needed = detail.rpartition("this needs ")[2].strip("'\" ")
            raise ConfigError(
                f"{where} refused the token: {detail}; set PAPERCRANE_TOKEN to a token with "
                f"that role for project {self.project!r} (`papercrane token create --project "
                f"{self.project} --role {needed}` on the server)"
            )
        if status in (401, 403):
            raise ConfigError(f"{where} refused the token: {detail}")
        if status == 404:
            raise NotFound(detail)
        if status == 409:
            raise Conflict(detail)
        if status == 413:
            limit = body.get("limit") if isinstance(body, dict) else None
            raise TooLarge(detail, limit if isinstance(limit, int) else None)
        if status < 500:
            raise UserError(detail)
        raise SystemError_(f"{where} failed ({status}): {detail}")

    def _req(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ConfigError(
                f"cannot reach the papercrane server at {self.url} ({exc}); check "
                "PAPERCRANE_URL and that the server is running"
            ) from None
        self._check(response)
        return response.json() if response.content else None

    # -- registration and values ---------------------------------------------------------------
    def register_task(self, spec: TaskSpec, project: str = "", domain: str = "") -> str:
        body = {"spec": spec.to_dict()}
        return self._req("POST", f"{self._scope}/tasks", json=body)["version"]

    def register_workflow(self, spec: WorkflowSpec, project: str = "", domain: str = "") -> str:
        body = {"spec": _workflow_body(spec)}
        return self._req("POST", f"{self._scope}/workflows", json=body)["version"]

    def find_artifact(self, artifact_id: str) -> ArtifactRef | None:
        if not artifact_id:
            return None
        try:
            data = self._req("GET", f"{self._scope}/artifacts/{artifact_id}")
        except NotFound:
            return None
        return ArtifactRef.from_dict(data)

    def artifact(self, artifact_id: str) -> ArtifactRef:
        ref = self.find_artifact(artifact_id)
        if ref is None:
            raise NotFound(f"no artifact {artifact_id!r} in {self.project}/{self.domain}")
        return ref

    def put_value(self, value: Any, what: str, fingerprint: str | None = None) -> ArtifactRef:
        """Serialize here; upload only if the server does not have the value yet."""
        registry = self.artifacts.registry
        serializer = registry.for_value(value)
        with tempfile.SpooledTemporaryFile(max_size=32 << 20) as spool:
            writer = HashingWriter(spool)
            try:
                serializer.dump(value, writer)  # type: ignore[arg-type]
            except Exception as first:
                if serializer.name == CloudpickleSerializer.name:
                    raise unserializable_error(value, what, first) from None
                serializer = registry.get(CloudpickleSerializer.name)
                spool.seek(0)
                spool.truncate()
                writer = HashingWriter(spool)
                try:
                    serializer.dump(value, writer)  # type: ignore[arg-type]
                except Exception as exc:
                    raise unserializable_error(value, what, exc) from None
            digest = writer.hexdigest()
            if fingerprint is None:
                fingerprint = (
                    typed_fingerprint(serializer.name, digest)
                    if serializer.deterministic
                    else self.artifacts.fingerprinter().value(value)
                )
            known = self.find_artifact(fingerprint)
            if known is not None:
                return known
            spool.seek(0)
            params = {
                "hash": digest,
                "serializer": serializer.name,
                "python_type": python_type_name(value)[:200],
                "preview": preview(value)[:200],
            }
            try:
                data = self._req(
                    "PUT",
                    f"{self._scope}/artifacts/{fingerprint}",
                    params=params,
                    content=_chunks(spool),
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Length": str(writer.size),
                    },
                )
            except TooLarge as exc:
                raise self._too_large(what, writer.size, exc) from None
        return ArtifactRef.from_dict(data)

    def _too_large(self, what: str, size: int, refusal: TooLarge) -> TooLarge:
        """The server's size refusal (413) knows bytes, not names: it is said again
        here, where the variable (``what``) is known, with the ways around it."""
        said = format_size(refusal.limit) if refusal.limit is not None else str(refusal)
        return TooLarge(
            f"{what} is {format_size(size)} serialized, over the upload limit of the "
            f"papercrane server at {self.url} ({said}); ask the server's administrator for "
            "a larger `papercrane server --max-upload`, pass a smaller value, or pass where "
            "the data is (a path or URL the server can read) and load it inside the task"
        )

    def load(self, ref: ArtifactRef) -> Any:
        return self.artifacts.load(ref)

    # -- running --------------------------------------------------------------------------------
    def submit_task(self, request: RunRequest) -> str:
        if request.config.executor == "inline":  # ("" lets the server choose)
            raise ConfigError(
                "the inline executor runs in this kernel, but PAPERCRANE_URL sends tasks to "
                "the server: use --executor local (it runs on the server) or unset PAPERCRANE_URL"
            )
        body: dict[str, Any] = {
            "task": request.spec.to_dict(),
            "config": request.config.to_dict(),
            "inputs": {n: r.id for n, r in request.inputs.items()},
            "declared_outputs": list(request.declared_outputs),
            "max_parallel": request.max_parallel,
            "sources": request.sources,
        }
        if request.map is not None:
            body["map"] = request.map.to_dict()
        return self._req("POST", f"{self._scope}/executions", json=body)["id"]

    def submit_workflow(self, request: Any) -> str:
        for n in request.spec.nodes:
            if n.config.executor == "inline":
                raise ConfigError(
                    f"task {n.id!r} uses the inline executor, which runs in this kernel; "
                    "with PAPERCRANE_URL set, use --executor local (it runs on the server)"
                )
        body = {
            "workflow": _workflow_body(request.spec),
            "params": {n: r.id for n, r in request.params.items()},
            "max_parallel": request.max_parallel,
            "failure_policy": request.failure_policy,
            "sources": request.sources,
        }
        return self._req("POST", f"{self._scope}/executions", json=body)["id"]

    def run_task(self, request: RunRequest, listener: RunListener | None = None) -> RunResult:
        execution_id = self.submit_task(request)
        state = self.follow(execution_id, listener)
        result = self._result(state, request.want_values)
        node = result.nodes[request.spec.name]
        return RunResult(state, node.outputs, node.references, node.values, node.display)

    def run_workflow(self, request: Any, listener: RunListener | None = None) -> RemoteResult:
        execution_id = self.submit_workflow(request)
        return self._result(self.follow(execution_id, listener), request.want_values)

    def recover(
        self,
        execution_id: str,
        listener: RunListener | None = None,
        *,
        max_parallel: int = 4,
        want_values: bool = True,
        workflow: WorkflowSpec | None = None,
    ) -> RemoteResult:
        body: dict[str, Any] = {"max_parallel": max_parallel}
        if workflow is not None:  # the edited workflow: the server must know it first
            body["workflow_version"] = self.register_workflow(workflow)
        try:
            new = self._req("POST", f"{_execution(execution_id)}/recover", json=body)["id"]
        except NotFound:  # (the start of an id: the server takes whole ones)
            execution_id = self.complete_execution_id(execution_id)
            new = self._req("POST", f"{_execution(execution_id)}/recover", json=body)["id"]
        return self._result(self.follow(new, listener), want_values)

    def abort(self, execution_id: str) -> None:
        self._req("POST", f"{_execution(execution_id)}/abort")

    #: Waits between reconnection attempts while the server cannot be reached: the first,
    #: then doubled each time up to the last (a follower must not spin a core meanwhile).
    RETRY_FIRST, RETRY_MOST = 0.5, 5.0

    def follow(self, execution_id: str, listener: RunListener | None = None) -> ExecutionState:
        """Stream the execution's events until it ends, reconnecting if the stream drops
        (with a growing wait). While the server is unreachable the execution goes on
        there: one line on stderr says so, and the listener hears of each failed try
        (``on_connection``: the widget shows it) until the server is back."""
        listener = listener or NullListener()
        state = ExecutionState(id=execution_id)
        wait, lost, tries = self.RETRY_FIRST, False, 0

        def connected() -> None:
            nonlocal wait, lost, tries
            wait = self.RETRY_FIRST
            if lost:
                self._say(f"the server at {self.url} is back; following {execution_id}")
                lost = False
            if tries:
                tries = 0
                tell_connection(listener, None)

        try:
            while True:
                stream = _Stream(connected)
                try:
                    for kind, data in self._sse(execution_id, state.last_seq, stream):
                        if kind == "log":
                            listener.on_log(data["stream"], data["text"])
                        elif kind == "event":
                            event = Event(
                                data["execution_id"],
                                EventKind(data["kind"]),
                                data["node"],
                                data["attempt"],
                                data["payload"],
                                data["ts"],
                                data["seq"],
                            )
                            apply(state, event)
                            listener.on_event(event, state)
                        elif kind == "end":
                            return state
                except httpx.TransportError:
                    if not stream.opened:
                        if not lost:
                            self._say(
                                f"the server at {self.url} is unreachable, retrying... "
                                f"(interrupt to stop waiting; execution {execution_id} goes on "
                                "on the server)"
                            )
                            lost = True
                        tries += 1
                        tell_connection(
                            listener,
                            f"unreachable, reconnecting (try {tries})… the task goes on there",
                        )
                if state.status.terminal and state.ended_at is not None:
                    return state
                time.sleep(wait)
                wait = min(wait * 2, self.RETRY_MOST)
        except KeyboardInterrupt:
            try:
                self.abort(execution_id)
            except Conflict:
                pass  # it ended meanwhile: its end is fetched below
            except PapercraneError as exc:
                raise ExecutionAborted(
                    f"execution {execution_id} was interrupted here, but the server could not "
                    f"be asked to abort it ({exc}); it may still run there: see "
                    f"`papercrane executions show {execution_id}`, and abort it when the server "
                    f"is back with POST {self.url}{_execution(execution_id)}/abort (e.g. curl -X "
                    'POST -H "Authorization: Bearer $PAPERCRANE_TOKEN" <that URL>)'
                ) from None
            self._settle(state, listener)
            raise ExecutionAborted(
                f"execution {execution_id} was interrupted; the server was asked to abort it"
            ) from None

    #: How long an interrupted follower waits for the server to record the abort.
    SETTLE = 10.0

    def _settle(self, state: ExecutionState, listener: RunListener) -> None:
        """After an interrupt: the events up to the execution's end (its abort, which
        the server records once it has stopped the attempt), given to the listener, so
        that what follows it (a widget) ends "aborted", not "running". Waits at most
        ``SETTLE`` seconds; a second interrupt stops waiting."""
        deadline = time.monotonic() + self.SETTLE
        try:
            while not state.status.terminal and time.monotonic() < deadline:
                for event in self.events(state.id, after=state.last_seq):
                    apply(state, event)
                    listener.on_event(event, state)
                if not state.status.terminal:
                    time.sleep(0.1)
        except (KeyboardInterrupt, PapercraneError):
            pass  # the caller says the abort was asked for; the widget ends aborted anyway

    @staticmethod
    def _say(text: str) -> None:
        """A line for the person waiting (stderr: a cell's error stream in a notebook)."""
        print(f"papercrane: {text}", file=sys.stderr, flush=True)

    def _sse(
        self, execution_id: str, after: int, stream: _Stream | None = None
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """The stream's messages as (kind, data). Raises ``httpx.TransportError`` if it
        cannot connect or drops; ``stream.opened`` then says whether it had connected."""
        path = f"{_execution(execution_id)}/stream"
        with self._http.stream("GET", path, params={"after": after}) as response:
            self._check(response)
            if stream is not None:
                stream.opened = True
                stream.on_open()
            kind, data = "message", []
            for line in response.iter_lines():
                if not line:
                    if data:
                        yield kind, json.loads("\n".join(data))
                    kind, data = "message", []
                elif line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())

    def _result(self, state: ExecutionState, want_values: bool) -> RemoteResult:
        if state.status is Status.ABORTED:
            why = f" ({state.error.message})" if state.error is not None else ""
            raise ExecutionAborted(f"execution {state.id} was aborted{why}")
        tops = {k: n for k, n in state.nodes.items() if "[" not in k and ":" not in k}
        if state.status is Status.FAILED:
            failed = [
                (k, n.error.to_dict() if n.error else {})
                for k, n in tops.items()
                if n.status is Status.FAILED
            ]
            if not failed and state.error is not None:
                failed = [("(execution)", state.error.to_dict())]
            if state.kind == "task" and failed:
                node, error = failed[0]
                raise TaskFailed(
                    f"task {node!r} failed: {error.get('type')}: {error.get('message')}",
                    error.get("traceback", ""),
                    state.id,
                    error.get("type", ""),
                    error.get("message", ""),
                )
            skipped = [k for k, n in tops.items() if n.status is Status.SKIPPED]
            failure = WorkflowFailed(state.id, failed or [("?", {})], skipped)
            ok = {k: n for k, n in tops.items() if n.status.ok}
            failure.result = self._nodes(state, ok, want_values)
            raise failure
        return self._nodes(state, tops, want_values)

    def _nodes(
        self, state: ExecutionState, tops: dict[str, Any], want_values: bool
    ) -> RemoteResult:
        nodes = {}
        for key, n in tops.items():
            outputs = {name: self.artifact(aid) for name, aid in n.outputs.items()}
            values = {name: self.load(ref) for name, ref in outputs.items()} if want_values else {}
            nodes[key] = RemoteNode(key, n.status, outputs, dict(n.references), values, n.display)
        return RemoteResult(state, nodes)

    # -- queries ---------------------------------------------------------------------------------
    def execution(self, execution_id: str) -> ExecutionState:
        """An execution by its id, or by the start of it (``complete_execution_id``)."""
        try:
            events = self.events(execution_id)
        except NotFound:
            events = []
        if not events:
            execution_id = self.complete_execution_id(execution_id)
            events = self.events(execution_id)
        state = ExecutionState(id=execution_id)
        for event in events:
            apply(state, event)
        if not state.created_at:
            raise NotFound(f"no execution {execution_id!r}")
        return state

    def events(self, execution_id: str, after: int = 0) -> list[Event]:
        rows = self._req("GET", f"{_execution(execution_id)}/events", params={"after": after})
        return [
            Event(
                r["execution_id"],
                EventKind(r["kind"]),
                r["node"],
                r["attempt"],
                r["payload"],
                r["ts"],
                r["seq"],
            )
            for r in rows
        ]

    #: The most executions the server lists at once (its route's limit).
    PAGE = 1000

    def list_executions(self, limit: int | None = 50, **filters: Any) -> list[dict[str, Any]]:
        """Newest first; ``limit`` None: all of them, a page at a time."""
        params = {
            k: v
            for k, v in filters.items()
            if v is not None and k in ("status", "before", "name", "id_prefix")
        }
        scope = self._scope_of(filters.get("project"), filters.get("domain"))
        rows: list[dict[str, Any]] = []
        while True:
            page = self.PAGE if limit is None else min(limit - len(rows), self.PAGE)
            answer = self._req("GET", f"{scope}/executions", params={**params, "limit": page})
            rows += answer["items"]
            if answer.get("next_before") is None or (limit is not None and len(rows) >= limit):
                return rows
            params["before"] = answer["next_before"]

    def logs(self, execution_id: str, node: str, attempt: int, stream: str = "stdout") -> str:
        response = self._http.get(
            f"{_execution(execution_id)}/logs/{node}/{attempt}", params={"stream": stream}
        )
        self._check(response)
        return response.text

    def lineage(
        self, artifact_id: str, depth: int = 30, via: dict[str, str] | None = None
    ) -> dict[str, Any]:
        params = {"execution": via["execution"], "node": via["node"]} if via else None
        return self._req("GET", f"{self._scope}/artifacts/{artifact_id}/lineage", params=params)

    def has_lineage(self, artifact_id: str) -> bool:
        try:
            return self.lineage(artifact_id).get("producer") is not None
        except NotFound:
            return False

    def workflow(self, version: str) -> WorkflowSpec:
        data = self._req("GET", f"{self._scope}/workflows/{version}")["spec"]
        tasks = {}
        for n in data["nodes"]:
            row = self._req("GET", f"{self._scope}/tasks/{n['task']}")
            tasks[n["task"]] = TaskSpec.from_dict(row["spec"])
        return WorkflowSpec.from_dict(data, tasks)

    def _scope_of(self, project: str | None, domain: str | None) -> str:
        """The API path of ``project`` and ``domain`` (None: this client's own). A server
        answers for one project and domain at a time: ``ANY_SCOPE`` is refused here."""
        if config.ANY_SCOPE in (project, domain):
            raise UserError(
                f"a papercrane server ({self.url}) works on one project and domain at a time: "
                f"give --project and --domain (not {config.ANY_SCOPE!r})"
            )
        project, domain = project or self.project, domain or self.domain
        if (project, domain) == (self.project, self.domain):
            return self._scope
        for kind, value in (("project", project), ("domain", domain)):
            config.check_name(kind, value, limit=config.SCOPE_LENGTH, where=f"--{kind}")
        return f"/api/v1/projects/{project}/domains/{domain}"

    def cache_list(
        self,
        task_name: str | None = None,
        limit: int | None = None,
        project: str | None = None,
        domain: str | None = None,
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"task": task_name} if task_name else {}
        if limit is not None:
            params["limit"] = limit
        return self._req("GET", f"{self._scope_of(project, domain)}/cache", params=params)

    def cache_clear(
        self, task_name: str | None = None, project: str | None = None, domain: str | None = None
    ) -> int:
        params = {"task": task_name} if task_name else {}
        path = f"{self._scope_of(project, domain)}/cache"
        return self._req("DELETE", path, params=params)["cleared"]


class TokenAdmin:
    """The server's tokens, managed over its API (``papercrane token ...`` with
    ``PAPERCRANE_URL`` set) with an admin token: the operator's for every project, a
    project's admin token for that project's. A token made on the client's own machine
    would land in a database the server never reads."""

    def __init__(self, engine: RemoteEngine) -> None:
        self.engine = engine

    def create(self, project: str, role: str, name: str = "") -> str:
        body = {"project": project, "role": role, "name": name}
        return str(self.engine._req("POST", "/api/v1/tokens", json=body)["token"])

    def list(self) -> list[dict[str, Any]]:
        return list(self.engine._req("GET", "/api/v1/tokens"))

    def revoke(self, token_id: str) -> int:
        return int(self.engine._req("DELETE", f"/api/v1/tokens/{token_id}")["revoked"])


def _clip(text: str, most: int = 160) -> str:
    """``text`` on one line, cut to ``most`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= most else text[: most - 3] + "..."


def _excerpt(response: httpx.Response) -> str:
    """A short excerpt of an answer that is not JSON (a proxy's or another server's
    page): its HTML title if it has one, else its text without tags, clipped."""
    text = response.text
    title = re.search(r"<title[^>]*>(.*?)</title>", text, re.I | re.S)
    if title and title.group(1).strip():
        text = title.group(1)
    else:
        text = re.sub(r"<(script|style)\b.*?</\1>|<[^>]+>", " ", text, flags=re.I | re.S)
    return _clip(text) or f"(an empty {response.headers.get('content-type', 'answer')})"


def _chunks(handle: Any) -> Iterator[bytes]:
    while data := handle.read(1 << 20):
        yield data


def _workflow_body(spec: WorkflowSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "nodes": [
            {
                "id": n.id,
                "task": n.task.to_dict(),
                "config": n.config.to_dict(),
                "bindings": {k: b.to_dict() for k, b in n.bindings.items()},
                "map": n.map.to_dict() if n.map else None,
                "declared_outputs": list(n.declared_outputs),
                "cell_id": n.cell_id,
            }
            for n in spec.nodes
        ],
    }
