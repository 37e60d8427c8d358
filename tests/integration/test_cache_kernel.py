"""Cache correctness in a real kernel. A task appends to a file every time its code really
runs, so each test can prove whether a run was a hit (no append) or a miss (append)."""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from .kernel import Kernel

pytestmark = pytest.mark.kernel


class Counter:
    def __init__(self, kernel: Kernel, workdir: Path) -> None:
        self.kernel = kernel
        self.path = workdir / "runs.log"
        kernel.run(f"LOG = {str(self.path)!r}").ok()

    @property
    def runs(self) -> int:
        return len(self.path.read_text().splitlines()) if self.path.exists() else 0

    def task(self, body: str, flags: str = "") -> str:
        cell = f"%%task work --cache {flags}\nopen(LOG, 'a').write('ran\\n')\n{body}"
        r = self.kernel.run(cell).ok()
        return r.widget["text/plain"]


@pytest.fixture
def counter(kernel: Kernel, workdir: Path) -> Counter:
    return Counter(kernel, workdir)


def test_second_run_is_a_hit_without_side_effects(counter: Counter, kernel: Kernel) -> None:
    kernel.run("n = 10").ok()
    first = counter.task("out = n * 2\nout")
    assert counter.runs == 1 and "cache: miss" in first
    kernel.run("out = None").ok()
    second = counter.task("out = n * 2\nout")
    assert counter.runs == 1
    assert "work: cached" in second and "cache: hit" in second and "from execution" in second
    r = kernel.run("print(out)").ok()
    assert r.stdout.strip() == "20"


def test_hit_displays_the_final_expression(counter: Counter, kernel: Kernel) -> None:
    kernel.run("n = 4").ok()
    counter.task("out = n + 1\nout * 100")
    r = kernel.run("%%task work --cache\nopen(LOG, 'a').write('ran\\n')\nout = n + 1\nout * 100")
    assert counter.runs == 1
    assert {"text/plain": "500"} in r.displays


def test_comments_and_whitespace_keep_the_cache_but_code_edits_miss(
    counter: Counter, kernel: Kernel
) -> None:
    kernel.run("n = 3").ok()
    counter.task("out = n * 2")
    counter.task("# a comment\nout = n   *   2  # why\n\n")
    assert counter.runs == 1
    counter.task("out = n * 3")
    assert counter.runs == 2


def test_changed_input_value_misses(counter: Counter, kernel: Kernel) -> None:
    kernel.run("import numpy as np\ndata = np.arange(100)").ok()
    counter.task("total = int(data.sum())")
    kernel.run("data = np.arange(100)").ok()  # a new object with the same content: hit
    counter.task("total = int(data.sum())")
    assert counter.runs == 1
    kernel.run("data = np.arange(101)").ok()
    counter.task("total = int(data.sum())")
    assert counter.runs == 2
    kernel.run("data = np.arange(100)").ok()  # back to the first value: its entry is still there
    counter.task("total = int(data.sum())")
    assert counter.runs == 2


def test_helper_functions(counter: Counter, kernel: Kernel) -> None:
    helpers = (
        "SCALE = 3\ndef inner(v):\n    return v + 1\ndef helper(v):\n    return inner(v) * SCALE"
    )
    kernel.run(helpers).ok()
    counter.task("out = helper(2)")
    # Re-running the unchanged cell that defines the helpers keeps the cache.
    kernel.run(helpers).ok()
    kernel.run("\n\n# moved down a few lines\n" + helpers).ok()
    counter.task("out = helper(2)")
    assert counter.runs == 1
    # Changing a helper the cell calls, even indirectly, misses.
    kernel.run("def inner(v):\n    return v + 2").ok()
    counter.task("out = helper(2)")
    assert counter.runs == 2
    # So does changing a global the helper reads.
    kernel.run("SCALE = 4").ok()
    counter.task("out = helper(2)")
    assert counter.runs == 3
    assert kernel.run("print(out)").ok().stdout.strip() == "16"


def test_listing_outputs_in_another_order_hits(counter: Counter, kernel: Kernel) -> None:
    kernel.run("n = 3").ok()
    counter.task("c = n + 1\nd = n * 2", "--outputs c,d")
    text = counter.task("c = n + 1\nd = n * 2", "--outputs d,c")
    assert counter.runs == 1 and "cache: hit" in text
    assert text.index("-> d") < text.index("-> c")  # as this cell lists them
    assert kernel.run("print(c, d)").ok().stdout.strip() == "4 6"


