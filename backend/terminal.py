"""The rich consoles the command line prints on, for people.

In a terminal, rich lays text out at the terminal's width. Piped into a file, a CI log,
``grep`` or ``less`` (``2>err.txt``), it would lay it out in 80 columns: tables cut,
traceback lines split and their ``^^^`` markers under the wrong line. Nobody reads it at
that width, so there the width has no limit: tables, trees and text (none of which
expand) print at their natural width.
"""

from __future__ import annotations

from typing import Any


def console(stderr: bool = False, markup: bool = True) -> Any:
    """A ``rich.console.Console`` on stdout (``stderr``: on stderr), at the terminal's
    width, or unlimited when not printing to a terminal.

    ``markup=False`` for one that prints records: their text (an error message, a
    value's preview, a task name typed on the command line) is the user's, and rich
    would read ``[/data]`` or ``[bold]`` in it as its markup, failing on a tag it can't
    match or dropping the brackets. That covers every string a table, tree or group
    holds, not only those printed directly."""
    from rich.console import Console

    found = Console(stderr=stderr, markup=markup)
    if not found.is_terminal:
        found = Console(stderr=stderr, markup=markup, width=1 << 16)
    return found
