"""The warm-up after ``%load_ext papercrane`` in a real kernel: cells run right after it
import the same modules at the same time, and the first task behaves as before."""

from __future__ import annotations

from .kernel import Kernel


def test_cells_right_after_loading_import_the_same_modules(kernel: Kernel) -> None:
    # Sent at once after the loading cell: the warm-up thread is importing these now.
    r = kernel.run(
        "import ipywidgets\n"
        "from ipywidgets.widgets.widget_string import HTMLStyle\n"
        "from papercrane.backend.engine import LocalEngine\n"
        "import papercrane.session, papercrane.widgets\n"
        "print(ipywidgets.HTML.__name__, HTMLStyle.__name__, LocalEngine.__name__)"
    ).ok()
    assert r.stdout.strip() == "HTML HTMLStyle LocalEngine"
    kernel.run("x = 20").ok()
    first = kernel.run("%%task double --cache\ny = x * 2\nprint(y)").ok()
    assert first.stdout.strip() == "40"
    again = kernel.run("%%task double --cache\ny = x * 2\nprint(y)").ok()
    assert "cached" in again.widget["text/plain"]
    assert kernel.run("print(y)").ok().stdout.strip() == "40"
