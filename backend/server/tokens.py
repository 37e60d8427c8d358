"""Token administration over the API: what ``papercrane token create|list|revoke`` use
when ``PAPERCRANE_URL`` is set, so tokens land in the server's database (created on the
client's own machine, the server would never have known them).

The server's operator (a ``*`` admin token) manages every token; a project's admin
token manages that project's tokens only, and never sees the others.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from ..errors import NotFound, UserError
from . import models as m
from .auth import ROLES, AuthError, Principal, create_token, list_tokens, revoke_token
from .deps import Svc, Who
from .errors import responses as _errors

#: A project's name, or ``*`` (every project: an operator's token).
_PROJECT = f"^(\\*|{m.NAME_PATTERN[1:-1]})$"


class NewToken(BaseModel):
    project: str = Field(min_length=1, max_length=100, pattern=_PROJECT)
    role: str = Field(default="write", pattern=f"^({'|'.join(ROLES)})$")
    name: str = Field(default="", max_length=200, pattern=m.TEXT_PATTERN)


class TokenOut(BaseModel):
    id: str
    project: str
    role: str
    name: str
    created_at: float
    revoked: bool


class CreatedToken(BaseModel):
    token: str = Field(description="the secret: shown this once, stored only as a hash")
    project: str
    role: str
    name: str


class Revoked(BaseModel):
    revoked: int


def _admin_of(who: Principal, project: str | None) -> None:
    """``who`` may manage the tokens of ``project`` (None: of every project it may)."""
    if project == "*" or (project is None and who.project == "*"):
        if who.project != "*" or who.role != "admin":
            raise AuthError(
                "tokens for every project ('*') are the server operator's: use a token "
                "created with --project '*' --role admin",
                forbidden=True,
            )
        return
    who.check(project or who.project, "admin")


def router() -> APIRouter:
    r = APIRouter(tags=["tokens"])

    @r.get("/tokens", response_model=list[TokenOut])
    def tokens(
        service: Svc,
        who: Who,
        project: Annotated[str | None, Query(max_length=100, pattern=m.NAME_PATTERN)] = None,
    ) -> list[dict[str, Any]]:
        """Tokens without their secret: every one for the operator, a project's for its
        admin (``project`` narrows the operator's list to one project)."""
        if who.project != "*":
            project = project or who.project
        _admin_of(who, project)
        return list_tokens(service.store, project)

    @r.post("/tokens", response_model=CreatedToken, status_code=201, responses=_errors(400))
    def create(body: NewToken, service: Svc, who: Who) -> CreatedToken:
        if body.project == "*" and body.role != "admin":
            raise UserError("a token for every project ('*') must have role 'admin'")
        _admin_of(who, body.project)
        token = create_token(service.store, body.project, body.role, body.name)
        return CreatedToken(token=token, project=body.project, role=body.role, name=body.name)

    @r.delete("/tokens/{token_id}", response_model=Revoked, responses=_errors(404))
    async def revoke(
        token_id: Annotated[str, Path(min_length=8, max_length=64, pattern="^[0-9a-f]+$")],
        service: Svc,
        who: Who,
    ) -> Revoked:
        """Revoke the active token(s) whose id starts so (at least 8 characters of the
        id ``GET /tokens`` shows), among those this token manages."""
        project = None if who.project == "*" else who.project
        _admin_of(who, project)
        count = await run_in_threadpool(revoke_token, service.store, token_id, project)
        if not count:
            raise NotFound(f"no active token with id {token_id!r}")
        return Revoked(revoked=count)

    return r
