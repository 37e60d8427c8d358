"""Where papercrane keeps things. Read from the environment only when asked, never at
import, so tests can point every engine at its own ``tmp_path``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def default_home() -> Path:
    return Path(os.environ.get("PAPERCRANE_HOME") or Path.home() / ".papercrane").expanduser()


@dataclass(frozen=True)
class Config:
    """Embedded-engine settings.

    ``db_url`` defaults to a SQLite file in ``home``; ``storage_url`` to a ``store/``
    folder beside it. Any fsspec URL works for storage (``memory://``, ``s3://...``),
    with the caveat that subprocess executors need storage they can reach.
    """

    home: Path = field(default_factory=default_home)
    db_url: str = ""
    storage_url: str = ""
    project: str = "default"
    domain: str = "development"

    def __post_init__(self) -> None:
        object.__setattr__(self, "home", Path(self.home).expanduser())
        if not self.db_url:
            object.__setattr__(self, "db_url", f"sqlite:///{self.home / 'papercrane.db'}")
        if not self.storage_url:
            object.__setattr__(self, "storage_url", str(self.home / "store"))

    @classmethod
    def from_env(cls, **overrides: object) -> Config:
        env = os.environ
        values: dict[str, object] = {
            "home": default_home(),
            "db_url": env.get("PAPERCRANE_DB", ""),
            "storage_url": env.get("PAPERCRANE_STORAGE", ""),
            "project": env.get("PAPERCRANE_PROJECT", "default"),
            "domain": env.get("PAPERCRANE_DOMAIN", "development"),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
