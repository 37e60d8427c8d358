"""Server settings, from ``papercrane server`` flags (and the environment)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..config import default_home


@dataclass
class ServerSettings:
    home: Path = field(default_factory=default_home)
    db_url: str = ""
    storage_url: str = ""
    executor: str = "local"
    #: A project's default executor, where it differs from ``executor``.
    project_executors: dict[str, str] = field(default_factory=dict)
    #: Attempts running at once on this server, over all projects.
    max_running: int = field(default_factory=lambda: max(2, (os.cpu_count() or 2) * 2))
    #: Per project, at most this many running attempts (``project_limits`` overrides).
    project_limit: int = 0  # 0: no limit beyond max_running
    project_limits: dict[str, int] = field(default_factory=dict)
    max_upload: int = 2 << 30
    #: How executions' URLs are shown to clients (``--public-url``).
    public_url: str = ""

    def __post_init__(self) -> None:
        self.home = Path(self.home).expanduser()
        if not self.db_url:
            self.db_url = f"sqlite:///{self.home / 'papercrane.db'}"
        if not self.storage_url:
            self.storage_url = str(self.home / "store")

    def storage_for(self, project: str, domain: str) -> str:
        """Each project and domain keeps its values under its own prefix."""
        return f"{self.storage_url.rstrip('/')}/projects/{project}/{domain}"
