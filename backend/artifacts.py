"""Values to artifacts and back: the one place that picks a serializer, streams the value
into storage and computes its fingerprint. The kernel (for inputs), the runner (for
outputs) and the engine (for cache hits) all go through it."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .errors import InputError, StorageError
from .hashing import typed_fingerprint
from .model import ArtifactRef
from .scalars import Scalars
from .serializers import (
    CloudpickleSerializer,
    Serializer,
    SerializerRegistry,
    preview,
    python_type_name,
)
from .storage import Storage

if TYPE_CHECKING:
    from .fingerprint import Fingerprinter


_new_object = object.__new__
_set = object.__setattr__


def new_ref(
    id: str,
    hash: str,
    uri: str,
    size: int,
    serializer: str,
    python_type: str,
    preview: str,
) -> ArtifactRef:
    """``ArtifactRef(id, hash, uri, size, serializer, python_type, preview)``: what the
    frozen dataclass's ``__init__`` does (``object.__setattr__`` per field), without the
    keyword call through the class and the global look-up per field, ~1.1 µs against
    ~0.7 µs in a map's loop, which stores two new values per element. (Filling
    ``ref.__dict__`` instead is quicker to build but makes Python 3.11+ create a real
    dict per ref, which is bigger and slower to read.) A test checks the result against
    ``ArtifactRef``'s own fields, so a field added there fails it."""
    ref = _new_object(ArtifactRef)
    _set(ref, "id", id)
    _set(ref, "hash", hash)
    _set(ref, "uri", uri)
    _set(ref, "size", size)
    _set(ref, "serializer", serializer)
    _set(ref, "python_type", python_type)
    _set(ref, "preview", preview)
    return ref


class ArtifactIO:
    def __init__(self, storage: Storage, registry: SerializerRegistry | None = None) -> None:
        self.storage = storage
        self.registry = registry or SerializerRegistry()
        #: Encodings of small scalars, shared with this engine's fingerprinters.
        self.scalars = Scalars(self.registry)

    def fingerprinter(self) -> Fingerprinter:
        from .fingerprint import Fingerprinter  # the runner rarely needs it: import late

        return Fingerprinter(self.registry, self.scalars)

    def put(self, value: Any, what: str, fingerprint: str | None = None) -> ArtifactRef:
        """Store ``value``; ``what`` names it in errors ("input 'df'", "output 'model'")."""
        encoded = self.scalars.get(value)
        if encoded is not None:  # encoded before: only the storing is left
            name, data, digest, known, python_type, shown = encoded
            return new_ref(
                known if fingerprint is None else fingerprint,
                digest,
                self.storage.put_encoded(digest, data),
                len(data),
                name,
                python_type,
                shown,
            )
        serializer = self.registry.for_value(value)
        fingerprint = self._pickled_fingerprint(value, what, serializer, fingerprint)
        try:
            digest, key, size = self._put(value, serializer)
        except (OSError, StorageError):
            raise
        except Exception as first:
            if serializer.name == CloudpickleSerializer.name:
                raise unserializable_error(value, what, first) from None
            # The type-specific encoding refused this value (say, a DataFrame with
            # unusual column types); pickle is the universal fallback.
            serializer = self.registry.get(CloudpickleSerializer.name)
            fingerprint = self._pickled_fingerprint(value, what, serializer, fingerprint)
            try:
                digest, key, size = self._put(value, serializer)
            except (OSError, StorageError):
                raise
            except Exception as exc:
                raise unserializable_error(value, what, exc) from None
        if fingerprint is None:  # (a deterministic encoding: its bytes say what it is)
            fingerprint = typed_fingerprint(serializer.name, digest)
        return new_ref(
            fingerprint,
            digest,
            key,
            size,
            serializer.name,
            python_type_name(value),
            preview(value),
        )

    def _pickled_fingerprint(
        self, value: Any, what: str, serializer: Any, fingerprint: str | None
    ) -> str | None:
        """The fingerprint of a value to be stored by an encoding whose bytes don't say
        what it is (a pickle), taken before storing: a value that can't be fingerprinted
        leaves nothing behind. None is left for a deterministic encoding's digest."""
        if fingerprint is not None or serializer.deterministic:
            return fingerprint
        return value_fingerprint(self.fingerprinter(), value, what)

    def known_fingerprint(self, value: Any) -> str | None:
        """The fingerprint of ``value`` without hashing it, where storage can vouch for
        its bytes (an array loaded from a mapping and unchanged since: ``mapped``); None
        otherwise. Equal to what ``fingerprinter().value(value)`` would compute."""
        if not self.storage.mapped_digest_possible(value):
            return None
        serializer = self.registry.for_value(value)
        digest = self.storage.mapped_digest(value, serializer) if serializer.deterministic else None
        return typed_fingerprint(serializer.name, digest) if digest is not None else None

    def _put(self, value: Any, serializer: Serializer) -> tuple[str, str, int]:
        return self.storage.put_value(value, serializer)

    def load(self, ref: ArtifactRef, verify: bool = True) -> Any:
        serializer = self.registry.get(ref.serializer)
        return self.storage.load_value(ref.uri, ref.hash, serializer, verify)

    def intact(self, ref: ArtifactRef) -> bool:
        """Cheap check (exists, right size) before trusting a cache entry."""
        return self.storage.size(ref.uri) == ref.size


def value_fingerprint(fingerprinter: Fingerprinter, value: Any, what: str) -> str:
    """``fingerprinter.value(value)``, or the user's error saying why ``value`` (named by
    ``what``) can't be a task's value. cloudpickle stores some values the fingerprint's
    own pickler refuses (an open text file pickles as its contents), and a bare
    ``TypeError`` from deep in the engine would be taken for a system failure: retried,
    and never naming the variable."""
    try:
        return fingerprinter.value(value)
    except Exception as exc:
        raise unserializable_error(value, what, exc) from None


def unserializable_error(value: Any, what: str, exc: BaseException) -> InputError:
    """The user's error for a value that can't be stored: what it is, why, and what to do.
    ``what`` names it ("task 't': input 'df'", "output 'f'", "collected output 'r'",
    "element 3 of 'items'"); the way out differs for an input and an output."""
    kind = python_type_name(value)
    roles = _ROLE.findall(what)
    output = bool(roles) and roles[-1] == "output"
    if output:
        lock = "locks belong to one process; del it at the end of the cell"
        file = (
            "open files can't be moved; open it with 'with open(...) as f:' (a name a with "
            "statement binds is not an output) or del it at the end of the cell"
        )
    else:
        lock = "locks belong to one process; create it inside the task"
        file = "open files can't be moved; pass the file name and open it in the task"
    hint = {
        "_thread.lock": lock,
        "_thread.RLock": lock,
        "generator": "generators can't be copied; turn it into a list first",
        "_io.TextIOWrapper": file,
        "_io.BufferedReader": file,
        "_io.BufferedWriter": file,
    }.get(kind)
    if hint is None:
        if output:
            hint = (
                "make it picklable, del it at the end of the cell, "
                "or list the outputs to keep with --outputs"
            )
        elif roles:
            hint = "make it picklable, create it inside the task, or leave it out with --inputs"
        else:
            hint = "make it picklable, or create it inside the task"
    return InputError(f"{what} of type {kind} can't be serialized ({exc}); {hint}")


#: The role a value plays, from the word before its quoted name in ``what``.
_ROLE = re.compile(r"\b(input|output) '")
