"""Big arrays loaded from a copy-on-write mapping: they behave as read copies for the
user, their digest is known only while they hold the stored bytes, and a stored object
is hashed again unless this engine wrote or verified it and its file is unchanged."""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from papercrane.backend.artifacts import ArtifactIO
from papercrane.backend.errors import CorruptArtifact, StorageError
from papercrane.backend.runner import AttemptResult
from papercrane.backend.serializers import SerializerRegistry
from papercrane.backend.storage import Storage

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pagemap: Linux")

#: 4 MiB: over MAP_MIN as the tests set it (and over hashing.LARGE: a BLAKE3 digest).
BIG = np.arange(512 * 1024, dtype=np.float64)
NPY = SerializerRegistry().get("npy")


def storage_at(root: Path) -> Storage:
    storage = Storage(str(root))
    storage.MAP_MIN = 2 << 20  # an instance attribute: the arrays here are 4 MiB
    return storage


def stored(root: Path) -> tuple[str, str]:
    """BIG stored by one storage object; (digest, key). Loads then come from others."""
    digest, key, _ = storage_at(root).put_value(BIG, NPY)
    return digest, key


def test_a_mapped_array_is_an_ordinary_writable_array_whose_writes_stay_private(
    tmp_path: Path,
) -> None:
    digest, key = stored(tmp_path)
    storage = storage_at(tmp_path)
    a = storage.load_value(key, digest, NPY)
    assert type(a) is np.ndarray and a.flags.writeable and np.array_equal(a, BIG)
    assert a.flags.c_contiguous and not a.flags.owndata  # a view of the mapping
    a[0] = 42.0
    again = storage_at(tmp_path).load_value(key, digest, NPY)  # verifies the file
    assert again[0] == 0.0 and a[0] == 42.0
    (tmp_path / key).unlink()  # what discarding does: the array the user holds stays
    assert a[1] == 1.0 and a[-1] == BIG[-1]


