"""The kernel's own ``sys.path`` entries, carried to a local task's process.

A notebook that does ``sys.path.insert(0, "lib")`` imports ``lib/helpers.py`` in the
kernel; a ``local`` attempt is a new process whose ``sys.path`` is the interpreter's
default, so the same ``import helpers`` failed there. The kernel sends its ``sys.path``
with the attempt and the attempt adds the entries it lacks, in the kernel's order and
where the kernel has them relative to the entries both share (an entry the kernel put
first also comes before the installed packages in the task). The task's key already
counts such a module as a local one (``environment.py`` finds it on the kernel's path).
"""

from __future__ import annotations

import importlib
import os
import sys


def kernel_path() -> list[str]:
    """This process's ``sys.path`` as absolute folders (``""`` and relative entries mean
    the working folder, which an attempt starts in too). Only strings: the import
    system skips anything else."""
    cwd = os.getcwd()
    return [os.path.join(cwd, entry) for entry in sys.path if isinstance(entry, str)]


def adopt_path(kernel: list[str]) -> list[str]:
    """Add to this process's ``sys.path`` the entries of ``kernel`` (the kernel's
    ``kernel_path()``) that it lacks, each after the last shared entry the kernel has
    before it; returns those added. (A dozen or two entries: plain scans will do.)"""
    cwd = os.getcwd()
    added: list[str] = []
    at = 0  # where the next missing entry goes
    for entry in kernel:
        wanted = os.path.normpath(entry)
        found = next(
            (
                i
                for i, have in enumerate(sys.path)
                if isinstance(have, str) and os.path.normpath(os.path.join(cwd, have)) == wanted
            ),
            None,
        )
        if found is None:
            sys.path.insert(at, entry)
            added.append(entry)
            at += 1
        else:
            at = max(at, found + 1)  # (the added entries keep the kernel's order)
    if added:
        importlib.invalidate_caches()
    return added
