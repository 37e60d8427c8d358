"""Stable fingerprints of values, including functions and classes from the notebook.

Pickle bytes of a notebook function change every time its cell re-runs (cloudpickle
embeds fresh ids and line numbers), so hashing them would make every re-run a cache
miss. A fingerprint instead hashes what the function *is*: its bytecode, constants,
defaults, closure values and the globals it reads, recursively, without line numbers
or file names. Data values are hashed through their serializer's bytes, or through a
pickle stream in which functions, classes, modules, arrays and pandas values are replaced
by their own fingerprints (``pandas_fingerprint.py``).
"""

from __future__ import annotations

import dis
import functools
import hashlib
import pickle
import sys
import types
from typing import Any

from .environment import import_reference
from .hashing import HashingWriter
from .pandas_fingerprint import is_pandas_module, pandas_fingerprint
from .scalars import FINGERPRINT, Scalars
from .serializers import SerializerRegistry, type_module


class Fingerprinter:
    """One fingerprinting pass; also records the modules reached (for the environment)."""

    def __init__(self, registry: SerializerRegistry, scalars: Scalars | None = None) -> None:
        self.registry = registry
        #: Encodings of small scalars (``scalars.py``), kept across passes by an engine.
        self.scalars = scalars
        self.modules: set[str] = set()
        #: Files (notebook cells) that defined the functions reached.
        self.code_files: set[str] = set()
        self._memo: dict[int, str] = {}  # value() results
        self._code_memo: dict[int, str] = {}  # _dynamic() results: a different kind
        self._active: set[int] = set()
        self._keep: list[Any] = []  # keep memoized objects alive so ids stay unique

    # -- entry point ----------------------------------------------------------------------
    def value(self, value: Any) -> str:
        """Fingerprint of a value as a task input or output."""
        if self.scalars is not None:
            encoded = self.scalars.get(value)
            if encoded is not None:
                return encoded[FINGERPRINT]
        key = id(value)
        if key in self._memo:
            return self._memo[key]
        serializer = self.registry.for_value(value)
        if serializer.deterministic:
            writer = HashingWriter()
            serializer.dump(value, writer)  # type: ignore[arg-type]
            fp = _h(f"{serializer.name}:{writer.hexdigest()}")
        else:
            fp = self._pickled(value)
        self._memo[key] = fp
        self._keep.append(value)
        return fp

    # -- pieces ---------------------------------------------------------------------------
    def _pickled(self, value: Any) -> str:
        writer = HashingWriter()
        _FingerprintPickler(writer, self).dump(value)
        return _h(f"pickle:{writer.hexdigest()}")

    def reference(self, value: Any) -> str | None:
        """Persistent id for things that must not be hashed through pickle bytes."""
        if isinstance(value, types.ModuleType):
            self.modules.add(value.__name__)
            return f"module:{value.__name__}"
        if isinstance(value, (types.FunctionType, type)):
            ref = import_reference(value)
            if ref is not None:
                self.modules.add(ref.partition(":")[0])
                return f"ref:{ref}"
            return self._dynamic(value)
        if isinstance(value, functools._lru_cache_wrapper):
            # Pickled by name, which says nothing about the code of a notebook function.
            ref = _named_reference(value)
            if ref is not None:
                self.modules.add(ref.partition(":")[0])
                return f"ref:{ref}"
            params = value.cache_parameters()  # (typed=True can change what it returns)
            wrapped = self._inner(value.__wrapped__)
            return f"lru_cache:{params['maxsize']}:{params['typed']}:{wrapped}"
        if isinstance(value, (set, frozenset)):
            items = sorted(self.value(v) for v in value)
            return f"{type(value).__name__}:{_h(','.join(items))}"
        if isinstance(value, types.MappingProxyType):  # dataclass field metadata, ...
            return f"mappingproxy:{self.value(dict(value))}"
        module = type_module(value)
        if is_pandas_module(module):
            return pandas_fingerprint(value, self._inner)
        if (
            module.startswith("numpy")
            and type(value).__name__ == "ndarray"
            and not value.dtype.hasobject
        ):
            return f"ndarray:{self.value(value)}"
        return None

    def _dynamic(self, obj: Any) -> str:
        key = id(obj)
        if key in self._code_memo:
            return self._code_memo[key]
        if key in self._active:
            # Recursive function or class: its own name stands for itself.
            return f"self:{obj.__qualname__}"
        self._active.add(key)
        try:
            if isinstance(obj, type):
                fp = "class:" + self._class(obj)
            else:
                fp = "function:" + self._function(obj)
        finally:
            self._active.discard(key)
        self._code_memo[key] = fp
        self._keep.append(obj)
        return fp

    def _function(self, fn: types.FunctionType) -> str:
        code = fn.__code__
        self.code_files.add(code.co_filename)
        names = _global_names(code)
        globals_used = {
            name: self._inner(fn.__globals__[name])
            for name in sorted(names)
            if name in fn.__globals__
        }
        closure = [
            self._inner(cell.cell_contents) if _cell_filled(cell) else "<empty>"
            for cell in (fn.__closure__ or ())
        ]
        parts = {
            "qualname": fn.__qualname__,
            "code": _code_fingerprint(code),
            "defaults": self._inner(fn.__defaults__),
            "kwdefaults": self._inner(fn.__kwdefaults__),
            "closure": closure,
            "globals": globals_used,
        }
        return _h(repr(sorted(parts.items())))

    def _class(self, cls: type) -> str:
        members = {}
        for name, member in sorted(vars(cls).items()):
            if name in _CLASS_BOOKKEEPING:
                continue
            if isinstance(member, (staticmethod, classmethod)):
                member = member.__func__
            if isinstance(member, property):
                member = (member.fget, member.fset, member.fdel)
            members[name] = self._inner(member)
        bases = [self._inner(b) for b in cls.__bases__ if b is not object]
        return _h(repr((cls.__qualname__, bases, sorted(members.items()))))

    def _inner(self, value: Any) -> str:
        ref = self.reference(value)
        return ref if ref is not None else self.value(value)


