"""The notebook ``papercrane run`` executes, and the one it writes: the cells it adds
(papercrane loaded at the top, a flush at the end) and takes out again, and what the
written notebook says of where it failed."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

from .notebook_file import read_notebook

#: The ``%workflow flush`` cell added at the end; the written notebook keeps it when it
#: printed something (the deferred tasks it ran, their output, a failure), marked so.
FLUSH_TAG = "papercrane-flush"
FLUSH_NOTE = (
    "# Added by `papercrane run`: runs the task cells still deferred at the notebook's end."
)
#: The ``%load_ext papercrane`` cell added to a notebook that has none.
LOAD_TAG = "papercrane-load"
#: What ``%workflow flush --detach`` prints for each execution it submits.
SUBMITTED = re.compile(r"submitted execution (\S+):")


def prepared_copy(path: Path, detach: bool, load: bool, flush: bool) -> Path:
    """The notebook with the cells this run adds: ``flush``: a flush at the end (a
    notebook with no task cell has nothing to flush, and need not load papercrane), and
    ``load``: the extension loaded at the top (taken out of the executed copy)."""
    import nbformat

    nb = read_notebook(path)
    if flush:
        line = "%workflow flush" + (" --detach" if detach else "")
        cell = nbformat.v4.new_code_cell(f"{FLUSH_NOTE}\n{line}")
        cell.metadata["tags"] = [FLUSH_TAG]
        nb.cells.append(cell)  # type: ignore[attr-defined]
    if load:
        first = nbformat.v4.new_code_cell("%load_ext papercrane")
        first.metadata["tags"] = [LOAD_TAG]
        nb.cells.insert(0, first)  # type: ignore[attr-defined]
    handle, name = tempfile.mkstemp(suffix=".ipynb", prefix=f".{path.stem}-", dir=path.parent)
    os.close(handle)
    nbformat.write(nb, name)
    return Path(name)


def default_output(path: Path) -> Path:
    """Where the executed notebook goes without ``-o``: beside the notebook, as
    ``jupyter nbconvert --execute`` puts its own (``report.ipynb``: ``report.out.ipynb``),
    where the user finds it, the failing cell's error included, and the next run
    replaces it."""
    return path.with_name(f"{path.stem}.out.ipynb")


def stamp(path: Path) -> tuple[int, int] | None:
    """The file's modification time and size, None if there is none: whether this run
    wrote it, or it is an earlier run's."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def strip_added_cells(out: Path) -> list[str]:
    """Remove the load cell we added, and the flush cell if it showed nothing (nothing
    was left to run, or the notebook stopped before it): one that did is what the tasks
    it ran printed and how they ended, the failure papermill's banner points at included,
    so it stays, marked as added. Return the executions the flush submitted detached
    (what it printed), which may have finished by now: the caller still wants their ids."""
    import nbformat

    nb = nbformat.read(str(out), as_version=4)
    submitted: list[str] = []
    kept = []
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if FLUSH_TAG not in tags:
            if LOAD_TAG not in tags:
                kept.append(cell)
            continue
        if cell.get("outputs"):
            kept.append(cell)
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                submitted += SUBMITTED.findall("".join(output.get("text", "")))
    nb.cells = kept
    nbformat.write(nb, str(out))
    return submitted


def _read_cells(out: Path) -> list[Any]:
    """The written notebook's cells; none if it was not written."""
    import nbformat

    try:
        return list(nbformat.read(str(out), as_version=4).cells)
    except Exception:
        return []


def cell_stderr(out: Path) -> str:
    """What the failed cell wrote to stderr: IPython reports a UsageError (papercrane's
    own one-line errors) there, not as an error output papermill can see."""
    for cell in _read_cells(out):
        if cell.get("metadata", {}).get("papermill", {}).get("exception"):
            return "".join(
                o.get("text", "")
                for o in cell.get("outputs", [])
                if o.get("output_type") == "stream" and o.get("name") == "stderr"
            ).strip()
    return ""


def last_started_cell(out: Path) -> str:
    """``In[N]: its first line`` for the last cell papermill started: where a kernel that
    died was (papermill marks no cell failed then); '' if none."""
    started = [
        c for c in _read_cells(out) if c.get("metadata", {}).get("papermill", {}).get("start_time")
    ]
    if not started:
        return ""
    source = str(started[-1].get("source", "")).strip().splitlines()
    return f"In[{started[-1].get('execution_count') or ' '}]" + (f": {source[0]}" if source else "")
