"""Two projects on one server, from real kernels: a value one project stores never gets
in the way of the other's (artifact rows belong to a project's storage, revision 0008).

A notebook function's artifact id comes from its code, but its pickle names the kernel's
cell file, so two kernels store the same function as different bytes. The second
project to run a task with a helper the first also used was refused ("artifact id ... is
already recorded with other bytes")."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from ..server_fixture import ServerProcess
from .kernel import Kernel

pytestmark = pytest.mark.kernel

HELPER = "def triple(v):\n    return v * 3"
TASK = "%%task scaled --cache\nys = [triple(x) for x in xs]"


def kernel(server: ServerProcess, project: str, tmp_path: Path) -> Kernel:
    env = {
        "PAPERCRANE_URL": server.url,
        "PAPERCRANE_TOKEN": server.token(project),
        "PAPERCRANE_PROJECT": project,
        "PAPERCRANE_HOME": str(tmp_path / f"{project}-home"),  # must stay unused
    }
    k = Kernel(env, tmp_path)
    k.run("%load_ext papercrane").ok()
    return k


def rows(server: ServerProcess, artifact_id_prefix: str = "") -> list[tuple[str, str, str]]:
    with contextlib.closing(sqlite3.connect(server.home / "papercrane.db")) as conn:
        query = "SELECT id, scope, hash FROM artifacts WHERE python_type = 'function'"
        return sorted(conn.execute(query).fetchall())


def test_two_projects_run_a_task_with_the_same_helper_function(
    server: ServerProcess, tmp_path: Path
) -> None:
    alpha = kernel(server, "alpha", tmp_path)
    beta = kernel(server, "beta", tmp_path)
    try:
        alpha.run(f"xs = [1, 2, 3]\n{HELPER}").ok()
        alpha.run(TASK).ok()
        assert alpha.run("print(ys)").ok().stdout.strip() == "[3, 6, 9]"

        beta.run("pass").ok()  # (another cell number: another cell file in the pickle)
        beta.run(f"xs = [4, 5]\n{HELPER}").ok()
        ran = beta.run(TASK)
        assert ran.status == "ok", ran.text
        assert "already recorded" not in ran.text
        assert beta.run("print(ys)").ok().stdout.strip() == "[12, 15]"

        # One row per project for the one function id, each naming its own bytes.
        functions = rows(server)
        assert [scope for _, scope, _ in functions] == ["alpha/development", "beta/development"]
        assert functions[0][0] == functions[1][0]
        assert functions[0][2] != functions[1][2], "the kernels pickled it alike"

        # Each project's cache stays its own, and hits.
        again = alpha.run(TASK).ok()
        assert "cached" in again.widget["text/plain"], again.text
        again = beta.run(TASK).ok()
        assert "cached" in again.widget["text/plain"], again.text
    finally:
        alpha.shutdown()
        beta.shutdown()