#: Class attributes that are bookkeeping, not behaviour: ``_abc_impl`` is ABCMeta's cache
#: of isinstance answers (it changes as the class is used, and can't be pickled);
#: ``__firstlineno__`` (Python 3.13+) is where the cell put the class, which moves when
#: a cell above it grows, as a function's ``co_firstlineno`` does.
#: ``__slotnames__`` is copyreg's cache, added to a class the first time an instance of
#: it is pickled (a task output is): hashing it made a task's second run miss.
_CLASS_BOOKKEEPING = frozenset(
    {
        "__dict__",
        "__weakref__",
        "__module__",
        "__qualname__",
        "__firstlineno__",
        "_abc_impl",
        "__slotnames__",
    }
)


def _named_reference(value: Any) -> str | None:
    """'module:qualname' when an installed module's attribute of that name is ``value``."""
    module = getattr(value, "__module__", None)
    qualname = getattr(value, "__qualname__", None)
    if not module or module == "__main__" or not qualname or "<" in qualname:
        return None
    obj: Any = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return f"{module}:{qualname}" if obj is value else None


class _FingerprintPickler(pickle.Pickler):
    def __init__(self, file: Any, fp: Fingerprinter) -> None:
        super().__init__(file, protocol=5)
        self._fp = fp

    def persistent_id(self, obj: Any) -> str | None:
        return self._fp.reference(obj)


def _cell_filled(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018
    except ValueError:
        return False
    return True


#: Instructions that look a name up in the module: co_names also lists attribute names
#: (``obj.lock``), which must not pull in an unrelated notebook global called ``lock``.
_GLOBAL_OPS = frozenset(
    dis.opmap[op]
    for op in (
        "LOAD_GLOBAL",
        "STORE_GLOBAL",
        "DELETE_GLOBAL",
        "LOAD_NAME",
        "LOAD_FROM_DICT_OR_GLOBALS",
    )
    if op in dis.opmap
)
_LOAD_GLOBAL = dis.opmap["LOAD_GLOBAL"]
#: Since 3.11 the low bit of LOAD_GLOBAL's argument is a flag, the name index above it.
_LOAD_GLOBAL_SHIFT = 1 if sys.version_info >= (3, 11) else 0


def _global_names(code: types.CodeType) -> set[str]:
    """Names the code (and its nested code) looks up as globals.

    A direct scan of the word code: ``dis.get_instructions`` costs ~5x more per function,
    which every task run with a function input would pay.
    """
    names = set()
    raw = code.co_code
    extended = 0
    for i in range(0, len(raw), 2):
        op, arg = raw[i], raw[i + 1] | extended
        extended = arg << 8 if op == dis.EXTENDED_ARG else 0
        if op in _GLOBAL_OPS:
            names.add(code.co_names[arg >> _LOAD_GLOBAL_SHIFT if op == _LOAD_GLOBAL else arg])
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _code_fingerprint(code: types.CodeType) -> str:
    consts = []
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            consts.append(("code", _code_fingerprint(const)))
        elif isinstance(const, frozenset):
            consts.append(("frozenset", sorted(map(repr, const))))
        else:
            consts.append((type(const).__name__, repr(const)))
    parts = (
        code.co_argcount,
        code.co_posonlyargcount,
        code.co_kwonlyargcount,
        code.co_flags,
        code.co_code.hex(),
        consts,
        code.co_names,
        code.co_varnames,
        code.co_freevars,
        code.co_cellvars,
    )
    return _h(repr(parts))


def _h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def fingerprint(value: Any, registry: SerializerRegistry | None = None) -> str:
    return Fingerprinter(registry or SerializerRegistry()).value(value)
