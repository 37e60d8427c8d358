"""Packs: many small content-addressed objects stored as one storage object.

A 1,000-element map writes 2,000 small values (each element and each output); as loose
files that is 2,000 file creations, each costing more on a VM than the whole element's
work. While a scheduler packs (``Storage.begin_pack``), small new objects are appended to
one pending pack in memory and the pack is written as one object (temporary name, then
renamed into place) before the store commits any row that names its members.

A member's key is its pack's key with the member's byte range: ``packs/ab/<name>@<offset>+<size>``.
The key is what the store records as the artifact's ``uri``, so every path that loads an
artifact by its uri (the engine, the runner in a subprocess or a pod, the HTTP server's
download) reads the member with one ranged read, and verifies it against the member's own
digest, as it verifies a loose object. Packs are written once under a fresh name and
never rewritten; a bad member is reported, never "repaired" by deleting its pack (the
other members are good).

The pack also carries its own index (a JSON list of ``[digest, offset, size]`` after the
members, then a fixed trailer), so a pack can be checked or listed without the store:

    members | index JSON | b"PCPACK01" | index offset (8 bytes, big-endian)
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

PREFIX = "packs/"
MAGIC = b"PCPACK01"


def member_key(pack_key: str, offset: int, size: int) -> str:
    return f"{pack_key}@{offset}+{size}"


def parse(key: str) -> tuple[str, int, int] | None:
    """(pack key, offset, size) of a packed member's key; None for any other key.
    (Called several times per stored value: string methods, not a regular expression.)"""
    if not key.startswith(PREFIX):
        return None
    pack_key, at, span = key.rpartition("@")
    offset, plus, size = span.partition("+")
    if not (at and plus and offset.isdecimal() and size.isdecimal() and span.isascii()):
        return None
    return pack_key, int(offset), int(size)


def new_pack_key() -> str:
    name = uuid.uuid4().hex
    return f"{PREFIX}{name[:2]}/{name}"


@dataclass
class PendingPack:
    """Members appended in memory, not yet written: readable in this process only."""

    key: str = field(default_factory=new_pack_key)
    data: bytearray = field(default_factory=bytearray)
    members: list[tuple[str, int, int]] = field(default_factory=list)

    def add(self, digest: str, payload: bytes | memoryview) -> str:
        offset = len(self.data)
        self.data += payload
        size = len(self.data) - offset
        self.members.append((digest, offset, size))
        return member_key(self.key, offset, size)

    def read(self, offset: int, size: int) -> bytes | None:
        if offset + size > len(self.data):
            return None
        return bytes(self.data[offset : offset + size])

    def encode(self) -> bytes:
        """The pack object: members, the index, the trailer."""
        index = json.dumps(self.members, separators=(",", ":")).encode()
        return b"".join((self.data, index, MAGIC, len(self.data).to_bytes(8, "big")))


def index_of(blob: bytes) -> list[tuple[str, int, int]]:
    """The members ``[digest, offset, size]`` a pack lists in its own index."""
    if len(blob) < len(MAGIC) + 8 or blob[-16:-8] != MAGIC:
        raise ValueError("not a papercrane pack (no trailer)")
    start = int.from_bytes(blob[-8:], "big")
    return [tuple(m) for m in json.loads(blob[start:-16])]  # type: ignore[misc]
