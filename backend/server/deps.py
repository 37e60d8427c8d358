"""FastAPI dependencies: the token of a request and what it may reach.

Each is checked before the request's body and parameters are looked at: a token for
another project gets 403 however it phrased its request; an execution of another
project is 404, the answer for an id that doesn't exist.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..engine import LocalEngine
from ..errors import NotFound
from ..model import ExecutionState
from . import models as m
from .auth import AuthError, Principal, authenticate
from .errors import operations
from .service import Service

_bearer = HTTPBearer(auto_error=False, description="a token from `papercrane token create`")


def service(request: Request) -> Service:
    return request.app.state.service


def principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    header = f"Bearer {credentials.credentials}" if credentials else None
    return authenticate(service(request).store, header)


Svc = Annotated[Service, Depends(service)]
Who = Annotated[Principal, Depends(principal)]
# Projects and domains are stored in columns of 100 characters.
Project = Annotated[str, Path(min_length=1, max_length=100, pattern=m.NAME_PATTERN)]
Domain = Annotated[str, Path(min_length=1, max_length=100, pattern=m.NAME_PATTERN)]
ExecutionId = Annotated[str, Path(min_length=1, max_length=64, pattern=m.ID_PATTERN)]
ObjectId = Annotated[str, Path(min_length=1, max_length=64, pattern=m.ID_PATTERN)]


def known_query(request: Request, who: Who) -> None:
    """Refuse query parameters the route doesn't take: ``?stauts=failed`` would
    otherwise list every execution as if it were a filter. (After the token check.)"""
    operation = operations(request.app, request.url.path).get(request.method.lower())
    if operation is None:
        return
    known = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        takes = ", ".join(sorted(known)) or "none"
        raise RequestValidationError(
            [
                {
                    "type": "extra_forbidden",
                    "loc": ("query", name),
                    "msg": f"not a parameter of this route (it takes: {takes})",
                }
                for name in unknown
            ]
        )


def member(role: str) -> Any:
    """The token, if it may act in the path's ``project`` with ``role``: checked before
    the request's body or parameters are looked at."""

    def check(project: Project, who: Who) -> Principal:
        who.check(project, role)
        return who

    return Depends(check)


Reader = Annotated[Principal, member("read")]
Writer = Annotated[Principal, member("write")]


def operator(who: Who) -> Principal:
    if who.project != "*" or who.role != "admin":
        raise AuthError(
            "this is for the server's operator: a token created with --project '*' --role admin",
            forbidden=True,
        )
    return who


Operator = Annotated[Principal, Depends(operator)]
Scoped = tuple[LocalEngine, ExecutionState]


def execution(role: str) -> Any:
    """The execution in the path, if the token may see it (404 if it may not, the same
    answer as for an id that doesn't exist) and act on it with ``role`` (403)."""

    def find(execution_id: ExecutionId, service: Svc, who: Who) -> Scoped:
        try:
            engine, state = service.engine_for(execution_id)
        except NotFound:
            raise NotFound(f"no execution {execution_id!r}") from None
        if not who.can(state.project, "read"):
            raise NotFound(f"no execution {execution_id!r}")
        who.check(state.project, role)
        return engine, state

    return Depends(find)


Readable = Annotated[Scoped, execution("read")]
Writable = Annotated[Scoped, execution("write")]
