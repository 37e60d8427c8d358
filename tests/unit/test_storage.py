"""Storage keeps good objects and only discards bytes that contradict their address."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest

from papercrane.backend.errors import ConfigError, CorruptArtifact
from papercrane.backend.hashing import LARGE
from papercrane.backend.serializers import SerializerRegistry
from papercrane.backend.storage import Storage


def test_wrong_expected_hash_keeps_a_good_object(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    text = SerializerRegistry().get("text")
    digest, key, _ = storage.put_value("hello", text)
    with pytest.raises(CorruptArtifact):
        storage.load_value(key, "0" * 64, text)
    assert storage.load_value(key, digest, text) == "hello"


def test_bytes_that_contradict_their_address_are_removed(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    text = SerializerRegistry().get("text")
    digest, key, _ = storage.put_value("hello", text)
    (tmp_path / key).write_bytes(b"jello")
    with pytest.raises(CorruptArtifact):
        storage.load_value(key, digest, text)
    assert not storage.exists(key)
    assert storage.put_value("hello", text) == (digest, key, 5)  # rewritten, good again
    assert storage.load_value(key, digest, text) == "hello"


def test_unwritable_root_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="not writable.*PAPERCRANE_HOME"):
        Storage(str(blocker / "store")).check_writable()


def test_memory_urls_are_not_shareable() -> None:
    assert not Storage("memory://x").shareable
    assert Storage("/tmp/x").shareable


BIG = np.arange(LARGE // 4, dtype=np.float64)  # 2 MiB: over LARGE, a BLAKE3 digest


def test_big_values_are_stored_under_their_blake3_digest(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    npy = SerializerRegistry().get("npy")
    digest, key, size = storage.put_value(BIG, npy)
    hexpart = digest.removeprefix("blake3-")
    assert digest.startswith("blake3-") and len(hexpart) == 64
    assert key == f"artifacts/{hexpart[:2]}/{digest}"  # fanned out by the hex, not "bl"
    assert (tmp_path / key).stat().st_size == size
    assert np.array_equal(storage.load_value(key, digest, npy), BIG)


def test_a_corrupted_big_value_is_detected_and_discarded(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    npy = SerializerRegistry().get("npy")
    digest, key, size = storage.put_value(BIG, npy)
    data = bytearray((tmp_path / key).read_bytes())
    data[size // 2] ^= 0x01  # one bit, same size: only the hash check can see it
    (tmp_path / key).write_bytes(bytes(data))
    with pytest.raises(CorruptArtifact, match="does not match its hash"):
        storage.load_value(key, digest, npy)
    assert not (tmp_path / key).exists()
    assert storage.put_value(BIG, npy) == (digest, key, size)


def _legacy_put(storage: Storage, tmp_path: Path, value: np.ndarray) -> tuple[str, str]:
    """Store an array as papercrane did before BLAKE3: under the sha256 of its bytes."""
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, value, allow_pickle=False)
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()
    key = f"artifacts/{digest[:2]}/{digest}"
    (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / key).write_bytes(buffer.getvalue())
    return digest, key


def test_big_values_stored_before_blake3_still_load_and_verify(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    npy = SerializerRegistry().get("npy")
    digest, key = _legacy_put(storage, tmp_path, BIG)
    assert np.array_equal(storage.load_value(key, digest, npy), BIG)  # not taken for corrupt
    assert (tmp_path / key).exists()
    path = tmp_path / key
    path.write_bytes(path.read_bytes()[:-8] + b"\x00" * 8)
    with pytest.raises(CorruptArtifact):
        storage.load_value(key, digest, npy)
    assert not path.exists()


@pytest.mark.parametrize("claim", ["sha256", "blake3"])
def test_uploads_are_checked_with_the_algorithm_they_claim(tmp_path: Path, claim: str) -> None:
    storage = Storage(str(tmp_path))
    data = b"u" * (LARGE + 5)
    if claim == "sha256":  # an older client: its digest of a big value is sha256
        expected = hashlib.sha256(data).hexdigest()
    else:
        expected = storage.put_stream(io.BytesIO(data))[0]
        assert expected.startswith("blake3-")
    digest, key, size = storage.put_stream(io.BytesIO(data), expected)
    assert (digest, size) == (expected, len(data))
    assert (tmp_path / key).read_bytes() == data
    with pytest.raises(CorruptArtifact, match="uploaded bytes hash to"):
        storage.put_stream(io.BytesIO(data + b"!"), expected)


def test_a_verified_small_value_is_decoded_afresh_on_every_load(tmp_path: Path) -> None:
    """The in-memory copy of verified bytes must never hand two callers one object."""
    storage = Storage(str(tmp_path))
    pickle = SerializerRegistry().get("cloudpickle")
    digest, key, _ = storage.put_value({"a": [1, 2]}, pickle)
    first = storage.load_value(key, digest, pickle)
    first["a"].append(3)
    second = storage.load_value(key, digest, pickle)
    assert second == {"a": [1, 2]}
    assert second is not first and second["a"] is not first["a"]
    arr_digest, arr_key, _ = storage.put_value(np.arange(4), SerializerRegistry().get("npy"))
    npy = SerializerRegistry().get("npy")
    one = storage.load_value(arr_key, arr_digest, npy)
    one[0] = 99
    assert storage.load_value(arr_key, arr_digest, npy)[0] == 0


def test_same_size_corruption_after_a_verified_load_is_found_by_a_new_process(
    tmp_path: Path,
) -> None:
    storage = Storage(str(tmp_path))
    text = SerializerRegistry().get("text")
    digest, key, _ = storage.put_value("hello", text)
    assert storage.load_value(key, digest, text) == "hello"  # verified: kept in memory
    (tmp_path / key).write_bytes(b"jello")
    # This process verified those bytes already and serves what it verified...
    assert storage.load_value(key, digest, text) == "hello"
    # ...another process (a new Storage) reads the file and finds the damage,
    with pytest.raises(CorruptArtifact, match="does not match its hash"):
        Storage(str(tmp_path)).load_value(key, digest, text)
    assert not (tmp_path / key).exists()
    # and once the file is gone, this one no longer serves it either.
    with pytest.raises(CorruptArtifact, match="missing"):
        storage.load_value(key, digest, text)


def test_forget_makes_the_next_load_verify_the_stored_bytes_again(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    text = SerializerRegistry().get("text")
    digest, key, _ = storage.put_value("hello", text)
    storage.load_value(key, digest, text)
    (tmp_path / key).write_bytes(b"jello")
    storage.forget()
    with pytest.raises(CorruptArtifact, match="does not match its hash"):
        storage.load_value(key, digest, text)


def test_a_truncated_or_deleted_object_is_not_served_from_memory(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    text = SerializerRegistry().get("text")
    digest, key, _ = storage.put_value("hello", text)
    storage.load_value(key, digest, text)
    (tmp_path / key).write_bytes(b"hell")
    with pytest.raises(CorruptArtifact, match="does not match its hash"):
        storage.load_value(key, digest, text)
    assert storage.put_value("hello", text) == (digest, key, 5)
    storage.load_value(key, digest, text)
    (tmp_path / key).unlink()
    with pytest.raises(CorruptArtifact, match="missing"):
        storage.load_value(key, digest, text)


def test_the_in_memory_copies_stay_within_their_budget(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    storage.MEMO_TOTAL = 12  # an instance attribute: two 5-byte objects fit, not three
    text = SerializerRegistry().get("text")
    stored = [storage.put_value(word, text)[:2] for word in ("one12", "two12", "three")]
    for digest, key in stored:
        storage.load_value(key, digest, text)
    assert list(storage._verified) == [key for _, key in stored[1:]]  # the oldest went
    assert storage._verified_bytes == 10
    big = np.zeros(Storage.MEMO_ITEM, dtype=np.uint8)  # over MEMO_ITEM once encoded
    npy = SerializerRegistry().get("npy")
    digest, key, _ = storage.put_value(big, npy)
    assert np.array_equal(storage.load_value(key, digest, npy), big)
    assert key not in storage._verified
