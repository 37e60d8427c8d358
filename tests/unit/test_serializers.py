"""Serializers: which one a value gets, exact round trips through content-addressed
storage, and storage that refuses corrupt or half-written objects."""

from __future__ import annotations

import enum
import hashlib
import io
import subprocess
import sys
import textwrap
import threading
import traceback
import types
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pytest

from papercrane.backend.errors import ConfigError, CorruptArtifact
from papercrane.backend.fingerprint import Fingerprinter
from papercrane.backend.serializers import (
    Serializer,
    SerializerRegistry,
    preview,
    python_type_name,
)
from papercrane.backend.storage import Storage


@pytest.fixture
def registry() -> SerializerRegistry:
    return SerializerRegistry()


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return Storage(str(tmp_path))


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


class Color(enum.IntEnum):
    RED = 1


def _deep(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels):
        value = [value]
    return value


#: Frames with categoricals: parquet gives back only string categories (as pandas'
#: default string dtype); the others came back as plain columns or another dtype.
CATEGORICALS = {
    "int": ("cloudpickle", pd.DataFrame({"g": pd.Categorical([3, 1, 2], ordered=True)})),
    "float": ("cloudpickle", pd.DataFrame({"g": pd.Categorical([0.5, 1.5, 0.5])})),
    "datetime": (
        "cloudpickle",
        pd.DataFrame({"g": pd.Categorical(pd.to_datetime(["2024-01-01", "2024-02-01"]))}),
    ),
    "bool": ("cloudpickle", pd.DataFrame({"g": pd.Categorical([True, False])})),
    "no-categories": (
        "cloudpickle",
        pd.DataFrame({"g": pd.Categorical([None, None], categories=pd.Index([], dtype=str))}),
    ),
    "string-dtype": (
        "cloudpickle",
        pd.DataFrame({"g": pd.Categorical(pd.array(["x", "y"], dtype="string"))}),
    ),
    "int-index": ("cloudpickle", pd.DataFrame({"a": [1, 2]}, index=pd.CategoricalIndex([2, 1]))),
    "int-index-level": (
        "cloudpickle",
        pd.DataFrame(
            {"a": [1, 2]},
            index=pd.MultiIndex.from_arrays([pd.Categorical([1, 2]), ["x", "y"]], names=["k", "n"]),
        ),
    ),
    "categorical-columns": (
        "cloudpickle",
        pd.DataFrame([[1, 2]], columns=pd.CategoricalIndex(["a", "b"])),
    ),
    "str": (
        "parquet",
        pd.DataFrame({"g": pd.Categorical(["b", "a", None], categories=["b", "a"], ordered=True)}),
    ),
    "str-index-level": (
        "parquet",
        pd.DataFrame(
            {"a": [1, 2]},
            index=pd.MultiIndex.from_arrays(
                [pd.Categorical(["u", "v"]), ["x", "y"]], names=["k", "n"]
            ),
        ),
    ),
}


# -- which serializer -----------------------------------------------------------------------

CHOICES = [
    ("text", "hello"),
    ("text", ""),
    ("bytes", b"\x00\xff"),
    ("json", 3),
    ("json", -(10**100)),
    ("json", 1.5),
    ("json", True),
    ("json", None),
    ("json", [1, "a", None, 2.5, [True, {"k": []}]]),
    ("json", {"a": {"b": [1, 2]}}),
    ("npy", np.arange(6).reshape(2, 3)),
    ("npy", np.array(["2020-01-01"], dtype="datetime64[D]")),
    ("npy", np.zeros(2, dtype=[("a", "i4"), ("b", "f8")])),
    ("parquet", pd.DataFrame({"a": [1, 2], "f": [0.5, np.nan]})),
    ("cloudpickle", (1, 2)),
    ("cloudpickle", [1, (2, 3)]),
    ("cloudpickle", {1: "a"}),
    ("cloudpickle", {"a": {2: "b"}}),
    ("cloudpickle", float("nan")),
    ("cloudpickle", float("inf")),
    ("cloudpickle", [1.0, float("nan")]),
    ("cloudpickle", {"x": float("-inf")}),
    ("cloudpickle", {1, 2}),
    ("cloudpickle", 10**5000),  # JSON can't print ints this long
    ("cloudpickle", list(range(10_001))),
    ("cloudpickle", _deep(60)),
    ("cloudpickle", Color.RED),  # an int subclass would come back as a plain int
    ("cloudpickle", bytearray(b"x")),
    ("cloudpickle", np.array([1, "a"], dtype=object)),
    ("cloudpickle", np.zeros(2, dtype=[("a", "O")])),
    ("cloudpickle", np.float64(1.5)),
    ("cloudpickle", np.ma.masked_array([1, 2], mask=[0, 1])),
    ("cloudpickle", pd.Series([1, 2])),
    ("cloudpickle", pd.DataFrame({0: [1]})),
    ("cloudpickle", pd.DataFrame([[1, 2]], columns=["a", "a"])),
    ("cloudpickle", pd.DataFrame({"o": pd.Series([1, "a"], dtype=object)})),
    ("cloudpickle", type("Text", (str,), {})("x")),
    *CATEGORICALS.values(),
]


