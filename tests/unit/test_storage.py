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
