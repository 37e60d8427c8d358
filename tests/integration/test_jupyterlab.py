"""papercrane's widgets in a real JupyterLab, in a real headless Chromium.

The kernel tests read the widget bundles a kernel sends; only a browser shows that
JupyterLab draws them. The run widget opens its comm from a kept copy of the state and
sends its updates by hand (``kernel_magics.widgets``, for speed): if those messages drifted
from what ipywidgets' front end expects, a cell would show "Error displaying widget" or
nothing, and no kernel test would notice.

Needs JupyterLab and Playwright (the ``test`` extra) and a Chromium: ``/usr/bin/chromium``
(Debian's ``chromium`` package, which ``.ci/run`` installs), or the path in
``PAPERCRANE_TEST_CHROMIUM``. Without one the tests skip, unless
``PAPERCRANE_TEST_BROWSER_REQUIRED=1`` (``.ci/run`` sets it), which makes that a failure.
Playwright's own browser download is not used (this machine cannot reach it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

from ..needs import unavailable
from ..server_fixture import free_port
from .nbfiles import write_notebook

pytestmark = pytest.mark.browser

TOKEN = "papercrane-test"
#: Chromium's flags for a machine with no network beyond localhost and no display (as
#: root it also needs --no-sandbox): no background connections, no first-run dialogs.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: The notebook in view (JupyterLab reopens the notebooks of earlier tests in tabs).
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"
#: The notebook's kernel is idle (its toolbar's indicator; read by screen readers).
IDLE = f"{PANEL} >> text=Kernel status: Idle"
#: The notebook's toolbar names its kernel (it reads "No Kernel" until the page has
#: joined the kernel's session).
KERNEL_JOINED = f"{PANEL} .jp-Toolbar-kernelName >> text=Python 3"
#: What JupyterLab shows in place of a widget it cannot draw.
BROKEN = (
    "Error displaying widget",
    "Model not found",
    "Failed to load model class",
    "Loading widget",
)


def _unavailable(reason: str) -> NoReturn:
    unavailable(reason, "PAPERCRANE_TEST_BROWSER_REQUIRED")


def _chromium() -> str:
    path = os.environ.get("PAPERCRANE_TEST_CHROMIUM") or shutil.which("chromium")
    if not path:
        _unavailable("no Chromium: apt-get install chromium (or set PAPERCRANE_TEST_CHROMIUM)")
    return str(path)


class Lab:
    """A JupyterLab server on a free loopback port, its folders all under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.notebooks = root / "notebooks"
        self.notebooks.mkdir(parents=True)
        self.home = root / "papercrane-home"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        settings = root / "lab-settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True)
        # (no "get notified about Jupyter news?" toast over the last cell's output)
        (settings / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False})
        )
        env = {
            **os.environ,
            "PAPERCRANE_HOME": str(self.home),
            "JUPYTER_CONFIG_DIR": str(root / "jupyter-config"),
            "JUPYTER_RUNTIME_DIR": str(root / "jupyter-runtime"),
            "JUPYTERLAB_SETTINGS_DIR": str(root / "lab-settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(root / "lab-workspaces"),
            "IPYTHONDIR": str(root / "ipython"),
        }
        cmd = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            f"--ServerApp.root_dir={self.notebooks}",
            f"--IdentityProvider.token={TOKEN}",
            *(["--allow-root"] if os.name == "posix" and os.geteuid() == 0 else []),
        ]
        self.log = root / "jupyterlab.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited:\n{self.log.read_text()[-3000:]}")
            try:
                r = httpx.get(f"{self.url}/api/status", headers={"Authorization": f"token {TOKEN}"})
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"JupyterLab did not answer:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    pytest.importorskip("jupyterlab", reason="pip install -e '.[test]'")
    server = Lab(tmp_path_factory.mktemp("lab"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(lab: Lab) -> Iterator[Any]:
    executable = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright is not installed: pip install -e '.[test]'")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class Notebook:
    """A notebook open in JupyterLab, in a page of its own."""

    def __init__(self, lab: Lab, browser: Any, name: str, cells: list[str]) -> None:
        write_notebook(lab.notebooks / name, *cells)
        # Its kernel started first, as a session JupyterLab then joins: left to the page,
        # JupyterLab may ask which kernel to start, and shows "Idle" while it asks.
        r = httpx.post(
            f"{lab.url}/api/sessions",
            headers={"Authorization": f"token {TOKEN}"},
            json={"path": name, "name": name, "type": "notebook", "kernel": {"name": "python3"}},
        )
        assert r.status_code == 201, r.text
        self.lab = lab
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
        # (?reset: a fresh workspace, not the earlier tests' notebooks reopened in tabs)
        self.page.goto(f"{lab.url}/lab/tree/{name}?reset&token={TOKEN}")
        self.page.wait_for_selector(f"{PANEL} .jp-Cell", timeout=60_000)
        # The page joins the session a moment after it draws the notebook, and until then
        # its toolbar reads "No Kernel" while the status still says "Idle": a Run All in
        # that moment asks which kernel to use and runs nothing (on a busy machine that
        # moment lasts seconds). The kernel's name in the toolbar says it has joined.
        self.page.wait_for_selector(KERNEL_JOINED, state="attached", timeout=120_000)
        self.wait_idle()

    def wait_idle(self, timeout: float = 120_000) -> None:
        self.page.wait_for_selector(IDLE, state="attached", timeout=timeout)

    def run_all(self) -> None:
        self.page.click(".lm-MenuBar-item >> text=Run")
        self.page.click(".lm-Menu-item[data-command='runmenu:run-all']")

    def output(self, cell: int) -> Any:
        """The output area of the notebook's ``cell``-th cell (from 0)."""
        return self.page.locator(f"{PANEL} .jp-Cell").nth(cell).locator(".jp-OutputArea")

    def wait_text(self, cell: int, text: str, timeout: float = 120_000) -> str:
        """Wait until ``cell``'s output shows ``text``; return all the output shows."""
        from playwright.sync_api import expect

        area = self.output(cell)
        expect(area).to_contain_text(text, timeout=timeout)
        return str(area.inner_text())

    def broken_widgets(self) -> list[str]:
        shown = str(self.page.locator(PANEL).inner_text())
        return [b for b in BROKEN if b in shown]

    def close(self) -> None:
        self.page.close()


def test_a_task_run_cache_hit_dag_and_lineage_draw_in_jupyterlab(
    lab: Lab, browser: Any, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    gate.write_text("")
    cells = [
        "%load_ext papercrane",
        "n = 10",
        "%%task squares --cache --executor local\nimport os, time\n"
        f"while os.path.exists({str(gate)!r}):\n    time.sleep(0.05)\n"
        "total = sum(i * i for i in range(n))",
        "print('total is', total)",
        "%workflow show",
        "%lineage total",
    ]
    nb = Notebook(lab, browser, "demo.ipynb", cells)
    try:
        nb.run_all()
        # Live: the widget shows the attempt running (its updates reach the page) ...
        running = nb.wait_text(2, "running")
        assert "squares" in running and "local" in running, running
        gate.unlink()
        # ... then how it ended, with its output, in place of the running state.
        done = nb.wait_text(2, "succeeded")
        assert "running" not in done, done
        assert "miss" in done and "total" in done and "285" in done, done
        assert "total is 285" in nb.wait_text(3, "total is")
        dag = nb.wait_text(4, "workflow demo")
        assert "squares" in dag and "succeeded" in dag, dag
        lineage = nb.wait_text(5, "lineage of")
        assert "task squares" in lineage and "n = 10" in lineage, lineage
        nb.wait_idle()
        assert nb.broken_widgets() == []

        nb.run_all()  # the same cells again, in the same kernel: a cache hit
        nb.wait_idle()
        hit = nb.wait_text(2, "cached")
        assert "succeeded" not in hit and "285" in hit, hit
        assert nb.broken_widgets() == []
        nb.page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
    finally:
        nb.close()


def test_a_failed_task_shows_the_users_error_in_jupyterlab(lab: Lab, browser: Any) -> None:
    cells = [
        "%load_ext papercrane",
        "rows = [3, 0]",
        "%%task ratios --executor inline\nratios = [10 / r for r in rows]",
    ]
    nb = Notebook(lab, browser, "failing.ipynb", cells)
    try:
        nb.run_all()
        shown = nb.wait_text(2, "failed")
        assert "ZeroDivisionError" in shown and "10 / r" in shown, shown
        # The user's own code, not the engine's insides.
        assert "scheduler.py" not in shown and "runner.py" not in shown, shown
        nb.wait_idle()
        assert nb.broken_widgets() == []
    finally:
        nb.close()
