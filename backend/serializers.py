"""Type-aware value encodings, chosen by type and recorded with each artifact.

Serializers stream: ``dump`` writes into a file object and ``load`` reads from one, so
a 100 MiB array goes from memory to storage (and back) without extra full copies.
Concrete serializers are registered by name through the ``papercrane.serializers``
entry-point group; the built-in ones are also known without entry points so that a
source checkout works before it is installed. A plug-in serializer handles values that
no built-in typed serializer (npy, parquet, text, bytes, json) takes, ahead of the
cloudpickle fallback.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import os
import re
import sys
import types
from abc import ABC, abstractmethod
from typing import Any, BinaryIO, ClassVar

from .plugins import PluginRegistry


class Serializer(ABC):
    name: ClassVar[str]
    #: Higher wins when several accept a value.
    priority: ClassVar[int] = 0

    @classmethod
    @abstractmethod
    def accepts(cls, value: Any) -> bool:
        """Cheap type test; must not import heavy libraries for values that are not theirs."""

    @abstractmethod
    def dump(self, value: Any, stream: BinaryIO) -> None: ...

    @abstractmethod
    def load(self, stream: BinaryIO) -> Any: ...

    #: True when equal values always give equal bytes, so the hash of the bytes can
    #: serve as the value's fingerprint.
    deterministic: ClassVar[bool] = True

    def load_mapped(self, buffer: Any) -> tuple[Any, bytes] | None:
        """For encodings that are a header followed by the value's own memory: a value
        that views ``buffer`` (a mapping of the whole encoding) without copying it, and
        the header. None when this serializer or this encoding can't (read it instead)."""
        return None

    def prefix(self, value: Any) -> bytes | None:
        """The header ``dump`` would write before ``value``'s memory, when it writes that
        memory as it is; None otherwise."""
        return None

    def encode(self, value: Any) -> bytes | None:
        """The bytes ``dump`` writes, in one piece, for serializers that build them in
        memory anyway (text, bytes, JSON); None for those that stream (the default).
        Storing a small value then costs one call and one hash, not a stream's set-up:
        a map stores thousands of them."""
        return None


def type_module(value: Any) -> str:
    """The module of ``value``'s type, or "". Not always ``type(value).__module__``: a type
    whose instances have a ``__module__`` slot (Cython's functions, which pickles of
    NumPy's random generators hold) gives that slot's descriptor there, not a string."""
    module = type(value).__module__
    return module if isinstance(module, str) else ""


