"""``papercrane server``: a FastAPI app over the engine, for a team.

Executions run on the server (its scheduler dispatches attempts to its executor), so a
notebook can submit and disconnect; a restarted server resumes what was running. The
server stores and moves bytes and hashes; it never unpickles user data.
"""

from .app import create_app
from .settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]
