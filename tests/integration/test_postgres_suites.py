"""The engine and scheduler unit suites again, on PostgreSQL instead of SQLite.

Every test of ``tests/unit/test_engine.py`` and ``tests/unit/test_scheduler.py`` that
takes the ``engine`` fixture is collected here too, with ``engine`` overridden to use a
fresh PostgreSQL database (``pg_url``, tests/conftest.py). The suites are not copied:
a test added there runs here as well.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest

from papercrane.backend.config import Config
from papercrane.backend.engine import LocalEngine
from tests.unit import test_engine, test_scheduler

pytestmark = pytest.mark.postgres


@pytest.fixture
def engine(tmp_path: Path, pg_url: str) -> Iterator[LocalEngine]:
    e = LocalEngine(Config(home=tmp_path / "home", db_url=pg_url))
    yield e
    e.close()


#: Tests of those suites that check SQLite itself (none yet), by name.
SQLITE_ONLY: set[str] = set()


def _adopt(suite: object, prefix: str) -> None:
    for name, fn in vars(suite).items():
        if name in SQLITE_ONLY or not name.startswith("test_") or not callable(fn):
            continue
        if "engine" in inspect.signature(fn).parameters:
            globals()[f"test_{prefix}_{name[len('test_') :]}"] = fn


_adopt(test_engine, "engine")
_adopt(test_scheduler, "scheduler")