@pytest.mark.parametrize(
    ("expected", "value"), CHOICES, ids=[f"{e}-{i}" for i, (e, _) in enumerate(CHOICES)]
)
def test_serializer_is_chosen_by_type(
    registry: SerializerRegistry, expected: str, value: Any
) -> None:
    assert registry.for_value(value).name == expected


def test_unknown_serializer_name_lists_known_ones(registry: SerializerRegistry) -> None:
    with pytest.raises(ConfigError, match=r"unknown serializer 'yaml'.*cloudpickle.*npy"):
        registry.get("yaml")


# -- round trips ---------------------------------------------------------------------------


def assert_same(original: Any, back: Any) -> None:
    assert type(back) is type(original)
    if isinstance(original, pd.DataFrame):
        # "equiv" (the default) would take an int64 Index for the RangeIndex it was.
        pd.testing.assert_frame_equal(
            back, original, check_exact=True, check_index_type=True, check_column_type=True
        )
        assert type(back.index) is type(original.index)
        assert getattr(back.index, "freq", None) == getattr(original.index, "freq", None)
        assert back.attrs == original.attrs
    elif isinstance(original, np.ndarray):
        assert back.dtype == original.dtype
        assert back.shape == original.shape
        np.testing.assert_array_equal(back, original)
    elif isinstance(original, pd.Series):
        pd.testing.assert_series_equal(back, original, check_exact=True)
    elif isinstance(original, float):
        assert repr(back) == repr(original)  # nan stays nan, -0.0 stays -0.0
    else:
        assert back == original


#: Frames whose index kind must survive the round trip (a task's ``pd.DataFrame(...)``
#: has a RangeIndex; a time series a DatetimeIndex with a freq).
INDEX_KINDS = {
    "default": pd.DataFrame({"a": [1, 2]}),
    "range-step": pd.DataFrame({"a": [1, 2]}, index=pd.RangeIndex(5, 9, 2)),
    "named-range": pd.DataFrame({"a": [1, 2]}, index=pd.RangeIndex(2, name="r")),
    "no-rows": pd.DataFrame({"a": pd.Series([], dtype="int64")}),
    "no-rows-step": pd.DataFrame({"a": pd.Series([], dtype="float64")}, index=pd.RangeIndex(3, 3)),
    "named": pd.DataFrame({"a": [1, 2]}, index=pd.Index([10, 20], name="i")),
    "unnamed-int": pd.DataFrame({"a": [1, 2]}, index=[3, 1]),
    "string": pd.DataFrame({"a": [1, 2]}, index=["x", "y"]),
    "multi": pd.DataFrame(
        {"v": [1, 2]}, index=pd.MultiIndex.from_tuples([("a", 1), ("b", 2)], names=["k", "n"])
    ),
    "datetime-freq": pd.DataFrame({"a": [1, 2, 3]}, index=pd.date_range("2020-01-01", periods=3)),
    "datetime-tz-freq": pd.DataFrame(
        {"a": [1, 2, 3]}, index=pd.date_range("2020-03-29", periods=3, freq="h", tz="Europe/Paris")
    ),
    "datetime-no-freq": pd.DataFrame(
        {"a": [1, 2]}, index=pd.DatetimeIndex(["2020-01-01", "2020-01-02"])
    ),
    "timedelta-freq": pd.DataFrame(
        {"a": [1, 2]}, index=pd.timedelta_range("1s", periods=2, freq="s")
    ),
    "period": pd.DataFrame({"a": [1, 2]}, index=pd.period_range("2020-01", periods=2, freq="M")),
    "categorical": pd.DataFrame({"a": [1, 2, 3]}, index=pd.CategoricalIndex(["x", "y", "x"])),
    "attrs": pd.DataFrame({"a": [1]}),
}
INDEX_KINDS["attrs"].attrs["source"] = "sensor 4"

