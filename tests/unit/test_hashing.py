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


def _buffers() -> list[tuple[str, object, bytes]]:
    """(label, a buffer-protocol object, its bytes in memory order)."""
    import pickle

    import numpy as np

    flat = np.arange(20_000, dtype=np.float64)  # 160 KB: what pickle 5 hands over apart
    fortran = np.asfortranarray(np.arange(60_000, dtype=np.int32).reshape(200, 300))
    return [
        ("bytearray", bytearray(b"abc" * 30_000), b"abc" * 30_000),
        ("picklebuffer", pickle.PickleBuffer(flat), flat.tobytes()),
        ("picklebuffer-fortran-2d", pickle.PickleBuffer(fortran), fortran.tobytes(order="F")),
        ("memoryview-2d", memoryview(fortran.T), fortran.tobytes(order="F")),
        ("memoryview-int64", memoryview(flat.view(np.int64)), flat.tobytes()),
    ]


@pytest.mark.parametrize(("label", "data", "raw"), _buffers(), ids=[b[0] for b in _buffers()])
def test_writer_takes_any_buffer_and_forwards_its_bytes(
    label: str, data: object, raw: bytes
) -> None:
    """Pickle protocol 5 writes a buffer of 64 KiB or more as a ``PickleBuffer`` (no
    ``len``, possibly multi-dimensional or in Fortran order): hashed and forwarded as
    the same bytes, the same digest, as if written as bytes."""
    sink = io.BytesIO()
    writer = HashingWriter(sink)
    assert writer.write(data) == len(raw)
    assert sink.getvalue() == raw
    assert writer.size == len(raw)
    assert writer.hexdigest() == written(raw)
    alone = HashingWriter()
    alone.write(data)
    assert alone.hexdigest() == written(raw)


def test_reader_fills_a_multidimensional_buffer() -> None:
    import numpy as np

    source = np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3))
    raw = source.tobytes(order="F")
    target = np.zeros((2, 3), dtype=np.int16, order="F")
    reader = HashingReader(io.BytesIO(raw))
    assert reader.readinto(target) == len(raw)
    assert (target == source).all()
    assert reader.hexdigest() == hashlib.sha256(raw).hexdigest()


def test_a_failed_write_of_a_big_chunk_is_raised_on_the_callers_thread() -> None:
    """Big chunks go to the sink on a helper thread while this one hashes: a full disk
    there must reach the caller (the store then drops the half-written file), not be
    lost on the helper thread as an unraisable exception."""

    class FullDisk(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, data: object) -> int:
            raise OSError(28, "No space left on device")

    writer = HashingWriter(FullDisk())
    with pytest.raises(OSError, match="No space left"):
        writer.write(b"x" * HashingWriter.PARALLEL)
    small = HashingWriter(FullDisk())  # and on the caller's own thread, as before
    with pytest.raises(OSError, match="No space left"):
        small.write(b"x")
