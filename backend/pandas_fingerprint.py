"""Fingerprints of pandas values by what they hold, not by how pandas happens to hold it.

A frame's pickle carries pandas' bookkeeping: how its columns are grouped into blocks
(a frame built column by column has one block per column, the same frame read back from
Parquet one per dtype), caches (a ``DatetimeArray`` pickles its ``_cache``, which fills
as it is used), how an Arrow column is chunked (``pd.concat`` leaves two chunks, Parquet
gives one) and whatever lies under the nulls of a nullable column. Hashing that pickle
gave a frame another fingerprint after our own Parquet round trip: ``%lineage df`` did not
find a task's output and a task reading it missed the cache. Here a frame is described
column by column, each column by its dtype and its values in one canonical layout, and an
index by its type, names and values (a ``MultiIndex`` by its level values, not by its
levels and codes, which may hold unused labels).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Callable
from typing import Any

#: Fingerprint of a nested value (a column's ndarray, a name, ``df.attrs``): the
#: calling ``Fingerprinter``'s, so arrays hash as arrays do everywhere else.
Inner = Callable[[Any], str]


def pandas_fingerprint(value: Any, inner: Inner) -> str | None:
    """The fingerprint of a pandas frame, series, index or extension array; None for
    anything else (a subclass, a scalar, a dtype), which is hashed as before, pickled."""
    import pandas as pd

    kind = type(value)
    if kind is pd.DataFrame:
        parts: tuple[Any, ...] = ("DataFrame", *_frame(value, inner))
    elif kind is pd.Series:
        parts = ("Series", inner(value.name), _index(value.index, inner))
        parts += (_array(value._values, inner), _attrs(value, inner))
    elif isinstance(value, pd.Index) and _is_pandas_type(kind):
        parts = ("Index", _index(value, inner))
    elif isinstance(value, pd.api.extensions.ExtensionArray) and _is_pandas_type(kind):
        parts = ("array", _array(value, inner))
    else:
        return None
    return "pandas:" + _h(parts)


def is_pandas_module(module: str) -> bool:
    """Whether a type from ``module`` is pandas' own (not a subclass from elsewhere, nor
    a package merely named ``pandas_...``)."""
    return module == "pandas" or module.startswith("pandas.")


def _is_pandas_type(kind: type) -> bool:
    return is_pandas_module(kind.__module__)


def _frame(frame: Any, inner: Inner) -> tuple[Any, ...]:
    column = getattr(frame._mgr, "iget_values", None)  # (a Series per column costs more)
    if column is None:
        columns = [frame.iloc[:, i]._values for i in range(frame.shape[1])]
    else:
        columns = [column(i) for i in range(frame.shape[1])]
    return (
        _index(frame.columns, inner),
        _index(frame.index, inner),
        [_array(column, inner) for column in columns],
        _attrs(frame, inner),
    )


def _attrs(value: Any, inner: Inner) -> str:
    return inner(dict(value.attrs)) if value.attrs else ""


def _index(index: Any, inner: Inner) -> str:
    import pandas as pd

    kind = type(index).__name__
    names = inner(list(index.names))
    if isinstance(index, pd.RangeIndex):
        parts: tuple[Any, ...] = (kind, names, index.start, index.stop, index.step)
    elif isinstance(index, pd.MultiIndex):
        levels = [_index(index.get_level_values(i), inner) for i in range(index.nlevels)]
        parts = (kind, names, levels)
    else:
        # A DatetimeIndex's or TimedeltaIndex's freq changes what ``shift`` does, and
        # the Parquet serializer keeps it; the index's own caches are not hashed.
        timed = isinstance(index, (pd.DatetimeIndex, pd.TimedeltaIndex))
        freq = index.freqstr if timed else None
        parts = (kind, names, _array(index._values, inner), freq)
    return _h(parts)


def _array(array: Any, inner: Inner) -> str:
    """A column's or an index's values with their dtype, in one layout whatever their
    blocks, chunks, caches or the bytes under their nulls."""
    import numpy as np
    import pandas as pd

    if isinstance(array, np.ndarray):
        return inner(array)
    dtype = str(array.dtype)
    arrays = pd.arrays
    if isinstance(array, (arrays.DatetimeArray, arrays.TimedeltaArray, arrays.PeriodArray)):
        parts: tuple[Any, ...] = (dtype, inner(array.asi8))
    elif isinstance(array, pd.Categorical):
        parts = (dtype, array.ordered, _index(array.categories, inner), inner(array.codes))
    elif isinstance(array, (arrays.IntegerArray, arrays.FloatingArray, arrays.BooleanArray)):
        missing = array.isna()
        fill = False if isinstance(array, arrays.BooleanArray) else 0
        values = array.to_numpy(dtype=array.dtype.numpy_dtype, na_value=fill)
        parts = (dtype, inner(missing), inner(values))
    elif isinstance(array, arrays.ArrowExtensionArray):
        parts = (dtype, _arrow(array))
    else:  # (Python-backed strings, intervals, sparse, a plug-in's): by element
        parts = (type(array).__name__, dtype, inner(np.asarray(array, dtype=object)))
    return _h(parts)


def _arrow(array: Any) -> str:
    """An Arrow-backed column as one chunk, buffers from offset 0 and null slots empty,
    in Arrow's IPC format: the chunking and slicing a column got from ``pd.concat`` or a
    filter are not part of its value."""
    import pyarrow as pa
    import pyarrow.compute as pc

    held = pa.array(array)  # (the ``__arrow_array__`` protocol: no copy)
    kind = held.type
    chunks = held.chunks if isinstance(held, pa.ChunkedArray) else [held]
    # (concatenating with an empty array copies every buffer from offset 0)
    flat = pa.concat_arrays([*chunks, pa.array([], type=kind)])
    if flat.null_count:  # (a type if_else lacks: its null slots are hashed as they are)
        with contextlib.suppress(pa.ArrowNotImplementedError, pa.ArrowInvalid):
            flat = pc.if_else(pc.is_valid(flat), flat, pa.nulls(len(flat), kind))
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, pa.schema([("v", kind)])) as writer:
        writer.write_batch(pa.record_batch([flat], names=["v"]))
    return hashlib.sha256(sink.getvalue()).hexdigest()


def _h(parts: tuple[Any, ...]) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()