def test_cache_version_bump_misses(counter: Counter) -> None:
    counter.task("out = 1")
    counter.task("out = 1", "--cache-version 2")
    assert counter.runs == 2
    counter.task("out = 1", '--cache-version "2"')  # (quoted as in a shell: the same)
    assert counter.runs == 2
    counter.task("out = 1", "--cache-version 2")
    assert counter.runs == 2


def _fake_dist(root: Path, version: str) -> None:
    for old in root.glob("fakepkg_pc-*.dist-info"):
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    pkg = root / "fakepkg_pc"
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text(f"VERSION = {version!r}\n")
    info = root / f"fakepkg_pc-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fakepkg-pc\nVersion: {version}\n")
    (info / "top_level.txt").write_text("fakepkg_pc\n")


def test_upgrading_an_imported_package_misses(
    counter: Counter, kernel: Kernel, workdir: Path
) -> None:
    site = workdir / "site"
    site.mkdir()
    _fake_dist(site, "1.0")
    kernel.run(f"import sys\nsys.path.insert(0, {str(site)!r})").ok()
    body = (
        f"import sys\nsys.path.insert(0, {str(site)!r})\nimport fakepkg_pc\nv = fakepkg_pc.VERSION"
    )
    counter.task(body)
    counter.task(body)
    assert counter.runs == 1
    _fake_dist(site, "2.0")  # what `pip install -U` does: a new .dist-info folder
    text = counter.task(body)
    assert counter.runs == 2 and "cache: miss" in text
    assert kernel.run("print(v)").ok().stdout.strip() == "2.0"


@pytest.mark.parametrize("damage", ["corrupt", "delete"])
def test_damaged_entry_is_never_served(
    counter: Counter, kernel: Kernel, home: Path, damage: str
) -> None:
    kernel.run("n = 5").ok()
    counter.task("out = 'x' * n")
    with closing(sqlite3.connect(home / "papercrane.db")) as db:
        (uri,) = db.execute("SELECT uri FROM artifacts WHERE preview = \"'xxxxx'\"").fetchone()
    blob = home / "store" / uri
    if damage == "corrupt":
        blob.write_bytes(b"yyyyy")  # same size, wrong bytes: only the hash check sees it
    else:
        blob.unlink()
    text = counter.task("out = 'x' * n")
    assert counter.runs == 2 and "damaged" in text
    assert kernel.run("print(out)").ok().stdout.strip() == "xxxxx"
    counter.task("out = 'x' * n")  # the entry was replaced by a good one
    assert counter.runs == 2


@pytest.mark.parametrize(
    ("executor", "n"),
    # 2.4 MB: over hashing.LARGE, so its digest is BLAKE3's; 17.6 MB: over
    # Storage.MAP_MIN, so the kernel gets the local task's output as a mapped array
    [("inline", 300_000), ("local", 300_000), ("local", 2_200_000)],
)
def test_big_array_changed_in_place_between_tasks_is_a_new_input(
    counter: Counter, kernel: Kernel, executor: str, n: int
) -> None:
    """A task's output bound in the notebook is the very object a plain cell can change in
    place: the next task must hash what it holds now, not reuse the output's digest."""
    kernel.run("import numpy as np").ok()
    kernel.run(f"%%task make --executor {executor}\na = np.arange({n}.0)").ok()
    flags = f"--executor {executor}"
    counter.task("s = float(a.sum())", flags)
    counter.task("s = float(a.sum())", flags)
    assert counter.runs == 1
    kernel.run("a[0] += 1").ok()  # the same object, other bytes
    text = counter.task("s = float(a.sum())", flags)
    assert counter.runs == 2 and "cache: miss" in text
    r = kernel.run(f"print(s == float(np.arange({n}.0).sum()) + 1)").ok()
    assert r.stdout.strip() == "True"
    # Its lineage is no longer the task's output either.
    r = kernel.run("%lineage a")
    assert "was changed since" in r.text


