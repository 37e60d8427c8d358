"""Small scalars encoded once (``scalars.py``) store and fingerprint exactly as any value."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

import pytest

from papercrane.backend.artifacts import ArtifactIO, new_ref, typed_fingerprint
from papercrane.backend.fingerprint import Fingerprinter
from papercrane.backend.model import ArtifactRef
from papercrane.backend.serializers import preview, python_type_name
from papercrane.backend.storage import Storage

SCALARS = [
    0,
    1,
    -7,
    2**63,
    -(2**64) + 1,
    True,
    False,
    None,
    "",
    "train",
    "naïve ∂ 🙂",
    "lone \udcff surrogate",
    "x" * 256,
]
#: Values the memo leaves alone: encoded every time, as before.
OTHERS = [2**64, -(2**64), 1.5, -0.0, "x" * 257, b"bytes", (1, 2), [1], {"a": 1}]


def _encoded_afresh(artifacts: ArtifactIO, value: Any) -> ArtifactRef:
    """What storing ``value`` gives without the memo: its serializer, then storage."""
    serializer = artifacts.registry.for_value(value)
    digest, key, size = artifacts.storage.put_value(value, serializer)
    return ArtifactRef(
        id=typed_fingerprint(serializer.name, digest),
        hash=digest,
        uri=key,
        size=size,
        serializer=serializer.name,
        python_type=python_type_name(value),
        preview=preview(value),
    )


@pytest.mark.parametrize(
    ("value", "memoized"),
    [(v, True) for v in SCALARS] + [(v, False) for v in OTHERS],
    ids=repr,
)
def test_stored_and_fingerprinted_as_without_the_memo(
    tmp_path: Path, value: Any, memoized: bool
) -> None:
    artifacts = ArtifactIO(Storage(str(tmp_path)))
    plain = Fingerprinter(artifacts.registry)  # no memo: the fingerprint as it always was
    for _ in range(2):  # the second time from the memo, for the scalars
        ref = artifacts.put(value, "input 'v'")
        assert ref.id == plain.value(value) == artifacts.fingerprinter().value(value)
        if artifacts.registry.for_value(value).deterministic:
            assert ref == _encoded_afresh(artifacts, value)
        assert artifacts.load(ref) == value and type(artifacts.load(ref)) is type(value)
    assert (artifacts.scalars.get(value) is not None) == memoized


def test_equal_values_of_other_types_stay_apart(tmp_path: Path) -> None:
    artifacts = ArtifactIO(Storage(str(tmp_path)))
    refs = [artifacts.put(v, "v") for v in (1, True, 0, False, "1")]
    assert len({r.id for r in refs}) == 5  # (1 and "1" share their bytes, not their id)
    assert [type(artifacts.load(r)) for r in refs] == [int, bool, int, bool, str]


def test_a_deleted_object_is_written_again(tmp_path: Path) -> None:
    """The memo keeps the encoding, not the fact that the bytes are stored."""
    artifacts = ArtifactIO(Storage(str(tmp_path)))
    ref = artifacts.put(41, "v")
    (tmp_path / ref.uri).unlink()
    again = artifacts.put(41, "v")
    assert again == ref and (tmp_path / ref.uri).read_bytes() == b"41"


def test_packed_while_packing(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    artifacts = ArtifactIO(storage)
    loose = artifacts.put("loose", "v")
    storage.begin_pack()
    try:
        packed = artifacts.put("loose", "v")
        fresh = artifacts.put("packed", "v")
    finally:
        storage.end_pack()
    assert packed.hash == loose.hash and packed.id == loose.id
    assert fresh.uri != storage.artifact_key(fresh.hash)  # a pack member
    assert artifacts.load(fresh) == "packed"


def test_the_memo_stays_bounded(tmp_path: Path) -> None:
    artifacts = ArtifactIO(Storage(str(tmp_path)))
    fingerprinter = artifacts.fingerprinter()
    for i in range(artifacts.scalars.MAX_ENTRIES + 10):
        fingerprinter.value(i)
    assert len(artifacts.scalars._memo) <= artifacts.scalars.MAX_ENTRIES


def test_refs_built_for_stored_values_are_artifact_refs(tmp_path: Path) -> None:
    """``new_ref`` skips the frozen dataclass's ``__init__``: its refs must be the same
    objects in every respect (fields, equality, hash, immutability, ``to_dict``)."""
    fields = ("i", "h", "packs/ab/ab@0+1", 1, "json", "int", "1")
    fast, plain = new_ref(*fields), ArtifactRef(*fields)
    assert type(fast) is ArtifactRef
    assert vars(fast) == vars(plain) == {f.name: v for f, v in zip(dataclass_fields(plain), fields)}
    assert fast == plain and hash(fast) == hash(plain) and repr(fast) == repr(plain)
    assert fast.to_dict() == plain.to_dict()
    with pytest.raises(FrozenInstanceError):
        fast.uri = "elsewhere"  # type: ignore[misc]
    ref = ArtifactIO(Storage(str(tmp_path))).put([1, 2], "v")  # (not a memoized scalar)
    assert type(ref) is ArtifactRef and vars(ref).keys() == vars(plain).keys()
