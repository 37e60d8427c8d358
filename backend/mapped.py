"""Big stored arrays loaded without a copy: the file is mapped copy-on-write and the
array is a view of the mapping, so loading 100 MiB costs a ``mmap`` instead of a 100 MiB
read into new memory (and the page cache is not duplicated).

What a user holding such an array sees: an ordinary, writable ``numpy.ndarray``
(``type(a) is np.ndarray``); writes go to private copies of the pages they touch and never
reach the file; deleting or replacing the file (the only ways papercrane changes a stored
object) leaves the array as it was. It differs from a read copy in ``a.base`` (the
mapping), ``a.flags.owndata`` (False, so ``a.resize`` in place refuses) and in two things
only something outside papercrane can cause, since stored objects are never written in
place: pages not yet written show the file's current bytes if another program rewrites
the file in place, and reading a page past the end of a file truncated in place kills the
process (SIGBUS), as with ``np.load(..., mmap_mode="c")``.

Because the mapping is private, the kernel can also tell whether the array still holds
the stored bytes without reading them: a page it wrote to is an anonymous copy, which
``/proc/self/pagemap`` shows (Linux). ``Mappings.digest_of`` then gives the stored
digest for the same object, unmoved and unchanged, so fingerprinting it as the next
task's input costs a few syscalls instead of hashing it again; anything else (a write to
any of its pages, another shape or dtype set in place, another platform) hashes as before.
"""

from __future__ import annotations

import mmap
import os
import sys
import threading
import weakref
from dataclasses import dataclass
from typing import Any

#: Python keeps a duplicate of the file's descriptor per mapping before 3.13
#: (``trackfd``): the live mappings are bounded so as not to run out of descriptors.
MAX_LIVE = 256

_PAGE = mmap.PAGESIZE
_PRESENT = 1 << 63
_SWAPPED = 1 << 62
_FILE = 1 << 61  # a page of the file (or shared): not a private copy


def supported() -> bool:
    """Mapping copy-on-write, with files replaced or deleted under live mappings."""
    return os.name == "posix"


def map_copy(fd: int, size: int) -> mmap.mmap:
    """A private, writable mapping of the first ``size`` bytes of ``fd``."""
    if sys.version_info >= (3, 13):
        return mmap.mmap(fd, size, access=mmap.ACCESS_COPY, trackfd=False)
    return mmap.mmap(fd, size, access=mmap.ACCESS_COPY)


#: A file's identity and state as ``stat`` gives them: what must be unchanged for bytes
#: verified (or written) earlier to still be the file's bytes.
Signature = tuple[int, int, int, int, int]


def signature(st: os.stat_result) -> Signature:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True)
class _Entry:
    ref: weakref.ref
    digest: str
    header: bytes
    address: int
    nbytes: int
    #: The mapped file, and its signature when it was mapped.
    path: str
    signature: Signature


