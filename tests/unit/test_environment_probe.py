"""The environment probe keeps its module -> distributions map in a file between
sessions, and scans again when anything on ``sys.path`` changes; a local module's hash
covers the local modules it imports and, for a package, all its files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

from papercrane.backend.environment import EnvironmentProbe


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the full scans of installed distributions."""
    real = metadata.packages_distributions
    done: list[int] = []

    def counting() -> dict[str, list[str]]:
        done.append(1)
        return real()

    monkeypatch.setattr(metadata, "packages_distributions", counting)
    return done


def test_a_new_session_reads_the_saved_map(tmp_path: Path, scans: list[int]) -> None:
    saved = tmp_path / "cache" / "module-dists.json"
    first = EnvironmentProbe(saved).environment({"sqlalchemy"})
    assert saved.exists() and len(scans) == 1
    second = EnvironmentProbe(saved).environment({"sqlalchemy"})
    assert second == first and "SQLAlchemy" in second.packages
    assert len(scans) == 1  # the second session did not scan


def test_a_changed_folder_on_sys_path_scans_again(
    tmp_path: Path, scans: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = tmp_path / "module-dists.json"
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.setattr(sys, "path", [*sys.path, str(site)])
    EnvironmentProbe(saved).environment({"sqlalchemy"})
    (site / "newdist-1.0.dist-info").mkdir()  # what installing a distribution does
    EnvironmentProbe(saved).environment({"sqlalchemy"})
    assert len(scans) == 2


def test_an_unreadable_saved_map_is_scanned_again(tmp_path: Path, scans: list[int]) -> None:
    saved = tmp_path / "module-dists.json"
    saved.write_text("{not json")
    env = EnvironmentProbe(saved).environment({"sqlalchemy"})
    assert "SQLAlchemy" in env.packages and len(scans) == 1


def test_other_files_on_sys_path_keep_the_saved_map(
    tmp_path: Path, scans: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = tmp_path / "module-dists.json"
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    monkeypatch.setattr(sys, "path", [*sys.path, str(notebooks)])
    EnvironmentProbe(saved).environment({"sqlalchemy"})
    (notebooks / "out.ipynb").write_text("{}")  # a notebook's folder changes all the time
    EnvironmentProbe(saved).environment({"sqlalchemy"})
    assert len(scans) == 1


def test_a_folder_of_plain_modules_added_to_sys_path_keeps_the_saved_map(
    tmp_path: Path, scans: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = tmp_path / "module-dists.json"
    EnvironmentProbe(saved).environment({"sqlalchemy"})
    src = tmp_path / "src"
    src.mkdir()
    (src / "helpers.py").write_text("X = 1\n")
    monkeypatch.setattr(sys, "path", [str(src), *sys.path])  # sys.path.insert(0, "src")
    EnvironmentProbe(saved).environment({"sqlalchemy"})
    assert len(scans) == 1


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The distributions looked up one by one (``metadata.distribution``)."""
    real = metadata.distribution
    asked: list[str] = []

    def counting(name: str) -> metadata.Distribution:
        asked.append(name)
        return real(name)

    monkeypatch.setattr(metadata, "distribution", counting)
    return asked


def _fake_dist(site: Path, version: str) -> Path:
    info = site / "fakedist_pc-1.dist-info"
    info.mkdir()
    meta = f"Metadata-Version: 2.1\nName: fakedist-pc\nVersion: {version}\n"
    (info / "METADATA").write_text(meta)
    (info / "top_level.txt").write_text("fakedist_pc\n")
    return info


def test_a_new_session_reads_the_saved_versions(tmp_path: Path, lookups: list[str]) -> None:
    saved = tmp_path / "module-dists.json"
    first = EnvironmentProbe(saved).environment({"sqlalchemy"})
    assert lookups == ["SQLAlchemy"]
    second = EnvironmentProbe(saved).environment({"sqlalchemy"})
    assert lookups == ["SQLAlchemy"]  # the second session did not look it up
    assert second == first and second.packages["SQLAlchemy"] == metadata.version("SQLAlchemy")


def test_a_replaced_metadata_folder_is_read_again(
    tmp_path: Path, lookups: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = tmp_path / "module-dists.json"
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.setattr(sys, "path", [*sys.path, str(site)])
    info = _fake_dist(site, "1.0")
    assert EnvironmentProbe(saved).environment({"fakedist_pc"}).packages == {"fakedist-pc": "1.0"}
    shutil.rmtree(info)  # reinstalled under the same folder name, other metadata
    _fake_dist(site, "1.0.post1")
    env = EnvironmentProbe(saved).environment({"fakedist_pc"})
    assert env.packages == {"fakedist-pc": "1.0.post1"}
    assert lookups == ["fakedist-pc", "fakedist-pc"]


def test_versions_found_after_sys_path_changed_are_not_saved(
    tmp_path: Path, lookups: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = tmp_path / "module-dists.json"
    probe = EnvironmentProbe(saved)
    probe.environment({"sqlalchemy"})  # the map (and its stamp) is taken here
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    probe.environment({"numpy"})
    assert "numpy" not in json.loads(saved.read_text())["versions"]
    assert "SQLAlchemy" in json.loads(saved.read_text())["versions"]


@pytest.fixture
def beside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder of local modules on ``sys.path``, as the notebook's own folder is; the
    modules written there are forgotten again afterwards."""
    folder = tmp_path / "notebook"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    before = set(sys.modules)
    yield folder
    for name in set(sys.modules) - before:
        del sys.modules[name]


def _edit(path: Path, text: str) -> None:
    """Write ``path`` as an editor would, a moment after its last change (a file written
    twice within the file system's clock tick keeps its mtime)."""
    old = path.stat().st_mtime_ns if path.exists() else 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    stamp = max(path.stat().st_mtime_ns, old + 1_000_000_000)
    os.utime(path, ns=(stamp, stamp))


def _local(probe: EnvironmentProbe, module: str) -> dict[str, str]:
    return probe.environment({module}).local_modules


def test_editing_a_module_a_local_module_imports_changes_its_hash(beside: Path) -> None:
    _edit(beside / "pc_helpers.py", "from pc_sub import OFFSET\ndef f(x):\n    return x + OFFSET\n")
    _edit(beside / "pc_sub.py", "OFFSET = 100\n")
    probe = EnvironmentProbe()
    first = _local(probe, "pc_helpers")
    assert list(first) == ["pc_helpers"]
    assert _local(probe, "pc_helpers") == first
    _edit(beside / "pc_sub.py", "OFFSET = 200\n")
    assert _local(probe, "pc_helpers") != first
    assert _local(EnvironmentProbe(), "pc_helpers") == _local(probe, "pc_helpers")


def test_editing_a_submodule_of_a_local_package_changes_its_hash(beside: Path) -> None:
    _edit(beside / "pc_pkg" / "__init__.py", "")
    _edit(beside / "pc_pkg" / "mod.py", "K = 1\ndef g(x):\n    return x + K\n")
    probe = EnvironmentProbe()
    first = _local(probe, "pc_pkg.mod")
    assert list(first) == ["pc_pkg"]
    _edit(beside / "pc_pkg" / "mod.py", "K = 5\ndef g(x):\n    return x + K\n")
    second = _local(probe, "pc_pkg.mod")
    assert second != first
    # A file added to the package (or a subpackage) is part of it too.
    (beside / "pc_pkg" / "deep").mkdir()
    _edit(beside / "pc_pkg" / "deep" / "more.py", "X = 1\n")
    third = _local(probe, "pc_pkg")
    assert third not in (first, second)


def test_installed_and_standard_modules_are_not_hashed_as_local(beside: Path) -> None:
    source = "import json\nimport numpy as np\nfrom sqlalchemy import text\nimport pc_missing\n"
    _edit(beside / "pc_plain.py", source)
    local = _local(EnvironmentProbe(), "pc_plain")
    # One plain module keeps the hash it had before closures: its own source's.
    assert local == {"pc_plain": hashlib.sha256(source.encode()).hexdigest()[:16]}


def test_modules_that_import_each_other_are_hashed_once(beside: Path) -> None:
    _edit(beside / "pc_a.py", "import pc_b\n")
    _edit(beside / "pc_b.py", "from pc_a import *\n")
    probe = EnvironmentProbe()
    first = _local(probe, "pc_a")
    _edit(beside / "pc_b.py", "from pc_a import *\nY = 2\n")
    assert _local(probe, "pc_a") != first


def test_a_module_differs_from_its_file_when_edited_since_it_was_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib
    import sys
    import time

    from papercrane.backend.environment import live_module_differs

    path = tmp_path / "livemod.py"
    path.write_text("K = 1\nN = 1\nN = N + 1\ndef f(x):\n    return x + K\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module("livemod")
    try:
        assert live_module_differs("livemod") is None  # (N, set twice, is not compared)
        path.write_text("K = 1\nN = 1\nN = N + 1\ndef f(x):\n    return x * K\n")
        stamp = time.time() + 2
        os.utime(path, (stamp, stamp))
        assert live_module_differs("livemod") == "its function f() is not the file's"
        importlib.reload(mod)
        assert live_module_differs("livemod") is None
        mod.K = 99  # a cell changed it: the inline task would not run the file
        assert live_module_differs("livemod") == "K is 99 here and 1 in the file"
    finally:
        sys.modules.pop("livemod", None)


def test_a_module_asked_for_before_its_folder_is_on_sys_path_is_found_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A task run before the cell that does sys.path.insert(0, "lib"): the answer "no
    # such module" must not stay, or the module's source never joins the task's key.
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "pc_late_mod.py").write_text("K = 1\n")
    probe = EnvironmentProbe()
    assert probe.environment({"pc_late_mod"}).local_modules == {}
    monkeypatch.setattr(sys, "path", [str(tmp_path / "lib"), *sys.path])
    assert set(probe.environment({"pc_late_mod"}).local_modules) == {"pc_late_mod"}


def test_a_class_method_edited_since_import_differs_from_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A method (plain, static, class or a property's) is compared as a function is:
    an inline task would run the imported one while the key reads the edited file."""
    import importlib
    import sys
    import time

    from papercrane.backend.environment import live_module_differs

    path = tmp_path / "livecls.py"
    source = (
        "class Scale:\n"
        "    def apply(self, x):\n        return x * 2\n"
        "    @staticmethod\n    def unit():\n        return 1\n"
        "    @property\n    def name(self):\n        return 'scale'\n"
        "def apply(x):\n    return x\n"
    )
    path.write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("livecls")
    try:
        assert live_module_differs("livecls") is None  # (apply and Scale.apply: apart)
        stamp = time.time()
        for old, new, method in (
            ("return x * 2", "return x * 3", "Scale.apply"),
            ("return 1\n", "return 2\n", "Scale.unit"),
            ("return 'scale'", "return 'size'", "Scale.name"),
        ):
            path.write_text(source.replace(old, new))
            stamp += 2
            os.utime(path, (stamp, stamp))
            assert live_module_differs("livecls") == f"its method {method}() is not the file's"
        path.write_text(source)
        os.utime(path, (stamp + 2, stamp + 2))
        assert live_module_differs("livecls") is None
    finally:
        sys.modules.pop("livecls", None)
