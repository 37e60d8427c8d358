"""Content hashes. Every identity in papercrane (task and workflow versions, cache keys,
artifacts) is a hash over a canonical encoding, so equal content means equal id in
every process, on every machine.

Identities and small values use sha256. A stored value's bytes over ``LARGE`` are hashed
with BLAKE3 instead (several times faster, multithreaded, equally a cryptographic hash):
at sha256's ~1.5 GB/s, hashing dominated passing a big array from task to task. The
algorithm is part of the digest string (``blake3-<hex>``; a bare hex digest is sha256),
so a digest recorded by any version of papercrane is verified with the algorithm that
made it, and stores written before BLAKE3 keep working unchanged.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import threading
from typing import Any

SHA256 = "sha256"
BLAKE3 = "blake3"
_BLAKE3_PREFIX = "blake3-"

#: Encodings longer than this many bytes get a BLAKE3 digest; shorter ones keep sha256,
#: so the ids of small values (most cache keys' inputs) are the same as before BLAKE3.
LARGE = 1 << 20
#: BLAKE3 may spread one big update over every core (it releases the GIL meanwhile).
ALL_CORES = 0


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_json(value: Any) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()


def sha256_bytes(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def content_digest(data: bytes) -> str:
    """The digest a ``HashingWriter`` that picks by size gives these bytes (see
    ``LARGE``), in one call: for encodings already whole in memory."""
    if len(data) <= LARGE:
        return hashlib.sha256(data).hexdigest()
    return _BLAKE3_PREFIX + _blake3(1).update(data).hexdigest()


def typed_fingerprint(serializer: str, digest: str) -> str:
    """Fingerprint of a value whose serializer is deterministic: its bytes, typed."""
    return hashlib.sha256(f"{serializer}:{digest}".encode()).hexdigest()


def algorithm_of(digest: str) -> str:
    """The algorithm that made a content digest, read from the digest itself."""
    return BLAKE3 if digest.startswith(_BLAKE3_PREFIX) else SHA256


def algorithm_for(size: int) -> str:
    """The algorithm a writer picks for an encoding of ``size`` bytes (see ``LARGE``)."""
    return BLAKE3 if size > LARGE else SHA256


def digest_hex(digest: str) -> str:
    """The hex part of a digest (for fanning stored objects out into folders)."""
    return digest.removeprefix(_BLAKE3_PREFIX)


def byte_view(data: Any) -> bytes | memoryview:
    """``data``, any object with the buffer protocol, as flat bytes (``bytes`` as they
    are, anything else as a one-dimensional byte memoryview over the same memory).

    Writers and hashers are handed more than bytes: with pickle protocol 5 (cloudpickle,
    the fingerprint pickler) every buffer of 64 KiB or more, such as a numpy array's in a
    list, arrives at ``write`` as a ``pickle.PickleBuffer``, which has no ``len`` and may
    be multi-dimensional or in Fortran order (where ``memoryview.cast`` refuses).
    ``PickleBuffer.raw()`` views any contiguous buffer as bytes without a copy; a
    non-contiguous one (no writer is handed one, but a caller might) is copied out in
    its logical order, as ``bytes(data)`` would give it."""
    if type(data) is bytes:
        return data
    if type(data) is not pickle.PickleBuffer:
        if type(data) is memoryview and data.ndim == 1 and data.format == "B":
            return data
        data = pickle.PickleBuffer(data)
    try:
        return data.raw()
    except BufferError:
        return memoryview(data).tobytes()


def _blake3(threads: int) -> Any:
    # Imported here: most task processes never store a big value, and start faster.
    import blake3

    return blake3.blake3(max_threads=blake3.blake3.AUTO if threads == ALL_CORES else threads)


class _Hash:
    """An incremental content hash with a digest that names its algorithm.

    ``algorithm=None`` chooses by size, as every writer of stored values does: sha256
    while the bytes fit in ``LARGE``, BLAKE3 once they pass it. Until then the bytes are
    kept (at most ``LARGE``) rather than hashed twice, so small values pay for sha256
    only; past it sha256 stops and BLAKE3 catches up on the kept bytes.
    """

    def __init__(self, algorithm: str | None, threads: int) -> None:
        self.algorithm = algorithm
        self._threads = threads
        self._sha: Any = hashlib.sha256() if algorithm in (None, SHA256) else None
        self._b3: Any = _blake3(threads) if algorithm == BLAKE3 else None
        self._pending: list[bytes] | None = [] if algorithm is None else None
        self.size = 0

    def update(self, data: Any) -> None:
        """Hash ``data``: any buffer-protocol object (see ``byte_view``)."""
        self.add(byte_view(data))

    def add(self, data: bytes | memoryview) -> None:
        """Hash flat bytes (``byte_view``'s result), without converting them again."""
        self.size += len(data)
        if self._pending is not None:
            if self.size <= LARGE:
                self._sha.update(data)
                self._pending.append(bytes(data))
                return
            self._sha = None  # this value gets a BLAKE3 digest
            self._b3 = _blake3(self._threads)
            for chunk in self._pending:
                self._b3.update(chunk)
            self._pending = None
        if self._sha is not None:
            self._sha.update(data)
        if self._b3 is not None:
            self._b3.update(data)

    def hexdigest(self) -> str:
        if self._b3 is not None:
            return _BLAKE3_PREFIX + self._b3.hexdigest()
        return self._sha.hexdigest()


class HashingWriter:
    """A write-only file object that hashes (and optionally forwards) what it is given.

    Serializers stream into it, so a value is hashed while it is written, in one pass,
    without building the whole encoding in memory. ``algorithm``: None picks by size
    (see ``LARGE``); uploads name the algorithm their claimed digest used.
    """

    def __init__(self, sink: Any = None, algorithm: str | None = None) -> None:
        self._hash = _Hash(algorithm, ALL_CORES)
        self._sink = sink

    #: Chunks at least this big are written on a helper thread while this one hashes
    #: them (both release the GIL), so a big value costs about max(hash, write), not the
    #: sum. The hash is the longer part wherever BLAKE3 runs under ~4 GB/s, so it keeps
    #: every core: on two, the write and the hash's threads share them (100 MiB: 55 ms
    #: against 65 with one hashing thread beside the write, benchmarks/README row 5).
    PARALLEL = 1 << 20

    @property
    def size(self) -> int:
        return self._hash.size

    def write(self, data: Any) -> int:
        """Hash and forward ``data``: bytes, or any buffer-protocol object, such as the
        ``pickle.PickleBuffer`` protocol 5 hands over for big buffers (``byte_view``).
        The sink gets the same flat bytes, so it need not know those types either."""
        data = byte_view(data)
        n = len(data)
        if self._sink is None:
            self._hash.add(data)
        elif n >= self.PARALLEL:
            failed: list[BaseException] = []
            writer = threading.Thread(target=self._forward, args=(data, failed))
            writer.start()
            try:
                self._hash.add(data)
            finally:
                writer.join()
            if failed:
                raise failed[0]
        else:
            self._hash.add(data)
            self._sink.write(data)
        return n

    def _forward(self, data: memoryview | bytes, failed: list[BaseException]) -> None:
        try:
            self._sink.write(data)
        except BaseException as exc:  # raised again on the caller's thread
            failed.append(exc)

    def flush(self) -> None:
        if self._sink is not None:
            self._sink.flush()

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self.size

    @property
    def closed(self) -> bool:
        return False

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class HashingReader:
    """A read-only file object that hashes what is read through it.

    Loading a value through it verifies the stored bytes in the same pass as decoding;
    ``verify`` then reads any tail the decoder left and compares. ``algorithm`` is the
    one the expected digest names (``algorithm_of``).
    """

    def __init__(self, source: Any, algorithm: str = SHA256) -> None:
        self._source = source
        self._hash = _Hash(algorithm, ALL_CORES)

    @property
    def size(self) -> int:
        return self._hash.size

    def read(self, n: int = -1) -> bytes:
        data = self._source.read(n)
        self._hash.update(data)
        return data

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` (any writable contiguous buffer, any shape) and hash what came."""
        view = byte_view(buffer)
        if type(view) is not memoryview or view.readonly:
            raise TypeError(f"readinto() needs a writable buffer, not {type(buffer).__name__}")
        n = self._source.readinto(view) if hasattr(self._source, "readinto") else None
        if n is None:
            data = self._source.read(len(view))
            n = len(data)
            view[:n] = data
        self._hash.add(view[:n])
        return n

    def readline(self, limit: int = -1) -> bytes:
        data = self._source.readline(limit)
        self._hash.update(data)
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def writable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return False

    def tell(self) -> int:
        return self.size

    def drain(self) -> None:
        while self.read(1 << 20):
            pass

    def hexdigest(self) -> str:
        return self._hash.hexdigest()