ROUND_TRIPS = [
    ("text", "héllo wörld ✓"),
    ("text", "lone \udc80 surrogate"),
    ("bytes", bytes(range(256))),
    ("json", {"nested": [1, 2.5, None, True, "ü", {"deep": []}], "n": 10**30}),
    ("json", ["lone \udc80 surrogate"]),
    ("json", -0.0),
    ("npy", np.arange(12, dtype=np.int16).reshape(3, 4)),
    ("npy", np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3))),
    ("npy", np.arange(10)[::3]),
    ("npy", np.array([1 + 2j, 3 - 1j])),
    ("npy", np.zeros(3, dtype=[("a", "i4"), ("b", "f8")])),
    (
        "parquet",
        pd.DataFrame(
            {"a": [1, 2, 3], "s": ["x", None, "z"], "f": [1.5, np.nan, -2.0]},
            index=pd.Index([10, 20, 30], name="idx"),
        ),
    ),
    ("parquet", pd.DataFrame({"c": pd.Categorical(["x", "y", "x"])})),
    ("parquet", pd.DataFrame({"t": pd.date_range("2020-01-01", periods=3, tz="UTC")})),
    (
        "parquet",
        pd.DataFrame(
            {"v": [1, 2]}, index=pd.MultiIndex.from_tuples([("a", 1), ("b", 2)], names=["k", "n"])
        ),
    ),
    *[("parquet", frame) for frame in INDEX_KINDS.values()],
    ("cloudpickle", pd.DataFrame()),  # no columns: parquet would name them otherwise
    *CATEGORICALS.values(),
    ("cloudpickle", (1, "a", (2.5, None))),
    ("cloudpickle", {1: "a", (2, 3): {4}}),
    ("cloudpickle", float("nan")),
    ("cloudpickle", 10**5000),
    ("cloudpickle", np.array([1, "a", None], dtype=object)),
    ("cloudpickle", pd.Series([1.5, 2.5], name="s")),
    ("cloudpickle", Color.RED),
    ("cloudpickle", lambda x: x + 1),
]


@pytest.mark.parametrize(
    ("expected", "value"), ROUND_TRIPS, ids=[f"{e}-{i}" for i, (e, _) in enumerate(ROUND_TRIPS)]
)
def test_round_trip_through_storage(
    registry: SerializerRegistry, storage: Storage, expected: str, value: Any
) -> None:
    serializer = registry.for_value(value)
    assert serializer.name == expected
    digest, key, size = storage.put_value(value, serializer)
    stored = Path(storage.root) / key
    assert key == f"artifacts/{digest[:2]}/{digest}"
    assert stored.stat().st_size == size
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == digest
    back = storage.load_value(key, digest, registry.get(expected))
    if callable(value):
        assert back(1) == value(1) == 2
    else:
        assert_same(value, back)


def test_object_string_column_keeps_its_dtype(
    registry: SerializerRegistry, storage: Storage
) -> None:
    # pandas 3 reads parquet strings back as its own str dtype, not object.
    df = pd.DataFrame({"s": pd.Series(["a", None, "c"], dtype=object)})
    serializer = registry.for_value(df)
    digest, key, _ = storage.put_value(df, serializer)
    back = storage.load_value(key, digest, serializer)
    assert back["s"].dtype == object
    assert back["s"].tolist() == ["a", None, "c"]


def test_large_array_streams_through_a_temporary_object(
    registry: SerializerRegistry, storage: Storage, tmp_path: Path
) -> None:
    value = np.random.default_rng(0).random(300_000)  # 2.4 MB: over Storage.SMALL
    assert value.nbytes > Storage.SMALL
    serializer = registry.for_value(value)
    digest, key, size = storage.put_value(value, serializer)
    assert size > value.nbytes
    assert files_under(tmp_path / "tmp") == []
    assert_same(value, storage.load_value(key, digest, serializer))


def test_large_dataframe_round_trip(registry: SerializerRegistry, storage: Storage) -> None:
    n = 100_000
    df = pd.DataFrame({"i": np.arange(n), "x": np.linspace(0, 1, n), "s": ["v"] * n})
    serializer = registry.for_value(df)
    assert serializer.name == "parquet"
    digest, key, _ = storage.put_value(df, serializer)
    assert_same(df, storage.load_value(key, digest, serializer))


@pytest.mark.parametrize("value", [np.arange(5), np.arange(300_000), "x", [1, 2]])
def test_storing_a_value_twice_is_one_object(
    registry: SerializerRegistry, storage: Storage, tmp_path: Path, value: Any
) -> None:
    serializer = registry.for_value(value)
    first = storage.put_value(value, serializer)
    second = storage.put_value(value.copy() if hasattr(value, "copy") else value, serializer)
    assert first == second
    assert files_under(tmp_path / "artifacts") == [tmp_path / first[1]]
    assert files_under(tmp_path / "tmp") == []


