"""An unusable PAPERCRANE_DB or PAPERCRANE_STORAGE is one line in the notebook naming the
setting and its value, as on the command line (tests/unit/test_cli.py), not SQLAlchemy's
or fsspec's traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from .kernel import Kernel

pytestmark = pytest.mark.kernel


def test_bad_database_and_storage_settings_are_one_line(tmp_path: Path, workdir: Path) -> None:
    not_a_db = tmp_path / "notes.db"
    not_a_db.write_text("these are my notes, not a database\n")
    k = Kernel({"PAPERCRANE_HOME": str(tmp_path / "home")}, workdir)
    try:
        k.run("%load_ext papercrane\nimport os").ok()
        cases = [
            ("PAPERCRANE_DB", "bogus://x", "database URL 'bogus://x'"),
            ("PAPERCRANE_DB", f"sqlite:///{not_a_db}", f"database file {not_a_db}"),
            ("PAPERCRANE_STORAGE", "bogus://x", "storage URL 'bogus://x'"),
        ]
        for setting, value, said in cases:
            # (the engine is made at the first task cell that needs it: a failed one is
            # made again at the next, with the settings then in force)
            k.run(
                "for _k in ('PAPERCRANE_DB', 'PAPERCRANE_STORAGE'):\n"
                "    os.environ.pop(_k, None)\n"
                f"os.environ[{setting!r}] = {value!r}"
            ).ok()
            r = k.run("%%task t\ny = 1")
            assert r.status == "error", r.text
            assert r.error["ename"] == "UsageError", r.error
            message = r.error["evalue"]
            assert said in message and setting in message, message
            assert "\n" not in message and "Traceback" not in r.text
        k.run("os.environ.pop('PAPERCRANE_STORAGE')").ok()
        k.run("%%task t\ny = 1").ok()  # with the settings fixed, the same cell runs
    finally:
        k.shutdown()
