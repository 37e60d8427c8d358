"""The FastAPI application: REST under ``/api/v1``, server-sent events for live
executions, bearer tokens on every route (``deps``), and one place that turns errors into
answers (``errors``): a client's mistake is a 4xx naming the field or object, never a 500.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from ..api import RunRequest
from ..artifacts import typed_fingerprint
from ..config import EXECUTION_PREFIX
from ..engine import WorkflowRequest
from ..errors import Conflict, CorruptArtifact, NotFound
from ..model import ArtifactRef, EventKind
from ..store import listing
from . import models as m
from . import tokens
from .deps import (
    Domain,
    ExecutionId,
    ObjectId,
    Operator,
    Project,
    Readable,
    Reader,
    Svc,
    Who,
    Writable,
    Writer,
    known_query,
)
from .errors import PayloadTooLarge, install
from .errors import responses as _errors
from .service import Service
from .settings import ServerSettings

_TERMINAL = {
    EventKind.EXECUTION_SUCCEEDED.value,
    EventKind.EXECUTION_FAILED.value,
    EventKind.EXECUTION_ABORTED.value,
}
_DETERMINISTIC = {"npy", "text", "bytes", "json"}
_TEXT = {"type": "string"}
_MAX_SEQ = (1 << 62) - 1  # event sequence numbers are 64-bit integers in the store


def create_app(settings: ServerSettings | None = None, *, resume: bool = True) -> FastAPI:
    settings = settings or ServerSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = Service(settings)
        app.state.service = service
        if resume:
            await run_in_threadpool(service.resume_unfinished)
        try:
            yield
        finally:
            service.close()

    app = FastAPI(
        title="papercrane",
        version="1",
        description="Notebook tasks and workflows: register, run, follow, recover.",
        lifespan=lifespan,
    )
    install(app)

    @app.middleware("http")
    async def _bounded_bodies(request: Request, call_next: Any) -> Any:
        """JSON bodies have a ceiling (a 200,000-node workflow fits); only artifact
        uploads, which stream to storage, may be larger (up to ``--max-upload``)."""
        declared = request.headers.get("content-length", "")
        is_upload = request.method == "PUT" and "/artifacts/" in request.url.path
        if declared.isdigit() and int(declared) > _MAX_JSON and not is_upload:
            return JSONResponse(
                {
                    "detail": f"request body of {declared} bytes is over the limit of "
                    f"{_MAX_JSON} bytes for API requests",
                    "limit": _MAX_JSON,
                },
                status_code=413,
            )
        return await call_next(request)

    # Every route needs a token (401) and may refuse it (403); any route with
    # parameters or a body may find them malformed (422), unknown query parameters too.
    app.include_router(
        _router(settings),
        prefix="/api/v1",
        responses=_errors(401, 403, 422),
        dependencies=[Depends(known_query)],
    )
    app.include_router(
        tokens.router(),
        prefix="/api/v1",
        responses=_errors(401, 403, 422),
        dependencies=[Depends(known_query)],
    )
    return app


_MAX_JSON = 256 << 20


def _router(settings: ServerSettings) -> APIRouter:  # noqa: C901 - one route per function
    r = APIRouter()

    def url(execution_id: str) -> str:
        base = settings.public_url.rstrip("/")
        return f"{base}/api/v1/executions/{execution_id}"

    # -- who and where --------------------------------------------------------------------
    @r.get("/whoami", response_model=m.Whoami, tags=["projects"])
    def whoami(who: Who) -> m.Whoami:
        return m.Whoami(project=who.project, role=who.role, name=who.name)

    @r.get("/projects", response_model=list[str], tags=["projects"])
    def projects(service: Svc, who: Who) -> list[str]:
        """The projects this token can see: its own (every project for an operator)."""
        if who.project == "*":
            return listing.projects(service.store)
        return [who.project]

    @r.get("/projects/{project}/domains", response_model=list[str], tags=["projects"])
    def domains(project: Project, service: Svc, who: Reader) -> list[str]:
        return listing.domains(service.store, project)

    # -- tasks and workflows --------------------------------------------------------------
    base = "/projects/{project}/domains/{domain}"

    @r.post(
        f"{base}/tasks",
        response_model=m.Registered,
        tags=["tasks"],
        responses=_errors(400, 409),
    )
    def register_task(
        project: Project, domain: Domain, body: m.RegisterTask, service: Svc, who: Writer
    ) -> m.Registered:
        spec = body.spec.to_spec()
        if body.version is not None and body.version != spec.version():
            raise Conflict(
                f"version {body.version} does not match the task's content "
                f"(its version is {spec.version()}); versions are content hashes"
            )
        version = service.engine(project, domain).register_task(spec, project, domain)
        return m.Registered(version=version)

    @r.get(f"{base}/tasks", response_model=list[m.VersionRow], tags=["tasks"])
    def list_tasks(
        project: Project,
        domain: Domain,
        service: Svc,
        who: Reader,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        return listing.list_tasks(service.store, project, domain, limit)

    @r.get(
        f"{base}/tasks/{{version}}",
        response_model=m.VersionOut,
        tags=["tasks"],
        responses=_errors(404),
    )
    def get_task(
        project: Project, domain: Domain, version: ObjectId, service: Svc, who: Reader
    ) -> dict[str, Any]:
        row = service.store.task(version)
        if row is None or not service.store.in_scope("task", version, project, domain):
            raise NotFound(f"no task version {version!r} in {project}/{domain}")
        return {"version": row["version"], "name": row["name"], "spec": row["spec"]}

    @r.post(
        f"{base}/workflows",
        response_model=m.Registered,
        tags=["workflows"],
        responses=_errors(400, 409),
    )
    def register_workflow(
        project: Project, domain: Domain, body: m.RegisterWorkflow, service: Svc, who: Writer
    ) -> m.Registered:
        spec = body.spec.to_spec()
        if body.version is not None and body.version != spec.version():
            raise Conflict(
                f"version {body.version} does not match the workflow's content "
                f"(its version is {spec.version()}); versions are content hashes"
            )
        version = service.engine(project, domain).register_workflow(spec, project, domain)
        return m.Registered(version=version)

    @r.get(f"{base}/workflows", response_model=list[m.VersionRow], tags=["workflows"])
    def list_workflows(
        project: Project,
        domain: Domain,
        service: Svc,
        who: Reader,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        return listing.list_workflows(service.store, project, domain, limit)

    @r.get(
        f"{base}/workflows/{{version}}",
        response_model=m.VersionOut,
        tags=["workflows"],
        responses=_errors(404),
    )
    def get_workflow(
        project: Project, domain: Domain, version: ObjectId, service: Svc, who: Reader
    ) -> dict[str, Any]:
        row = service.store.workflow(version)
        if row is None or not service.store.in_scope("workflow", version, project, domain):
            raise NotFound(f"no workflow version {version!r} in {project}/{domain}")
        return {"version": row["version"], "name": row["name"], "spec": row["spec"]}

    # -- executions -----------------------------------------------------------------------
    @r.post(
        f"{base}/executions",
        response_model=m.Created,
        status_code=201,
        tags=["executions"],
        responses=_errors(400, 404),
    )
    def create_execution(
        project: Project, domain: Domain, body: m.CreateExecution, service: Svc, who: Writer
    ) -> m.Created:
        engine = service.engine(project, domain)

        def refs(ids: dict[str, str], what: str) -> dict[str, ArtifactRef]:
            found = {}
            for name, artifact_id in ids.items():
                ref = engine.find_artifact(artifact_id)
                if ref is None:
                    raise NotFound(
                        f"{what} {name!r}: artifact {artifact_id!r} is not in {project}/{domain};"
                        " upload it first (PUT .../artifacts/{id})"
                    )
                found[name] = ref
            return found

        sources = {k: v.model_dump() for k, v in body.sources.items()}
        if body.task is not None:
            request = RunRequest(
                spec=body.task.to_spec(),
                config=body.config.to_config(),
                inputs=refs(body.inputs, "input"),
                project=project,
                domain=domain,
                declared_outputs=tuple(body.declared_outputs),
                want_values=False,
                map=body.map.to_map() if body.map else None,
                max_parallel=body.max_parallel,
                sources=sources,
            )
            execution_id = service.submit_task(request)
        else:
            assert body.workflow is not None  # CreateExecution checks: one of the two
            wf = WorkflowRequest(
                spec=body.workflow.to_spec(),
                params=refs(body.params, "parameter"),
                project=project,
                domain=domain,
                max_parallel=body.max_parallel,
                failure_policy=body.failure_policy,
                want_values=False,
                sources=sources,
            )
            execution_id = service.submit_workflow(wf)
        return m.Created(id=execution_id, url=url(execution_id))

    @r.get(f"{base}/executions", response_model=m.ExecutionPage, tags=["executions"])
    def list_executions(
        project: Project,
        domain: Domain,
        service: Svc,
        who: Reader,
        status: Annotated[
            str | None,
            Query(pattern="^(queued|running|succeeded|failed|cached|aborted)$"),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        before: Annotated[
            float | None,
            Query(description="created_at of the last row seen", allow_inf_nan=False),
        ] = None,
        name: Annotated[
            str | None,
            Query(
                max_length=m.NAME_LENGTH,
                pattern=m.NAME_PATTERN,
                description="only executions of this task or workflow",
            ),
        ] = None,
        id_prefix: Annotated[
            str | None,
            Query(
                pattern=f"^[0-9a-f]{{{EXECUTION_PREFIX},64}}$",
                description="only executions whose id starts so (a short id people type)",
            ),
        ] = None,
    ) -> m.ExecutionPage:
        rows = service.store.list_executions(
            project=project,
            domain=domain,
            status=status,
            limit=limit,
            before=before,
            name=name,
            id_prefix=id_prefix,
        )
        items = [m.ExecutionRow(**{k: r[k] for k in m.ExecutionRow.model_fields}) for r in rows]
        return m.ExecutionPage(
            items=items, next_before=rows[-1]["created_at"] if len(rows) == limit else None
        )

    @r.get(
        "/executions/{execution_id}",
        response_model=m.ExecutionOut,
        tags=["executions"],
        responses=_errors(404),
    )
    def get_execution(scope: Readable) -> m.ExecutionOut:
        return m.ExecutionOut.of(scope[1])

    @r.get(
        "/executions/{execution_id}/events",
        response_model=list[m.EventOut],
        tags=["executions"],
        responses=_errors(404),
    )
    def get_events(
        execution_id: ExecutionId,
        scope: Readable,
        after: Annotated[int, Query(ge=0, le=_MAX_SEQ)] = 0,
    ) -> list[m.EventOut]:
        engine, _ = scope
        return [m.EventOut(**e.to_dict()) for e in engine.events(execution_id, after)]

    @r.get(
        "/executions/{execution_id}/stream",
        tags=["executions"],
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}, **_errors(404)},
    )
    async def stream(
        execution_id: ExecutionId,
        request: Request,
        service: Svc,
        scope: Readable,
        after: Annotated[int, Query(ge=0, le=_MAX_SEQ)] = 0,
    ) -> StreamingResponse:
        """Server-sent events: every event after ``after`` as it is committed
        (``event: event``), the task's output (``event: log``), then ``event: end``."""
        engine, state = scope

        async def events() -> AsyncIterator[str]:
            cursor, logs, seen = after, 0, -1
            finished = state.status.terminal  # then send what is after ``after``, and end
            while True:
                batch = await run_in_threadpool(engine.events, execution_id, cursor)
                done = finished
                for e in batch:
                    cursor = e.seq
                    done = done or e.kind.value in _TERMINAL
                    yield f"event: event\nid: {e.seq}\ndata: {json.dumps(e.to_dict())}\n\n"
                lines, logs = service.logs_since(execution_id, logs)
                for stream_name, text in lines:
                    data = json.dumps({"stream": stream_name, "text": text})
                    yield f"event: log\ndata: {data}\n\n"
                if not (done or batch or service.running(execution_id)):
                    # Quiet and not running here: it may have ended since the read above
                    # (its last events committed after it), or before ``after``. Read once
                    # more before ending, so a follower never misses the end.
                    now = await run_in_threadpool(service.store.execution, execution_id)
                    if now is None:
                        done = True
                    elif now.status.terminal:
                        finished = True
                        continue
                if done:
                    yield "event: end\ndata: {}\n\n"
                    return
                if await request.is_disconnected():
                    return
                # (abandoned if the stream is cancelled, as a stopping server does to the
                # streams still open after its grace: the wait then ends on its own)
                changed = await anyio.to_thread.run_sync(
                    service.wait, execution_id, seen, 10.0, abandon_on_cancel=True
                )
                if changed == seen:
                    yield ": keep-alive\n\n"
                seen = changed

        return StreamingResponse(events(), media_type="text/event-stream")

    @r.post(
        "/executions/{execution_id}/abort",
        response_model=m.Aborting,
        status_code=202,
        tags=["executions"],
        responses=_errors(404, 409),
    )
    def abort(execution_id: ExecutionId, service: Svc, scope: Writable) -> m.Aborting:
        service.abort(execution_id)
        return m.Aborting(id=execution_id, status="aborting")

    @r.post(
        "/executions/{execution_id}/recover",
        response_model=m.Created,
        status_code=201,
        tags=["executions"],
        responses=_errors(400, 404, 409),
    )
    def recover(
        execution_id: ExecutionId,
        service: Svc,
        scope: Writable,
        body: m.Recover | None = None,
    ) -> m.Created:
        body = body or m.Recover()
        new = service.recover(execution_id, body.max_parallel, body.workflow_version)
        return m.Created(id=new, url=url(new))

    @r.get(
        "/executions/{execution_id}/logs/{node}/{attempt}",
        # Plain text, but errors are JSON like everywhere else: FastAPI would document
        # them as text/plain under a PlainTextResponse class.
        response_class=Response,
        tags=["executions"],
        responses={200: {"content": {"text/plain": {"schema": _TEXT}}}, **_errors(404)},
    )
    def logs(
        execution_id: ExecutionId,
        node: Annotated[str, Path(min_length=1, max_length=250, pattern=m.NODE_PATTERN)],
        attempt: Annotated[int, Path(ge=1, le=1_000_000)],
        scope: Readable,
        stream: Annotated[str, Query(pattern="^(stdout|stderr)$")] = "stdout",
    ) -> PlainTextResponse:
        engine, _ = scope
        return PlainTextResponse(engine.logs(execution_id, node, attempt, stream))

    # -- artifacts ------------------------------------------------------------------------
    def artifact_in(service: Service, project: str, domain: str, artifact_id: str) -> Any:
        engine = service.engine(project, domain)
        ref = engine.find_artifact(artifact_id)
        if ref is None:
            raise NotFound(f"no artifact {artifact_id!r} in {project}/{domain}")
        return engine, ref

    @r.put(
        f"{base}/artifacts/{{artifact_id}}",
        response_model=m.ArtifactOut,
        tags=["artifacts"],
        responses=_errors(413, 422),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
            }
        },
    )
    async def upload(
        project: Project,
        domain: Domain,
        artifact_id: ObjectId,
        request: Request,
        service: Svc,
        who: Writer,
        # sha256 hex, or "blake3-" + hex for values past hashing.LARGE
        hash: Annotated[str, Query(min_length=64, max_length=71, pattern=m.DIGEST_PATTERN)],
        serializer: Annotated[str, Query(max_length=50, pattern="^[a-z0-9_-]+$")],
        python_type: Annotated[str, Query(max_length=200, pattern=m.TEXT_PATTERN)],
        preview: Annotated[str, Query(max_length=200, pattern=m.TEXT_PATTERN)] = "",
    ) -> m.ArtifactOut:
        """Upload a value's bytes (the client serialized it). Refused unless they hash
        to ``hash``; for typed encodings the id must match too. Nothing is kept of a
        refused upload."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > settings.max_upload:
            raise PayloadTooLarge(
                f"upload of {declared} bytes is over this server's limit of "
                f"{settings.max_upload} bytes (papercrane server --max-upload)",
                limit=settings.max_upload,
            )
        if serializer in _DETERMINISTIC and artifact_id != typed_fingerprint(serializer, hash):
            raise CorruptArtifact(
                f"artifact id {artifact_id} does not match its {serializer} bytes' hash "
                f"{hash} (a {serializer} value's id is sha256('{serializer}:' + hash))"
            )
        engine = service.engine(project, domain)
        # Only this project and domain's rows are consulted (``artifact_scope``): what
        # other projects hold neither blocks an upload nor shows in its answer.
        known = await run_in_threadpool(engine.find_artifact, artifact_id)
        if known is not None:
            # Stored already; in other bytes, the same value (a function pickled again in
            # another kernel): the first is kept.
            return m.ArtifactOut.of(known)
        with tempfile.SpooledTemporaryFile(max_size=8 << 20) as spool:
            size = 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > settings.max_upload:
                    raise PayloadTooLarge(
                        f"upload is over this server's limit of {settings.max_upload} bytes "
                        "(papercrane server --max-upload)",
                        limit=settings.max_upload,
                    )
                spool.write(chunk)
            spool.seek(0)
            digest, key, size = await run_in_threadpool(engine.storage.put_stream, spool, hash)
        ref = ArtifactRef(artifact_id, digest, key, size, serializer, python_type, preview[:200])
        # (A row of this scope whose bytes are lost is replaced.)
        await run_in_threadpool(engine.register_upload, ref)
        return m.ArtifactOut.of(ref)

    @r.get(
        f"{base}/artifacts/{{artifact_id}}",
        response_model=m.ArtifactOut,
        tags=["artifacts"],
        responses=_errors(404),
    )
    def artifact(
        project: Project, domain: Domain, artifact_id: ObjectId, service: Svc, who: Reader
    ) -> m.ArtifactOut:
        _, ref = artifact_in(service, project, domain, artifact_id)
        return m.ArtifactOut.of(ref)

    @r.get(
        f"{base}/artifacts/{{artifact_id}}/bytes",
        tags=["artifacts"],
        response_class=StreamingResponse,
        responses={200: {"content": {"application/octet-stream": {}}}, **_errors(404)},
    )
    def download(
        project: Project, domain: Domain, artifact_id: ObjectId, service: Svc, who: Reader
    ) -> StreamingResponse:
        engine, ref = artifact_in(service, project, domain, artifact_id)
        handle = engine.storage.open_read(ref.uri)

        def chunks() -> Any:
            with handle:
                while data := handle.read(1 << 20):
                    yield data

        return StreamingResponse(
            chunks(),
            media_type="application/octet-stream",
            headers={"Content-Length": str(ref.size), "X-Papercrane-Hash": ref.hash},
        )

    @r.get(
        f"{base}/artifacts/{{artifact_id}}/lineage",
        tags=["artifacts"],
        responses=_errors(404),
    )
    def lineage(
        project: Project,
        domain: Domain,
        artifact_id: ObjectId,
        service: Svc,
        who: Reader,
        execution: str | None = None,
        node: str | None = None,
    ) -> dict[str, Any]:
        """``execution`` and ``node``: where the caller's value came from, when several
        attempts produced equal values (the same artifact)."""
        engine, ref = artifact_in(service, project, domain, artifact_id)
        via = {"execution": execution, "node": node} if execution and node else None
        return _own(service, project, domain, engine.lineage(ref.id, via=via))

    # -- cache ----------------------------------------------------------------------------
    @r.get(f"{base}/cache", response_model=list[m.CacheEntryOut], tags=["cache"])
    def cache(
        project: Project,
        domain: Domain,
        service: Svc,
        who: Reader,
        task: Annotated[str | None, Query(max_length=200, pattern=m.TEXT_PATTERN)] = None,
        limit: Annotated[int | None, Query(ge=1)] = None,
    ) -> list[m.CacheEntryOut]:
        """Newest first: all of them, or the newest ``limit``."""
        rows = listing.list_cache(service.store, project, domain, task, limit)
        return [m.CacheEntryOut(**{k: r[k] for k in m.CacheEntryOut.model_fields}) for r in rows]

    @r.delete(f"{base}/cache", response_model=m.Cleared, tags=["cache"])
    def clear_cache(
        project: Project,
        domain: Domain,
        service: Svc,
        who: Writer,
        task: Annotated[str | None, Query(max_length=200, pattern=m.TEXT_PATTERN)] = None,
    ) -> m.Cleared:
        return m.Cleared(cleared=listing.clear_cache(service.store, project, domain, task))

    @r.get("/server", tags=["server"])
    def server_status(service: Svc, who: Operator) -> dict[str, Any]:
        """Running executions and the fair-share gate (operators: a '*' admin token)."""
        return service.status()

    return r


def _own(service: Service, project: str, domain: str, tree: dict[str, Any]) -> dict[str, Any]:
    """A lineage tree cut where it leaves ``project``/``domain``: the same bytes may have
    been produced in another project, whose executions this token must not see."""
    cache: dict[str, bool] = {}

    def ours(execution_id: str) -> bool:
        if execution_id not in cache:
            state = service.store.execution(execution_id)
            cache[execution_id] = (
                state is not None and state.project == project and state.domain == domain
            )
        return cache[execution_id]

    def cut(node: dict[str, Any]) -> dict[str, Any]:
        producer = node.get("producer")
        if producer is not None and not ours(producer["execution_id"]):
            kept = {k: v for k, v in node.items() if k != "repeated"}
            return {**kept, "producer": None, "inputs": []}
        return {**node, "inputs": [cut(i) for i in node.get("inputs", [])]}

    return cut(tree)
