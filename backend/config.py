"""Where papercrane keeps things. Read from the environment only when asked, never at
import, so tests can point every engine at its own ``tmp_path``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

#: Names of projects, domains, tasks and workflows: what the server's API accepts (its
#: models use this), so a notebook that runs embedded runs on a server unchanged.
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.\-]*$"
#: The longest project or domain (the store's columns hold 100 characters).
SCOPE_LENGTH = 100


def check_scope(project: str, domain: str, *, where: str = "") -> None:
    """Refuse a project or domain the server would (and Kubernetes namespaces are made of
    them), naming it and where it can be set (``where``: the one place it came from)."""
    import re

    for kind, value in (("project", project), ("domain", domain)):
        if not re.match(NAME_PATTERN, value) or len(value) > SCOPE_LENGTH:
            from .errors import ConfigError

            origin = where or (f"--{kind}, %config Papercrane.{kind} or PAPERCRANE_{kind.upper()}")
            raise ConfigError(
                f"{kind} {value!r} is not usable: start with a letter or _, then letters, "
                f"digits, _, - or . (at most {SCOPE_LENGTH} characters); it comes from "
                f"{origin}"
            )


def workflow_name(path: str | Path) -> str:
    """A notebook's default workflow name: its file name made to fit ``NAME_PATTERN``, so
    that ``My Analysis (v2).ipynb`` can run on a server (``My_Analysis_v2``): accents
    dropped, any other run of characters the pattern refuses made one ``_``."""
    import re
    import unicodedata

    stem = unicodedata.normalize("NFKD", Path(path).stem)
    ascii_stem = stem.encode("ascii", "ignore").decode()
    name = re.sub(r"[^A-Za-z0-9_.\-]+", "_", ascii_stem).strip("_.-")
    if not name:
        return "notebook"
    if not re.match(NAME_PATTERN, name):
        name = "_" + name  # (it began with a digit)
    return name[:150]


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
