"""Checkpoints: save intra-task state so a retried attempt resumes where the last one
stopped, not from scratch. Inside a task::

    import papercrane.checkpoint as ckpt

    state = ckpt.load(default={"epoch": 0})
    for epoch in range(state["epoch"], 100):
        train_one_epoch()
        ckpt.save({"epoch": epoch + 1})

The checkpoint lives in storage under the node's prefix, shared by all attempts of that
node in one execution (whatever killed the previous attempt: a lost pod, a timeout, an
exception). Outside a task, ``save`` and ``load`` raise with a clear message.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

_where: ContextVar[tuple[Any, str] | None] = ContextVar("papercrane_checkpoint", default=None)


class location:  # noqa: N801 (used as a function: ``with location(storage, key):``)
    """Used by the runner around a task's code. A class rather than a generator: a map
    enters it once per element, and a generator's set-up cost more than the cell."""

    __slots__ = ("_place", "_token")

    def __init__(self, storage: Any, key: str) -> None:
        self._place = (storage, key)

    def __enter__(self) -> None:
        self._token = _where.set(self._place)

    def __exit__(self, *exc: object) -> None:
        _where.reset(self._token)


def _here() -> tuple[Any, str]:
    found = _where.get()
    if found is None:
        raise RuntimeError(
            "papercrane.checkpoint works inside a %%task (where an attempt can resume); "
            "this code is not running as a task"
        )
    return found


def save(value: Any) -> None:
    """Replace the node's checkpoint with ``value`` (atomically: all or nothing)."""
    import cloudpickle

    storage, key = _here()
    storage.write_bytes(key, cloudpickle.dumps(value, protocol=5))


def load(default: Any = None) -> Any:
    """The last checkpoint saved by an attempt of this node, or ``default``."""
    import pickle

    from papercrane.backend.errors import CorruptArtifact

    storage, key = _here()
    try:
        return pickle.loads(storage.read_bytes(key))
    except CorruptArtifact:  # (the storage's "missing" error)
        return default


def exists() -> bool:
    storage, key = _here()
    return storage.exists(key)
