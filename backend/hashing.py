"""Content hashes. Every identity in papercrane (task and workflow versions, cache keys,
artifacts) is a sha256 over a canonical encoding, so equal content means equal id in
every process, on every machine."""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_json(value: Any) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()


def sha256_bytes(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


class HashingWriter:
    """A write-only file object that hashes (and optionally forwards) what it is given.

    Serializers stream into it, so a value is hashed while it is written, in one pass,
    without building the whole encoding in memory.
    """

    def __init__(self, sink: Any = None) -> None:
        self._hash = hashlib.sha256()
        self._sink = sink
        self.size = 0

    #: Chunks at least this big are hashed on a helper thread while this one writes
    #: them (both release the GIL), so a big value costs max(hash, write), not the sum.
    PARALLEL = 1 << 20

    def write(self, data: bytes | bytearray | memoryview) -> int:
        n = data.nbytes if isinstance(data, memoryview) else len(data)
        self.size += n
        if self._sink is None:
            self._hash.update(data)
        elif n >= self.PARALLEL:
            hasher = threading.Thread(target=self._hash.update, args=(data,))
            hasher.start()
            try:
                self._sink.write(data)
            finally:
                hasher.join()
        else:
            self._hash.update(data)
            self._sink.write(data)
        return n

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
    ``verify`` then reads any tail the decoder left and compares.
    """

    def __init__(self, source: Any) -> None:
        self._source = source
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._source.read(n)
        self._hash.update(data)
        self.size += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = self._source.readinto(view) if hasattr(self._source, "readinto") else None
        if n is None:
            data = self._source.read(len(view))
            n = len(data)
            view[:n] = data
        self._hash.update(view[:n])
        self.size += n
        return n

    def readline(self, limit: int = -1) -> bytes:
        data = self._source.readline(limit)
        self._hash.update(data)
        self.size += len(data)
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
