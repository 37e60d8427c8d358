"""Content-addressed value storage over a local folder or any fsspec URL.

Writes stream into a temporary object and are renamed into place only once complete,
so a failed or interrupted write never leaves a half-written artifact at its address.
Local paths are served with the standard library (the runner subprocess starts faster
without importing fsspec); every other URL goes through fsspec. While a scheduler packs
(``begin_pack``), small new objects are written many to one object (``packs.py``).
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from . import mapped, packs
from .errors import ConfigError, CorruptArtifact, StorageError
from .hashing import (
    HashingReader,
    HashingWriter,
    algorithm_for,
    algorithm_of,
    content_digest,
    digest_hex,
)
from .serializers import Serializer
from .storage_packs import Packing


def encode_small(value: Any, serializer: Serializer) -> tuple[bytes | memoryview, str]:
    """A small value's encoded bytes and their content digest: in one call and one hash
    from serializers that build their bytes whole (``Serializer.encode``), else through
    ``dump`` into a buffer. Storing (``Storage.put_value``) and the memo of scalars
    (``scalars.Scalars``) both encode this way, so they give the same bytes and digest."""
    data = serializer.encode(value)
    if data is not None:
        return data, content_digest(data)
    buffer = io.BytesIO()
    writer = HashingWriter(buffer)
    serializer.dump(value, writer)  # type: ignore[arg-type]
    return buffer.getbuffer(), writer.hexdigest()


def _small(value: Any) -> bool:
    """A cheap guess that a value encodes small; big arrays and frames stream instead."""
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes <= Storage.SMALL
    if isinstance(value, (str, bytes)):
        return len(value) <= Storage.SMALL
    return not hasattr(value, "memory_usage")


def _is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


#: ``PAPERCRANE_MAP_ARRAYS=0`` reads big ``.npy`` objects into memory instead of mapping
#: them (``mapped``): for stores on network file systems, where a file another machine
#: deletes can take a mapping's unread pages with it (SIGBUS), or for code that needs
#: ``a.flags.owndata``.
MAP_SWITCH = "PAPERCRANE_MAP_ARRAYS"


class Storage(Packing):
    """Keys are relative paths ('artifacts/ab/ab12...'); ``url(key)`` gives a full URL."""

    #: Values up to this size are encoded in memory first, so storing a value that is
    #: already there costs no file write at all.
    SMALL = 1 << 20

    #: Stored objects up to this size, once read and found to hash to their digest, are
    #: kept in memory (``_verified``) so a later load in this process (a cache hit)
    #: decodes them without opening, reading and hashing the file again.
    MEMO_ITEM = 64 << 10
    #: The most bytes ``_verified`` holds; the least recently used go first.
    MEMO_TOTAL = 16 << 20
    #: Local objects at least this big whose serializer can view a mapping (``.npy``)
    #: are loaded by mapping the file copy-on-write instead of reading it (``mapped``).
    MAP_MIN = 16 << 20

    #: While packing (``begin_pack``), new objects up to this size go into the pending
    #: pack (see ``packs.py``) instead of a file each.
    PACK_ITEM = 64 << 10
    #: A pending pack this large is written at once, whatever the scheduler's rhythm.
    PACK_MAX = 8 << 20
    #: How many packed digests this process remembers (``_located``) to store a value
    #: already packed here without packing it again.
    PACK_MEMO = 200_000

    def __init__(self, url: str) -> None:
        self._made: set[str] = set()
        # key -> (digest, bytes that hashed to it in this process). Sound because the key
        # fixes the bytes: content-addressed, or a member of a pack (written once, never
        # rewritten). The digest is kept to refuse a claim of other bytes. Every load
        # decodes a new object, so no caller ever shares a mutable value with another.
        self._verified: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self._verified_bytes = 0
        self._memo_lock = threading.Lock()
        # Packing (see ``packs.py``): per thread, the pack its small new objects go to;
        # pending packs by key (readable from any thread of this process until written);
        # digest -> member key of objects packed by this process.
        self._packing = threading.local()
        self._pending: dict[str, packs.PendingPack] = {}
        self._located: dict[str, str] = {}
        #: Arrays this storage loaded as views of a mapping, to know their digest later.
        self._mappings = mapped.Mappings()
        #: Big objects whose bytes this engine has seen match their digest (``Vouched``).
        self.vouched = mapped.Vouched()
        self.url_root = url.rstrip("/")
        self.local = _is_local(url)
        if self.local:
            self.root = Path(url.removeprefix("file://")).expanduser()
            self._root_str = str(self.root)  # ``_path`` joins strings: pathlib is slower
            self._fs = None
        else:
            import fsspec

            try:
                self._fs, self.root_path = fsspec.core.url_to_fs(url)
            except (ValueError, ImportError) as exc:  # an unknown protocol, a missing package
                raise ConfigError(
                    f"the storage URL {url!r} from PAPERCRANE_STORAGE (or --storage) is not "
                    f"usable ({exc}); give a folder, file://, memory:// or another fsspec "
                    "URL whose package is installed, or unset PAPERCRANE_STORAGE to use "
                    "store/ in PAPERCRANE_HOME"
                ) from None
            self.root = None

    @property
    def shareable(self) -> bool:
        """Whether another process (a runner subprocess) can see what this one writes."""
        return not self.url_root.startswith("memory://")

    # -- paths ----------------------------------------------------------------------------
    def _path(self, key: str) -> str:
        if self.local:
            return os.path.join(self._root_str, key)
        return f"{self.root_path}/{key}"

    def url(self, key: str) -> str:
        if self.local:
            return (self.root / key).resolve().as_uri()
        return f"{self.url_root}/{key}"

    # -- setup ----------------------------------------------------------------------------
    def check_writable(self) -> None:
        probe = f"tmp/.probe-{uuid.uuid4().hex}"
        try:
            with self.open_write(probe) as f:
                f.write(b"ok")
            self.delete(probe)
        except (OSError, StorageError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(
                f"storage at {self.url_root} is not writable ({reason}); set "
                "PAPERCRANE_HOME or PAPERCRANE_STORAGE to a folder you can write to"
            ) from None

    # -- primitive I/O --------------------------------------------------------------------
    def open_write(self, key: str) -> BinaryIO:
        path = self._path(key)
        if self.local:
            self._makedirs(os.path.dirname(path))
            return open(path, "wb")
        return self._fs.open(path, "wb")

    def open_read(self, key: str) -> BinaryIO:
        member = packs.parse(key)
        if member is not None:
            return io.BytesIO(self._read_member(key, *member))
        path = self._path(key)
        try:
            if self.local:
                return open(path, "rb", buffering=1 << 20)
            return self._fs.open(path, "rb")
        except FileNotFoundError:
            raise CorruptArtifact(f"stored object {self.url(key)} is missing") from None

    def _makedirs(self, folder: str) -> None:
        if folder not in self._made:
            os.makedirs(folder, exist_ok=True)
            self._made.add(folder)

    def exists(self, key: str) -> bool:
        if key.startswith(packs.PREFIX) and packs.parse(key) is not None:
            return self.size(key) is not None
        path = self._path(key)
        return os.path.exists(path) if self.local else self._fs.exists(path)

    def size(self, key: str) -> int | None:
        member = packs.parse(key)
        if member is not None:
            return self._member_size(*member)
        return self._object_size(key)

    def _object_size(self, key: str) -> int | None:
        path = self._path(key)
        try:
            return os.path.getsize(path) if self.local else int(self._fs.size(path))
        except (FileNotFoundError, OSError):
            return None

    def delete(self, key: str) -> None:
        self.forget(key)
        if packs.parse(key) is not None:
            return  # a member is part of a pack, which holds other good members
        path = self._path(key)
        with contextlib.suppress(FileNotFoundError):
            if self.local:
                os.remove(path)
            else:
                self._fs.rm(path)

    def _move(self, src: str, dst: str) -> None:
        if self.local:
            self._makedirs(os.path.dirname(self._path(dst)))
            os.replace(self._path(src), self._path(dst))
        else:
            self._fs.mv(self._path(src), self._path(dst))

    def write_bytes(self, key: str, data: bytes | memoryview) -> None:
        """Atomic small write (specs, manifests): readers see all of it or nothing."""
        tmp = f"tmp/{uuid.uuid4().hex}"
        try:
            with self.open_write(tmp) as f:
                f.write(data)
        except BaseException:
            self.delete(tmp)
            raise
        self._move(tmp, key)

    def read_bytes(self, key: str) -> bytes:
        with self.open_read(key) as f:
            return f.read()

    # -- content-addressed values ---------------------------------------------------------
    @staticmethod
    def artifact_key(digest: str) -> str:
        return f"artifacts/{digest_hex(digest)[:2]}/{digest}"

    def put_value(self, value: Any, serializer: Serializer) -> tuple[str, str, int]:
        """Serialize ``value`` straight into storage; return (digest, key, size)."""
        if _small(value):
            data, digest = encode_small(value, serializer)
            return digest, self.put_encoded(digest, data), len(data)
        digest = self.mapped_digest(value, serializer)
        if digest is not None:  # a mapped array, unchanged: its file is (or was) stored
            key = self.artifact_key(digest)
            size = self.size(key)
            if size is not None and size == len(serializer.prefix(value) or b"") + value.nbytes:
                return digest, key, size
        tmp = f"tmp/{uuid.uuid4().hex}"
        try:
            with self.open_write(tmp) as raw:
                writer = HashingWriter(raw)
                serializer.dump(value, writer)  # type: ignore[arg-type]
        except BaseException:
            self.delete(tmp)
            raise
        digest = writer.hexdigest()
        key = self.artifact_key(digest)
        if self.exists(key):
            # Not replaced: on ext4, renaming over a file flushes the new one to disk at
            # once. What is there stays unvouched for (``mapped.Vouched``).
            self.delete(tmp)
        else:
            self._move(tmp, key)
            self._vouch_written(key, digest, writer.size)
        return digest, key, writer.size

    def put_encoded(self, digest: str, data: bytes | memoryview) -> str:
        """Store the small encoded bytes of a value, which hash to ``digest`` (sha256,
        as ``put_value`` computes it for small values), as ``put_value`` stores them;
        return their key. Nothing is written when the object is already there (or,
        while packing, already packed)."""
        if len(data) <= self.PACK_ITEM and self.packing:
            return self._pack(digest, data)
        key = self.artifact_key(digest)
        if not self.exists(key):
            self.write_bytes(key, data)
        return key

    def put_stream(
        self, stream: BinaryIO, expected_hash: str | None = None
    ) -> tuple[str, str, int]:
        """Store bytes from a stream (uploads); refuse them if they don't hash as claimed
        (with the algorithm the claim names, so an older client's sha256 digest of a big
        value is checked as sha256)."""
        algorithm = algorithm_of(expected_hash) if expected_hash else None
        tmp = f"tmp/{uuid.uuid4().hex}"
        with self.open_write(tmp) as raw:
            writer = HashingWriter(raw, algorithm)
            while chunk := stream.read(1 << 20):
                writer.write(chunk)
        digest = writer.hexdigest()
        if expected_hash and digest != expected_hash:
            self.delete(tmp)
            raise CorruptArtifact(f"uploaded bytes hash to {digest}, not {expected_hash}")
        key = self.artifact_key(digest)
        if self.exists(key):
            self.delete(tmp)
        else:
            self._move(tmp, key)
        return digest, key, writer.size

    def load_value(self, key: str, digest: str, serializer: Serializer, verify: bool = True) -> Any:
        """Decode a stored value, verifying its hash in the same pass (unless the caller
        just watched it being written: then the file is decoded directly, fastest).

        A small object verified once in this process is decoded from the bytes kept in
        memory, after a size check that notices it was deleted or truncated since; a
        same-size corruption made after that is found by the next process (or after
        ``forget``), as the bytes it would decode are the ones that were verified.

        A big local ``.npy`` object (``MAP_MIN``) comes back as an array over a
        copy-on-write mapping of its file (``mapped``), hashed from the mapping; not
        hashed at all while this engine vouches for the file (``mapped.Vouched``)."""
        member = packs.parse(key)
        if member is not None and not verify:
            return serializer.load(io.BytesIO(self._read_member(key, *member)))
        if verify:
            data = self._memo_get(key, digest)
            if data is not None:
                return self._decode(key, data, serializer)
            if member is not None:
                data = self._read_member(key, *member)
                if self._digest_of(data, digest) != digest:
                    # The pack stays (its other members are good); this process stops
                    # naming the member, so the value's next store packs good bytes anew.
                    if self._located.get(digest) == key:
                        del self._located[digest]
                    raise CorruptArtifact(f"stored object {self.url(key)} does not match its hash")
                self._memo_put(key, digest, data)
                return self._decode(key, data, serializer)
        with self.open_read(key) as raw:
            size = self._size_of_open(raw)
            if self._mappable(size):
                assert size is not None
                found = self._load_mapped(key, digest, raw, size, serializer, verify)
                if found is not None:
                    return found[0]
            if not verify:
                return serializer.load(raw)
            if size is not None and size <= self.MEMO_ITEM:
                data = raw.read()
            else:
                return self._load_streaming(key, digest, raw, serializer)
        reader = HashingReader(io.BytesIO(data), algorithm_of(digest))
        reader.drain()
        if reader.hexdigest() != digest:
            self._discard_corrupt(key, reader.hexdigest())
        self._memo_put(key, digest, data)
        return self._decode(key, data, serializer)

    def _mappable(self, size: int | None) -> bool:
        return (
            os.environ.get(MAP_SWITCH, "1") != "0"  # read per load: settable from a kernel
            and self.local
            and size is not None
            and size >= self.MAP_MIN
            and mapped.supported()
            and self._mappings.room()
        )

    def _load_mapped(
        self,
        key: str,
        digest: str,
        raw: BinaryIO,
        size: int,
        serializer: Serializer,
        verify: bool,
    ) -> tuple[Any] | None:
        """(value,) viewing a copy-on-write mapping of the file (see ``mapped``), its
        bytes hashed from the mapping first when ``verify``; None when the file can't be
        mapped or the serializer can't view a mapping of it (the caller reads it)."""
        st = os.fstat(raw.fileno())
        try:
            mapping = mapped.map_copy(raw.fileno(), size)
        except (OSError, ValueError):  # a file system that can't map files: read it
            return None
        try:
            known = self.vouched.holds(key, digest, st)
            if verify and not known:
                writer = HashingWriter(algorithm=algorithm_of(digest))
                with memoryview(mapping) as view:
                    writer.write(view)
                if writer.hexdigest() != digest:
                    self._discard_corrupt(key, writer.hexdigest())
                # Vouched for only if the file did not change while it was hashed.
                after = os.fstat(raw.fileno())
                known = mapped.signature(after) == mapped.signature(st)
                if known:
                    self.vouched.record(key, digest, st)
            try:
                loaded = serializer.load_mapped(mapping)
            except Exception as exc:
                raise StorageError(
                    f"could not decode {self.url(key)} with {serializer.name}: {exc}"
                ) from exc
        except BaseException:
            mapping.close()
            raise
        if loaded is None:
            mapping.close()
            return None
        value, header = loaded
        self._mappings.track(mapping)
        # Its digest is remembered when its bytes are known to be the digest's (hashed
        # now, or vouched for: not merely trusted by the caller), the file is exactly the
        # header and the memory, and the digest is what a fresh encoding would get (not an
        # older store's sha256 of a big value).
        if (
            known
            and len(header) + value.nbytes == size
            and algorithm_of(digest) == algorithm_for(size)
        ):
            self._mappings.add(value, digest, header, self._path(key), st)
        return (value,)

    def _vouch_written(self, key: str, digest: str, size: int) -> None:
        """Vouch for a big object this process just moved into place from bytes it hashed."""
        if self.local and size >= self.MAP_MIN:
            with contextlib.suppress(OSError):
                self.vouched.record(key, digest, os.stat(self._path(key)))

    def mapped_digest_possible(self, value: Any) -> bool:
        """Whether ``value`` is a value this storage loaded from a mapping (a dict
        lookup: ``mapped_digest`` then says whether it is unchanged)."""
        return self._mappings.holds(value)

    def mapped_digest(self, value: Any, serializer: Serializer) -> str | None:
        """The digest of ``value``'s encoding with ``serializer`` without encoding it, when
        it is a value this storage loaded from a mapping and still holds those bytes."""
        if not self._mappings.holds(value):
            return None
        prefix = serializer.prefix(value)
        return self._mappings.digest_of(value, prefix) if prefix is not None else None

    def _load_streaming(self, key: str, digest: str, raw: BinaryIO, serializer: Serializer) -> Any:
        reader = HashingReader(raw, algorithm_of(digest))
        try:
            value = serializer.load(reader)  # type: ignore[arg-type]
        except Exception as exc:
            reader.drain()
            if reader.hexdigest() != digest:
                self._discard_corrupt(key, reader.hexdigest())
            raise StorageError(
                f"could not decode {self.url(key)} with {serializer.name}: {exc}"
            ) from exc
        reader.drain()
        if reader.hexdigest() != digest:
            self._discard_corrupt(key, reader.hexdigest())
        return value

    def _decode(self, key: str, data: bytes, serializer: Serializer) -> Any:
        """A new object from bytes that are known to match their digest."""
        try:
            return serializer.load(io.BytesIO(data))
        except Exception as exc:
            raise StorageError(
                f"could not decode {self.url(key)} with {serializer.name}: {exc}"
            ) from exc

    def _size_of_open(self, raw: Any) -> int | None:
        """The size of an object just opened for reading, if known without another
        round trip (local files: ``fstat``; fsspec files that carry their size)."""
        if self.local:
            return os.fstat(raw.fileno()).st_size
        size = getattr(raw, "size", None)
        return size if isinstance(size, int) else None

    def _memo_get(self, key: str, digest: str) -> bytes | None:
        with self._memo_lock:
            known = self._verified.get(key)
            if known is None:
                return None
            self._verified.move_to_end(key)
        verified, data = known
        if verified != digest or self.size(key) != len(data):
            self.forget(key)  # gone or rewritten since: read it again, and verify
            return None
        return data

    def _memo_put(self, key: str, digest: str, data: bytes) -> None:
        if key != self.artifact_key(digest) and packs.parse(key) is None:
            return  # only objects whose key fixes their bytes: content-addressed or packed
        self._remember(key, digest, data)

    def _remember(self, key: str, digest: str, data: bytes) -> None:
        """``_memo_put`` of an object whose key is known to fix its bytes."""
        with self._memo_lock:
            if key in self._verified:
                return
            self._verified[key] = (digest, data)
            self._verified_bytes += len(data)
            while self._verified_bytes > self.MEMO_TOTAL:
                _, (_, old) = self._verified.popitem(last=False)
                self._verified_bytes -= len(old)

    def forget(self, key: str | None = None) -> None:
        """Drop the in-memory copy of ``key`` (of every object, if None), and what this
        engine vouched for about it, so its next load reads and verifies the stored bytes
        again."""
        self.vouched.forget(key)
        with self._memo_lock:
            if key is None:
                self._verified.clear()
                self._verified_bytes = 0
            else:
                known = self._verified.pop(key, None)
                if known is not None:
                    self._verified_bytes -= len(known[1])

    def _discard_corrupt(self, key: str, actual: str) -> None:
        """A content-addressed object whose bytes don't hash to its own address is
        garbage: remove it, so the next write of the right value puts good bytes there.
        (Bytes that match their address are kept even if the caller expected others.)"""
        address = key.rsplit("/", 1)[-1]
        if key == self.artifact_key(address) and actual != address:
            self.delete(key)
        raise CorruptArtifact(f"stored object {self.url(key)} does not match its hash")

    @contextlib.contextmanager
    def appender(self, key: str) -> Iterator[BinaryIO]:
        """A log file written as the task runs (local storage: readable while it grows)."""
        with self.open_write(key) as f:
            yield f

    @staticmethod
    def _digest_of(data: bytes, digest: str) -> str:
        reader = HashingReader(io.BytesIO(data), algorithm_of(digest))
        reader.drain()
        return reader.hexdigest()
