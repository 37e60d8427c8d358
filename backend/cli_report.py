"""How the command line shows a failed task: the node, its attempt and the user's own
traceback. ``papercrane run``, ``recover`` and ``executions show`` print failures the
same way, from this one place."""

from __future__ import annotations

from typing import Any


def node_failure(node_id: str, node: Any, execution_id: str) -> list[Any]:
    """What to print for a failed node (a ``model.NodeState``): a headline naming the
    task, its execution and attempt (for a map, its error, which names the elements),
    then its traceback, as rich ``Text`` (no markup is read in a user's message)."""
    from rich.text import Text

    error = node.error
    if node.elements and error is not None:  # a map: its elements made the attempts
        where = f": {error.message}"
    elif node.attempt:
        where = f", attempt {node.attempt}"
    else:
        where = ", before its first attempt"
    parts = [
        Text.assemble(
            (f"task {node_id!r} failed", "bold red"), f" in execution {execution_id}{where}"
        )
    ]
    if error is not None:
        parts.append(Text(error.traceback.rstrip() or f"{error.type}: {error.message}"))
    return parts


def failed_nodes(state: Any) -> list[tuple[str, Any]]:
    """An execution's failed tasks, a map's elements and steps left out (the map's own
    node says how many failed, and which first)."""
    return [
        (name, n)
        for name, n in state.nodes.items()
        if n.status.value == "failed" and "[" not in name and ":" not in name
    ]


#: Columns whose values are copied or compared whole (ids, keys, times, states): never
#: wrapped or cut. The others fold a long value onto more lines rather than cut it.
WHOLE = frozenset({"id", "key", "execution", "created", "status", "duration", "cache", "revoked"})
#: The narrowest a folding column (names, outputs, errors) is made: a name folded into
#: pieces of three letters can't be read.
FOLD_MIN = 14


class FittedTable:
    """A table for people that fits the width it is printed in. Ids and times stay whole
    (a cut id can't be pasted into the next command) and names fold, but never below
    ``FOLD_MIN``: when the columns do not fit so, those named in ``drop`` are left out,
    first one first, and the caption says which (``--json`` has everything). Piped
    output has all the width it needs and loses nothing."""

    def __init__(
        self, *headers: str, drop: tuple[str, ...] = (), caption: str | None = None
    ) -> None:
        self.headers = headers
        self.drop = drop
        self.caption = caption
        self.rows: list[tuple[str, ...]] = []

    def add_row(self, *cells: str) -> None:
        self.rows.append(tuple(str(c) for c in cells))

    def _least(self, index: int) -> int:
        """The narrowest the column can be: whole ones as wide as their widest value."""
        header = self.headers[index]
        widest = max(
            [len(header), *(len(line) for r in self.rows for line in r[index].splitlines())]
        )
        return widest if header in WHOLE else min(widest, max(FOLD_MIN, len(header)))

    def _widest(self, index: int) -> int:
        """The column's natural width: its widest line, or its header."""
        lines = (len(line) for r in self.rows for line in r[index].splitlines())
        return max([len(self.headers[index]), *lines])

    def empty(self) -> list[int]:
        """The columns with nothing in them (no output, no error in any row)."""
        return [i for i in range(len(self.headers)) if not any(r[i] for r in self.rows)]

    def shown(self, width: int) -> list[int]:
        """The columns that fit ``width`` (each costs 3 more: its border and padding).
        A column with nothing in it goes as soon as the table would fold a value (the
        width it took was cut from the names and errors: an error column folded to 14
        characters beside an empty outputs column); then those in ``drop``, while even
        the narrowest folding does not fit."""
        shown = list(range(len(self.headers)))
        if sum(self._widest(i) + 3 for i in shown) + 1 > width:
            shown = [i for i in shown if i not in self.empty()]
        for name in self.drop:
            if sum(self._least(i) + 3 for i in shown) + 1 <= width:
                break
            if name in self.headers and self.headers.index(name) in shown:
                shown.remove(self.headers.index(name))
        return shown

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.table import Column, Table

        shown = self.shown(options.max_width)
        # (an empty column left out loses nothing: not worth a line)
        empty = self.empty()
        left_out = [h for i, h in enumerate(self.headers) if i not in shown and i not in empty]
        captions = [self.caption] if self.caption else []
        if left_out:
            captions.append(f"{', '.join(left_out)} left out for the width: see --json")
        columns = []
        for i in shown:
            header = self.headers[i]
            if header in WHOLE:
                columns.append(Column(header, no_wrap=True))
            else:
                columns.append(Column(header, overflow="fold", min_width=self._least(i)))
        table = Table(*columns, caption="\n".join(captions) or None)
        for row in self.rows:
            table.add_row(*(row[i] for i in shown))
        yield table
