"""What a notebook shows when the server refuses a task or cannot be reached: the task's
widget ends failed with the server's reason (never "queued" for ever), a refused upload
names the variable and what to do, and an outage shows in the widget while it lasts."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from papercrane.backend.client import RemoteEngine

from ..server_fixture import ServerProcess
from .kernel import Kernel

pytestmark = pytest.mark.kernel


@pytest.fixture
def small_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server that takes uploads of at most 1000 bytes."""
    s = ServerProcess(tmp_path / "server-home", extra=["--max-upload", "1000"]).start()
    try:
        yield s
    finally:
        s.stop()


def remote_kernel(server: ServerProcess, tmp_path: Path, token: str = "") -> Kernel:
    env = {
        "PAPERCRANE_URL": server.url,
        "PAPERCRANE_TOKEN": token or server.token("team"),
        "PAPERCRANE_PROJECT": "team",
        "PAPERCRANE_HOME": str(tmp_path / "client-home"),
    }
    k = Kernel(env, tmp_path)
    k.run("%load_ext papercrane").ok()
    return k


def test_a_refused_upload_names_the_variable_and_fails_the_widget(
    small_server: ServerProcess, tmp_path: Path
) -> None:
    """The server's 413 knows only a byte count: the cell's error names the task and the
    input and says what to do, and the task's widget ends failed with it (with or
    without --cache, whose widget is shown late)."""
    k = remote_kernel(small_server, tmp_path)
    try:
        k.run("big = 'x' * 5000\nsmall = 3").ok()
        for flags in ("", " --cache"):
            r = k.run(f"%%task sized{flags}\nn = len(big) + small")
            assert r.status == "error"
            message = r.error["evalue"]
            assert message.startswith("task 'sized': input 'big' is 4.9 KiB serialized"), message
            assert "(1000 B)" in message and "--max-upload" in message, message
            assert "load it inside the task" in message, message
            shown = r.widget["text/plain"]
            assert shown.startswith("sized: failed"), shown
            assert "input 'big' is 4.9 KiB" in shown, shown
            assert "#b91c1c" in r.widget["text/html"]  # a failed run's red
        k.run("%%task fits\nm = small * 2").ok()  # the server itself is fine
    finally:
        k.shutdown()


def test_a_submission_the_server_refuses_fails_the_widget(
    small_server: ServerProcess, tmp_path: Path
) -> None:
    """The token is revoked before the next task is submitted: the server refuses it
    before any execution exists, and the widget says so instead of "queued"."""
    token = small_server.token("team")
    k = remote_kernel(small_server, tmp_path, token)
    try:
        k.run("%%task first\na = 1").ok()
        row = next(
            r
            for r in json.loads(small_server.cli("token", "list", "--json"))
            if r["project"] == "team" and not r["revoked"]
        )
        small_server.cli("token", "revoke", str(row["id"]))
        r = k.run("%%task second\nb = 2")
        assert r.status == "error" and "refused the token" in r.error["evalue"], r.error
        shown = r.widget["text/plain"]
        assert shown.startswith("second: failed"), shown
        assert "refused the token: unknown or revoked token" in shown, shown
    finally:
        k.shutdown()


def test_the_widget_shows_an_outage_until_the_server_is_back(
    tmp_path: Path,
) -> None:
    """The server is stopped while a cell follows its task: the widget says the server
    is unreachable and being retried (the stderr line alone was easy to miss, and the
    widget sat still), then clears that when the server is back and the task ends."""
    server = ServerProcess(tmp_path / "server-home").start()
    gate = tmp_path / "release"
    token = server.token("team")

    def restart() -> None:
        client = RemoteEngine(server.url, token, "team")
        try:
            while not client.list_executions(status="running"):
                time.sleep(0.1)
        finally:
            client.close()
        time.sleep(1)  # (the cell is following)
        server.stop()
        time.sleep(3)  # several tries
        server.start()
        gate.write_text("go")

    k = remote_kernel(server, tmp_path, token)
    try:
        mover = threading.Thread(target=restart)
        mover.start()
        r = k.run(
            f"%%task gated\nimport os, time\nwhile not os.path.exists({str(gate)!r}):\n"
            "    time.sleep(0.05)\nv = 7"
        )
        mover.join()
        r.ok()
        values = [c["state"]["value"] for c in r.comms if "value" in c.get("state", {})]
        down = [v for v in values if "unreachable, reconnecting (try " in v]
        assert down, values
        tries = [re.search(r"reconnecting \(try (\d+)\)", v).group(1) for v in down]
        assert tries[0] == "1" and int(tries[-1]) >= 2, tries
        assert "running" in down[0]  # the run goes on, as far as anyone knows
        assert "unreachable" not in values[-1] and "succeeded" in values[-1]
        assert "unreachable" not in r.widget["text/plain"]
        assert k.run("print(v)").ok().stdout.strip() == "7"
    finally:
        k.shutdown()
        server.stop()
