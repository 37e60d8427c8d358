"""papercrane: Jupyter-native workflow orchestration.

``%load_ext papercrane`` registers the ``%%task`` cell magic. Loading is cheap on
purpose: the engine (storage, serializers, the store) is imported when the first task
runs, not before; and on the default SQLite store a task run does not import SQLAlchemy
at all (``backend/store/repo.py``).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def load_ipython_extension(ipython: Any) -> None:
    from .magics import PapercraneMagics

    ipython.register_magics(PapercraneMagics)


def unload_ipython_extension(ipython: Any) -> None:
    from .magics import PapercraneMagics

    for magics in list(ipython.magics_manager.registry.values()):
        if isinstance(magics, PapercraneMagics):
            magics.close()


__all__ = ["__version__", "load_ipython_extension", "unload_ipython_extension"]
