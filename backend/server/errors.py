"""How the API answers a mistake: one place maps papercrane's exceptions to HTTP
statuses, request validation errors become one readable line naming each field (with
the details in ``errors``), and every route's possible errors are documented in OpenAPI.
A client's mistake is a 4xx, never a 500.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..errors import Conflict, CorruptArtifact, NotFound, PapercraneError, StorageError, UserError
from . import models as m
from .auth import AuthError


class PayloadTooLarge(UserError):
    """Over a size limit of the server's. ``limit`` (bytes) goes into the answer as a
    field of its own: a client names it in its own message without parsing this one."""

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


#: The header on papercrane's own error answers (an unknown object, not an unknown path):
#: a client tells by it a missing object from an address where no papercrane API is.
OWN_ERROR = "Papercrane-Error"


def status_for(exc: PapercraneError) -> int:
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


WHY = {
    400: "The request can't be carried out as asked (the message says why)",
    401: "No token, or an unknown or revoked one",
    403: "The token may not do this in this project",
    404: "No such object in this project (or one this token can't see)",
    409: "Conflicts with what exists: a version that doesn't match its content, "
    "an execution that already ended",
    413: "Over the server's upload limit (--max-upload)",
    422: "The request is malformed: the message names the field",
}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route can answer with."""
    return {code: {"model": m.ErrorOut, "description": WHY[code]} for code in codes}


def printable(text: str) -> str:
    # Whatever a client sent comes back escaped, never as bytes UTF-8 can't encode.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _where(loc: tuple[Any, ...]) -> str:
    """('body', 'spec', 'nodes', 0, 'id') -> 'spec.nodes[0].id'; a parameter is named
    with its kind ('query parameter hash')."""
    if not loc:
        return "request"
    kind, rest = loc[0], loc[1:]
    if kind in ("query", "path", "header") and rest:
        return f"{kind} parameter {rest[0]!r}"
    text = ""
    for part in rest if kind == "body" else loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "body"


def validation_body(exc: RequestValidationError) -> dict[str, Any]:
    """``detail``: the first problems in one line, each led by the field it is about;
    ``errors``: every problem, its location and type (never the value sent)."""
    errors = []
    lines = []
    for e in exc.errors():
        loc = tuple(e.get("loc", ()))
        msg = e.get("msg", "invalid")
        if e.get("type") == "json_invalid":
            where = "body"
            msg = f"is not valid JSON: {(e.get('ctx') or {}).get('error', msg)}"
            if len(loc) > 1 and isinstance(loc[1], int):
                msg += f" (at character {loc[1]})"
        else:
            where = _where(loc)
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
        line = f"{where}: {msg}"
        if line in lines:
            continue  # (a path parameter that a dependency checks too is reported twice)
        lines.append(line)
        errors.append(
            {
                "loc": [str(p) if not isinstance(p, int) else p for p in loc],
                "msg": printable(msg),
                "type": e.get("type", ""),
            }
        )
    more = f" (and {len(lines) - 3} more)" if len(lines) > 3 else ""
    return {"detail": printable("; ".join(lines[:3]) + more), "errors": errors}


def operations(app: FastAPI, path: str) -> dict[str, Any]:
    """The OpenAPI operations (by method) of the route template ``path`` matches."""
    for template, by_method in app.openapi()["paths"].items():
        if re.fullmatch(re.sub(r"\\{[^/}]+\\}", "[^/]+", re.escape(template)), path):
            return by_method
    return {}


def allowed(app: FastAPI, path: str) -> str:
    """Every method the path answers to (the ``Allow`` of a 405)."""
    return ", ".join(sorted(method.upper() for method in operations(app, path)))


def install(app: FastAPI) -> None:
    """Register the error handlers on ``app``."""

    @app.exception_handler(PapercraneError)
    async def _error(request: Request, exc: PapercraneError) -> JSONResponse:
        status = status_for(exc)
        headers = {OWN_ERROR: type(exc).__name__}
        if status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        body: dict[str, Any] = {"detail": printable(str(exc))}
        if isinstance(exc, PayloadTooLarge):
            body["limit"] = exc.limit
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette names only the first route of the path
            headers["Allow"] = allowed(request.app, request.url.path) or headers.get("Allow", "")
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _malformed(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_body(exc), status_code=422)
