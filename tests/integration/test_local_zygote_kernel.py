"""``--executor local`` in a real kernel, where attempts fork from the zygote: each sees
the kernel's environment and the user's latest helper modules, none sees what an
earlier one left behind, and nothing outlives the kernel."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ..processes import gone
from .kernel import Kernel

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the zygote is Linux only"),
]


def test_attempts_see_the_kernel_as_it_is_now_and_nothing_else(home: Path, workdir: Path) -> None:
    env = {"PAPERCRANE_HOME": str(home), "PAPERCRANE_LOCAL_ZYGOTE": "1"}
    kernel = Kernel(env, workdir)
    try:
        kernel.run("%load_ext papercrane").ok()
        (workdir / "helpers.py").write_text("def version():\n    return 1\n")
        kernel.run("import os\nos.environ['PAPERCRANE_TEST_VALUE'] = 'set in the kernel'").ok()
        kernel.run(
            "%%task first --executor local\n"
            "import os, cloudpickle, helpers\n"
            "cloudpickle.left_behind = True\n"
            "first = [helpers.version(), os.environ.get('PAPERCRANE_TEST_VALUE'), os.getppid()]"
        ).ok()
        (workdir / "helpers.py").write_text("def version():\n    return 'edited'\n")
        kernel.run(
            "%%task second --executor local\n"
            "import os, cloudpickle, helpers\n"
            "second = [helpers.version(), hasattr(cloudpickle, 'left_behind'), os.getppid()]"
        ).ok()
        code = "import json\nprint(json.dumps([first, second, os.getpid()]))"
        first, second, kernel_pid = json.loads(kernel.run(code).ok().stdout)
        assert first[:2] == [1, "set in the kernel"]
        assert second[:2] == ["edited", False]
        zygote = first[2]
        assert zygote == second[2] != kernel_pid
    finally:
        kernel.shutdown()
    assert gone(zygote)