@pytest.mark.parametrize("name", ["npy", "text", "bytes", "json"])
def test_deterministic_serializers_give_equal_bytes_for_equal_values(
    registry: SerializerRegistry, name: str
) -> None:
    value = {"npy": np.arange(4), "text": "abc", "bytes": b"abc", "json": {"a": [1]}}[name]
    serializer = registry.get(name)
    assert serializer.deterministic
    one, two = io.BytesIO(), io.BytesIO()
    serializer.dump(value, one)
    serializer.dump(value.copy() if hasattr(value, "copy") else value, two)
    assert one.getvalue() == two.getvalue()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("text", "abc"),
        ("text", "é \ud800 lone surrogate"),
        ("bytes", b"\x00\xff"),
        ("json", 12345),
        ("json", -(10**300)),
        ("json", True),
        ("json", None),
        ("json", 1.5),
        ("json", "é \ud800"),
        ("json", {"a": [1, "b", None]}),
    ],
)
def test_a_whole_encoding_is_the_bytes_dump_writes(
    registry: SerializerRegistry, storage: Storage, name: str, value: Any
) -> None:
    """``encode`` (storing a small value in one call) must give ``dump``'s bytes, so ids
    and digests do not depend on which path stored the value."""
    serializer = registry.get(name)
    streamed = io.BytesIO()
    serializer.dump(value, streamed)
    assert serializer.encode(value) == streamed.getvalue()
    digest, _, size = storage.put_value(value, serializer)
    assert digest == hashlib.sha256(streamed.getvalue()).hexdigest()
    assert size == len(streamed.getvalue())
    assert storage.load_value(storage.artifact_key(digest), digest, serializer) == value


@pytest.mark.parametrize("name", ["npy", "parquet", "cloudpickle"])
def test_streaming_serializers_have_no_whole_encoding(
    registry: SerializerRegistry, name: str
) -> None:
    assert registry.get(name).encode(object()) is None


@pytest.mark.parametrize("name", ["parquet", "cloudpickle"])
def test_pickle_and_parquet_are_not_trusted_as_fingerprints(
    registry: SerializerRegistry, name: str
) -> None:
    assert registry.get(name).deterministic is False


# -- .npy: numpy's own bytes, written and read without copies ------------------------------

#: (id, array): every layout and dtype family the fast path meets, and the ones it leaves
#: to numpy (non-contiguous, zero-width, headers past format 1.0).
NPY = [
    ("c-order", np.arange(24.0).reshape(2, 3, 4)),
    ("f-order", np.asfortranarray(np.arange(24.0).reshape(2, 3, 4))),
    ("non-contiguous", np.arange(100.0)[::3]),
    ("transposed-slice", np.arange(60).reshape(6, 10)[:, ::2].T),
    ("0-d", np.array(3.5)),
    ("empty", np.zeros((0, 3))),
    ("structured", np.array([(1, 2.0, b"ab")], dtype=[("a", "i4"), ("b", ">f8"), ("c", "S2")])),
    ("f-order-structured", np.asfortranarray(np.zeros((3, 4), dtype=[("x", "<f4"), ("y", "i2")]))),
    ("big-endian", np.arange(10, dtype=">i8")),
    ("bool", np.array([True, False, True])),
    ("complex", np.arange(5) * 1j),
    ("datetime", np.array(["2020-01-01", "2021-02-03"], dtype="datetime64[D]")),
    ("unicode", np.array(["héllo", "x"])),
    ("zero-width", np.zeros(3, dtype="V0")),
    ("utf8-field-name", np.zeros(2, dtype=[("é", "i4")])),  # numpy writes format 3.0
    ("big-c", np.random.default_rng(1).random((700, 600))),  # 3.4 MB: a BLAKE3 digest
    ("big-f", np.asfortranarray(np.random.default_rng(2).random((700, 600)))),
    ("big-non-contiguous", np.random.default_rng(3).random((1400, 600))[::2]),
]


@pytest.mark.filterwarnings("ignore:Stored array in format 3.0")
@pytest.mark.parametrize("value", [v for _, v in NPY], ids=[i for i, _ in NPY])
def test_npy_bytes_are_numpys_and_round_trip(
    registry: SerializerRegistry, storage: Storage, value: np.ndarray
) -> None:
    serializer = registry.for_value(value)
    assert serializer.name == "npy"
    ours, numpys = io.BytesIO(), io.BytesIO()
    serializer.dump(value, ours)
    np.lib.format.write_array(numpys, value, allow_pickle=False)
    assert ours.getvalue() == numpys.getvalue()  # so digests made before stay valid
    digest, key, _ = storage.put_value(value, serializer)
    for verify in (True, False):
        back = storage.load_value(key, digest, serializer, verify)
        assert_same(value, back)
        assert back.tobytes() == value.tobytes()
        assert back.flags.writeable
        assert back.flags.f_contiguous == np.load(io.BytesIO(numpys.getvalue())).flags.f_contiguous