def test_fortran_order_and_other_dtypes_round_trip(tmp_path: Path) -> None:
    storage = storage_at(tmp_path)
    for value in (np.asfortranarray(BIG.reshape(1024, 512)), BIG.astype(np.int32)[:600_000]):
        digest, key, _ = storage.put_value(value, NPY)
        loaded = storage_at(tmp_path).load_value(key, digest, NPY)
        assert loaded.dtype == value.dtype and np.array_equal(loaded, value)
        assert loaded.flags.f_contiguous == value.flags.f_contiguous


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_a_damaged_big_object_is_refused_and_discarded(tmp_path: Path, how: str) -> None:
    digest, key = stored(tmp_path)
    data = bytearray((tmp_path / key).read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0x01  # same size: only the hash sees it
    else:
        del data[-8:]
    (tmp_path / key).write_bytes(bytes(data))
    with pytest.raises(CorruptArtifact, match="does not match its hash"):
        storage_at(tmp_path).load_value(key, digest, NPY)
    assert not (tmp_path / key).exists()


def test_a_truncated_array_read_unverified_is_an_error_not_a_crash(tmp_path: Path) -> None:
    digest, key = stored(tmp_path)
    path = tmp_path / key
    path.write_bytes(path.read_bytes()[: -(1 << 20)])
    with pytest.raises(StorageError, match="truncated"):
        storage_at(tmp_path).load_value(key, digest, NPY, verify=False)


def test_what_this_storage_wrote_is_vouched_for_until_the_file_changes(tmp_path: Path) -> None:
    storage = storage_at(tmp_path)
    digest, key, _ = storage.put_value(BIG, NPY)
    assert storage.vouched.holds(key, digest, os.stat(tmp_path / key))
    assert np.array_equal(storage.load_value(key, digest, NPY), BIG)
    storage.forget()  # as for the small objects kept in memory: verify again next time
    assert not storage.vouched.holds(key, digest, os.stat(tmp_path / key))
    storage.load_value(key, digest, NPY)  # verified: vouched for again
    assert storage.vouched.holds(key, digest, os.stat(tmp_path / key))
    data = bytearray((tmp_path / key).read_bytes())
    data[len(data) // 2] ^= 0x01  # written in place: its times change, so it is hashed
    (tmp_path / key).write_bytes(bytes(data))
    assert not storage.vouched.holds(key, digest, os.stat(tmp_path / key))
    with pytest.raises(CorruptArtifact, match="does not match its hash"):
        storage.load_value(key, digest, NPY)


def test_vouching_travels_only_through_the_engines_own_attempts(tmp_path: Path) -> None:
    """An attempt's manifest carries the signatures of the outputs it wrote; a fresh
    storage (another session: an older cache entry) vouches for nothing."""
    writer = storage_at(tmp_path)
    digest, key, _ = writer.put_value(BIG, NPY)
    manifest = AttemptResult("succeeded", vouched=writer.vouched.export([key])).to_dict()
    engine = storage_at(tmp_path)
    st = os.stat(tmp_path / key)
    assert not engine.vouched.holds(key, digest, st)
    engine.vouched.adopt(AttemptResult.from_dict(manifest).vouched)
    assert engine.vouched.holds(key, digest, st)
    assert not engine.vouched.holds(key, "blake3-" + "0" * 64, st)  # for that digest only


def reshape_in_place(a: np.ndarray, shape: tuple[int, ...]) -> None:
    """What a notebook may still do to an array it holds: NumPy 2.5 deprecates setting
    ``shape`` but keeps it working."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        a.shape = shape


def test_the_digest_of_a_mapped_array_is_known_only_while_it_holds_the_stored_bytes(
    tmp_path: Path,
) -> None:
    digest, key = stored(tmp_path)
    artifacts = ArtifactIO(storage_at(tmp_path))
    a = artifacts.storage.load_value(key, digest, NPY)  # verified: its digest is known
    hashed = artifacts.fingerprinter().value(a)
    assert artifacts.known_fingerprint(a) == hashed
    assert artifacts.known_fingerprint(a.copy()) is None  # another object
    assert artifacts.known_fingerprint(a[1:]) is None  # a view
    reshape_in_place(a, (2, -1))  # the same memory, another shape: other bytes once encoded
    assert artifacts.known_fingerprint(a) is None
    reshape_in_place(a, (BIG.size,))
    assert artifacts.known_fingerprint(a) == hashed
    a[-1] += 1  # one page written to
    assert artifacts.known_fingerprint(a) is None
    assert artifacts.fingerprinter().value(a) != hashed
    a[-1] -= 1  # the same bytes again, but the page is a private copy: hashed, same result
    assert artifacts.known_fingerprint(a) is None
    assert artifacts.fingerprinter().value(a) == hashed


def test_an_unverified_load_of_a_file_nobody_vouched_for_has_no_known_digest(
    tmp_path: Path,
) -> None:
    digest, key = stored(tmp_path)
    artifacts = ArtifactIO(storage_at(tmp_path))
    a = artifacts.storage.load_value(key, digest, NPY, verify=False)
    assert np.array_equal(a, BIG)
    assert artifacts.known_fingerprint(a) is None  # the caller's trust is not knowledge
    b = artifacts.storage.load_value(key, digest, NPY)  # verified now, and vouched for
    c = artifacts.storage.load_value(key, digest, NPY, verify=False)
    assert artifacts.known_fingerprint(b) is not None
    assert artifacts.known_fingerprint(c) == artifacts.known_fingerprint(b)


def test_storing_an_unchanged_mapped_array_again_keeps_the_stored_object(tmp_path: Path) -> None:
    digest, key = stored(tmp_path)
    storage = storage_at(tmp_path)
    a = storage.load_value(key, digest, NPY)
    before = os.stat(tmp_path / key)
    assert storage.put_value(a, NPY) == (digest, key, before.st_size)
    assert os.stat(tmp_path / key).st_ino == before.st_ino
    a[0] = -1.0
    changed, other, _ = storage.put_value(a, NPY)
    assert changed != digest and np.array_equal(storage.load_value(other, changed, NPY), a)


def test_small_objects_are_read_not_mapped(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))  # MAP_MIN as shipped: 4 MiB is below it
    digest, key, _ = storage.put_value(BIG, NPY)
    a = storage.load_value(key, digest, NPY)
    assert a.flags.owndata and np.array_equal(a, BIG)


def test_a_file_rewritten_under_a_mapped_array_makes_its_digest_unknown(tmp_path: Path) -> None:
    """Pages not loaded yet show the file as it is now: once the file changed, the
    array's bytes are no longer vouched for by its digest, and are hashed."""
    digest, key = stored(tmp_path)
    artifacts = ArtifactIO(storage_at(tmp_path))
    a = artifacts.storage.load_value(key, digest, NPY)
    assert artifacts.known_fingerprint(a) is not None
    path = tmp_path / key
    path.write_bytes(path.read_bytes())  # the same bytes, written in place
    assert artifacts.known_fingerprint(a) is None
    assert artifacts.fingerprinter().value(a) == artifacts.fingerprinter().value(BIG)


def test_an_attempt_hashes_an_input_whose_file_changed_after_it_was_vouched_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local executor hands an attempt the signatures of its inputs: the attempt
    skips hashing a file that is unchanged, and hashes (and refuses) one that is not."""
    import uuid

    from papercrane.backend.config import Config
    from papercrane.backend.engine import LocalEngine
    from papercrane.backend.executors.base import AttemptSpec
    from papercrane.backend.model import TaskConfig, TaskSpec

    monkeypatch.chdir(tmp_path)
    engine = LocalEngine(Config(home=tmp_path / "home"))
    try:
        big = np.arange(Storage.MAP_MIN // 8 + 1, dtype=np.float64)  # mapped as shipped
        ref = engine.artifacts.put(big, "input 'a'")
        spec = TaskSpec(name="t", code="y = float(a[-1])", inputs=("a",), outputs=("y",))
        _, task_key = engine.bundle(spec)

        attempts: list[AttemptSpec] = []

        def run() -> AttemptResult:
            attempt = AttemptSpec(
                execution_id=uuid.uuid4().hex[:16],
                node="t",
                attempt=1,
                task=spec,
                task_key=task_key,
                config=TaskConfig(executor="local"),
                inputs={"a": ref},
            )
            attempts.append(attempt)
            return engine.executor("local").run(attempt, _Sink())

        first = run()
        assert first.status == "succeeded"
        sent = json.loads(engine.storage.read_bytes(f"{attempts[0].prefix}/attempt.json"))
        assert sent["vouched"][ref.uri][0] == ref.hash  # the engine wrote it: vouched for
        assert engine.artifacts.load(first.outputs["y"]) == big[-1]
        path = engine.storage.root / ref.uri
        data = bytearray(path.read_bytes())
        data[-1] ^= 0x01  # the last element, same size: only the hash sees it
        path.write_bytes(bytes(data))
        second = run()
        assert second.status == "failed"
        assert "input 'a'" in second.error["message"]
        assert "does not match its hash" in second.error["message"]
    finally:
        engine.close()


class _Sink:
    def log(self, stream: str, text: str) -> None:
        pass


@pytest.mark.skipif(sys.version_info >= (3, 13), reason="3.13+ maps without a descriptor")
def test_live_mappings_are_bounded_so_descriptors_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from papercrane.backend import mapped

    monkeypatch.setattr(mapped, "MAX_LIVE", 2)  # the bound, made small (not a double)
    digest, key = stored(tmp_path)
    storage = storage_at(tmp_path)
    held = [storage.load_value(key, digest, NPY, verify=False) for _ in range(3)]
    assert [a.flags.owndata for a in held] == [False, False, True]  # the third was read
    del held[0]
    assert not storage.load_value(key, digest, NPY).flags.owndata  # room again


def test_the_switch_reads_big_arrays_into_memory_instead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest, key = stored(tmp_path)
    monkeypatch.setenv("PAPERCRANE_MAP_ARRAYS", "0")
    a = storage_at(tmp_path).load_value(key, digest, NPY)
    assert a.flags.owndata and np.array_equal(a, BIG)
    monkeypatch.setenv("PAPERCRANE_MAP_ARRAYS", "1")
    assert not storage_at(tmp_path).load_value(key, digest, NPY).flags.owndata
