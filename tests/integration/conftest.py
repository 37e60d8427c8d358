from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
