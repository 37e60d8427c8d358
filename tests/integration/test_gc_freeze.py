"""Loading papercrane freezes the kernel's own objects (``gc.freeze``), never the
notebook's data: see ``papercrane.gc_freeze`` for why."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .kernel import Kernel

#: What this Python's permanent generation holds at start, before anyone freezes: 0,
#: but a few hundred objects on 3.12.
AT_START = int(
    subprocess.run(
        [sys.executable, "-c", "import gc; print(gc.get_freeze_count())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
)
FROZEN = f"import gc; print(gc.get_freeze_count() > {AT_START})"

# A file written from inside a reference cycle and never closed: only the collector
# frees it, and only its freeing flushes what was written.
CYCLE_FILE = """
class Holder:
    pass
h = Holder()
h.me = h
h.out = open({path!r}, "w")
h.out.write("written from a cycle")
"""


def test_a_fresh_kernel_is_frozen_and_the_notebook_data_still_collected(
    home: Path, workdir: Path, tmp_path: Path
) -> None:
    target = tmp_path / "from-a-cycle.txt"
    k = Kernel({"PAPERCRANE_HOME": str(home)}, workdir)
    try:
        k.run("%load_ext papercrane").ok()
        assert k.run(FROZEN).ok().stdout.strip() == "True"
        # A cycle made after the load is garbage the collector finds.
        probe = k.run(
            "import gc, weakref\n"
            "class Node: pass\n"
            "n = Node(); n.me = n; alive = weakref.ref(n); del n\n"
            "gc.collect(); print(alive() is None)"
        ).ok()
        assert probe.stdout.strip() == "True"
        k.run(CYCLE_FILE.format(path=str(target))).ok()
    finally:
        k.shutdown(now=False)
    # The kernel's exit collected the cycle, so the file was flushed and closed.
    assert target.read_text() == "written from a cycle"


@pytest.mark.parametrize(
    "before",
    [
        "import json\nrows = [{'a': 1}]\nlimit = 3",
        "[1, 2, 3]",  # only displayed: kept by IPython as _1 and Out[1]
    ],
    ids=["variables", "a displayed list"],
)
def test_a_notebook_that_already_holds_data_is_not_frozen(
    home: Path, workdir: Path, before: str
) -> None:
    k = Kernel({"PAPERCRANE_HOME": str(home)}, workdir)
    try:
        k.run(before).ok()
        k.run("%load_ext papercrane").ok()
        assert k.run(FROZEN).ok().stdout.strip() == "False"
    finally:
        k.shutdown()


def test_turned_off_by_config_or_environment(home: Path, workdir: Path) -> None:
    k = Kernel({"PAPERCRANE_HOME": str(home)}, workdir)
    try:
        k.run("%load_ext papercrane").ok()
        assert k.run(FROZEN).ok().stdout.strip() == "True"
        k.run("%config Papercrane.gc_freeze = False").ok()
        assert k.run(FROZEN).ok().stdout.strip() == "False"
        # Turning it back on is refused now that the notebook holds data (`gc`).
        k.run("held = [1]\n%config Papercrane.gc_freeze = True").ok()
        assert k.run(FROZEN).ok().stdout.strip() == "False"
    finally:
        k.shutdown()

    k = Kernel({"PAPERCRANE_HOME": str(home), "PAPERCRANE_GC_FREEZE": "0"}, workdir)
    try:
        k.run("%load_ext papercrane").ok()
        assert k.run(FROZEN).ok().stdout.strip() == "False"
    finally:
        k.shutdown()


# Only a module in the namespace (so a freeze is allowed), holding a weak reference to
# a cycle that lived long enough to reach the oldest generation, then was dropped.
DROPPED_CYCLE = (
    "import gc, types\n"
    "scratch = types.ModuleType('scratch')\n"
    "exec('import weakref\\nclass Node: pass\\nn = Node(); n.me = n\\n"
    "alive = weakref.ref(n)', scratch.__dict__)\n"
    "gc.collect()\n"
    "del scratch.n, scratch.Node"
)


@pytest.mark.parametrize(
    "cells",
    [
        [DROPPED_CYCLE, "%load_ext papercrane"],
        ["%load_ext papercrane", DROPPED_CYCLE, "%reload_ext papercrane"],
    ],
    ids=["loaded after other cells", "reloaded"],
)
def test_a_freeze_after_cells_ran_collects_what_they_dropped(
    home: Path, workdir: Path, cells: list[str]
) -> None:
    """Only a kernel's very first cells may skip the full collection before freezing:
    otherwise the old generation's garbage would be kept forever."""
    k = Kernel({"PAPERCRANE_HOME": str(home)}, workdir)
    try:
        for cell in cells:
            k.run(cell).ok()
        assert k.run(FROZEN).ok().stdout.strip() == "True"
        assert k.run("print(scratch.alive() is None)").ok().stdout.strip() == "True"
    finally:
        k.shutdown()
