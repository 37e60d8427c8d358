"""Which distributions (and versions) a task's code depends on, and how references to
importable things are written down instead of pickled.

Modules are environment, not data: a module (or a function or class that can be imported
by name from an installed module) is recorded as a reference like ``numpy`` or
``numpy.linalg:norm`` and re-imported on the other side.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
import types
from importlib import metadata
from typing import Any

from .model import Environment


def import_reference(value: Any) -> str | None:
    """'module' or 'module:qualname' when ``value`` can be imported back by that name."""
    if isinstance(value, types.ModuleType):
        name = value.__name__
        return name if sys.modules.get(name) is value else None
    if not isinstance(value, (types.FunctionType, types.BuiltinFunctionType, type)):
        return None
    module = getattr(value, "__module__", None)
    qualname = getattr(value, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<" in qualname:
        return None
    mod = sys.modules.get(module)
    if mod is None:
        return None
    obj: Any = mod
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return f"{module}:{qualname}" if obj is value else None


def resolve_reference(ref: str) -> Any:
    module, _, qualname = ref.partition(":")
    obj: Any = importlib.import_module(module)
    for part in filter(None, qualname.split(".")):
        obj = getattr(obj, part)
    return obj


class EnvironmentProbe:
    """Maps top-level module names to distribution versions (cached per probe).

    One probe lives per kernel session: the versions of code already imported into a
    process do not change until it restarts, and reading installed metadata for every
    task run would dominate the inline overhead.
    """

    def __init__(self) -> None:
        self._dists: dict[str, list[str]] | None = None
        self._versions: dict[str, tuple[dict[str, str], dict[str, str]]] = {}

    def _module_dists(self) -> dict[str, list[str]]:
        if self._dists is None:
            self._dists = metadata.packages_distributions()
        return self._dists

    def describe(self, top_module: str) -> tuple[dict[str, str], dict[str, str]]:
        """(packages, local_modules) contributed by one top-level module name."""
        top = top_module.partition(".")[0]
        cached = self._versions.get(top)
        if cached is not None:
            return cached
        packages: dict[str, str] = {}
        local: dict[str, str] = {}
        if top in sys.stdlib_module_names or top in sys.builtin_module_names or top in (
            "__main__",
            "builtins",
        ):
            pass
        elif top == "papercrane":
            packages["papercrane"] = _own_version()
        else:
            dists = self._module_dists().get(top)
            if dists:
                for dist in dists:
                    try:
                        packages[dist] = metadata.version(dist)
                    except metadata.PackageNotFoundError:
                        continue
            else:
                digest = _module_source_hash(top)
                if digest:
                    local[top] = digest
        self._versions[top] = (packages, local)
        return packages, local

    def environment(self, modules: set[str]) -> Environment:
        packages: dict[str, str] = {}
        local: dict[str, str] = {}
        for name in sorted(modules):
            p, loc = self.describe(name)
            packages.update(p)
            local.update(loc)
        return Environment(packages=packages, local_modules=local)


def _own_version() -> str:
    try:
        return metadata.version("papercrane")
    except metadata.PackageNotFoundError:
        return "dev"


def _module_source_hash(top: str) -> str | None:
    """Hash of a local (non-installed) module's source, so editing it invalidates."""
    mod = sys.modules.get(top)
    path = getattr(mod, "__file__", None) if mod else None
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()[:16]
    except OSError:
        return None


def check_environment(expected: Environment, probe: EnvironmentProbe | None = None) -> list[str]:
    """Differences between the captured environment and this process, for people."""
    problems = []
    for dist, version in sorted(expected.packages.items()):
        if dist == "papercrane":
            continue
        try:
            have = metadata.version(dist)
        except metadata.PackageNotFoundError:
            problems.append(f"{dist}=={version} is not installed here")
            continue
        if have != version:
            problems.append(f"{dist}: the notebook had {version}, this environment has {have}")
    return problems
