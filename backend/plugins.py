"""Named plug-ins (serializers, executors) from built-ins plus an entry-point group.

Entry points are read only when a name is not a built-in (or the full list is asked
for), never at import: scanning installed distributions costs tens of milliseconds, which
the runner would otherwise pay on every attempt. A registry given a ``saved`` file keeps
the group's entry points there between sessions, like the environment probe's module map
and valid under the same stamp. Unknown names raise with the list of known ones; two
different plug-ins under one name raise instead of one silently winning.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from .errors import ConfigError


class PluginRegistry:
    def __init__(
        self,
        group: str,
        builtin: dict[str, str],
        kind: str,
        saved: str | os.PathLike[str] | None = None,
    ) -> None:
        self.group = group
        self.kind = kind
        self._builtin = dict(builtin)
        self._targets: dict[str, str] | None = None
        self._loaded: dict[str, Any] = {}
        self._saved = os.fspath(saved) if saved is not None else None

    def _entry_points(self) -> list[tuple[str, str]]:
        """(name, target) of the group's entry points, in ``entry_points()``'s order.

        Reading them opens every installed distribution's metadata (2–4 ms with ~100
        distributions), which each kernel paid again on the first value no built-in
        serializer takes. With ``saved``, the list is kept in that file while
        ``path_stamp()`` (interpreter, ``sys.path``, the metadata folders on it) is
        unchanged: installing, upgrading or removing a distribution scans again."""
        from importlib.metadata import entry_points

        if self._saved is None:
            return [(ep.name, ep.value) for ep in entry_points(group=self.group)]
        from .environment import load_stamped, path_stamp, save_stamped

        stamp = path_stamp()
        saved = load_stamped(self._saved, stamp)
        found = saved.get("entry_points") if saved is not None else None
        if isinstance(found, list) and all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p)
            for p in found
        ):
            return [(name, value) for name, value in found]
        pairs = [(ep.name, ep.value) for ep in entry_points(group=self.group)]
        save_stamped(self._saved, stamp, {"group": self.group, "entry_points": pairs})
        return pairs

    def _discover(self) -> dict[str, str]:
        if self._targets is None:
            targets = dict(self._builtin)
            for name, value in self._entry_points():
                known = targets.get(name)
                if known is not None and known != value:
                    raise ConfigError(
                        f"two {self.kind}s are registered as {name!r}: {known} and {value}"
                    )
                targets[name] = value
            self._targets = targets
        return self._targets

    def names(self) -> list[str]:
        return sorted(self._discover())

    def builtin_names(self) -> list[str]:
        return list(self._builtin)

    def extra_names(self) -> list[str]:
        """Plug-ins from entry points that are not built in."""
        return sorted(set(self._discover()) - set(self._builtin))

    def load(self, name: str) -> Any:
        if name in self._loaded:
            return self._loaded[name]
        targets = self._builtin if name in self._builtin else self._discover()
        if name not in targets:
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(targets))}")
        module, _, attr = targets[name].partition(":")
        obj = getattr(importlib.import_module(module), attr)
        self._loaded[name] = obj
        return obj
