"""Content digests: sha256 for small values (ids unchanged from stores made before
BLAKE3), BLAKE3 named in the digest past ``LARGE``, the same however the bytes arrive."""

from __future__ import annotations

import hashlib
import io

import blake3
import pytest

from papercrane.backend.hashing import (
    BLAKE3,
    LARGE,
    SHA256,
    HashingReader,
    HashingWriter,
    algorithm_of,
    digest_hex,
)


def written(data: bytes, pieces: int = 1, sink: io.BytesIO | None = None) -> str:
    writer = HashingWriter(sink)
    step = max(1, -(-len(data) // pieces))
    for i in range(0, len(data), step):
        writer.write(memoryview(data)[i : i + step])
    assert writer.size == len(data)
    return writer.hexdigest()


@pytest.mark.parametrize("size", [0, 1, 1000, LARGE])
def test_values_up_to_large_keep_their_sha256_digest(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    assert written(data) == hashlib.sha256(data).hexdigest()
    assert algorithm_of(written(data)) == SHA256


@pytest.mark.parametrize("pieces", [1, 3, 64, 1000])
@pytest.mark.parametrize("size", [LARGE + 1, 3 * LARGE + 17])
def test_larger_values_get_a_blake3_digest_however_they_are_written(size: int, pieces: int) -> None:
    data = (bytes(range(251)) * (size // 251 + 1))[:size]
    expected = "blake3-" + blake3.blake3(data).hexdigest()
    sink = io.BytesIO()
    assert written(data, pieces, sink) == expected
    assert sink.getvalue() == data  # the sink got every byte, in order
    assert written(data, pieces) == expected  # fingerprinting: no sink
    assert algorithm_of(expected) == BLAKE3
    assert digest_hex(expected) == expected.removeprefix("blake3-")


@pytest.mark.parametrize(("data", "algorithm"), [(b"small" * 10, SHA256), (b"big" * LARGE, BLAKE3)])
def test_reader_verifies_with_the_digests_own_algorithm(data: bytes, algorithm: str) -> None:
    digest = written(data)
    assert algorithm_of(digest) == algorithm
    reader = HashingReader(io.BytesIO(data), algorithm_of(digest))
    buffer = bytearray(len(data) // 2)
    assert reader.readinto(buffer) == len(buffer)
    reader.drain()
    assert reader.size == len(data)
    assert reader.hexdigest() == digest


def test_a_big_sha256_digest_from_an_older_store_is_still_sha256() -> None:
    data = b"old" * LARGE
    old = hashlib.sha256(data).hexdigest()  # what papercrane recorded before BLAKE3
    assert algorithm_of(old) == SHA256
    reader = HashingReader(io.BytesIO(data), algorithm_of(old))
    reader.drain()
    assert reader.hexdigest() == old
    writer = HashingWriter(algorithm=SHA256)  # an upload claiming that digest
    writer.write(data)
    assert writer.hexdigest() == old
