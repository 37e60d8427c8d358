"""Where papercrane keeps things. Read from the environment only when asked, never at
import, so tests can point every engine at its own ``tmp_path``."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Names of projects, domains, tasks and workflows: what the server's API accepts (its
#: models use this), so a notebook that runs embedded runs on a server unchanged.
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.\-]*$"
_NAME = re.compile(NAME_PATTERN)
#: Task, node and workflow names: at most this long, so that a map element's id
#: (``name[12345]``) still fits the store's 200-character columns.
NAME_LENGTH = 150
#: The longest project or domain (the store's columns hold 100 characters).
SCOPE_LENGTH = 100
#: A project or domain that stands for every one (as a token's project for operators):
#: ``cache clear --project '*'``.
ANY_SCOPE = "*"
#: An execution id may be given by its first this many characters or more (artifacts by
#: six: theirs are longer), where that start is one execution's alone.
EXECUTION_PREFIX = 4
#: Execution and object ids as the server's API takes them (its paths and models use
#: this); the remote client reads anything else as an unknown execution without asking.
ID_PATTERN = r"^[0-9a-f]{1,64}$"


def check_name(
    kind: str, value: str, *, limit: int = NAME_LENGTH, where: str = "", error: Any = None
) -> str:
    """Refuse a name the server would (``NAME_PATTERN``), saying what it may be and, with
    ``where``, where it came from. ``error``: the ``UserError`` class to raise (default
    ``ConfigError``)."""
    if len(value) <= limit and _NAME.match(value):
        return value
    from .errors import ConfigError

    origin = f"; it comes from {where}" if where else ""
    raise (error or ConfigError)(
        f"{kind} {value!r} is not usable: start with a letter or _, then letters, digits, "
        f"_, - or . (at most {limit} characters){origin}"
    )


def check_scope(project: str, domain: str, *, where: str = "") -> None:
    """Refuse a project or domain the server would (and Kubernetes namespaces are made of
    them), naming it and where it can be set (``where``: the one place it came from)."""
    for kind, value in (("project", project), ("domain", domain)):
        origin = where or f"--{kind}, %config Papercrane.{kind} or PAPERCRANE_{kind.upper()}"
        check_name(kind, value, limit=SCOPE_LENGTH, where=origin)


def workflow_name(path: str | Path) -> str:
    """A notebook's default workflow name: its file name made to fit ``NAME_PATTERN``, so
    that ``My Analysis (v2).ipynb`` can run on a server (``My_Analysis_v2``): accents
    dropped, any other run of characters the pattern refuses made one ``_``."""
    import unicodedata

    stem = unicodedata.normalize("NFKD", Path(path).stem)
    ascii_stem = stem.encode("ascii", "ignore").decode()
    name = re.sub(r"[^A-Za-z0-9_.\-]+", "_", ascii_stem).strip("_.-")
    if not name:
        return "notebook"
    if not _NAME.match(name):
        name = "_" + name  # (it began with a digit)
    return name[:NAME_LENGTH]


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
