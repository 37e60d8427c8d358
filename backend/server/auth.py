"""Bearer tokens scoped to a project, with a role: read < write < admin.

Tokens are random strings shown once at creation; only their sha256 is stored. An
admin token for project ``*`` is the server operator's: it sees every project.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

import sqlalchemy as sa

from ..errors import PapercraneError
from ..store import Store
from ..store.schema import tokens

ROLES = ("read", "write", "admin")


class AuthError(PapercraneError):
    """401: no usable token; 403 when ``forbidden``."""

    def __init__(self, message: str, forbidden: bool = False) -> None:
        super().__init__(message)
        self.forbidden = forbidden


@dataclass(frozen=True)
class Principal:
    project: str
    role: str
    name: str = ""

    def can(self, project: str, role: str) -> bool:
        if self.project not in ("*", project):
            return False
        return ROLES.index(self.role) >= ROLES.index(role)

    def check(self, project: str, role: str) -> None:
        if self.project not in ("*", project):
            # The same 403 whether or not the project exists: a token must not learn
            # which other projects there are.
            raise AuthError(f"this token has no access to project {project!r}", forbidden=True)
        if ROLES.index(self.role) < ROLES.index(role):
            raise AuthError(
                f"this token's role is {self.role!r}; this needs {role!r}", forbidden=True
            )


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(store: Store, project: str, role: str, name: str = "") -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    token = "pc_" + secrets.token_urlsafe(32)
    with store.write() as conn:
        conn.execute(
            tokens.insert().values(
                digest=_digest(token),
                project=project,
                role=role,
                name=name,
                created_at=time.time(),
            )
        )
    return token


def list_tokens(store: Store, project: str | None = None) -> list[dict[str, object]]:
    """Tokens without their secret: an id (the digest's first 12 characters) to revoke;
    all of them, or ``project``'s."""
    query = sa.select(tokens).order_by(tokens.c.created_at)
    if project is not None:
        query = query.where(tokens.c.project == project)
    with store.read() as conn:
        rows = conn.execute(query).all()
    return [
        {
            "id": r.digest[:12],
            "project": r.project,
            "role": r.role,
            "name": r.name,
            "created_at": r.created_at,
            "revoked": r.revoked_at is not None,
        }
        for r in rows
    ]


def revoke_token(store: Store, token_id: str, project: str | None = None) -> int:
    """Revoke the token(s) whose id (digest prefix, at least 8 characters) matches, of
    any project or of ``project`` only (a project's admin revokes its own project's)."""
    if len(token_id) < 8:
        raise ValueError("give at least 8 characters of the token id (see `papercrane token list`)")
    which = [tokens.c.digest.startswith(token_id.lower()), tokens.c.revoked_at.is_(None)]
    if project is not None:
        which.append(tokens.c.project == project)
    with store.write() as conn:
        return conn.execute(tokens.update().where(*which).values(revoked_at=time.time())).rowcount


def authenticate(store: Store, header: str | None) -> Principal:
    if not header or not header.lower().startswith("bearer "):
        raise AuthError(
            "missing bearer token: send 'Authorization: Bearer <token>' (create one with "
            "`papercrane token create --project P`)"
        )
    token = header[7:].strip()
    with store.read() as conn:
        row = conn.execute(
            sa.select(tokens.c.project, tokens.c.role, tokens.c.name).where(
                tokens.c.digest == _digest(token), tokens.c.revoked_at.is_(None)
            )
        ).first()
    if row is None:
        raise AuthError("unknown or revoked token")
    return Principal(row.project, row.role, row.name)