class NumpySerializer(Serializer):
    name = "npy"
    priority = 50

    @classmethod
    def accepts(cls, value: Any) -> bool:
        if not type_module(value).startswith("numpy"):
            return False
        import numpy as np

        return type(value) is np.ndarray and not value.dtype.hasobject

    def dump(self, value: Any, stream: BinaryIO) -> None:
        """The same bytes as ``np.save``. A contiguous array is written as its header and
        then its own memory in one write: numpy's ``write_array`` copies into 16 MiB
        chunks whenever the stream is not a plain file (our hashing writer never is)."""
        import numpy as np

        body = _memory_bytes(value)
        header = self.prefix(value) if body is not None else None
        if body is None or header is None:
            np.lib.format.write_array(stream, value, allow_pickle=False)
            return
        stream.write(header)
        stream.write(body)

    def prefix(self, value: Any) -> bytes | None:
        """What ``write_array`` writes first, for a contiguous array whose version 1.0
        header can hold it (else None: numpy's own way, a header past 64 KiB or not
        latin-1)."""
        import numpy as np

        if type(value) is not np.ndarray or _memory_bytes(value) is None:
            return None
        header = io.BytesIO()
        try:
            np.lib.format.write_array_header_1_0(
                header, np.lib.format.header_data_from_array_1_0(value)
            )
        except ValueError:
            return None
        return header.getvalue()

    def load_mapped(self, buffer: Any) -> tuple[Any, bytes] | None:
        """An array over the mapped file, with no copy: the header is parsed from the
        mapping, the array starts right after it. Only for version 1.0 and 2.0 headers
        and a data offset aligned for the dtype (else None: read it)."""
        import numpy as np

        fmt = np.lib.format
        head = bytes(buffer[: fmt.MAGIC_LEN + 4])
        version = fmt.read_magic(io.BytesIO(head))
        read_header, width = {
            (1, 0): (fmt.read_array_header_1_0, 2),
            (2, 0): (fmt.read_array_header_2_0, 4),
        }.get(version, (None, 0))
        if read_header is None:
            return None
        offset = fmt.MAGIC_LEN + width + int.from_bytes(head[fmt.MAGIC_LEN :][:width], "little")
        header = bytes(buffer[:offset])
        shape, fortran_order, dtype = read_header(io.BytesIO(header[fmt.MAGIC_LEN :]))
        if dtype.hasobject:
            raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
        if dtype.itemsize == 0 or offset % dtype.alignment:
            return None
        nbytes = math.prod(shape) * dtype.itemsize
        if len(buffer) - offset < nbytes:
            raise ValueError(
                f"stored array is truncated: expected {nbytes} bytes of data, "
                f"got {len(buffer) - offset}"
            )
        array = np.ndarray(
            shape[::-1] if fortran_order else shape, dtype=dtype, buffer=buffer, offset=offset
        )
        return (array.T if fortran_order else array), header

    def load(self, stream: BinaryIO) -> Any:
        """Reads straight into the new array's memory (``readinto``), as ``np.load``
        does from a plain file, also through the hashing reader."""
        import numpy as np

        fmt = np.lib.format
        magic = _read_exact(stream, fmt.MAGIC_LEN)
        version = fmt.read_magic(io.BytesIO(magic))
        read_header = {
            (1, 0): fmt.read_array_header_1_0,
            (2, 0): fmt.read_array_header_2_0,
        }.get(version)
        if read_header is None:  # format 3.0 (utf-8 field names): rare, numpy's way
            return fmt.read_array(_Prefixed(magic, stream), allow_pickle=False)
        shape, fortran_order, dtype = read_header(stream)
        if dtype.hasobject:
            raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
        # np.ndarray, not np.empty: it also makes zero-width string dtypes right.
        array = np.ndarray(shape[::-1] if fortran_order else shape, dtype=dtype)
        view = memoryview(array.reshape(-1).view(np.uint8)) if dtype.itemsize else b""
        readinto = getattr(stream, "readinto", None) or _readinto_by_read(stream)
        filled = 0
        while filled < len(view):
            n = readinto(view[filled:])
            if not n:
                raise ValueError(
                    f"stored array is truncated: expected {len(view)} bytes of data, got {filled}"
                )
            filled += n
        return array.T if fortran_order else array


def _memory_bytes(array: Any) -> memoryview | None:
    """An array's data as bytes in .npy order without a copy, when it is contiguous
    (C order, or Fortran order, which .npy stores as it is in memory)."""
    import numpy as np

    if array.dtype.itemsize == 0 or array.size == 0:
        return None
    if array.flags.c_contiguous:
        flat = array.reshape(-1)
    elif array.flags.f_contiguous:
        flat = array.T.reshape(-1)
    else:
        return None
    return memoryview(flat.view(np.uint8))


def _readinto_by_read(stream: BinaryIO) -> Any:
    """``readinto`` for a stream that only has ``read``."""

    def readinto(view: memoryview) -> int:
        data = stream.read(min(len(view), 16 << 20))
        view[: len(data)] = data
        return len(data)

    return readinto


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    data = b""
    while len(data) < n:
        more = stream.read(n - len(data))
        if not more:
            raise ValueError(f"stored array is truncated: expected {n} bytes, got {len(data)}")
        data += more
    return data


