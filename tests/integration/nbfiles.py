"""Notebook files for tests that run them (papermill, ``papercrane run``)."""

from __future__ import annotations

from pathlib import Path

import nbformat


def write_notebook(path: Path, *cells: str | tuple[str, list[str]]) -> Path:
    """A notebook of code cells for the ``python3`` kernel; ``(source, tags)`` for a
    tagged cell (``["parameters"]``: papermill's)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    for cell in cells:
        source, tags = cell if isinstance(cell, tuple) else (cell, [])
        code = nbformat.v4.new_code_cell(source)
        if tags:
            code.metadata["tags"] = tags
        nb.cells.append(code)
    nbformat.write(nb, path)
    return path