@pytest.mark.parametrize("n", [300_000, 2_200_000])  # read, and mapped (see above)
def test_corrupted_big_array_is_never_served(
    counter: Counter, kernel: Kernel, home: Path, n: int
) -> None:
    kernel.run(f"import numpy as np\nn = {n}").ok()
    counter.task("big = np.arange(n, dtype=np.float64)")
    with closing(sqlite3.connect(home / "papercrane.db")) as db:
        (uri, digest) = db.execute(
            "SELECT uri, hash FROM artifacts WHERE python_type = 'numpy.ndarray'"
        ).fetchone()
    assert digest.startswith("blake3-")
    blob = home / "store" / uri
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, same size: only the BLAKE3 check sees it
    blob.write_bytes(bytes(data))
    text = counter.task("big = np.arange(n, dtype=np.float64)")
    assert counter.runs == 2 and "damaged" in text
    r = kernel.run("print(bool((big == np.arange(n)).all()))").ok()
    assert r.stdout.strip() == "True"
    counter.task("big = np.arange(n, dtype=np.float64)")  # a good entry replaced it
    assert counter.runs == 2


def _edit(path: Path, text: str) -> None:
    """Write ``path`` a moment after its last change, as a person editing it would (two
    writes within the file system's clock tick would keep its mtime)."""
    old = path.stat().st_mtime_ns if path.exists() else 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    stamp = max(path.stat().st_mtime_ns, old + 1_000_000_000)
    os.utime(path, ns=(stamp, stamp))


@pytest.mark.parametrize("zygote", ["1", "0"])
def test_a_folder_a_cell_puts_on_sys_path_reaches_local_tasks_and_their_key(
    counter: Counter, kernel: Kernel, workdir: Path, zygote: str
) -> None:
    kernel.run(f"import os\nos.environ['PAPERCRANE_LOCAL_ZYGOTE'] = {zygote!r}").ok()
    _edit(workdir / "lib" / "extmod.py", "K = 5\ndef g(x):\n    return x + K\n")
    body = "import extmod\nr = extmod.g(1)"
    # Asked before the folder is on sys.path: no such module, here or in the task.
    r = kernel.run(f"%%task work --cache --executor local\n{body}")
    assert r.status == "error" and "No module named 'extmod'" in r.text
    kernel.run("import sys\nsys.path.insert(0, 'lib')").ok()
    counter.task(body, "--executor local")
    assert kernel.run("print(r)").ok().stdout.strip() == "6"
    assert counter.runs == 1  # (the failed run above did not get as far as the log)
    _edit(workdir / "lib" / "extmod.py", "K = 6\ndef g(x):\n    return x + K\n")
    text = counter.task(body, "--executor local")
    assert counter.runs == 2 and "cache: miss" in text
    assert kernel.run("print(r)").ok().stdout.strip() == "7"


def test_editing_a_module_a_local_helper_imports_misses(
    counter: Counter, kernel: Kernel, workdir: Path
) -> None:
    _edit(workdir / "helpers.py", "from sub import OFFSET\ndef f(x):\n    return x + OFFSET\n")
    _edit(workdir / "sub.py", "OFFSET = 100\n")
    counter.task("import helpers\nr1 = helpers.f(1)")
    counter.task("import helpers\nr1 = helpers.f(1)")
    assert counter.runs == 1
    _edit(workdir / "sub.py", "OFFSET = 200\n")
    text = counter.task("import helpers\nr1 = helpers.f(1)")
    assert counter.runs == 2 and "cache: miss" in text
    assert kernel.run("print(r1)").ok().stdout.strip() == "201"


def test_editing_a_submodule_of_a_local_package_misses(
    counter: Counter, kernel: Kernel, workdir: Path
) -> None:
    _edit(workdir / "pkg" / "__init__.py", "")
    _edit(workdir / "pkg" / "mod.py", "K = 1\ndef g(x):\n    return x + K\n")
    counter.task("from pkg.mod import g\nr2 = g(1)")
    counter.task("from pkg.mod import g\nr2 = g(1)")
    assert counter.runs == 1
    _edit(workdir / "pkg" / "mod.py", "K = 5\ndef g(x):\n    return x + K\n")
    text = counter.task("from pkg.mod import g\nr2 = g(1)")
    assert counter.runs == 2 and "cache: miss" in text
    assert kernel.run("print(r2)").ok().stdout.strip() == "6"


