"""Which distributions (and versions) a task's code depends on, and how references to
importable things are written down instead of pickled.

Modules are environment, not data: a module (or a function or class that can be imported
by name from an installed module) is recorded as a reference like ``numpy`` or
``numpy.linalg:norm`` and re-imported on the other side.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import importlib
import importlib.util
import json
import os
import sys
import threading
import types
from collections.abc import Callable, Iterator
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


_Described = tuple[dict[str, str], dict[str, str], list[tuple[str, int]], list[str] | None]


class EnvironmentProbe:
    """Maps top-level module names to distribution versions, cached per probe.

    One probe lives per kernel session. Each cached answer remembers the files it came
    from (a distribution's ``.dist-info`` folder, a local module's source file) and is
    re-read when they change, so ``pip install -U`` or editing a helper module is seen by
    the next task without restarting the kernel; a check costs one ``stat``.
    """

    def __init__(self, saved: str | os.PathLike[str] | None = None) -> None:
        self._dists: dict[str, list[str]] | None = None
        #: top -> (packages, local modules, watched files, the ``sys.path`` a local
        #: module's answer was found on, or None for other answers).
        self._cache: dict[str, _Described] = {}
        #: A file keeping the module -> distributions map between sessions (below).
        self._saved = os.fspath(saved) if saved is not None else None
        #: The stamp the map belongs to, and ``sys.path`` when it was taken.
        self._stamp = ""
        self._stamped_path: list[str] = []
        #: Distribution -> [version, metadata folder, its ``_stamp``], saved with the map.
        self._versions: dict[str, list[Any]] = {}

    def _module_dists(self, refresh: bool = False) -> dict[str, list[str]]:
        if self._dists is None or refresh:
            self._dists = self._saved_dists(refresh)
        return self._dists

    def _saved_dists(self, refresh: bool) -> dict[str, list[str]]:
        """``packages_distributions()`` reads every installed distribution's metadata:
        ~200 ms, paid by every new kernel (each papermill run) on its first task. The
        map is kept in a file, valid while the interpreter, ``sys.path`` and the
        distributions' metadata folders on it are the same (``path_stamp``). The
        versions found since (``_version``) are kept beside it."""
        from importlib import metadata  # 20 ms to import: only when a task is captured

        self._stamp, self._stamped_path = path_stamp(), list(sys.path)
        self._versions = {}
        saved = None if refresh else load_stamped(self._saved, self._stamp)
        if saved is not None and isinstance(saved.get("dists"), dict):
            versions = saved.get("versions")
            self._versions = versions if isinstance(versions, dict) else {}
            return saved["dists"]
        dists = metadata.packages_distributions()
        self._dists = dists
        self._save()
        return dists

    def _save(self) -> None:
        save_stamped(self._saved, self._stamp, {"dists": self._dists, "versions": self._versions})

    def _version(self, name: str) -> tuple[str, str | None] | None:
        """(version, metadata folder) of an installed distribution, None if it is not.

        ``metadata.distribution(name).version`` searches ``sys.path`` and parses the
        distribution's METADATA (~3 ms for numpy, on every kernel's first task), so
        answers are saved with the map. A saved answer is used only while ``sys.path``
        is the one the map's stamp was taken with and its metadata folder is unchanged
        (the ``_stamp`` a session's own cached answers are checked with)."""
        from importlib import metadata

        same_path = sys.path == self._stamped_path
        known = self._versions.get(name) if same_path else None
        if (
            isinstance(known, list)
            and len(known) == 3
            and isinstance(known[0], str)
            and (known[1] is None or _stamp(known[1]) == known[2])
        ):
            return known[0], known[1]
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            return None
        found = getattr(dist, "_path", None)
        path = str(found) if found is not None else None
        version = dist.version
        if same_path:
            self._versions[name] = [version, path, _stamp(path) if path else None]
            self._save()
        return version, path

    def describe(self, top_module: str) -> tuple[dict[str, str], dict[str, str]]:
        """(packages, local_modules) contributed by one top-level module name."""
        top = top_module.partition(".")[0]
        cached = self._cache.get(top)
        if (
            cached is not None
            and (cached[3] is None or cached[3] == sys.path)
            and all(_stamp(path) == stamp for path, stamp in cached[2])
        ):
            return cached[0], cached[1]
        searched: list[str] | None = None
        packages: dict[str, str] = {}
        local: dict[str, str] = {}
        watch: list[tuple[str, int]] = []
        if _is_stdlib(top):
            pass
        elif top == "papercrane":
            packages["papercrane"] = _own_version()
        else:
            dists = self._module_dists(refresh=cached is not None).get(top)
            if dists:
                for name in dists:
                    found = self._version(name)
                    if found is None:
                        continue
                    packages[name], path = found
                    if path is not None:
                        watch.append((path, _stamp(path)))
            else:
                # Where a local module is (or that there is none) depends on sys.path,
                # which a cell may change (``sys.path.insert(0, "lib")``): asked again then.
                searched = list(sys.path)
                found_source = _local_source(top, self._is_local)
                if found_source:
                    digest, paths = found_source
                    local[top] = digest
                    watch.extend((path, _stamp(path)) for path in paths)
        self._cache[top] = (packages, local, watch, searched)
        return packages, local

    def _is_local(self, top: str) -> bool:
        """Whether a top-level name another local module imports is local too: not the
        standard library, not papercrane, not an installed distribution's."""
        if _is_stdlib(top) or top == "papercrane":
            return False
        return not self._module_dists().get(top)

    def environment(self, modules: set[str]) -> Environment:
        packages: dict[str, str] = {}
        local: dict[str, str] = {}
        for name in sorted(modules):
            p, loc = self.describe(name)
            packages.update(p)
            local.update(loc)
        return Environment(packages=packages, local_modules=local)


def path_stamp() -> str:
    """Changes when the interpreter, ``sys.path`` or the distributions' metadata folders
    on it change (installing, upgrading or removing one), and only then: a notebook's
    own folder on ``sys.path`` changes all the time, its metadata seldom."""
    digest = hashlib.sha256(sys.executable.encode())
    for entry in sys.path:
        folder = entry or os.getcwd()
        try:
            with os.scandir(folder) as found:
                names = sorted(
                    f"{e.name}:{e.inode()}"
                    for e in found
                    if e.name.endswith((".dist-info", ".egg-info"))
                )
        except OSError:  # gone, not a folder (a zip), unreadable
            continue
        if names:  # (a folder of plain modules, added with sys.path.insert, adds nothing)
            digest.update(f"\0{folder}\0".encode() + "\0".join(names).encode())
    return digest.hexdigest()


def load_stamped(saved: str | None, stamp: str) -> dict[str, Any] | None:
    """The JSON object saved at ``saved`` by ``save_stamped`` under the same stamp (see
    ``path_stamp``), or None: no file, unreadable, or another stamp."""
    if saved is None:
        return None
    try:
        with open(saved, encoding="utf-8") as f:
            found = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(found, dict) or found.get("stamp") != stamp:
        return None
    return found


def save_stamped(saved: str | None, stamp: str, data: dict[str, Any]) -> None:
    """Write ``data`` with ``stamp`` to ``saved`` whole or not at all (a temporary file
    renamed over it, so a concurrent reader sees the old file or the new one; the
    temporary file is this thread's own). A cache: failing to write it is not an error."""
    if saved is None:
        return
    tmp = f"{saved}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        os.makedirs(os.path.dirname(saved) or ".", exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({**data, "stamp": stamp}, f)
        os.replace(tmp, saved)
    except OSError:
        with contextlib.suppress(OSError):
            os.remove(tmp)


def _stamp(path: str) -> int:
    """Changes when the file or folder is replaced or edited; -1 once it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return -1
    return st.st_mtime_ns ^ st.st_ino


def _own_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("papercrane")
    except metadata.PackageNotFoundError:
        return "dev"


def _is_stdlib(top: str) -> bool:
    return (
        top in sys.stdlib_module_names
        or top in sys.builtin_module_names
        or top in ("__main__", "builtins")
    )


#: Folders never hashed as local source: installed code, caches, version control.
_INSTALLED = ("site-packages", "dist-packages")
_SKIPPED_DIRS = ("__pycache__", ".git", ".ipynb_checkpoints", ".venv", "node_modules")


def _module_files(top: str) -> tuple[str, list[str], list[str]] | None:
    """(the folder it is in, source files, package folders) of a local top-level module:
    its one file, or for a package every ``.py`` file under its folder(s) (a submodule the
    task imports is as much the package's code as its ``__init__.py``). None when it has
    no source here or its source is installed code (under site-packages)."""
    mod = sys.modules.get(top)
    path = getattr(mod, "__file__", None) if mod else None
    locations = list(getattr(mod, "__path__", None) or []) if mod else []
    if not path and not locations:
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            return None
        if spec is None:
            return None
        path = spec.origin if spec.has_location else None
        locations = list(spec.submodule_search_locations or [])
    found = [path] if path and os.path.isfile(path) else []
    folders: list[str] = []
    for location in locations:
        for folder, dirs, files in os.walk(location):
            dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS and not d.startswith("."))
            folders.append(folder)
            found.extend(os.path.join(folder, f) for f in sorted(files) if f.endswith(".py"))
    if not found:
        return None
    parts = {part for f in [*found, *folders] for part in f.split(os.sep)}
    if any(name in parts for name in _INSTALLED):
        return None
    root = os.path.dirname(locations[0] if locations else found[0])
    return root, sorted(set(found)), folders


def _imported_tops(source: bytes) -> set[str]:
    """Top-level names of a module's absolute imports (anywhere in it, not only at the
    top: an import inside a function runs too). Relative imports stay in the package,
    whose files are hashed already. Unparsable source imports nothing we can see."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return set()
    tops: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            tops.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            tops.add(node.module.partition(".")[0])
    return tops


def _local_source(top: str, is_local: Callable[[str], bool]) -> tuple[str, list[str]] | None:
    """(hash, files and folders to watch) of a local module's source closure: its own
    files and, transitively, those of the local modules they import, so that editing
    ``sub.py``, which the task's ``helpers.py`` imports, or ``pkg/mod.py`` under the
    task's ``pkg``, invalidates the cache. ``is_local`` tells which imported names are
    local (not stdlib, not installed). A package's folders are watched too, for files
    added or removed. None when ``top`` itself has no local source."""
    hashed: list[tuple[str, str]] = []
    watch: list[str] = []
    pending, seen = [top], {top}
    while pending:
        name = pending.pop()
        files = _module_files(name)
        if files is None:
            if name == top:
                return None
            continue
        root, sources, folders = files
        watch.extend(folders)
        for path in sources:
            try:
                with open(path, "rb") as f:
                    source = f.read()
            except OSError:
                continue
            watch.append(path)
            hashed.append((os.path.relpath(path, root), hashlib.sha256(source).hexdigest()))
            for imported in sorted(_imported_tops(source) - seen):
                seen.add(imported)
                if is_local(imported):
                    pending.append(imported)
    if len(hashed) == 1:  # one plain module: its file's hash, as before closures
        return hashed[0][1][:16], watch
    return hashlib.sha256(repr(sorted(hashed)).encode()).hexdigest()[:16], watch


_LITERALS = (int, float, complex, str, bytes, bool, type(None), tuple)


def live_module_differs(top: str) -> str | None:
    """Why this process's module ``top`` is not what its source file says, or None.

    A task's cache key reads a local module from its file; an inline task runs the
    module this kernel imported, which is the file as it was then (edited since?) and
    as cells have changed it (``helpers.K = 99``). Where the two differ, the inline
    result must not be cached under the file's content. Checked: the module's own
    functions and its classes' methods against the file's compiled code, and its names
    assigned once, at top level, to a literal. Where none tells, the module is taken
    to match."""
    mod = sys.modules.get(top)
    path = getattr(mod, "__file__", None) if mod is not None else None
    if not path or not path.endswith(".py") or not os.path.isfile(path):
        return None
    try:
        tree, disk = _compiled(path, _stamp(path))
    except (OSError, SyntaxError, ValueError):
        return f"its file {path} cannot be read or compiled"
    live = vars(mod)
    for name, obj in live.items():
        if getattr(obj, "__module__", None) != top:
            continue
        if isinstance(obj, type):
            for method in _methods(obj):
                there = disk.get(method.__qualname__)
                if there is not None and _body(there) != _body(method.__code__):
                    return f"its method {method.__qualname__}() is not the file's"
            continue
        f = getattr(obj, "__code__", None)
        if not isinstance(f, types.CodeType):
            continue
        there = disk.get(getattr(obj, "__qualname__", name))
        if there is not None and _body(there) != _body(f):
            return f"its function {name}() is not the file's"
    once: dict[str, int] = {}
    for node in tree.body:
        for target in getattr(node, "targets", None) or [getattr(node, "target", None)]:
            if isinstance(target, ast.Name):
                once[target.id] = once.get(target.id, 0) + 1
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target = node.targets[0]
        if not isinstance(target, ast.Name) or once.get(target.id) != 1:
            continue
        try:
            value = ast.literal_eval(node.value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            continue
        here = live.get(target.id, value)
        if isinstance(here, _LITERALS) and (type(here) is not type(value) or here != value):
            return f"{target.id} is {here!r} here and {value!r} in the file"
    return None


#: ``inspect.CO_OPTIMIZED``: set on functions' code, not on a class body's.
_CO_OPTIMIZED = 0x0001


def _code_by_qualname(module: types.CodeType) -> dict[str, types.CodeType]:
    """A module's code objects by the ``__qualname__`` of what they define (``f``,
    ``A.m``, ``f.<locals>.g``), worked out from the nesting: Python 3.10's code objects
    have no ``co_qualname``. A function's body makes ``<locals>`` of what it defines; a
    class body (compiled without ``CO_OPTIMIZED``) and the module do not."""
    found: dict[str, types.CodeType] = {}
    todo: list[tuple[types.CodeType, str]] = [(module, "")]
    while todo:
        parent, prefix = todo.pop()
        if parent is not module and parent.co_flags & _CO_OPTIMIZED:
            prefix += ".<locals>"
        for const in parent.co_consts:
            if isinstance(const, types.CodeType):
                qualname = f"{prefix}.{const.co_name}" if prefix else const.co_name
                found.setdefault(qualname, const)
                todo.append((const, qualname))
    return found


def _methods(cls: type) -> Iterator[Any]:
    """The functions a class defines itself: methods, static and class methods, and
    properties' getters, setters and deleters."""
    for value in vars(cls).values():
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        parts = (value.fget, value.fset, value.fdel) if isinstance(value, property) else (value,)
        for f in parts:
            if isinstance(getattr(f, "__code__", None), types.CodeType):
                yield f


@functools.lru_cache(maxsize=64)
def _compiled(path: str, stamp: int) -> tuple[ast.Module, dict[str, types.CodeType]]:
    """The file's syntax tree and its code objects by qualified name, once per version."""
    with open(path, "rb") as f:
        source = f.read()
    tree = ast.parse(source, path)
    return tree, _code_by_qualname(compile(tree, path, "exec"))


def _body(code: types.CodeType) -> tuple[Any, ...]:
    """A code object's instructions and constants, without its line numbers."""
    consts = tuple(_body(c) if isinstance(c, types.CodeType) else c for c in code.co_consts)
    return code.co_code, consts, code.co_names


def check_environment(expected: Environment, probe: EnvironmentProbe | None = None) -> list[str]:
    """Differences between the captured environment and this process, for people."""
    from importlib import metadata

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
