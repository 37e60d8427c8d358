"""Storage keeps good objects and only discards bytes that contradict their address."""

from __future__ import annotations

from pathlib import Path

import pytest

from papercrane.backend.errors import ConfigError, CorruptArtifact
from papercrane.backend.serializers import SerializerRegistry
from papercrane.backend.storage import Storage


def test_wrong_expected_hash_keeps_a_good_object(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    text = SerializerRegistry().get("text")
    digest, key, _ = storage.put_value("hello", text)
    with pytest.raises(CorruptArtifact):
        storage.load_value(key, "0" * 64, text)
    assert storage.load_value(key, digest, text) == "hello"


def test_bytes_that_contradict_their_address_are_removed(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    text = SerializerRegistry().get("text")
    digest, key, _ = storage.put_value("hello", text)
    (tmp_path / key).write_bytes(b"jello")
    with pytest.raises(CorruptArtifact):
        storage.load_value(key, digest, text)
    assert not storage.exists(key)
    assert storage.put_value("hello", text) == (digest, key, 5)  # rewritten, good again
    assert storage.load_value(key, digest, text) == "hello"


def test_unwritable_root_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="not writable.*PAPERCRANE_HOME"):
        Storage(str(blocker / "store")).check_writable()


def test_memory_urls_are_not_shareable() -> None:
    assert not Storage("memory://x").shareable
    assert Storage("/tmp/x").shareable
