"""A follower (a notebook's cell, ``papercrane run``) while its server is down: it waits
without spinning a core, says so once, says when the server is back, and an interrupt
meanwhile does not claim an abort the server never heard of."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from papercrane.backend.api import RunRequest
from papercrane.backend.client import RemoteEngine
from papercrane.backend.model import EventKind, TaskConfig, TaskSpec

from ..server_fixture import ServerProcess, wait_for

#: A follower in a process of its own (as a kernel is): it prints how the execution ended.
FOLLOWER = """
import sys
from papercrane.backend.client import RemoteEngine
from papercrane.backend.errors import ExecutionAborted
client = RemoteEngine(sys.argv[1], sys.argv[2], "outage")
print("following", flush=True)
try:
    print("ended", client.follow(sys.argv[3]).status.value, flush=True)
except ExecutionAborted as exc:
    print("interrupted:", exc, flush=True)
"""


def cpu_seconds(pid: int) -> float:
    """The process's user and system CPU time so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def gated_execution(server: ServerProcess, gate: Path) -> tuple[RemoteEngine, str, str]:
    """A task that runs until ``gate`` exists, submitted and started on ``server``."""
    token = server.token("outage")
    client = RemoteEngine(server.url, token, "outage")
    code = f"import os, time\nwhile not os.path.exists({str(gate)!r}):\n    time.sleep(0.05)\nv = 1"
    execution_id = client.submit_task(
        RunRequest(
            spec=TaskSpec(name="gated", code=code, inputs=(), outputs=("v",)),
            config=TaskConfig(executor="local"),
            inputs={},
            project="outage",
        )
    )
    wait_for(lambda: any(e.kind is EventKind.ATTEMPT_STARTED for e in client.events(execution_id)))
    return client, token, execution_id


def follower(server: ServerProcess, token: str, execution_id: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", FOLLOWER, server.url, token, execution_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "following\n"
    time.sleep(1)  # (connected and streaming)
    return proc


def test_a_follower_waits_quietly_for_a_killed_server_and_goes_on_when_it_is_back(
    tmp_path: Path,
) -> None:
    gate = tmp_path / "release"
    server = ServerProcess(tmp_path / "srv").start()
    client, token, execution_id = gated_execution(server, gate)
    client.close()
    proc = follower(server, token, execution_id)
    try:
        server.kill()
        time.sleep(1)
        before = cpu_seconds(proc.pid)
        time.sleep(4)
        # It waits between attempts (it once retried at once, a core at 100%).
        assert cpu_seconds(proc.pid) - before < 0.5
        server.start()
        gate.write_text("go")
        out, err = proc.communicate(timeout=120)
        assert out.strip() == "ended succeeded", (out, err)
        lines = err.splitlines()
        unreachable = [line for line in lines if "unreachable" in line]
        assert unreachable == [
            f"papercrane: the server at {server.url} is unreachable, retrying... (interrupt to "
            f"stop waiting; execution {execution_id} goes on on the server)"
        ], err  # once, not once per attempt
        assert f"papercrane: the server at {server.url} is back; following {execution_id}" in lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        server.stop()


def test_an_interrupt_while_the_server_is_down_does_not_claim_an_abort(tmp_path: Path) -> None:
    gate = tmp_path / "release"
    server = ServerProcess(tmp_path / "srv").start()
    client, token, execution_id = gated_execution(server, gate)
    client.close()
    proc = follower(server, token, execution_id)
    try:
        server.kill()
        time.sleep(1.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert out.startswith("interrupted:"), (out, err)
        assert "the server was asked to abort" not in out
        assert "could not be asked to abort it" in out
        assert f"papercrane executions show {execution_id}" in out
        assert f"{server.url}/api/v1/executions/{execution_id}/abort" in out
        # And indeed: back, the server runs it to its end.
        server.start()
        gate.write_text("go")
        client = RemoteEngine(server.url, token, "outage")
        assert client.follow(execution_id).status.value == "succeeded"
        client.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        server.stop()


def test_a_stopped_server_does_not_wait_for_its_followed_executions(tmp_path: Path) -> None:
    """SIGTERM: the server ends its live streams after its grace (it once waited for every
    followed execution to end); the follower waits for the next server, which resumes
    the execution, and gets its end."""
    gate = tmp_path / "release"
    server = ServerProcess(tmp_path / "srv").start()
    client, token, execution_id = gated_execution(server, gate)
    client.close()
    proc = follower(server, token, execution_id)
    try:
        assert server.proc is not None
        stopping = time.monotonic()
        server.proc.terminate()
        server.proc.wait(timeout=60)
        assert time.monotonic() - stopping < 10  # its grace is 5 s
        server.proc = None
        server._log_file.close()
        assert "Shutting down" in server.log.read_text()
        time.sleep(1)
        assert proc.poll() is None  # still following, not failed
        server.start()
        gate.write_text("go")
        out, err = proc.communicate(timeout=120)
        assert out.strip() == "ended succeeded", (out, err)
        assert "unreachable, retrying" in err and "is back" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        server.stop()