def test_truncated_npy_body_is_an_error(registry: SerializerRegistry) -> None:
    npy = registry.get("npy")
    data = io.BytesIO()
    npy.dump(np.arange(1000.0), data)
    with pytest.raises(ValueError, match="truncated"):
        npy.load(io.BytesIO(data.getvalue()[:-1]))


def test_object_arrays_are_never_read_as_npy(registry: SerializerRegistry) -> None:
    data = io.BytesIO()
    np.save(data, np.array([1, None], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle"):
        registry.get("npy").load(io.BytesIO(data.getvalue()))


# -- corrupt, missing, failed writes -----------------------------------------------------------

STORED = {
    "npy": np.arange(100, dtype=np.int64),
    "parquet": pd.DataFrame({"a": np.arange(50), "s": [f"r{i}" for i in range(50)]}),
    "text": "some text " * 20,
    "bytes": bytes(range(200)),
    "json": {"a": list(range(40))},
    "cloudpickle": (1, "two", [3.0] * 20),
}


def _corrupt(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0xFF
    elif how == "truncate":
        del data[len(data) // 2 :]
    else:
        data += b"junk"
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["flip", "truncate", "append"])
@pytest.mark.parametrize("name", sorted(STORED))
def test_corrupted_object_raises_and_is_discarded(
    registry: SerializerRegistry, storage: Storage, tmp_path: Path, name: str, how: str
) -> None:
    serializer = registry.get(name)
    digest, key, _ = storage.put_value(STORED[name], serializer)
    _corrupt(tmp_path / key, how)
    with pytest.raises(CorruptArtifact, match="does not match its hash"):
        storage.load_value(key, digest, serializer)
    assert not (tmp_path / key).exists()  # the next put of the right value rewrites it
    assert storage.put_value(STORED[name], serializer)[0] == digest
    assert_same(STORED[name], storage.load_value(key, digest, serializer))


@pytest.mark.parametrize("name", sorted(STORED))
def test_missing_object_raises_corrupt_artifact(
    registry: SerializerRegistry, storage: Storage, tmp_path: Path, name: str
) -> None:
    serializer = registry.get(name)
    digest, key, _ = storage.put_value(STORED[name], serializer)
    (tmp_path / key).unlink()
    with pytest.raises(CorruptArtifact, match="is missing"):
        storage.load_value(key, digest, serializer)


class Exploding(Serializer):
    """Writes part of the value, then fails (a full disk, an unpicklable member)."""

    name = "exploding"

    @classmethod
    def accepts(cls, value: Any) -> bool:
        return False

    def dump(self, value: Any, stream: BinaryIO) -> None:
        stream.write(b"x" * (1 << 16))
        raise RuntimeError("disk full")

    def load(self, stream: BinaryIO) -> Any:
        raise AssertionError("never stored")


class Big:
    """Claims to be large, so storage streams it instead of encoding it in memory."""

    nbytes = 50 << 20

    def __init__(self) -> None:
        self.payload = np.zeros(1000)
        self.lock = threading.Lock()


@pytest.mark.parametrize("value", [[1, 2], np.zeros(300_000)], ids=["small", "large"])
def test_failed_write_leaves_nothing_behind(storage: Storage, tmp_path: Path, value: Any) -> None:
    with pytest.raises(RuntimeError, match="disk full"):
        storage.put_value(value, Exploding())
    assert files_under(tmp_path / "artifacts") == []
    assert files_under(tmp_path / "tmp") == []


@pytest.mark.parametrize("value", [[1, threading.Lock()], Big()], ids=["small", "large"])
def test_unpicklable_value_leaves_nothing_behind(
    registry: SerializerRegistry, storage: Storage, tmp_path: Path, value: Any
) -> None:
    with pytest.raises(TypeError, match="lock"):
        storage.put_value(value, registry.get("cloudpickle"))
    assert files_under(tmp_path / "artifacts") == []
    assert files_under(tmp_path / "tmp") == []


# -- previews and type names -----------------------------------------------------------------


def test_python_type_name() -> None:
    assert python_type_name(1) == "int"
    assert python_type_name(np.arange(2)) == "numpy.ndarray"
    assert python_type_name(pd.DataFrame()) == "pandas.DataFrame"
    assert python_type_name(Color.RED) == f"{__name__}.Color"


def test_a_library_type_is_named_as_its_package_exports_it() -> None:
    import email.message
    import json.decoder

    # Defined in json.decoder, exported by json (as pandas 2 defines DataFrame in
    # pandas.core.frame): named as users import it, under any pandas.
    assert python_type_name(json.decoder.JSONDecodeError("m", "d", 0)) == "json.JSONDecodeError"
    assert python_type_name(pd.Series(dtype=float)) == "pandas.Series"
    # Not exported by its package: named where it is defined.
    assert python_type_name(email.message.Message()) == "email.message.Message"


def test_a_type_whose_module_is_not_a_string_is_named_and_stored() -> None:
    from tests.unit.test_fingerprint import odd_module_instance

    value = odd_module_instance(1)
    assert python_type_name(value) == "odd_module_instance.<locals>.Odd"
    assert SerializerRegistry().for_value(value).name == "cloudpickle"


def test_a_type_name_imports_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A package's lazy ``__getattr__`` (scipy's, for one) would import a submodule."""
    asked: list[str] = []
    package = types.ModuleType("lazypkg")
    package.__getattr__ = lambda name: asked.append(name)  # type: ignore[method-assign]
    inner = types.ModuleType("lazypkg._impl")
    thing = type("Thing", (), {"__module__": "lazypkg._impl"})
    inner.Thing = thing  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "lazypkg", package)
    monkeypatch.setitem(sys.modules, "lazypkg._impl", inner)
    assert python_type_name(thing()) == "lazypkg._impl.Thing"
    assert asked == []


def test_preview_is_short_and_never_raises() -> None:
    class Broken:
        def __repr__(self) -> str:
            raise ValueError("nope")

    class Multiline:
        def __repr__(self) -> str:
            return "first line\n    second line\n"

    assert preview(np.zeros((2, 3), dtype=np.float32)) == "array(2, 3) float32"
    assert preview(pd.DataFrame({c: [1] for c in "abcde"})) == "1 rows × 5 cols [a, b, c, d, ...]"
    assert preview("x" * 200, limit=10) == "'xxxxxxxx…"
    assert len(preview(list(range(1000)))) == 80
    assert preview(Multiline()) == "first line second line"
    assert preview(Broken()) == "<repr failed: ValueError>"
    # Functions and classes by their signature, not an address that changes every run.

    def design(X, degree=2):  # noqa: N803 (a notebook's names)
        return X

    assert preview(design) == "def design(X, degree=2)"
    assert preview(Broken) == "class Broken()"
    assert preview(len) == "def len(obj, /)"
    assert preview(object()) == "<object object>"
    assert preview(np.random.default_rng(0)) == "Generator(PCG64)"


def test_npy_loads_from_a_stream_that_only_reads(registry: SerializerRegistry) -> None:
    class ReadOnly:
        def __init__(self, data: bytes) -> None:
            self._inner = io.BytesIO(data)

        def read(self, n: int = -1) -> bytes:
            return self._inner.read(min(n, 1000) if n > 0 else n)  # short reads too

    npy = registry.get("npy")
    value = np.arange(5000.0).reshape(50, 100)
    data = io.BytesIO()
    npy.dump(value, data)
    assert_same(value, npy.load(ReadOnly(data.getvalue())))  # type: ignore[arg-type]


def test_shipped_functions_keep_their_file_name_for_tracebacks(
    registry: SerializerRegistry,
) -> None:
    """A helper from another cell travels by value; its frames must still name its cell's
    file so that the user's traceback shows the helper's source line (cloudpickle 3.1.3
    renames it ``<dynamic-code>`` unless told otherwise)."""
    namespace: dict[str, Any] = {}
    source = "def outer(a):\n    def inner(b):\n        return a / b\n    return inner\n"
    exec(compile(source, "/tmp/ipykernel_1/cell-7.py", "exec"), namespace)
    stream = io.BytesIO()
    serializer = registry.get("cloudpickle")
    serializer.dump(namespace["outer"], stream)
    stream.seek(0)
    outer = serializer.load(stream)
    assert outer.__code__.co_filename == "/tmp/ipykernel_1/cell-7.py"
    assert outer(1).__code__.co_filename == "/tmp/ipykernel_1/cell-7.py"  # nested code too
    with pytest.raises(ZeroDivisionError) as raised:
        outer(1)(0)
    last = traceback.extract_tb(raised.value.__traceback__)[-1]
    assert (last.filename, last.lineno) == ("/tmp/ipykernel_1/cell-7.py", 3)


LRU_CELL = """
import functools

@functools.lru_cache(maxsize=16, typed=True)
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

@functools.cache
def scaled(x):
    return x * 10
"""

LOAD_ELSEWHERE = """
import pickle, sys
fib, scaled = pickle.load(sys.stdin.buffer)
fib(30)  # recursion through the one wrapper: fast, and counted as hits
assert fib.__wrapped__.__globals__["fib"] is fib
print(fib(30), scaled(2), fib.cache_parameters(), scaled.cache_parameters(), fib.__name__)
print(fib.cache_info().hits > 0)
"""


def test_a_notebook_function_under_lru_cache_travels_by_value(
    registry: SerializerRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It pickles by name otherwise: a task's process has no notebook to find it in.
    main = types.ModuleType("__main__")
    monkeypatch.setitem(sys.modules, "__main__", main)
    exec(compile(LRU_CELL, "<cell-3>", "exec"), main.__dict__)
    main.fib(10)  # a filled cache stays behind
    stream = io.BytesIO()
    registry.get("cloudpickle").dump((main.fib, main.scaled), stream)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(LOAD_ELSEWHERE)],
        input=stream.getvalue(),
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().splitlines() == [
        "832040 20 {'maxsize': 16, 'typed': True} {'maxsize': None, 'typed': False} fib",
        "True",
    ]


def test_an_installed_lru_cache_function_still_pickles_by_name(
    registry: SerializerRegistry,
) -> None:
    import re

    stream = io.BytesIO()
    registry.get("cloudpickle").dump(re._compile, stream)
    assert len(stream.getvalue()) < 100
    stream.seek(0)
    assert registry.get("cloudpickle").load(stream) is re._compile


def _built_column_by_column() -> pd.DataFrame:
    frame = pd.DataFrame({"a": [1.0, 2.0]})
    frame["b"] = [3.0, 4.0]  # a block per column; read back, one block for both
    return frame


#: Frames whose pandas bookkeeping (not their values) differs once read back: blocks,
#: Arrow chunks, the bytes under a nullable column's nulls.
COLUMN_KINDS = {
    "built-column-by-column": _built_column_by_column(),
    "concatenated-strings": pd.concat(
        [pd.DataFrame({"s": ["x", None]}), pd.DataFrame({"s": ["z"]})], ignore_index=True
    ),
    "nullable-int": pd.DataFrame({"i": pd.array([1, None, 3], dtype="Int64")}),
    "datetime-column": pd.DataFrame({"t": pd.date_range("2020-01-01", periods=2, tz="UTC")}),
    "categorical-column": pd.DataFrame({"c": pd.Categorical(["x", "y", "x"])}),
}


@pytest.mark.parametrize("kind", sorted(INDEX_KINDS) + sorted(COLUMN_KINDS))
def test_a_frame_read_back_has_the_fingerprint_it_was_written_with(
    registry: SerializerRegistry, storage: Storage, kind: str
) -> None:
    # What %lineage and a downstream task's cache key rely on: the kernel fingerprints a
    # task's output as it reads it back, the runner as the task made it. A DatetimeIndex
    # read back has pandas' cache of its unit filled, in its pickle: not its value.
    frame = INDEX_KINDS.get(kind, COLUMN_KINDS.get(kind))
    serializer = registry.get("parquet")
    digest, key, _ = storage.put_value(frame, serializer)
    back = storage.load_value(key, digest, serializer)
    assert back.equals(frame) and type(back.index) is type(frame.index)
    assert Fingerprinter(registry).value(back) == Fingerprinter(registry).value(frame)


def _frame(rows: int) -> pd.DataFrame:
    return pd.DataFrame({"i": np.arange(rows), "x": np.linspace(0, 1, rows)})


@pytest.mark.parametrize(
    "value",
    [
        [np.ones(10_000)],  # 80 KB: past the 64 KiB pickle 5 hands over as a PickleBuffer
        {"a": np.asfortranarray(np.ones((300, 300))), "b": 1},
        [_frame(20_000), _frame(3)],  # what a map collects from elements making frames
        (np.arange(300_000),),  # past Storage.SMALL: streamed into a temporary object
    ],
    ids=["list-of-array", "dict-of-fortran-array", "list-of-frames", "big-tuple"],
)
def test_containers_of_big_buffers_store_load_and_fingerprint(
    registry: SerializerRegistry, storage: Storage, value: Any
) -> None:
    serializer = registry.for_value(value)
    assert serializer.name == "cloudpickle"
    digest, key, _ = storage.put_value(value, serializer)
    back = storage.load_value(key, digest, serializer)
    items = list(value.values()) if isinstance(value, dict) else list(value)
    again = list(back.values()) if isinstance(back, dict) else list(back)
    for original, loaded in zip(items, again):
        if isinstance(original, (np.ndarray, pd.DataFrame)):
            assert_same(original, loaded)
        else:
            assert loaded == original
    assert Fingerprinter(registry).value(value) == Fingerprinter(registry).value(back)


class _Unpicklable:
    def __reduce__(self) -> Any:
        raise TypeError("no pickling this")


@pytest.mark.parametrize(
    ("what", "hint"),
    [
        ("task 't': input 'x'", "leave it out with --inputs"),
        ("output 'x'", "list the outputs to keep with --outputs"),
        ("collected output 'x' of 'run-1'", "list the outputs to keep with --outputs"),
        ("element 2 of 'items'", "make it picklable, or create it inside the task"),
    ],
)
def test_an_unpicklable_value_is_refused_with_advice_for_its_role(
    storage: Storage, what: str, hint: str
) -> None:
    from papercrane.backend.artifacts import ArtifactIO
    from papercrane.backend.errors import InputError

    with pytest.raises(InputError) as refused:
        ArtifactIO(storage).put(_Unpicklable(), what)
    message = str(refused.value)
    assert message.startswith(f"{what} of type ") and "no pickling this" in message
    assert hint in message, message
    assert ("--inputs" in message) == ("input" in what)


def test_a_value_that_pickles_but_cant_be_fingerprinted_is_refused_and_not_stored(
    storage: Storage, tmp_path: Path
) -> None:
    """cloudpickle stores a read-mode text file (as its contents); the fingerprint's
    pickler refuses it. That is the user's error naming the value, not a bare TypeError
    (a system failure to the runner), and nothing is left in storage."""
    from papercrane.backend.artifacts import ArtifactIO
    from papercrane.backend.errors import InputError

    path = tmp_path / "notes.txt"
    path.write_text("first line\n")
    with path.open() as f, pytest.raises(InputError) as refused:
        ArtifactIO(storage).put(f, "output 'f'")
    message = str(refused.value)
    assert message.startswith("output 'f' of type _io.TextIOWrapper can't be serialized")
    assert "open files can't be moved" in message and "del it" in message
    assert files_under(tmp_path / "artifacts") == []


@pytest.mark.parametrize("label", list(CATEGORICALS))
def test_a_categorical_frame_comes_back_with_its_fingerprint(storage: Storage, label: str) -> None:
    """Categories, their dtype and their order survive storing: the value read back has
    the fingerprint it was stored under, which ``%lineage`` and downstream cache keys
    look up."""
    from papercrane.backend.artifacts import ArtifactIO

    expected, frame = CATEGORICALS[label]
    artifacts = ArtifactIO(storage)
    ref = artifacts.put(frame, "output 'df'")
    assert ref.serializer == expected
    back = artifacts.load(ref)
    assert_same(frame, back)
    assert list(back.dtypes) == list(frame.dtypes)
    assert artifacts.fingerprinter().value(back) == ref.id


def _object_labelled_frames() -> dict[str, Any]:
    import pandas as pd

    strings = pd.Index(["a", "b"], dtype=object)
    return {
        "object-column-names": pd.DataFrame([[1, 2]], columns=strings),
        "object-index": pd.DataFrame({"v": [1, 2]}, index=strings),
        "object-multiindex-level": pd.DataFrame(
            {"v": [1, 2]}, index=pd.MultiIndex.from_arrays([strings, [1, 2]])
        ),
        "str-labels": pd.DataFrame({"v": [1, 2]}, index=pd.Index(["a", "b"])),
    }


@pytest.mark.parametrize("label", list(_object_labelled_frames()))
def test_a_frame_with_object_labels_comes_back_with_its_fingerprint(
    storage: Storage, label: str
) -> None:
    """Column names or index labels held as object dtype come back as ``str`` from
    parquet under pandas 3, which infers its own string dtype: another fingerprint, so a
    downstream task misses the cache and ``%lineage`` loses the value. Such frames are
    pickled there; where strings read back as object (pandas 2) parquet keeps them."""
    from papercrane.backend.artifacts import ArtifactIO
    from papercrane.backend.serializers import _strings_read_back_as_object

    frame = _object_labelled_frames()[label]
    artifacts = ArtifactIO(storage)
    ref = artifacts.put(frame, "output 'df'")
    back = artifacts.load(ref)
    assert_same(frame, back)
    assert back.columns.dtype == frame.columns.dtype
    assert list(back.index.dtypes if hasattr(back.index, "levels") else [back.index.dtype]) == (
        list(frame.index.dtypes if hasattr(frame.index, "levels") else [frame.index.dtype])
    )
    assert artifacts.fingerprinter().value(back) == ref.id
    parquet = label == "str-labels" or _strings_read_back_as_object()
    assert ref.serializer == ("parquet" if parquet else "cloudpickle")
