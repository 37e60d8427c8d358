"""The server keeps executions going: killed with SIGKILL mid-workflow and restarted,
it finishes them, reusing what had finished; and one project's fan-out does not starve
another project's task (fair share)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from papercrane.backend.client import RemoteEngine
from papercrane.backend.engine import WorkflowRequest
from papercrane.backend.model import EventKind, Status, TaskConfig, TaskSpec
from papercrane.backend.workflow import CellTask, MapSpec, assemble

from ..server_fixture import ServerProcess, wait_for


def cell(name: str, code: str, inputs: tuple[str, ...], outputs: tuple[str, ...], **kw):
    m = kw.pop("map", None)
    return CellTask(
        TaskSpec(name=name, code=code, inputs=inputs, outputs=outputs),
        TaskConfig(executor="local", **kw),
        map=m,
    )


def test_sigkill_mid_workflow_then_restart_finishes_it(tmp_path: Path) -> None:
    log = tmp_path / "ran.log"
    gate = tmp_path / "release"
    note = f"with open({str(log)!r}, 'a') as f:\n    f.write(NAME + '\\n')\n"
    cells = [
        cell("first", note.replace("NAME", "'first'") + "x = 1", (), ("x",)),
        cell(
            "slow",
            note.replace("NAME", "'slow'")
            + f"import os, time\nwhile not os.path.exists({str(gate)!r}):\n    time.sleep(0.05)\n"
            "y = x + 1",
            ("x",),
            ("y",),
        ),
        cell("last", note.replace("NAME", "'last'") + "z = y + 1", ("y",), ("z",)),
    ]
    server = ServerProcess(tmp_path / "srv").start()
    token = server.token("durable")
    client = RemoteEngine(server.url, token, "durable")
    execution_id = client.submit_workflow(
        WorkflowRequest(spec=assemble("durable", cells), params={}, project="durable")
    )
    wait_for(lambda: log.exists() and log.read_text().split() == ["first", "slow"])
    # An attempt's start is committed with the scheduler's next round (within ~50 ms of
    # its process starting, which a forked attempt beats): kill once it is on record.
    wait_for(
        lambda: any(
            e.kind is EventKind.ATTEMPT_STARTED and e.node == "slow"
            for e in client.events(execution_id)
        )
    )
    server.kill()  # the slow attempt's process dies with it (PR_SET_PDEATHSIG)
    client.close()  # (no server now; the store is the truth)
    gate.write_text("go")
    server.start()  # resumes unfinished executions
    client = RemoteEngine(server.url, token, "durable")
    try:
        state = client.follow(execution_id)
        assert state.status is Status.SUCCEEDED
        # first finished before the kill and was not run again; slow ran again.
        assert log.read_text().split() == ["first", "slow", "slow", "last"]
        slow = state.nodes["slow"]
        assert slow.system_failures == 1 and slow.user_failures == 0
        assert slow.error is None or slow.status is Status.SUCCEEDED
        result = client._result(state, want_values=True)
        assert result.nodes["last"].values == {"z": 3}
    finally:
        client.close()
        server.stop()


@pytest.mark.timeout(240)
def test_a_big_fan_out_does_not_starve_another_project(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "srv", extra=["--max-running", "2"]).start()
    big = RemoteEngine(server.url, server.token("big"), "big")
    small = RemoteEngine(server.url, server.token("small"), "small")
    try:
        fan = [
            cell(
                "work",
                "import time\ntime.sleep(0.2)\nout = item",
                ("item",),
                ("out",),
                map=MapSpec("items", "item"),
            )
        ]
        items = big.put_value(list(range(200)), "items")
        big_id = big.submit_workflow(
            WorkflowRequest(
                spec=assemble("fan", fan), params={"items": items}, project="big", max_parallel=8
            )
        )
        wait_for(
            lambda: (
                big.execution(big_id).nodes.get("work", None) is not None
                and big.execution(big_id).nodes["work"].elements_done >= 4
            )
        )
        from papercrane.backend.api import RunRequest

        submitted = time.time()
        result = small.run_task(
            RunRequest(
                spec=TaskSpec(name="quick", code="y = 1", inputs=(), outputs=("y",)),
                config=TaskConfig(executor="local"),
                inputs={},
                project="small",
            )
        )
        waited = result.execution.nodes["quick"].started_at - submitted
        done = big.execution(big_id).nodes["work"].elements_done
        assert result.values == {"y": 1}
        # It started after at most a few of the fan-out's 0.2 s elements, not after
        # the ~100 that remained (2 slots at a time).
        assert done < 150, f"the small project's task waited for {done} elements"
        assert waited < 10
        big.abort(big_id)
    finally:
        big.close()
        small.close()
        server.stop()
