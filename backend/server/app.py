"""The FastAPI application: REST under ``/api/v1``, server-sent events for live
executions, bearer tokens on every route.

One place maps papercrane's exceptions to HTTP statuses (``_error``): a client's mistake
is a 4xx naming the field or object, never a 500.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..api import RunRequest
from ..artifacts import typed_fingerprint
from ..engine import WorkflowRequest
from ..errors import (
    Conflict,
    CorruptArtifact,
    NotFound,
    PapercraneError,
    StorageError,
    UserError,
)
from ..model import ArtifactRef, EventKind
from ..store import listing
from . import models as m
from .auth import AuthError, Principal, authenticate
from .service import Service
from .settings import ServerSettings

_TERMINAL = {
    EventKind.EXECUTION_SUCCEEDED.value,
    EventKind.EXECUTION_FAILED.value,
    EventKind.EXECUTION_ABORTED.value,
}
_DETERMINISTIC = {"npy", "text", "bytes", "json"}
_bearer = HTTPBearer(auto_error=False, description="a token from `papercrane token create`")


class PayloadTooLarge(UserError):
    pass


def _status(exc: PapercraneError) -> int:
    if isinstance(exc, AuthError):
        return 403 if exc.forbidden else 401
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, PayloadTooLarge):
        return 413
    if isinstance(exc, CorruptArtifact):
        return 422
    if isinstance(exc, UserError):
        return 400
    if isinstance(exc, StorageError):
        return 503
    return 500


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

    @app.exception_handler(PapercraneError)
    async def _error(request: Request, exc: PapercraneError) -> JSONResponse:
        status = _status(exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)

    app.include_router(_router(settings), prefix="/api/v1")
    return app


def _service(request: Request) -> Service:
    return request.app.state.service


def _principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    header = f"Bearer {credentials.credentials}" if credentials else None
    return authenticate(_service(request).store, header)


Svc = Annotated[Service, Depends(_service)]
Who = Annotated[Principal, Depends(_principal)]
Project = Annotated[str, m.Name]
Domain = Annotated[str, m.Name]


def _router(settings: ServerSettings) -> APIRouter:  # noqa: C901 - one route per function
    r = APIRouter()

    def url(execution_id: str) -> str:
        base = settings.public_url.rstrip("/")
        return f"{base}/api/v1/executions/{execution_id}"

    def scoped(service: Service, who: Principal, execution_id: str, role: str = "read") -> Any:
        engine, state = service.engine_for(execution_id)
        if not who.can(state.project, "read"):
            raise NotFound(f"no execution {execution_id!r}")  # no hint it exists elsewhere
        who.check(state.project, role)
        return engine, state

    # -- who and where --------------------------------------------------------------------
    @r.get("/whoami", response_model=m.Whoami, tags=["projects"])
    def whoami(who: Who) -> m.Whoami:
        return m.Whoami(project=who.project, role=who.role, name=who.name)

    @r.get("/projects", response_model=list[str], tags=["projects"])
    def projects(service: Svc, who: Who) -> list[str]:
        every = listing.projects(service.store)
        return (
            every if who.project == "*" else [p for p in every if p == who.project] or [who.project]
        )

    @r.get("/projects/{project}/domains", response_model=list[str], tags=["projects"])
    def domains(project: Project, service: Svc, who: Who) -> list[str]:
        who.check(project, "read")
        return listing.domains(service.store, project)

    # -- tasks and workflows --------------------------------------------------------------
    base = "/projects/{project}/domains/{domain}"

    @r.post(f"{base}/tasks", response_model=m.Registered, tags=["tasks"])
    def register_task(
        project: Project, domain: Domain, body: m.RegisterTask, service: Svc, who: Who
    ) -> m.Registered:
        who.check(project, "write")
        spec = body.spec.to_spec()
        if body.version is not None and body.version != spec.version():
            raise Conflict(
                f"version {body.version} does not match the task's content "
                f"(its version is {spec.version()}); versions are content hashes"
            )
        version = service.engine(project, domain).register_task(spec, project, domain)
        return m.Registered(version=version)

    @r.get(f"{base}/tasks", tags=["tasks"])
    def list_tasks(
        project: Project,
        domain: Domain,
        service: Svc,
        who: Who,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        who.check(project, "read")
        return listing.list_tasks(service.store, project, domain, limit)

    @r.get(f"{base}/tasks/{{version}}", tags=["tasks"])
    def get_task(
        project: Project, domain: Domain, version: Annotated[str, m.Id], service: Svc, who: Who
    ) -> dict[str, Any]:
        who.check(project, "read")
        row = service.store.task(version)
        if row is None or row["project"] != project or row["domain"] != domain:
            raise NotFound(f"no task version {version!r} in {project}/{domain}")
        return {"version": row["version"], "name": row["name"], "spec": row["spec"]}

    @r.post(f"{base}/workflows", response_model=m.Registered, tags=["workflows"])
    def register_workflow(
        project: Project, domain: Domain, body: m.RegisterWorkflow, service: Svc, who: Who
    ) -> m.Registered:
        who.check(project, "write")
        spec = body.spec.to_spec()
        if body.version is not None and body.version != spec.version():
            raise Conflict(
                f"version {body.version} does not match the workflow's content "
                f"(its version is {spec.version()}); versions are content hashes"
            )
        version = service.engine(project, domain).register_workflow(spec, project, domain)
        return m.Registered(version=version)

    @r.get(f"{base}/workflows", tags=["workflows"])
    def list_workflows(
        project: Project,
        domain: Domain,
        service: Svc,
        who: Who,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        who.check(project, "read")
        return listing.list_workflows(service.store, project, domain, limit)

    @r.get(f"{base}/workflows/{{version}}", tags=["workflows"])
    def get_workflow(
        project: Project, domain: Domain, version: Annotated[str, m.Id], service: Svc, who: Who
    ) -> dict[str, Any]:
        who.check(project, "read")
        row = service.store.workflow(version)
        if row is None or row["project"] != project or row["domain"] != domain:
            raise NotFound(f"no workflow version {version!r} in {project}/{domain}")
        return {"version": row["version"], "name": row["name"], "spec": row["spec"]}

    # -- executions -----------------------------------------------------------------------
    @r.post(f"{base}/executions", response_model=m.Created, status_code=201, tags=["executions"])
    def create_execution(
        project: Project, domain: Domain, body: m.CreateExecution, service: Svc, who: Who
    ) -> m.Created:
        who.check(project, "write")
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
        if (body.task is None) == (body.workflow is None):
            raise UserError("give exactly one of 'task' or 'workflow'")
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
            assert body.workflow is not None
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
        who: Who,
        status: Annotated[
            str | None,
            Query(pattern="^(queued|running|succeeded|failed|cached|aborted)$"),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        before: Annotated[
            float | None, Query(description="created_at of the last row seen")
        ] = None,
    ) -> m.ExecutionPage:
        who.check(project, "read")
        rows = service.store.list_executions(
            project=project, domain=domain, status=status, limit=limit, before=before
        )
        items = [m.ExecutionRow(**{k: r[k] for k in m.ExecutionRow.model_fields}) for r in rows]
        return m.ExecutionPage(
            items=items, next_before=rows[-1]["created_at"] if len(rows) == limit else None
        )

    @r.get("/executions/{execution_id}", response_model=m.ExecutionOut, tags=["executions"])
    def get_execution(execution_id: Annotated[str, m.Id], service: Svc, who: Who) -> m.ExecutionOut:
        _, state = scoped(service, who, execution_id)
        return m.ExecutionOut.of(state)

    @r.get(
        "/executions/{execution_id}/events", response_model=list[m.EventOut], tags=["executions"]
    )
    def get_events(
        execution_id: Annotated[str, m.Id],
        service: Svc,
        who: Who,
        after: Annotated[int, Query(ge=0)] = 0,
    ) -> list[m.EventOut]:
        engine, _ = scoped(service, who, execution_id)
        return [m.EventOut(**e.to_dict()) for e in engine.events(execution_id, after)]

    @r.get(
        "/executions/{execution_id}/stream",
        tags=["executions"],
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def stream(
        execution_id: Annotated[str, m.Id],
        request: Request,
        service: Svc,
        who: Who,
        after: Annotated[int, Query(ge=0)] = 0,
    ) -> StreamingResponse:
        """Server-sent events: every event after ``after`` as it is committed
        (``event: event``), the task's output (``event: log``), then ``event: end``."""
        engine, _ = await run_in_threadpool(scoped, service, who, execution_id)

        async def events() -> AsyncIterator[str]:
            cursor, logs, seen = after, 0, -1
            while True:
                batch = await run_in_threadpool(engine.events, execution_id, cursor)
                done = False
                for e in batch:
                    cursor = e.seq
                    done = done or e.kind.value in _TERMINAL
                    yield f"event: event\nid: {e.seq}\ndata: {json.dumps(e.to_dict())}\n\n"
                lines, logs = service.logs_since(execution_id, logs)
                for stream_name, text in lines:
                    data = json.dumps({"stream": stream_name, "text": text})
                    yield f"event: log\ndata: {data}\n\n"
                if done:
                    yield "event: end\ndata: {}\n\n"
                    return
                if await request.is_disconnected():
                    return
                changed = await run_in_threadpool(service.wait, execution_id, seen, 10.0)
                if changed == seen:
                    yield ": keep-alive\n\n"
                seen = changed

        return StreamingResponse(events(), media_type="text/event-stream")

    @r.post("/executions/{execution_id}/abort", status_code=202, tags=["executions"])
    def abort(execution_id: Annotated[str, m.Id], service: Svc, who: Who) -> dict[str, str]:
        scoped(service, who, execution_id, "write")
        service.abort(execution_id)
        return {"id": execution_id, "status": "aborting"}

    @r.post(
        "/executions/{execution_id}/recover",
        response_model=m.Created,
        status_code=201,
        tags=["executions"],
    )
    def recover(
        execution_id: Annotated[str, m.Id],
        service: Svc,
        who: Who,
        body: m.Recover | None = None,
    ) -> m.Created:
        scoped(service, who, execution_id, "write")
        new = service.recover(execution_id, (body or m.Recover()).max_parallel)
        return m.Created(id=new, url=url(new))

    @r.get(
        "/executions/{execution_id}/logs/{node}/{attempt}",
        response_class=PlainTextResponse,
        tags=["executions"],
    )
    def logs(
        execution_id: Annotated[str, m.Id],
        node: Annotated[str, m.Field(max_length=250)],
        attempt: Annotated[int, m.Field(ge=1)],
        service: Svc,
        who: Who,
        stream: Annotated[str, Query(pattern="^(stdout|stderr)$")] = "stdout",
    ) -> str:
        engine, _ = scoped(service, who, execution_id)
        return engine.logs(execution_id, node, attempt, stream)

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
        artifact_id: Annotated[str, m.Id],
        request: Request,
        service: Svc,
        who: Who,
        hash: Annotated[str, Query(min_length=64, max_length=64, pattern="^[0-9a-f]+$")],
        serializer: Annotated[str, Query(max_length=50, pattern="^[a-z0-9_-]+$")],
        python_type: Annotated[str, Query(max_length=200)],
        preview: Annotated[str, Query(max_length=200)] = "",
    ) -> m.ArtifactOut:
        """Upload a value's bytes (the client serialized it). Refused unless they hash
        to ``hash``; for typed encodings the id must match too."""
        who.check(project, "write")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > settings.max_upload:
            raise PayloadTooLarge(
                f"upload of {declared} bytes is over the server's limit of {settings.max_upload}"
            )
        if serializer in _DETERMINISTIC and artifact_id != typed_fingerprint(serializer, hash):
            raise CorruptArtifact(
                f"artifact id {artifact_id} does not match its {serializer} bytes' hash"
            )
        engine = service.engine(project, domain)
        with tempfile.SpooledTemporaryFile(max_size=8 << 20) as spool:
            size = 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > settings.max_upload:
                    raise PayloadTooLarge(
                        f"upload is over the server's limit of {settings.max_upload} bytes"
                    )
                spool.write(chunk)
            spool.seek(0)
            digest, key, size = await run_in_threadpool(engine.storage.put_stream, spool, hash)
        ref = ArtifactRef(artifact_id, digest, key, size, serializer, python_type, preview[:200])
        await run_in_threadpool(engine.register_artifacts, [ref])
        return m.ArtifactOut.of(ref)

    @r.get(f"{base}/artifacts/{{artifact_id}}", response_model=m.ArtifactOut, tags=["artifacts"])
    def artifact(
        project: Project, domain: Domain, artifact_id: Annotated[str, m.Id], service: Svc, who: Who
    ) -> m.ArtifactOut:
        who.check(project, "read")
        _, ref = artifact_in(service, project, domain, artifact_id)
        return m.ArtifactOut.of(ref)

    @r.get(
        f"{base}/artifacts/{{artifact_id}}/bytes",
        tags=["artifacts"],
        response_class=StreamingResponse,
        responses={200: {"content": {"application/octet-stream": {}}}},
    )
    def download(
        project: Project, domain: Domain, artifact_id: Annotated[str, m.Id], service: Svc, who: Who
    ) -> StreamingResponse:
        who.check(project, "read")
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

    @r.get(f"{base}/artifacts/{{artifact_id}}/lineage", tags=["artifacts"])
    def lineage(
        project: Project, domain: Domain, artifact_id: Annotated[str, m.Id], service: Svc, who: Who
    ) -> dict[str, Any]:
        who.check(project, "read")
        engine, ref = artifact_in(service, project, domain, artifact_id)
        return engine.lineage(ref.id)

    # -- cache ----------------------------------------------------------------------------
    @r.get(f"{base}/cache", response_model=list[m.CacheEntryOut], tags=["cache"])
    def cache(
        project: Project,
        domain: Domain,
        service: Svc,
        who: Who,
        task: Annotated[str | None, Query(max_length=200)] = None,
    ) -> list[m.CacheEntryOut]:
        who.check(project, "read")
        rows = listing.list_cache(service.store, project, domain, task)
        return [m.CacheEntryOut(**{k: r[k] for k in m.CacheEntryOut.model_fields}) for r in rows]

    @r.delete(f"{base}/cache", response_model=m.Cleared, tags=["cache"])
    def clear_cache(
        project: Project,
        domain: Domain,
        service: Svc,
        who: Who,
        task: Annotated[str | None, Query(max_length=200)] = None,
    ) -> m.Cleared:
        who.check(project, "write")
        return m.Cleared(cleared=listing.clear_cache(service.store, project, domain, task))

    @r.get("/server", tags=["server"])
    def server_status(service: Svc, who: Who) -> dict[str, Any]:
        """Running executions and the fair-share gate (operators: a '*' admin token)."""
        who.check("*", "admin")
        return service.status()

    return r
