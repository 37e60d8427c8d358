"""A plug-in registry with a ``saved`` file keeps its entry-point scan between sessions,
and scans again when a distribution is installed or removed (real distributions in a
folder on ``sys.path``; the scan itself is counted, not replaced)."""

from __future__ import annotations

import json
import shutil
import sys
import threading
from importlib import metadata
from pathlib import Path

import pytest

from papercrane.backend.errors import ConfigError
from papercrane.backend.plugins import PluginRegistry

GROUP = "papercrane.test_plugins"


def _dist(site: Path, name: str, entries: dict[str, str]) -> Path:
    """What pip leaves for a distribution declaring entry points in GROUP."""
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = "".join(f"{k} = {v}\n" for k, v in entries.items())
    (info / "entry_points.txt").write_text(f"[{GROUP}]\n{lines}")
    return info


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.setattr(sys, "path", [*sys.path, str(folder)])
    return folder


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The groups ``importlib.metadata.entry_points`` was asked for."""
    real = metadata.entry_points
    asked: list[str] = []

    def counting(**selection: str) -> metadata.EntryPoints:
        asked.append(selection.get("group", ""))
        return real(**selection)

    monkeypatch.setattr(metadata, "entry_points", counting)
    return asked


def registry(saved: Path | None) -> PluginRegistry:
    return PluginRegistry(GROUP, {"builtin": "json:dumps"}, "thing", saved)


def test_a_new_session_reads_the_saved_scan(tmp_path: Path, site: Path, scans: list[str]) -> None:
    _dist(site, "plugdist", {"extra": "json:loads"})
    saved = tmp_path / "cache" / "entry-points.json"
    assert registry(saved).extra_names() == ["extra"] and saved.exists()
    again = registry(saved)
    assert again.extra_names() == ["extra"]
    assert again.load("extra") is __import__("json").loads
    assert scans == [GROUP]  # the second session did not scan


def test_installing_or_removing_a_distribution_scans_again(
    tmp_path: Path, site: Path, scans: list[str]
) -> None:
    saved = tmp_path / "entry-points.json"
    first = _dist(site, "plugdist", {"extra": "json:loads"})
    assert registry(saved).extra_names() == ["extra"]
    _dist(site, "otherdist", {"more": "json:JSONDecoder"})
    assert registry(saved).extra_names() == ["extra", "more"]
    shutil.rmtree(first)
    assert registry(saved).extra_names() == ["more"]
    assert len(scans) == 3


def test_an_unreadable_saved_scan_is_scanned_again(
    tmp_path: Path, site: Path, scans: list[str]
) -> None:
    _dist(site, "plugdist", {"extra": "json:loads"})
    saved = tmp_path / "entry-points.json"
    saved.write_text("{not json")
    assert registry(saved).extra_names() == ["extra"]
    assert registry(saved).extra_names() == ["extra"]
    assert len(scans) == 1  # the second read the file the first rewrote


def test_duplicates_still_raise_from_a_saved_scan(tmp_path: Path, site: Path) -> None:
    _dist(site, "plugdist", {"builtin": "json:loads"})  # another target under a built-in name
    saved = tmp_path / "entry-points.json"
    for _ in range(2):  # scanned, then read back
        with pytest.raises(ConfigError, match="two things are registered as 'builtin'"):
            registry(saved).names()
    assert saved.exists()


def test_without_a_file_every_registry_scans(site: Path, scans: list[str]) -> None:
    _dist(site, "plugdist", {"extra": "json:loads"})
    assert registry(None).extra_names() == registry(None).extra_names() == ["extra"]
    assert len(scans) == 2


def test_registries_scanning_at_once_leave_a_whole_file(tmp_path: Path, site: Path) -> None:
    """Threads of one process (a map's workers) each write through a temporary file of
    their own: every registry sees the plug-in and the file left is a complete scan."""
    _dist(site, "plugdist", {"extra": "json:loads"})
    saved = tmp_path / "cache" / "entry-points.json"
    start = threading.Barrier(8)
    found: list[list[str]] = []

    def scan() -> None:
        start.wait()
        found.append(registry(saved).extra_names())

    threads = [threading.Thread(target=scan) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert found == [["extra"]] * 8
    assert json.loads(saved.read_text())["entry_points"] == [["extra", "json:loads"]]
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]  # no temporary left
