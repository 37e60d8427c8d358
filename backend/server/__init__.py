"""``papercrane server``: a FastAPI app over the engine, for a team.

Executions run on the server (its scheduler dispatches attempts to its executor), so a
notebook can submit and disconnect; a restarted server resumes what was running. The
server stores and moves bytes and hashes; it never unpickles user data.

Importing this package needs no web framework (``papercrane token`` uses ``auth``);
``create_app`` loads FastAPI when asked for.
"""

from __future__ import annotations

from typing import Any

from .settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(name)
