"""A local attempt adds the kernel's own ``sys.path`` folders to its own, in the kernel's
order and where the kernel has them relative to the folders both have."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from papercrane.backend.search_path import adopt_path, kernel_path


def test_missing_entries_go_where_the_kernel_has_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    here = str(tmp_path)
    monkeypatch.setattr(sys, "path", [here, "/std", "/site"])
    kernel = ["/first", "/second", here, "/std", "/mid", "/site/", "/last"]
    assert adopt_path(kernel) == ["/first", "/second", "/mid", "/last"]
    assert sys.path == ["/first", "/second", here, "/std", "/mid", "/site", "/last"]
    assert adopt_path(kernel) == []  # (an attempt that already has them: nothing twice)


def test_the_kernel_sends_absolute_folders(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", ["", "lib", "/abs", Path("/not-a-string")])
    assert kernel_path() == [f"{tmp_path}{os.sep}", str(tmp_path / "lib"), "/abs"]


def test_a_new_process_imports_from_a_folder_the_kernel_added(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "extmod.py").write_text("K = 5\n")
    script = (
        "import sys\nfrom papercrane.backend.search_path import adopt_path\n"
        f"adopt_path({[str(tmp_path / 'lib')]!r})\nimport extmod\nprint(extmod.K)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert done.stdout.strip() == "5", done.stderr