class Mappings:
    """The mapped values one storage handed out, and their mappings (for the bound)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[int, _Entry] = {}
        self._maps: dict[int, weakref.ref] = {}

    def room(self) -> bool:
        """Whether another mapping may be made now."""
        return sys.version_info >= (3, 13) or len(self._maps) < MAX_LIVE

    def track(self, mapping: mmap.mmap) -> None:
        """Count ``mapping`` among the live ones until it is gone (``room``)."""
        map_id = id(mapping)
        with self._lock:
            self._maps[map_id] = weakref.ref(mapping, lambda _: self._maps.pop(map_id, None))

    def add(self, value: Any, digest: str, header: bytes, path: str, st: os.stat_result) -> None:
        """Remember that ``value`` views a mapping of the file ``path`` (``st``: its
        ``stat`` then), whose bytes (``header``, then the value's memory) hash to
        ``digest``."""
        value_id = id(value)
        entry = _Entry(
            ref=weakref.ref(value, lambda _: self._values.pop(value_id, None)),
            digest=digest,
            header=header,
            address=value.__array_interface__["data"][0],
            nbytes=value.nbytes,
            path=path,
            signature=signature(st),
        )
        with self._lock:
            self._values[value_id] = entry

    def holds(self, value: Any) -> bool:
        """Whether ``value`` is one of the mapped values (cheap: no check of its pages)."""
        entry = self._values.get(id(value))
        return entry is not None and entry.ref() is value

    def digest_of(self, value: Any, header: bytes | None) -> str | None:
        """The stored digest of ``value`` if it is an array this storage mapped and it
        still holds exactly those bytes: the same object, the same ``header`` (dtype,
        shape, order: what the serializer would write first now), the same memory, no
        page of it written to, and the file unchanged (pages not loaded yet would show
        a rewrite in place). None otherwise (and wherever that can't be told)."""
        entry = self._values.get(id(value))
        if entry is None or entry.ref() is not value or header != entry.header:
            return None
        if value.__array_interface__["data"][0] != entry.address or value.nbytes != entry.nbytes:
            return None
        try:
            if signature(os.stat(entry.path)) != entry.signature:
                return None
        except OSError:
            return None
        return entry.digest if untouched(entry.address, entry.nbytes) else None


def untouched(address: int, length: int) -> bool:
    """Whether no page of a private file mapping in ``[address, address + length)`` was
    written to by this process: each page is either not loaded yet or still the file's
    (``/proc/self/pagemap``; a written page is a private anonymous copy, maybe swapped).
    False where that can't be read."""
    if length <= 0:
        return True
    first = address // _PAGE
    count = (address + length - 1) // _PAGE - first + 1
    try:
        with open("/proc/self/pagemap", "rb", buffering=0) as f:
            f.seek(first * 8)
            data = f.read(count * 8)
    except OSError:
        return False
    if len(data) != count * 8:
        return False
    import numpy as np

    flags = np.frombuffer(data, dtype="=u8")  # native order, as the kernel writes it
    copied = (flags & np.uint64(_PRESENT | _FILE)) == np.uint64(_PRESENT)
    return not bool(copied.any()) and not bool((flags & np.uint64(_SWAPPED)).any())


class Vouched:
    """Big stored objects whose bytes this engine saw hash to their digest (it wrote
    them, or it read them all and verified them), with the file's ``signature`` then.
    While the signature is unchanged the file is taken to hold those bytes, without
    hashing it again: sound the way git's index is. A write through the file system
    changes the modification and change times; not seen are a same-size write in place
    that lands within the same timestamp tick right after the signature was taken (on
    kernels and file systems without fine-grained timestamps for files whose times were
    just read) and damage below the file system. What no part of this engine wrote or
    verified (an older cache entry, a file found already stored) is verified on load.

    The attempts of a local executor are this engine's too: the executor hands them the
    signatures of their inputs and takes back those of the outputs they wrote (``export``
    and ``adopt``), so a value written by one task is not hashed again by the next."""

    #: Entries kept (least recently used go first).
    LIMIT = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[str, Signature]] = {}

    def record(self, key: str, digest: str, st: os.stat_result) -> None:
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = (digest, signature(st))
            while len(self._entries) > self.LIMIT:
                del self._entries[next(iter(self._entries))]

    def holds(self, key: str, digest: str, st: os.stat_result) -> bool:
        """Whether the file ``key`` (as ``st`` shows it now) is vouched for as ``digest``."""
        with self._lock:
            entry = self._entries.get(key)
        return entry is not None and entry == (digest, signature(st))

    def forget(self, key: str | None = None) -> None:
        """Vouch no longer for ``key`` (for anything, if None)."""
        with self._lock:
            if key is None:
                self._entries.clear()
            else:
                self._entries.pop(key, None)

    def export(self, keys: Any) -> dict[str, list[Any]]:
        """The entries of ``keys`` this table has, as JSON."""
        with self._lock:
            found = {k: self._entries[k] for k in keys if k in self._entries}
        return {k: [digest, list(sig)] for k, (digest, sig) in found.items()}

    def adopt(self, data: dict[str, list[Any]]) -> None:
        """Take entries exported by another part of this engine (never from elsewhere:
        an entry is a promise that the bytes were verified)."""
        with self._lock:
            for key, (digest, sig) in data.items():
                self._entries.pop(key, None)
                self._entries[key] = (str(digest), tuple(int(x) for x in sig))  # type: ignore[assignment]
            while len(self._entries) > self.LIMIT:
                del self._entries[next(iter(self._entries))]
