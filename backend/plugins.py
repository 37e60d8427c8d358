"""Named plug-ins (serializers, executors) from built-ins plus an entry-point group.

Entry points are read only when a name is not a built-in (or the full list is asked
for), never at import: scanning installed distributions costs tens of milliseconds, which
the runner would otherwise pay on every attempt. Unknown names raise with the list of
known ones; two different plug-ins under one name raise instead of one silently winning.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import ConfigError


class PluginRegistry:
    def __init__(self, group: str, builtin: dict[str, str], kind: str) -> None:
        self.group = group
        self.kind = kind
        self._builtin = dict(builtin)
        self._targets: dict[str, str] | None = None
        self._loaded: dict[str, Any] = {}

    def _discover(self) -> dict[str, str]:
        if self._targets is None:
            from importlib.metadata import entry_points

            targets = dict(self._builtin)
            for ep in entry_points(group=self.group):
                known = targets.get(ep.name)
                if known is not None and known != ep.value:
                    raise ConfigError(
                        f"two {self.kind}s are registered as {ep.name!r}: {known} and {ep.value}"
                    )
                targets[ep.name] = ep.value
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