class _Prefixed(io.RawIOBase):
    """Bytes already read, then the rest of a stream: hands numpy's own reader a
    stream whose start the fast path has consumed."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = memoryview(head)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._head.nbytes:
            n = min(view.nbytes, self._head.nbytes)
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(view.nbytes)
        view[: len(data)] = data
        return len(data)


class ParquetSerializer(Serializer):
    name = "parquet"
    priority = 50
    deterministic = False

    @classmethod
    def accepts(cls, value: Any) -> bool:
        if not type_module(value).startswith("pandas"):
            return False
        import pandas as pd

        if type(value) is not pd.DataFrame:
            return False
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            return False
        # Parquet needs unique string column names and arrow-typable columns; anything
        # else (object columns of mixed Python objects) goes to cloudpickle. Object
        # columns of strings come back as object only where pandas does not infer its
        # own string dtype (pandas < 3); elsewhere they would change type, so pickle.
        # A frame without columns reads back with other (empty) column labels: pickle it.
        # Categorical columns (and index levels) go to parquet only where their categories
        # come back as they went: see ``_categories_round_trip``.
        if (
            value.columns.empty
            or not value.columns.is_unique
            or not all(isinstance(c, str) for c in value.columns)
            or isinstance(value.columns, pd.CategoricalIndex)  # written, but unreadable
        ):
            return False
        index = value.index
        index_dtypes = list(index.dtypes) if isinstance(index, pd.MultiIndex) else [index.dtype]
        categoricals = [
            dt for dt in [*value.dtypes, *index_dtypes] if isinstance(dt, pd.CategoricalDtype)
        ]
        if not all(_categories_round_trip(dt) for dt in categoricals):
            return False
        # Labels of object dtype (column names, index levels) come back as ``str`` where
        # pandas infers its own string dtype (pandas 3): another value, so pickle.
        object_labels = [dt for dt in [value.columns.dtype, *index_dtypes] if dt == object]  # noqa: E721
        if object_labels and not _strings_read_back_as_object():
            return False
        object_columns = [c for c, dt in value.dtypes.items() if dt == object]  # noqa: E721
        return not object_columns or (
            _strings_read_back_as_object()
            and all(_is_string_column(value[c]) for c in object_columns)
        )

    def dump(self, value: Any, stream: BinaryIO) -> None:
        """A frame must come back as it went, index type included: a task's output that
        reads back with another index has another fingerprint (``%lineage`` no longer
        finds it, a downstream task misses the cache). ``preserve_index=None`` keeps a
        ``RangeIndex`` as metadata (``index=True`` wrote it as an int64 column); a
        DatetimeIndex's or TimedeltaIndex's ``freq``, which Parquet has no place for, is
        kept in our own schema metadata. ``df.attrs`` is kept as pandas keeps it."""
        import pandas as pd
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(value, preserve_index=None)
        extra: dict[bytes, bytes] = {}
        if value.attrs:
            extra[b"PANDAS_ATTRS"] = json.dumps(value.attrs).encode()
        index = value.index
        if isinstance(index, (pd.DatetimeIndex, pd.TimedeltaIndex)) and index.freq is not None:
            extra[_FREQ_KEY] = index.freqstr.encode()  # (a PeriodIndex keeps its own)
        if extra:
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), **extra})
        pq.write_table(table, stream, compression="snappy")

    def load(self, stream: BinaryIO) -> Any:
        import pandas as pd
        import pyarrow.parquet as pq

        data = stream.read()
        frame = pd.read_parquet(io.BytesIO(data), engine="pyarrow")
        freq = (pq.read_schema(io.BytesIO(data)).metadata or {}).get(_FREQ_KEY)
        if freq is not None:
            with contextlib.suppress(ValueError, TypeError):  # it was valid when written
                frame.index = type(frame.index)(frame.index, freq=freq.decode())
        return frame


#: Schema metadata key of a frame's index ``freq`` (see ``ParquetSerializer.dump``).
_FREQ_KEY = b"papercrane.index_freq"


def _strings_read_back_as_object() -> bool:
    import pandas as pd

    return pd.Series(["a"]).dtype == object  # noqa: E721


def _categories_round_trip(dtype: Any) -> bool:
    """Whether parquet gives this categorical dtype back whole. Arrow writes a categorical
    as a dictionary column, which pandas reads back as a categorical only when the
    dictionary is of strings, and then with pandas' default string dtype for its
    categories (object before pandas 3, ``str`` since). Integer, float, bool, datetime
    and other categories came back as plain columns of their values, categories and
    order lost; so did an empty set of categories, and ``string`` or object categories
    under pandas 3 came back as ``str``. Each is another value with another fingerprint
    (``%lineage`` no longer finds it): those frames are pickled instead."""
    import pandas as pd

    categories = dtype.categories
    if categories.empty or categories.dtype != pd.Index(["a"]).dtype:
        return False
    return categories.dtype != object or all(isinstance(c, str) for c in categories)  # noqa: E721


def _is_string_column(series: Any) -> bool:
    sample = series.head(1000)
    return all(isinstance(v, str) or v is None for v in sample)


class TextSerializer(Serializer):
    name = "text"
    priority = 40

    @classmethod
    def accepts(cls, value: Any) -> bool:
        return type(value) is str

    def dump(self, value: Any, stream: BinaryIO) -> None:
        stream.write(self.encode(value))

    def encode(self, value: Any) -> bytes:
        return value.encode("utf-8", "surrogatepass")  # type: ignore[no-any-return]

    def load(self, stream: BinaryIO) -> Any:
        return stream.read().decode("utf-8", "surrogatepass")


class BytesSerializer(Serializer):
    name = "bytes"
    priority = 40

    @classmethod
    def accepts(cls, value: Any) -> bool:
        return type(value) is bytes

    def dump(self, value: Any, stream: BinaryIO) -> None:
        stream.write(value)

    def encode(self, value: Any) -> bytes:
        return value  # type: ignore[no-any-return]

    def load(self, stream: BinaryIO) -> Any:
        return stream.read()


_JSON_SCALARS = (type(None), bool, int, str)
_JSON_INT_LIMIT = 10**4000


def _json_exact(value: Any, depth: int = 0) -> bool:
    """True when JSON gives back exactly this value (types included), so nothing is lost.

    Tuples, non-string keys, NaN and subclasses all fail and go to cloudpickle.
    """
    t = type(value)
    if t is int:  # Python refuses to print ints past 4300 digits (CVE-2020-10735)
        return -_JSON_INT_LIMIT < value < _JSON_INT_LIMIT
    if t in _JSON_SCALARS:
        return True
    if t is float:
        return math.isfinite(value)
    if depth > 50:
        return False
    if t is list:
        return len(value) <= 10_000 and all(_json_exact(v, depth + 1) for v in value)
    if t is dict:
        return len(value) <= 10_000 and all(
            type(k) is str and _json_exact(v, depth + 1) for k, v in value.items()
        )
    return False


class JsonSerializer(Serializer):
    name = "json"
    priority = 30

    @classmethod
    def accepts(cls, value: Any) -> bool:
        return _json_exact(value)

    #: ``json.dumps`` with arguments builds an encoder per call; a map encodes thousands
    #: of small values. The same settings, so the same bytes.
    _encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

    def dump(self, value: Any, stream: BinaryIO) -> None:
        stream.write(self.encode(value))

    def encode(self, value: Any) -> bytes:
        if type(value) is int:  # what the encoder writes for an int (``int.__repr__``),
            return int.__repr__(value).encode()  # without setting up an encoding pass
        # As in TextSerializer: a str may hold lone surrogates (surrogateescape'd names).
        return self._encoder.encode(value).encode("utf-8", "surrogatepass")  # type: ignore[no-any-return]

    def load(self, stream: BinaryIO) -> Any:
        return json.loads(stream.read().decode("utf-8", "surrogatepass"))


class CloudpickleSerializer(Serializer):
    """Everything else. Functions and classes from the notebook travel by value."""

    name = "cloudpickle"
    priority = -100
    deterministic = False

    @classmethod
    def accepts(cls, value: Any) -> bool:
        return True

    def dump(self, value: Any, stream: BinaryIO) -> None:
        _pickler()(stream, protocol=5).dump(value)

    def load(self, stream: BinaryIO) -> Any:
        import pickle

        return pickle.load(stream)


_DYNAMIC = "<dynamic-code>"


@functools.cache
def _pickler() -> type:
    """cloudpickle's Pickler, keeping the file name of the code it ships by value.

    cloudpickle 3.1.3 started naming every such code object's file ``<dynamic-code>``
    (so that equal functions pickle to equal bytes). A notebook helper called by a task
    then showed no source line in the user's traceback: the kernel formats an
    attempt's frames with the cell files IPython registered, found by that name. Our
    identities come from fingerprints, never from pickle bytes, so the real name is
    kept. (cloudpickle's own code reducer is reused; if it is ever not where this looks
    for it, pickling stays cloudpickle's and only the file names are lost.)"""
    import types
    from collections import ChainMap

    import cloudpickle

    base = cloudpickle.Pickler
    reduce_code = getattr(base, "_dispatch_table", {}).get(types.CodeType)
    if reduce_code is None:
        return base

    def keep_file_name(code: types.CodeType) -> Any:
        rebuild, args = reduce_code(code)
        if code.co_filename != _DYNAMIC:
            args = tuple(code.co_filename if a == _DYNAMIC else a for a in args)
        return rebuild, args

    own = {types.CodeType: keep_file_name, functools._lru_cache_wrapper: _reduce_lru_cache}
    table = ChainMap(own, base.dispatch_table)
    return type("Pickler", (base,), {"dispatch_table": table, "__module__": __name__})


def _reduce_lru_cache(wrapper: Any) -> Any:
    """A notebook function under ``functools.lru_cache`` (or ``functools.cache``) travels
    as its function, by value, re-wrapped on load with the same ``maxsize`` and ``typed``
    (and an empty cache). The C wrapper itself pickles by name, which the task's process
    can't resolve: it has no notebook. A recursive one (``fib`` calling ``fib``) comes back
    as one wrapper, which its function's globals name: pickle's memo sees to that. One an
    installed module defines still pickles by name, as pickle would."""
    wrapped = getattr(wrapper, "__wrapped__", None)
    if wrapped is None or _importable(wrapper):
        return wrapper.__reduce__()
    params = wrapper.cache_parameters()
    return _rebuild_lru_cache, (wrapped, params["maxsize"], params["typed"])


def _importable(obj: Any) -> bool:
    """Whether pickling ``obj`` by its module and qualified name finds it again elsewhere:
    an importable module's attribute (not the notebook's ``__main__``, not a local)."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", "")
    found: Any = sys.modules.get(module) if isinstance(module, str) else None
    if found is None or module == "__main__" or getattr(found, "__spec__", None) is None:
        return False
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return found is obj


def _rebuild_lru_cache(function: Any, maxsize: int | None, typed: bool) -> Any:
    return functools.lru_cache(maxsize=maxsize, typed=typed)(function)


_BUILTIN = {
    cls.name: f"{__name__}:{cls.__name__}"
    for cls in (
        NumpySerializer,
        ParquetSerializer,
        TextSerializer,
        BytesSerializer,
        JsonSerializer,
        CloudpickleSerializer,
    )
}


class SerializerRegistry:
    """Serializers by name, from the ``papercrane.serializers`` entry-point group."""

    def __init__(self, saved: str | os.PathLike[str] | None = None) -> None:
        """``saved``: a file keeping the entry-point scan between sessions (``PluginRegistry``)."""
        self._plugins = PluginRegistry("papercrane.serializers", _BUILTIN, "serializer", saved)
        self._instances: dict[str, Serializer] = {}
        self._typed: list[type[Serializer]] | None = None
        self._extra: list[type[Serializer]] | None = None

    def get(self, name: str) -> Serializer:
        inst = self._instances.get(name)
        if inst is None:
            inst = self._instances[name] = self._plugins.load(name)()
        return inst

    def for_value(self, value: Any) -> Serializer:
        """The built-in typed serializers first; plug-ins for what none of them takes;
        cloudpickle for the rest. (Plug-ins are looked up only when needed.)"""
        if self._typed is None:
            classes = [self._plugins.load(n) for n in self._plugins.builtin_names()]
            self._typed = sorted(
                (c for c in classes if c is not CloudpickleSerializer), key=lambda c: -c.priority
            )
        for cls in self._typed:
            if cls.accepts(value):
                return self.get(cls.name)
        if self._extra is None:
            extra = [self._plugins.load(n) for n in self._plugins.extra_names()]
            self._extra = sorted(extra, key=lambda c: -c.priority)
        for cls in self._extra:
            if cls.accepts(value):
                return self.get(cls.name)
        return self.get(CloudpickleSerializer.name)


def python_type_name(value: Any) -> str:
    """The name a user would write for the value's type: ``int``, ``pandas.DataFrame``,
    ``sklearn.linear_model.LinearRegression`` (not where the class happens to be defined,
    ``pandas.core.frame.DataFrame`` under pandas 2, ``…linear_model._base…``)."""
    t = type(value)
    module = type_module(value)
    if module in ("builtins", ""):
        return t.__qualname__
    if "." not in module:  # (a notebook's own class: ``__main__.Point``; not kept below)
        return f"{module}.{t.__qualname__}"
    name = _PUBLIC_NAMES.get(t)
    if name is None:
        name = _PUBLIC_NAMES[t] = _public_name(t, module)
    return name


#: Library types by their public names (a map names two artifacts per element).
_PUBLIC_NAMES: dict[type, str] = {}


def _public_name(t: type, module: str) -> str:
    """``package.Name`` for the shortest already imported parent package of ``module``
    that has ``t`` under its qualified name. Only what is in a module's ``__dict__``
    counts, so a lazy module's ``__getattr__`` imports nothing here."""
    qualname = t.__qualname__
    first, *rest = qualname.split(".")
    parts = module.split(".")
    for i in range(1, len(parts)):
        package = ".".join(parts[:i])
        obj = getattr(sys.modules.get(package), "__dict__", {}).get(first)
        for attr in rest:
            obj = getattr(obj, attr, None)
        if obj is t:
            return f"{package}.{qualname}"
    return f"{module}.{qualname}"


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def preview(value: Any, limit: int = 80) -> str:
    """A one-line summary for widgets and listings; never raises."""
    try:
        shape = getattr(value, "shape", None)
        if shape is not None and hasattr(value, "dtype") and type(value).__name__ == "ndarray":
            return f"array{tuple(shape)} {value.dtype}"
        if shape is not None and hasattr(value, "columns"):
            cols = ", ".join(map(str, list(value.columns)[:4]))
            more = ", ..." if len(value.columns) > 4 else ""
            return f"{shape[0]} rows × {shape[1]} cols [{cols}{more}]"
        if isinstance(value, (type, types.FunctionType, types.BuiltinFunctionType)):
            text = _signature(value)
        else:
            text = repr(value)
    except Exception as exc:  # a broken __repr__ in user code
        return f"<repr failed: {type(exc).__name__}>"
    # ``<Model object at 0x7f...>``, ``Generator(PCG64) at 0x7F...``: the address says
    # nothing about the value, and differs from run to run for the same one.
    text = " ".join(text.split())
    if " at 0x" in text:  # (a map previews every new element: no regex for the rest)
        text = _ADDRESS.sub("", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _signature(value: Any) -> str:
    """``def design(X, degree)`` where ``repr`` gives ``<function design at 0x7f...>``:
    an address says nothing, and differs from run to run for the same function."""
    import inspect

    try:
        params = str(inspect.signature(value))
    except Exception:  # some built-ins and C types have none; a user's may be broken
        params = "(...)"
    kind = "class" if isinstance(value, type) else "def"
    name = value.__qualname__.rpartition("<locals>.")[2]
    return f"{kind} {name}{params}"
