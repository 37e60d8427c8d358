"""What a task displays: its last expression's value, and what its ``display()`` calls
showed when it runs outside the kernel, as JSON mime bundles the kernel shows in the
cell once the attempt has ended (a failed one included), a map's elements in order."""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

#: What one task (or one map, its elements together) may keep of what it displayed.
MAX_DISPLAY_BYTES = 4 << 20


def display_bundle(
    value: Any, formatter: Any = None, include: Any = None, exclude: Any = None
) -> dict[str, Any] | None:
    """A JSON mime bundle of the cell's final value (or of what it passed to
    ``display()``), as the notebook would show it."""
    if value is None:
        return None
    try:
        if formatter is None:
            from IPython import get_ipython
            from IPython.core.formatters import DisplayFormatter

            shell = get_ipython()
            formatter = shell.display_formatter if shell is not None else DisplayFormatter()
        data, metadata = formatter.format(value, include=include, exclude=exclude)
    except Exception:
        data, metadata = {"text/plain": repr(value)}, {}
    data = {k: v for k, v in data.items() if len(str(v)) < MAX_DISPLAY_BYTES}
    if not data:
        return None
    return {"data": data, "metadata": metadata}


class Display:
    """``display(*objs)`` for a task outside the kernel, which a notebook cell has as a
    builtin and a task's code is written for: each object's mime bundle, formatted as
    the notebook would, is kept for the kernel to show in the cell once the attempt
    ends (after what the cell printed, before its last expression's value or its
    traceback).

    A display with a ``display_id`` (``display(x, display_id=True)``, a progress line
    updated as the work goes) returns a handle as IPython's does, so code written for
    a notebook runs; its updates replace what is kept, and the cell shows each such
    display as it was last updated."""

    def __init__(self, displayed: list[dict[str, Any]]) -> None:
        self._displayed = displayed
        self._size = 0
        self._formatter: Any = None
        #: Where each display id's bundles are in ``displayed``.
        self._ids: dict[str, list[int]] = {}

    def __call__(
        self,
        *objs: Any,
        include: Any = None,
        exclude: Any = None,
        metadata: dict[str, Any] | None = None,
        raw: bool = False,
        display_id: str | bool | None = None,
        update: bool = False,
        **ignored: Any,
    ) -> DisplayHandle | None:
        # (transient, clear: nothing is shown until the attempt ends)
        if display_id is True:
            display_id = uuid.uuid4().hex
        for obj in objs:
            bundle = self._bundle(obj, include, exclude, metadata, raw)
            if bundle is None:
                continue
            if update and display_id:
                self._replace(str(display_id), bundle)
            elif self._keep(bundle):
                if display_id:
                    self._ids.setdefault(str(display_id), []).append(len(self._displayed) - 1)
            else:
                break
        return DisplayHandle(self, str(display_id)) if display_id else None

    def _bundle(
        self, obj: Any, include: Any, exclude: Any, metadata: dict[str, Any] | None, raw: bool
    ) -> dict[str, Any] | None:
        if raw:
            return {"data": dict(obj), "metadata": dict(metadata or {})}
        if self._formatter is None:
            self._formatter = _formatter()
        bundle = display_bundle(obj, self._formatter, include, exclude)
        if bundle is not None and metadata:
            bundle["metadata"] = {**bundle["metadata"], **metadata}
        return bundle

    def _keep(self, bundle: dict[str, Any]) -> bool:
        size = len(json.dumps(bundle, default=str))
        if self._size + size > MAX_DISPLAY_BYTES:
            print(
                f"papercrane: display() output past {MAX_DISPLAY_BYTES >> 20} MiB is not "
                "kept; write big results to outputs instead",
                file=sys.stderr,
            )
            return False
        self._size += size
        self._displayed.append(bundle)
        return True

    def _replace(self, display_id: str, bundle: dict[str, Any]) -> None:
        """An update: every display shown with this id shows ``bundle`` now (an id not
        shown yet is ignored, as in a notebook)."""
        for index in self._ids.get(display_id, ()):
            self._displayed[index] = bundle


class DisplayHandle:
    """What ``display(..., display_id=...)`` returns in a task outside the kernel: the
    subset of IPython's ``DisplayHandle`` a notebook's code calls."""

    def __init__(self, owner: Display, display_id: str) -> None:
        self._owner = owner
        self.display_id = display_id

    def display(self, obj: Any, **kwargs: Any) -> None:
        self._owner(obj, display_id=self.display_id, **kwargs)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        """Left at the cell's top level, the handle is an output, as an inline task's
        IPython handle is: it goes back as one (the task's ``Display`` stays here)."""
        try:
            from IPython.display import DisplayHandle as IPythonHandle
        except ImportError:
            return (str, (self.display_id,))
        return (IPythonHandle, (self.display_id,))

    def update(self, obj: Any, **kwargs: Any) -> None:
        self._owner(obj, display_id=self.display_id, update=True, **kwargs)


def _formatter() -> Any:
    """IPython's display formatter, or None (``display_bundle`` then falls back to the
    object's repr) where IPython is not installed."""
    try:
        from IPython.core.formatters import DisplayFormatter
    except ImportError:
        return None
    return DisplayFormatter()


def joined_displays(displays: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The ``display()`` bundles of a map's elements, in order, as one display (their
    last expressions' values are not shown: a value per element would drown the cell).
    Kept up to the size one task may keep, then one line says how many were left out."""
    bundles: list[dict[str, Any]] = []
    for display in displays:
        if display and display.get("displayed"):
            bundles.extend(display["displayed"])
    if not bundles:
        return None
    size = 0
    for i, bundle in enumerate(bundles):
        size += len(json.dumps(bundle, default=str))
        if size > MAX_DISPLAY_BYTES:
            left = len(bundles) - i
            note = (
                f"papercrane: {left} more display() output(s) of the map's elements are not "
                f"shown (past {MAX_DISPLAY_BYTES >> 20} MiB)"
            )
            bundles[i:] = [{"data": {"text/plain": note}, "metadata": {}}]
            break
    return {"data": {}, "metadata": {}, "displayed": bundles}


def shown_bundles(display: dict[str, Any] | None) -> list[dict[str, Any]]:
    """What a task's cell shows once it ran, in order: the bundles its ``display()``
    calls kept (a task outside the kernel), then its last expression's value."""
    if not display:
        return []
    bundles = list(display.get("displayed") or [])
    if display.get("data"):
        bundles.append({"data": display["data"], "metadata": display.get("metadata") or {}})
    return bundles


def shown_before_failing(displayed: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What a failed attempt's ``display()`` calls showed, shown with its traceback as a
    cell shows what it displayed before raising (``shown_bundles``)."""
    return {"data": {}, "metadata": {}, "displayed": displayed} if displayed else None
