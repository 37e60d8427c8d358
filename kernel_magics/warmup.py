"""Import papercrane's modules for the first task while the kernel waits for the next cell.

``%load_ext papercrane`` stays cheap (it imports only the magics), so the kernel's
first task pays for importing the engine and papercrane's own modules (~25–45 ms in a
fresh kernel, most of it building dataclasses). Between cells the kernel is idle: a
person is typing, or papermill is saving the notebook. When the cell that loaded the
extension has finished, one daemon thread imports those modules, one at a time; the
first task then finds them in ``sys.modules``, or waits for the one being imported
(Python's per-module import locks), or imports the rest itself.

Why this is safe:

- It only imports modules that the first task imports anyway, and they do nothing on
  import beyond defining things (no store, engine, widget or file is created here:
  those stay on the kernel's thread, created by the first task as before).
- Two threads importing at once can only hand one of them a half-initialized module
  (or raise "deadlock detected") when the modules import each other in a cycle, a
  package's ``__init__`` counting as importing its submodules. papercrane's modules
  have one such pair: ``backend/store/__init__.py`` imports ``repo``, which imports
  its siblings ``from . import db, sqlite_rows`` (harmless: Python imports those
  submodules even from a half-initialized package). The first task and the user's
  cells enter it through the package like this thread does, which is safe; the one
  case left is a cell importing ``papercrane.backend.store.repo`` itself at the very
  moment this thread starts on the package. Besides papercrane's modules, this
  imports only ``sqlite3`` and ``concurrent.futures.thread``, which have no cycle.
  ipywidgets (~35 ms, the widget's) is left to the first task for that reason: its
  package ``__init__`` and submodules import each other, and a cell importing one of
  its submodules directly during the warm-up could get a half-initialized module.
- An import that fails here is forgotten (Python removes the failed module from
  ``sys.modules``), so the task imports it again on the kernel's thread and the user
  sees that error where it always appeared. Nothing raised here reaches the user.
- KeyboardInterrupt is delivered to the kernel's thread only; a cell interrupted while
  waiting for a module this thread is importing stops as any interrupted import does.
- The thread starts after the loading cell ends (IPython's ``post_run_cell``), so
  ``%load_ext`` itself costs what it did and adds nothing to ``sys.modules`` while its
  cell runs; a shell without cells (``run_line_magic`` from a script) never starts it.

It costs CPU the first task would spend anyway, earlier. A cell run meanwhile shares
the interpreter with it for that time (Python runs one thread at a time), so that
cell can take up to that much longer, once.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from typing import Any

#: What a task run imports beyond ``papercrane.magics``, roughly in the order it needs
#: them (``Session``, the engine, the widget's module without ipywidgets).
MODULES = (
    "papercrane.session",
    "papercrane.notebook",
    "papercrane.backend.units",
    "papercrane.backend.environment",
    "papercrane.backend.engine",
    "papercrane.backend.fingerprint",
    "papercrane.backend.executors.local",
    "papercrane.widgets",
)


def warm(modules: tuple[str, ...] = MODULES) -> None:
    """Import ``modules``, ignoring every failure: the task imports a module that failed
    here again on the kernel's thread, and the user sees its error there."""
    for name in modules:
        with contextlib.suppress(BaseException):
            importlib.import_module(name)


class WarmUp:
    """Starts ``warm`` in a daemon thread after the current cell, once per shell."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.thread: threading.Thread | None = None
        events = getattr(shell, "events", None)
        self._events = events
        if events is not None:
            events.register("post_run_cell", self._after_cell)

    def _after_cell(self, result: Any = None) -> None:
        self.cancel()
        if self.thread is None:
            self.thread = threading.Thread(target=warm, name="papercrane-warm-up", daemon=True)
            self.thread.start()

    def cancel(self) -> None:
        """Don't start (unloading the extension); a thread already started just ends."""
        if self._events is not None:
            with contextlib.suppress(ValueError):  # already unregistered
                self._events.unregister("post_run_cell", self._after_cell)
            self._events = None
