from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ..server_fixture import ServerProcess
from .kernel import Kernel


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "papercrane-home"
    path.mkdir()
    return path


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def kernel(home: Path, workdir: Path) -> Iterator[Kernel]:
    k = Kernel({"PAPERCRANE_HOME": str(home)}, workdir)
    k.run("%load_ext papercrane").ok()
    try:
        yield k
    finally:
        k.shutdown()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A real ``papercrane server`` of this test's own (an empty home, SQLite)."""
    s = ServerProcess(tmp_path / "server-home").start()
    try:
        yield s
    finally:
        s.stop()
