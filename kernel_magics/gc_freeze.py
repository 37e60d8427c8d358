"""Keep the kernel's own objects out of Python's garbage collector.

A kernel holds tens of thousands of container objects before its first cell runs
(IPython, ipykernel, traitlets, zmq, asyncio). They live until the process exits, yet
every full collection walks all of them again, and a kernel's exit runs several full
collections while it tears its modules down: measured on quickstart.ipynb under
papermill, 75 of the 115 ms between the shutdown request and the process's end.
jupyter_client polls for that end every 100 ms, so those ms cost a whole poll on most
runs, for every notebook that papermill or ``papercrane run`` executes.

``gc.freeze()`` moves every object that exists at that moment into the collector's
permanent generation, which no collection visits again. That is safe for objects that
live as long as the kernel, and only for those: an object that is frozen and later
becomes garbage in a reference cycle is never freed, and its finalizer never runs (a
file written in a cycle would lose what it had not flushed). So papercrane freezes
when it is loaded and the notebook holds no data yet: each name the user can see is
a module or a value the collector does not track (numbers, strings). Everything made
later, the notebook's data included, is collected as before; and a freeze that comes
after other cells first collects what they dropped, which would otherwise be kept.

``%config Papercrane.gc_freeze = False`` (or ``PAPERCRANE_GC_FREEZE=0``) turns it
off; turning it off after the load thaws what was frozen.
"""

from __future__ import annotations

import gc
import types
from typing import Any


def holds_no_data(shell: Any) -> bool:
    """Whether freezing now would freeze nothing of the notebook's own.

    IPython hides its own names from this check, and with them its numbered history
    (``_1``, ``Out[1]``): what a cell displayed before the load is looked at there.
    """
    hidden = shell.user_ns_hidden
    values = [value for name, value in shell.user_ns.items() if name not in hidden]
    history = getattr(shell, "history_manager", None)
    values.extend(getattr(history, "output_hist", {}).values())
    return all(isinstance(v, types.ModuleType) or not gc.is_tracked(v) for v in values)


#: The permanent generation before papercrane could freeze anything. Not always empty:
#: Python 3.12 starts with a few hundred of its own objects there.
_AT_IMPORT = gc.get_freeze_count()


class Freezer:
    """Freezes at the extension's load, and thaws only what it froze."""

    #: Whether this process froze before: a later freeze (``%reload_ext``, the setting
    #: turned back on), like a first one after other cells, comes after the notebook
    #: ran, when the old generation may hold garbage that a freeze would keep forever.
    froze_before = False

    def __init__(self) -> None:
        self.frozen = False

    def freeze_if_safe(self, shell: Any) -> bool:
        if self.frozen or gc.get_freeze_count() > _AT_IMPORT or not holds_no_data(shell):
            # Someone else froze (their choice stands), or the notebook already has data.
            return False
        if Freezer.froze_before or getattr(shell, "execution_count", 1) > 1:
            gc.collect()  # cells ran before: what they dropped may be in any generation
        else:
            # At a kernel's start only the young generations hold garbage (a fresh
            # kernel's full collection frees nothing, measured, and costs ~15 ms here).
            gc.collect(1)
        gc.freeze()
        self.frozen = Freezer.froze_before = True
        return True

    def thaw(self) -> None:
        if self.frozen:
            gc.unfreeze()
            self.frozen = False