@pytest.mark.parametrize(
    ("index", "kind"),
    [("None", "RangeIndex"), ('pd.date_range("2024-01-01", periods=2)', "DatetimeIndex")],
)
def test_a_task_made_frame_keeps_its_index_and_its_lineage(
    counter: Counter, kernel: Kernel, index: str, kind: str
) -> None:
    # (a DatetimeIndex read back has pandas' cache of its unit filled: not its value)
    kernel.run("import pandas as pd").ok()
    make = f'pd.DataFrame({{"a": [1, 2]}}, index={index})'
    kernel.run(f"%%task mk\ndf = {make}").ok()
    r = kernel.run(f"print(type(df.index).__name__, df.equals({make}))")
    assert r.ok().stdout.strip() == f"{kind} True"
    lineage = kernel.run("%lineage df").ok().text
    assert "mk" in lineage and "not produced by a task" not in lineage
    # A downstream task run in the notebook, then in the workflow: the same input.
    counter.task("total = int(df['a'].sum())")
    kernel.run("%workflow run").ok()
    assert counter.runs == 1


@pytest.mark.parametrize(
    "cls",
    [
        "class P:\n    def __init__(self, x):\n        self.x = x",
        "import dataclasses\n@dataclasses.dataclass\nclass P:\n    x: int",
    ],
    ids=["class", "dataclass"],
)
def test_a_task_that_pickles_a_notebook_class_hits_on_its_second_run(
    counter: Counter, kernel: Kernel, cls: str
) -> None:
    kernel.run(cls).ok()
    counter.task("p = P(3)")
    text = counter.task("p = P(3)")
    assert counter.runs == 1 and "cache: hit" in text
    assert kernel.run("print(p.x)").ok().stdout.strip() == "3"


def test_an_inline_task_on_a_module_edited_since_the_kernel_imported_it_is_not_cached(
    kernel: Kernel, workdir: Path
) -> None:
    """The key reads helpers2.py from disk; an inline task runs the module the kernel
    imported before the edit. Its result must not be cached under the edited file, or a
    local run (which imports the file) would be served the old module's result."""
    _edit(workdir / "helpers2.py", "K = 1\n")
    cell = "%%task g --cache --executor {}\nimport helpers2\nw = helpers2.K"
    kernel.run(cell.format("inline")).ok()
    assert kernel.run("print(w)").ok().stdout.strip() == "1"
    _edit(workdir / "helpers2.py", "K = 2\n")
    stale = kernel.run(cell.format("inline")).ok()
    assert "not caching this result" in stale.stderr and "K is 1 here and 2 in the file" in (
        stale.stderr
    )
    assert kernel.run("print(w)").ok().stdout.strip() == "1"  # (the kernel's module ran)
    fresh = kernel.run(cell.format("local")).ok()
    assert "cache: miss" in fresh.widget["text/plain"]
    assert kernel.run("print(w)").ok().stdout.strip() == "2"
    kernel.run("import importlib\nimportlib.reload(helpers2)").ok()
    reloaded = kernel.run(cell.format("inline")).ok()
    assert "not caching" not in reloaded.stderr


@pytest.mark.parametrize(
    "categories",
    ["[1, 2, 3]", "[0.5, 1.5, 2.5]", "pd.to_datetime(['2024-01-01', '2024-02-01', '2024-03-01'])"],
    ids=["int", "float", "datetime"],
)
def test_a_task_made_categorical_frame_keeps_its_categories_and_its_lineage(
    kernel: Kernel, categories: str
) -> None:
    """Parquet gave back categories that aren't strings as a plain column of their values
    (order and categories lost); the frame read back then had another fingerprint."""
    kernel.run("import pandas as pd").ok()
    make = (
        "pd.DataFrame({'grade': pd.Categorical.from_codes("
        f"[2, 0, 1], categories={categories}, ordered=True)}})"
    )
    kernel.run(f"%%task cat --cache\ndf = {make}").ok()
    r = kernel.run(f"print(df['grade'].dtype == {make}['grade'].dtype, df.equals({make}))")
    assert r.ok().stdout.strip() == "True True"
    lineage = kernel.run("%lineage df").ok().text
    assert "cat" in lineage and "not produced by a task" not in lineage
