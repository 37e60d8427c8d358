"""Packs: small objects written together as one storage object, each still read and
verified on its own, by any process, through the same keys as loose objects."""

from __future__ import annotations

import threading
from pathlib import Path

import fsspec
import pytest

from papercrane.backend import packs
from papercrane.backend.errors import CorruptArtifact
from papercrane.backend.serializers import SerializerRegistry
from papercrane.backend.storage import Storage

JSON = SerializerRegistry().get("json")


def _packed(storage: Storage, values: list[object]) -> list[tuple[str, str, int]]:
    storage.begin_pack()
    try:
        return [storage.put_value(v, JSON) for v in values]
    finally:
        storage.end_pack()


def test_small_values_written_while_packing_share_one_object(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    stored = _packed(storage, [1, "two", [3, 4], {"five": 5}])
    pack_keys = {packs.parse(key)[0] for _, key, _ in stored}  # type: ignore[index]
    assert len(pack_keys) == 1
    assert not (tmp_path / "artifacts").exists()  # no loose file per value
    # A new process (a new Storage) reads each member by its key and verifies it.
    other = Storage(str(tmp_path))
    assert [other.load_value(k, d, JSON) for d, k, _ in stored] == [1, "two", [3, 4], {"five": 5}]
    assert all(other.size(k) == size and other.exists(k) for _, k, size in stored)
    # What the HTTP server streams for a download: the member's bytes, nothing around them.
    digest, key, size = stored[2]
    with other.open_read(key) as f:
        assert f.read() == b"[3,4]"
    assert other.load_value(key, digest, JSON, verify=False) == [3, 4]
    # The pack lists its own members.
    (pack_key,) = pack_keys
    index = packs.index_of((tmp_path / pack_key).read_bytes())
    assert [d for d, _, _ in index] == [d for d, _, _ in stored]


def test_members_are_readable_in_this_process_before_the_pack_is_written(
    tmp_path: Path,
) -> None:
    storage = Storage(str(tmp_path))
    storage.begin_pack()
    digest, key, _ = storage.put_value({"a": 1}, JSON)
    pack_key = packs.parse(key)[0]  # type: ignore[index]
    assert not (tmp_path / pack_key).exists()
    storage.forget()  # not from the in-memory copy: from the pending pack
    assert storage.load_value(key, digest, JSON) == {"a": 1}
    storage.end_pack()
    assert (tmp_path / pack_key).exists()


def test_a_value_packed_twice_is_stored_once(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    first = _packed(storage, [7])
    again = _packed(storage, [7, 8])
    assert again[0] == first[0]
    assert len([p for p in (tmp_path / "packs").rglob("*") if p.is_file()]) == 2
    assert packs.index_of((tmp_path / packs.parse(again[1][1])[0]).read_bytes())[0][1:] == (0, 1)


def test_only_the_thread_that_packs_packs(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    storage.begin_pack()
    elsewhere: list[str] = []
    thread = threading.Thread(target=lambda: elsewhere.append(storage.put_value(9, JSON)[1]))
    thread.start()
    thread.join()
    here = storage.put_value(10, JSON)[1]
    storage.end_pack()
    assert elsewhere[0].startswith("artifacts/") and here.startswith("packs/")


def test_big_values_are_not_packed(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    storage.PACK_ITEM = 4
    (_, small, _), (_, big, _) = _packed(storage, [1, "a long string"])
    assert small.startswith("packs/") and big.startswith("artifacts/")


def test_a_damaged_member_is_never_served_and_its_pack_is_kept(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    (d1, k1, _), (d2, k2, _) = _packed(storage, ["aaaa", "bbbb"])
    pack_path = tmp_path / packs.parse(k1)[0]  # type: ignore[index]
    blob = bytearray(pack_path.read_bytes())
    blob[blob.index(b"aaaa")] = ord("x")  # same size, other bytes: only the hash sees it
    pack_path.write_bytes(bytes(blob))
    fresh = Storage(str(tmp_path))
    with pytest.raises(CorruptArtifact, match="does not match its hash"):
        fresh.load_value(k1, d1, JSON)
    assert pack_path.exists() and fresh.load_value(k2, d2, JSON) == "bbbb"
    # A claim the bytes don't meet is refused too, also after a good load.
    with pytest.raises(CorruptArtifact):
        fresh.load_value(k2, d1, JSON)


def test_a_cut_or_missing_pack_is_reported_as_such(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    (d1, k1, _), (d2, k2, size) = _packed(storage, ["aaaa", "bbbb"])
    pack_path = tmp_path / packs.parse(k1)[0]  # type: ignore[index]
    offset = packs.parse(k2)[1]  # type: ignore[index]
    pack_path.write_bytes(pack_path.read_bytes()[: offset + size - 1])
    assert storage.size(k2) is None and storage.size(k1) == 6  # '"aaaa"' in JSON
    with pytest.raises(CorruptArtifact, match="missing|cut short"):
        storage.load_value(k2, d2, JSON)  # this process's copy is no longer trusted
    pack_path.unlink()
    with pytest.raises(CorruptArtifact, match="missing"):
        Storage(str(tmp_path)).load_value(k1, d1, JSON)
    assert not storage.exists(k1)


def test_a_failed_pack_write_leaves_no_member_behind(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    storage.begin_pack()
    _, key, _ = storage.put_value("lost", JSON)
    (tmp_path / "tmp").write_bytes(b"")  # a file where the temporary objects go
    with pytest.raises(OSError):
        storage.end_pack()
    (tmp_path / "tmp").unlink()
    assert not storage.exists(key)  # not served from memory either
    assert not storage.packing
    _, again, _ = storage.put_value("lost", JSON)  # stored again, loose this time
    assert again.startswith("artifacts/") and storage.exists(again)


def test_members_are_read_by_byte_range_through_fsspec(tmp_path: Path) -> None:
    """Object stores (s3://, gs://) go through fsspec: ``cat_file`` with start and end."""
    url = f"memory://{tmp_path.name}-packs"
    storage = Storage(url)
    stored = _packed(storage, ["x" * 10, "y" * 3])
    other = Storage(url)
    assert [other.load_value(k, d, JSON) for d, k, _ in stored] == ["x" * 10, "y" * 3]
    fsspec.filesystem("memory").rm(f"/{tmp_path.name}-packs", recursive=True)


def test_an_artifact_refs_dict_has_every_field() -> None:
    """``ArtifactRef.to_dict`` is spelled out (for speed): it must keep up with the fields."""
    from dataclasses import asdict

    from papercrane.backend.model import ArtifactRef

    ref = ArtifactRef("i", "h", "packs/ab/ab@0+1", 1, "json", "int", "1")
    assert ref.to_dict() == asdict(ref)
    assert ArtifactRef.from_dict(ref.to_dict()) == ref


def test_a_value_pending_in_another_threads_pack_is_packed_again(tmp_path: Path) -> None:
    """A thread must not name a member of a pack that another thread has not written."""
    storage = Storage(str(tmp_path))
    storage.begin_pack()
    _, mine, _ = storage.put_value("shared", JSON)
    theirs: list[str] = []

    def other() -> None:
        storage.begin_pack()
        theirs.append(storage.put_value("shared", JSON)[1])
        storage.end_pack()

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert theirs[0] != mine and Storage(str(tmp_path)).exists(theirs[0])
    storage.end_pack()
    assert _packed(storage, ["shared"])[0][1] in (mine, theirs[0])  # both written now


@pytest.mark.parametrize(
    "key",
    [
        "artifacts/ab/abc",
        "packs/ab/abc",
        "packs/ab/abc@1",
        "packs/ab/abc@+2",
        "packs/ab/abc@1+",
        "packs/ab/abc@1+x",
        "packs/ab/abc@-1+2",
        "packs/ab/abc@١+2",  # a digit, but not an ASCII one
    ],
)
def test_only_member_keys_parse_as_members(key: str) -> None:
    assert packs.parse(key) is None


def test_a_member_key_parses_back() -> None:
    key = packs.member_key("packs/ab/abc", 12, 345)
    assert packs.parse(key) == ("packs/ab/abc", 12, 345)


def test_a_member_found_damaged_is_not_named_again_by_this_process(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    ((digest, key, _),) = _packed(storage, ["value"])
    pack_path = tmp_path / packs.parse(key)[0]  # type: ignore[index]
    blob = bytearray(pack_path.read_bytes())
    blob[1] ^= 0x01
    pack_path.write_bytes(bytes(blob))
    storage.forget()  # (the bytes verified when packing would be served until then)
    with pytest.raises(CorruptArtifact):
        storage.load_value(key, digest, JSON)
    ((again_digest, again, _),) = _packed(storage, ["value"])
    assert again != key and again_digest == digest
    assert storage.load_value(again, digest, JSON) == "value"


def test_pack_checks_trust_a_pack_until_they_are_renewed(tmp_path: Path) -> None:
    """Inside ``pack_checks`` each pack's presence is checked once (a scheduler renews
    the checks at every commit); after ``renew_pack_checks`` a deleted pack is seen."""
    storage = Storage(str(tmp_path))
    ((_, key, size),) = _packed(storage, ["value"])
    pack_path = tmp_path / packs.parse(key)[0]  # type: ignore[index]
    with storage.pack_checks():
        assert storage.size(key) == size
        pack_path.unlink()
        assert storage.size(key) == size  # trusted: checked in this round
        storage.renew_pack_checks()
        assert storage.size(key) is None
    assert storage.size(key) is None


def test_a_value_stored_twice_into_the_pending_pack_is_one_member(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    first, again, other = _packed(storage, ["same", "same", "other"])
    assert again == first and other[1] != first[1]
    (pack_key,) = {packs.parse(key)[0] for _, key, _ in (first, other)}  # type: ignore[index]
    assert [d for d, _, _ in packs.index_of((tmp_path / pack_key).read_bytes())] == [
        first[0],
        other[0],
    ]
    assert Storage(str(tmp_path)).load_value(again[1], again[0], JSON) == "same"


@pytest.mark.parametrize("damage", ["deleted", "cut"])
def test_a_value_whose_written_pack_lost_it_is_packed_anew(tmp_path: Path, damage: str) -> None:
    """Storing a value this process packed before names the old member only while its
    pack still holds the member's whole range (checked once per ``pack_checks`` round)."""
    storage = Storage(str(tmp_path))
    (_, first, size), (_, later, _) = _packed(storage, ["keep", "lost"])
    pack_path = tmp_path / packs.parse(later)[0]  # type: ignore[index]
    with storage.pack_checks():
        assert _packed(storage, ["lost"])[0][1] == later  # the pack is whole: named again
        if damage == "deleted":
            pack_path.unlink()
        else:
            pack_path.write_bytes(pack_path.read_bytes()[: packs.parse(later)[1] + 1])  # type: ignore[index]
        assert _packed(storage, ["lost"])[0][1] == later  # trusted until renewed
        storage.renew_pack_checks()
        (digest, again, _), (_, kept, _) = _packed(storage, ["lost", "keep"])
    assert again != later and Storage(str(tmp_path)).load_value(again, digest, JSON) == "lost"
    assert (kept == first) == (damage == "cut")  # a cut pack still holds its first member
