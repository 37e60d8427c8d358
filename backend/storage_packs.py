"""Small new objects written many to one storage object while a scheduler packs
(``begin_pack``): the pending pack, its sealing, and ranged reads of its members (the
format is ``packs.py``'s). Part of ``storage.Storage``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from . import packs
from .errors import CorruptArtifact


class Packing:
    """``Storage``'s packs."""

    @property
    def packing(self) -> bool:
        """Whether this thread's small new objects go into a pack."""
        return getattr(self._packing, "depth", 0) > 0

    def begin_pack(self) -> None:
        """From now on this thread's small new objects are packed: one storage object per
        ``seal_pack`` instead of a file each. The caller must ``seal_pack`` before any
        other process may read them (before it commits rows that name them, before it
        hands them to a subprocess) and ``end_pack`` when done. Nests."""
        self._packing.depth = getattr(self._packing, "depth", 0) + 1

    def end_pack(self) -> None:
        """Write what is pending and stop packing (once every ``begin_pack`` has ended)."""
        try:
            self.seal_pack()
        finally:
            self._packing.depth = max(0, getattr(self._packing, "depth", 0) - 1)

    def seal_pack(self) -> None:
        """Write this thread's pending pack, if it has members, as one object (atomically:
        readers see all of it or nothing). If the write fails, its members are forgotten
        (this process will not name them again) and the error is raised."""
        pack = getattr(self._packing, "pack", None)
        if pack is None:
            return
        self._packing.pack = None
        try:
            self.write_bytes(pack.key, pack.encode())
        except BaseException:
            for digest, offset, size in pack.members:
                key = packs.member_key(pack.key, offset, size)
                if self._located.get(digest) == key:
                    del self._located[digest]
                self.forget(key)
            raise
        finally:
            self._pending.pop(pack.key, None)

    def _pack(self, digest: str, data: bytes | memoryview) -> str:
        """The member key of ``data`` (which hashes to ``digest``) in a pack: one this
        process already wrote or is writing, else the pending pack, to which it is added."""
        pack = getattr(self._packing, "pack", None)
        known = self._located.get(digest)
        if known is not None:
            # Not a member of another thread's pending pack: this thread may commit rows
            # naming it before that pack is written (or after its write failed).
            pack_key, _, span = known.partition("@")  # (a key ``_pack`` made: no ``parse``)
            owner = self._pending.get(pack_key)
            if owner is not None:
                if owner is pack:
                    # This thread's pending pack, which only grows until it is written (a
                    # failed write forgets its members): the member is there, no check.
                    return known
            else:  # a written pack: is it (still) there, as long as it was?
                offset, _, size = span.partition("+")
                if self._member_size(pack_key, int(offset), int(size)) is not None:
                    return known
        if pack is None:
            pack = self._packing.pack = packs.PendingPack()
            self._pending[pack.key] = pack
        payload = data if type(data) is bytes else bytes(data)  # kept: one copy at most
        key = pack.add(digest, payload)
        if len(self._located) >= self.PACK_MEMO:
            self._located.clear()
        self._located[digest] = key
        self._remember(key, digest, payload)  # a member: hashed just now, verified by making
        if len(pack.data) >= self.PACK_MAX:
            self.seal_pack()
        return key

    @contextlib.contextmanager
    def pack_checks(self) -> Iterator[None]:
        """Within this block, this thread checks each pack's size once, not once per
        member: a batch (a map's elements stored, its cache entries' outputs checked)
        trusts what it found at its start, as one check per loose object would."""
        outer = getattr(self._packing, "sizes", None)
        if outer is None:
            self._packing.sizes = {}
        try:
            yield
        finally:
            if outer is None:
                self._packing.sizes = None

    def renew_pack_checks(self) -> None:
        """Inside ``pack_checks``: forget the pack sizes found so far, so that the block
        goes on trusting checks no older than this call (a long run renews them at every
        commit, so each check is at most one scheduling round old)."""
        sizes = getattr(self._packing, "sizes", None)
        if sizes:
            sizes.clear()

    def _member_size(self, pack_key: str, offset: int, size: int) -> int | None:
        """``size`` if the pack holds the member's whole range, else None (gone, cut)."""
        pending = self._pending.get(pack_key)
        if pending is not None:
            return size if offset + size <= len(pending.data) else None
        whole = self._pack_size(pack_key)
        return size if whole is not None and offset + size <= whole else None

    def _pack_size(self, pack_key: str) -> int | None:
        """The size of a written pack (None if gone): checked once per ``pack_checks``
        round in one, every time outside."""
        sizes = getattr(self._packing, "sizes", None)
        if sizes is None:
            return self._object_size(pack_key)
        if pack_key in sizes:
            return sizes[pack_key]  # type: ignore[no-any-return]
        whole = sizes[pack_key] = self._object_size(pack_key)
        return whole

    def _read_member(self, key: str, pack_key: str, offset: int, size: int) -> bytes:
        """A member's bytes, by one ranged read of its pack (or from the pending pack)."""
        pending = self._pending.get(pack_key)
        data = pending.read(offset, size) if pending is not None else None
        if data is None:
            path = self._path(pack_key)
            try:
                if self.local:
                    with open(path, "rb") as f:
                        f.seek(offset)
                        data = f.read(size)
                else:
                    data = self._fs.cat_file(path, start=offset, end=offset + size)
            except FileNotFoundError:
                raise CorruptArtifact(f"stored object {self.url(key)} is missing") from None
        if len(data) != size:
            raise CorruptArtifact(f"stored object {self.url(key)} is cut short")
        return data
