"""Small immutable scalars, encoded once per engine.

A notebook hands the same few numbers, flags and names from task to task (``x = 1``,
``n = 10``, ``name = "train"``), and a fast task spent more on serializing, hashing and
fingerprinting them again, each run, than on storing them. An exact ``int`` (of at most
64 bits), ``bool``, ``None`` or short ``str`` encodes to bytes that are a function of its
type and value alone: the built-in serializers take these types (plug-ins are asked only
about values no built-in takes) and encode them deterministically. So the encoding, its
digest and the value's fingerprint are remembered by ``(type, value)`` and are exactly
what encoding the value again would give. Only the encoding is remembered: whether the
bytes are in storage is checked (or they are written) on every store, as for any value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .hashing import typed_fingerprint
from .serializers import preview, python_type_name
from .storage import encode_small

if TYPE_CHECKING:
    from .serializers import Serializer, SerializerRegistry

_INT_LIMIT = 1 << 64


#: A scalar's stored form, what ``ArtifactIO.put`` and ``Fingerprinter.value`` compute:
#: (serializer, data, digest, fingerprint, python_type, preview). A plain tuple of strings
#: and bytes, which Python's collector stops tracking at its first pass: the memo keeps
#: up to ``Scalars.MAX_ENTRIES`` of them, and a map adds one per new element, which as
#: objects would reach the oldest generation and bring its full collections sooner.
Encoded = tuple[str, bytes, str, str, str, str]

#: ``Encoded``'s fields by position.
FINGERPRINT = 3


class Scalars:
    """Encodings of small scalars by ``(type, value)``, at most ``MAX_ENTRIES`` of them
    (forgotten all at once when full: a notebook's working set is small)."""

    MAX_ENTRIES = 4096
    #: Longer strings are encoded each time, as any value.
    MAX_STR = 256

    def __init__(self, registry: SerializerRegistry) -> None:
        self.registry = registry
        self._memo: dict[tuple[type, Any], Encoded] = {}
        # The serializer of each scalar type, asked of the registry once: a built-in takes
        # each of these types whatever the value (``for_value`` asks plug-ins only about
        # values no built-in takes), and a map encodes a new int per element.
        self._serializers: dict[type, Serializer] = {}

    def get(self, value: Any) -> Encoded | None:
        """The encoding of ``value`` if it is such a scalar, else None."""
        t = type(value)
        if t is int:
            if not -_INT_LIMIT < value < _INT_LIMIT:
                return None
        elif t is str:
            if len(value) > self.MAX_STR:
                return None
        elif t is not bool and value is not None:
            return None
        key = (t, value)  # the type keeps True apart from 1
        found = self._memo.get(key)
        if found is None:
            found = self._encode(value)
            if found is None:
                return None
            if len(self._memo) >= self.MAX_ENTRIES:
                self._memo.clear()
            self._memo[key] = found
        return found

    def _encode(self, value: Any) -> Encoded | None:
        t = type(value)
        serializer = self._serializers.get(t)
        if serializer is None:
            serializer = self._serializers[t] = self.registry.for_value(value)
        if not serializer.deterministic:
            return None
        data, digest = encode_small(value, serializer)
        return (
            serializer.name,
            bytes(data),
            digest,
            typed_fingerprint(serializer.name, digest),
            python_type_name(value),
            preview(value),
        )
