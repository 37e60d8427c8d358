"""A notebook against a server: a task runs in the project it asks for (``--project``,
or ``%config Papercrane.project`` changed after the first task), its widget names the
executor the server ran it on, and an interrupted task's widget ends aborted."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from papercrane.backend.client import RemoteEngine

from ..server_fixture import ServerProcess
from .kernel import Kernel

pytestmark = pytest.mark.kernel


def remote_kernel(server: ServerProcess, tmp_path: Path, token: str) -> Kernel:
    env = {
        "PAPERCRANE_URL": server.url,
        "PAPERCRANE_TOKEN": token,
        "PAPERCRANE_PROJECT": "team",
        "PAPERCRANE_HOME": str(tmp_path / "client-home"),
    }
    k = Kernel(env, tmp_path)
    k.run("%load_ext papercrane").ok()
    return k


def names(server: ServerProcess, project: str) -> list[str]:
    client = RemoteEngine(server.url, server.admin, project)
    try:
        return sorted(r["name"] for r in client.list_executions())
    finally:
        client.close()


def test_a_task_runs_in_the_project_it_asks_for(server: ServerProcess, tmp_path: Path) -> None:
    """``--project`` and a project set after the first task are the task's (and its
    inputs'): not the project of the session's first engine. A value uploaded in one
    project is uploaded again in the other (the session's known refs are per project)."""
    k = remote_kernel(server, tmp_path, server.admin)
    try:
        k.run("x = list(range(50))").ok()
        k.run("%%task first\na = len(x)").ok()
        k.run("%%task elsewhere --project other\nb = len(x) + 1").ok()
        k.run('%config Papercrane.project = "third"').ok()
        k.run("%%task later\nc = len(x) + 2").ok()
        assert k.run("print(a, b, c)").ok().stdout.split() == ["50", "51", "52"]
        assert names(server, "team") == ["first"]
        assert names(server, "other") == ["elsewhere"]
        assert names(server, "third") == ["later"]
        # The notebook's workflow runs in its last task's project, its parameter (x)
        # stored there.
        k.run("%workflow run").ok()
        assert len(names(server, "third")) == 2 and names(server, "other") == ["elsewhere"]
    finally:
        k.shutdown()


def test_a_project_the_token_cannot_use_is_named(server: ServerProcess, tmp_path: Path) -> None:
    """The server's 403 reaches the cell as one line naming the project and what to do."""
    k = remote_kernel(server, tmp_path, server.token("team"))
    try:
        k.run("%%task first\na = 1").ok()
        r = k.run("%%task elsewhere --project other\nb = a + 1")
        assert r.status == "error"
        message = r.error["evalue"]
        assert "no access to project 'other'" in message and "\n" not in message, message
        assert "papercrane token create --project other" in message, message
        assert len(r.error["traceback"]) <= 1, r.error["traceback"]
        assert r.widget["text/plain"].startswith("elsewhere: failed"), r.widget
        assert names(server, "other") == []
    finally:
        k.shutdown()


def test_the_widget_names_the_servers_executor(server: ServerProcess, tmp_path: Path) -> None:
    """A cell naming no executor runs on the server's default: the widget says which
    (from the attempt's event), not "default"."""
    k = remote_kernel(server, tmp_path, server.token("team"))
    try:
        r = k.run("%%task plain\na = 1").ok()
        shown = r.widget["text/plain"]
        assert "executor: local" in shown and "default" not in shown, shown
    finally:
        k.shutdown()


def test_an_interrupted_task_ends_its_widget_aborted(server: ServerProcess, tmp_path: Path) -> None:
    """Ctrl-C while the cell follows its task on the server: the server is asked to
    abort it, and the widget ends "aborted" (amber) as with the embedded engine, not
    "running" for ever."""
    k = remote_kernel(server, tmp_path, server.token("team"))
    flag = tmp_path / "started"
    try:
        msg_id = k.kc.execute(
            f"%%task slow\nimport pathlib, time\npathlib.Path({str(flag)!r}).write_text('')\n"
            "time.sleep(60)\nv = 1"
        )
        deadline = time.monotonic() + 60
        while not flag.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert flag.exists()
        time.sleep(0.5)  # (the cell is following the task's events)
        k.send_interrupt()
        shown, error = [], None
        while True:
            msg = k.kc.get_iopub_msg(timeout=60)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind in ("display_data", "update_display_data"):
                shown.append(content["data"])
            elif kind == "error":
                error = content
            elif kind == "status" and content["execution_state"] == "idle":
                break
        assert error is not None and "interrupted" in error["evalue"], error
        widget = shown[-1]
        assert widget["text/plain"].startswith("slow: aborted"), widget["text/plain"]
        assert "#b45309" in widget["text/html"]  # an aborted run's amber
    finally:
        k.shutdown()


def test_a_read_token_is_told_which_token_it_needs(server: ServerProcess, tmp_path: Path) -> None:
    """A task run with a read-only token: one line that says the role it needs and how to
    make such a token, not only that the server refused."""
    k = remote_kernel(server, tmp_path, server.token("team", "read"))
    try:
        refused = k.run("%%task t\ny = 1")
        assert refused.status == "error", refused.text
        message = refused.error["evalue"] if refused.error else refused.stderr
        assert "this token's role is 'read'; this needs 'write'" in message, refused.text
        assert "papercrane token create --project team --role write" in message, message
        assert "Traceback" not in refused.text
    finally:
        k.shutdown()
