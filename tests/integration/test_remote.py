"""The notebook side against a real server: magics, papermill and the CLI with
PAPERCRANE_URL set run tasks on the server, and the results come back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import papermill
import pytest

from papercrane.backend.client import RemoteEngine

from ..server_fixture import ServerProcess
from .kernel import Kernel
from .nbfiles import write_notebook

pytestmark = pytest.mark.kernel


def remote_env(server: ServerProcess, tmp_path: Path) -> dict[str, str]:
    return {
        "PAPERCRANE_URL": server.url,
        "PAPERCRANE_TOKEN": server.token("team"),
        "PAPERCRANE_PROJECT": "team",
        "PAPERCRANE_HOME": str(tmp_path / "client-home"),  # must stay unused
    }


def test_magics_run_tasks_on_the_server(server: ServerProcess, tmp_path: Path) -> None:
    env = remote_env(server, tmp_path)
    k = Kernel(env, tmp_path)
    try:
        k.run("%load_ext papercrane").ok()
        k.run("import numpy as np\nxs = np.arange(5)\ndef f(v):\n    return v * 3").ok()
        r = k.run(
            "%%task triple --cache\nimport os\nys = f(xs)\nwhere = os.environ['PAPERCRANE_HOME']"
        )
        r.ok()
        out = k.run("print(ys.tolist(), where)").ok().stdout.split(None, 5)
        assert "".join(out[:5]) == "[0,3,6,9,12]"
        assert out[5].strip() == str(server.home)  # it ran in the server's process tree
        again = k.run(
            "%%task triple --cache\nimport os\nys = f(xs)\nwhere = os.environ['PAPERCRANE_HOME']"
        )
        assert "cached" in again.ok().widget["text/plain"]
        k.run("%%task second\nzs = ys + 1").ok()
        detached = k.run("%workflow run --detach").ok()
        assert "submitted execution" in detached.stdout, detached
        bad = k.run("%%task t --executor inline\ny = 1")
        assert bad.status == "error" and "inline executor" in bad.error["evalue"]
        assert not (tmp_path / "client-home").exists()  # nothing stored on the client
    finally:
        k.shutdown()


def test_a_cell_waits_out_a_server_restart_and_binds_its_outputs(
    server: ServerProcess, tmp_path: Path
) -> None:
    """The server is stopped (SIGTERM) and started again while a cell follows its task:
    the cell says the server is unreachable, then back, and binds the task's outputs (the
    server once waited for the task to stop, and the cell then failed to reach it)."""
    env = remote_env(server, tmp_path)
    gate = tmp_path / "release"
    k = Kernel(env, tmp_path)

    def restart() -> None:
        client = RemoteEngine(server.url, env["PAPERCRANE_TOKEN"], "team")
        try:
            while not client.list_executions(status="running"):
                time.sleep(0.1)
        finally:
            client.close()
        time.sleep(1)  # (the cell is following)
        server.stop()
        time.sleep(2)
        server.start()
        gate.write_text("go")

    try:
        k.run("%load_ext papercrane").ok()
        mover = threading.Thread(target=restart)
        mover.start()
        r = k.run(
            f"%%task gated\nimport os, time\nwhile not os.path.exists({str(gate)!r}):\n"
            "    time.sleep(0.05)\nv = 7"
        )
        mover.join()
        r.ok()
        assert f"the server at {server.url} is unreachable, retrying" in r.stderr
        assert f"the server at {server.url} is back" in r.stderr
        assert k.run("print(v)").ok().stdout.strip() == "7"
    finally:
        k.shutdown()


def test_papermill_against_the_server(server: ServerProcess, tmp_path: Path) -> None:
    env = remote_env(server, tmp_path)
    src = write_notebook(
        tmp_path / "remote.ipynb",
        "%load_ext papercrane",
        ("n = 3", ["parameters"]),
        "%%task square\nsq = n * n",
        "assert sq == 49, sq",
    )
    old = dict(os.environ)
    os.environ.update(env)
    try:
        papermill.execute_notebook(
            str(src), str(tmp_path / "out.ipynb"), parameters={"n": 7}, progress_bar=False
        )
    finally:
        os.environ.clear()
        os.environ.update(old)
    cli = [sys.executable, "-m", "papercrane.backend.cli"]
    listing = subprocess.run(
        [*cli, "executions", "list", "--json"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    rows = json.loads(listing.stdout)
    assert [(r["name"], r["status"]) for r in rows] == [("square", "succeeded")]


CLI = [sys.executable, "-m", "papercrane.backend.cli"]


def task_notebook(path: Path, cell: str) -> Path:
    return write_notebook(path, "%load_ext papercrane", cell)


def run_detached(src: Path, env: dict[str, str], *extra: str) -> str:
    """``papercrane run --remote --detach``: the one execution id it prints."""
    r = subprocess.run(
        [*CLI, "run", str(src), "--remote", "--detach", "-q", *extra],
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    execution_id, url = r.stdout.split()
    assert url.endswith(f"/api/v1/executions/{execution_id}")
    return execution_id


def final_status(execution_id: str, env: dict[str, str], timeout: float = 60) -> str:
    """The execution's status once it has ended (or as it is when ``timeout`` runs out)."""
    deadline = time.monotonic() + timeout
    while True:
        shown = subprocess.run(
            [*CLI, "executions", "show", execution_id, "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        status = json.loads(shown.stdout)["status"]
        if status in ("succeeded", "failed", "aborted") or time.monotonic() > deadline:
            return status
        time.sleep(0.3)


def test_papercrane_run_remote_detach(server: ServerProcess, tmp_path: Path) -> None:
    env = {**os.environ, **remote_env(server, tmp_path)}
    src = task_notebook(tmp_path / "detach.ipynb", "%%task slow\nimport time\ntime.sleep(1)\nv = 1")
    started = time.monotonic()
    # The detached execution's id, whether it still runs or (on a busy machine) is done.
    execution_id = run_detached(src, env, "-o", str(tmp_path / "o.ipynb"))
    assert final_status(execution_id, env) == "succeeded"
    assert time.monotonic() - started < 60
    no_url = {k: v for k, v in env.items() if k != "PAPERCRANE_URL"}
    r = subprocess.run(
        [*CLI, "run", str(src), "--remote"], env=no_url, capture_output=True, text=True
    )
    assert r.returncode != 0 and "PAPERCRANE_URL" in r.stderr


def test_detach_prints_an_execution_that_already_finished(
    server: ServerProcess, tmp_path: Path
) -> None:
    """An instant task is done before papermill's kernel has shut down: its id is still
    what ``--detach`` prints (it once printed only what was still running)."""
    env = {**os.environ, **remote_env(server, tmp_path)}
    src = task_notebook(tmp_path / "instant.ipynb", "%%task instant\nw = 2")
    assert final_status(run_detached(src, env), env) == "succeeded"


def test_detach_prints_the_tasks_a_later_cell_waited_for(
    server: ServerProcess, tmp_path: Path
) -> None:
    """The last cell reads the task's output: the task runs before that cell, waited for,
    and nothing is left to submit detached; its id is still printed (stdout was empty)."""
    env = {**os.environ, **remote_env(server, tmp_path)}
    src = write_notebook(
        tmp_path / "reads.ipynb", "%load_ext papercrane", "%%task early\nq = 5", "print(q)"
    )
    assert final_status(run_detached(src, env), env) == "succeeded"


def test_detach_after_a_failed_cell_submits_the_tasks_above_it(
    server: ServerProcess, tmp_path: Path
) -> None:
    """The cell after the task fails: the task (above it) is still submitted, its id
    printed for scripts, and the run exits 1 for the cell."""
    env = {**os.environ, **remote_env(server, tmp_path)}
    src = write_notebook(
        tmp_path / "fails.ipynb", "%load_ext papercrane", "%%task above\nu = 3", "1 / 0"
    )
    r = subprocess.run(
        [*CLI, "run", str(src), "--remote", "--detach", "-q"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1, r.stderr
    assert "ZeroDivisionError" in r.stderr
    execution_id, url = r.stdout.split()
    assert url.endswith(f"/api/v1/executions/{execution_id}")
    assert final_status(execution_id, env) == "succeeded"


def test_a_server_maps_steps_are_not_listed_among_its_nodes(
    server: ServerProcess, tmp_path: Path
) -> None:
    """On a server a map expands and collects in steps of its own (``inv:expand``): the
    table of ``executions show`` leaves them out while they succeed, as it does the
    elements (``--elements`` shows both), and ``logs`` does not offer them as nodes."""
    env = {**os.environ, **remote_env(server, tmp_path)}
    src = write_notebook(
        tmp_path / "map.ipynb",
        "%load_ext papercrane",
        "xs = [1, 2, 3]",
        "%%task inv --map xs\ny = 1 / x",
    )
    r = subprocess.run([*CLI, "run", str(src), "--remote", "-q"], env=env, capture_output=True)
    assert r.returncode == 0, r.stderr
    listing = subprocess.run(
        [*CLI, "executions", "list", "--json"], env=env, capture_output=True, check=True
    )
    execution_id = json.loads(listing.stdout)[0]["id"]
    for name, found in (("map", [execution_id]), ("nope", [])):  # (the notebook's name)
        named = subprocess.run(
            [*CLI, "executions", "list", "--name", name, "--json"],
            env=env,
            capture_output=True,
            check=True,
        )
        assert [r["id"] for r in json.loads(named.stdout)] == found
    shown = json.loads(
        subprocess.run(
            [*CLI, "executions", "show", execution_id, "--json"],
            env=env,
            capture_output=True,
            check=True,
        ).stdout
    )
    steps = [n for n in shown["nodes"] if ":" in n]
    assert steps, shown["nodes"]  # (else this test shows nothing)
    wide = {**env, "COLUMNS": "200"}
    table = subprocess.run(
        [*CLI, "executions", "show", execution_id], env=wide, capture_output=True, text=True
    ).stdout
    assert "map of 3: 3 done" in table and not any(step in table for step in steps), table
    every = subprocess.run(
        [*CLI, "executions", "show", execution_id, "--elements"],
        env=wide,
        capture_output=True,
        text=True,
    ).stdout
    assert all(step in every for step in steps)
    unknown = subprocess.run(
        [*CLI, "logs", execution_id, "nope"], env=env, capture_output=True, text=True
    )
    assert "nodes: inv, inv[0..2]" in unknown.stderr


def test_a_notebook_file_name_with_spaces_runs_on_the_server(
    server: ServerProcess, tmp_path: Path
) -> None:
    """Its workflow is named after the file: the server refused 'My Analysis (v2)'."""
    env = {**os.environ, **remote_env(server, tmp_path)}
    src = write_notebook(
        tmp_path / "My Analysis (v2).ipynb", "%load_ext papercrane", "%%task t\ny = 2", "print(y)"
    )
    r = subprocess.run(
        [*CLI, "run", str(src), "--remote", "-q"], env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    listing = subprocess.run(
        [*CLI, "executions", "list", "--json"], env=env, capture_output=True, check=True
    )
    assert [row["name"] for row in json.loads(listing.stdout)] == ["My_Analysis_v2"]


def test_big_values_travel_with_their_blake3_digest(server: ServerProcess) -> None:
    """The client hashes a big value with BLAKE3; the server checks the upload with the
    algorithm the digest names, and the download is verified the same way."""
    import numpy as np

    from papercrane.backend.client import RemoteEngine

    engine = RemoteEngine(server.url, server.token("team"), "team")
    try:
        big = np.random.default_rng(0).random(300_000)  # 2.4 MB: over hashing.LARGE
        ref = engine.put_value(big, "big")
        assert ref.hash.startswith("blake3-")
        assert engine.find_artifact(ref.id) == ref
        assert np.array_equal(engine.artifacts.load(ref), big)
    finally:
        engine.close()


def test_the_server_serves_packed_values(server: ServerProcess) -> None:
    """Values a kernel packed into the server's store (a shared home) download through
    the HTTP API byte for byte, and the client checks them against their hash."""
    from papercrane.backend.client import RemoteEngine
    from papercrane.backend.config import Config
    from papercrane.backend.engine import LocalEngine, WorkflowRequest
    from papercrane.backend.model import TaskConfig, TaskSpec
    from papercrane.backend.workflow import CellTask, MapSpec, assemble

    spec = TaskSpec(name="sq", code="out = item * item", inputs=("item",), outputs=("out",))
    cells = [CellTask(spec, TaskConfig(executor="inline"), map=MapSpec("items", "item"))]
    items = [2, 3]
    # The server keeps each project's values under its own prefix of the store.
    where = str(server.home / "store" / "projects" / "team" / "development")
    embedded = LocalEngine(Config(home=server.home, storage_url=where, project="team"))
    try:
        result = embedded.run_workflow(
            WorkflowRequest(
                spec=assemble("wf", cells),
                params={"items": embedded.put_value(items, "items")},
                param_values={"items": items},
                project="team",
            )
        )
    finally:
        embedded.close()
    packed = result.execution.nodes["sq[1]"].outputs["out"]
    collected = result.nodes["sq"].outputs["out"]
    assert collected.uri.startswith("packs/")
    client = RemoteEngine(server.url, server.token("team"), "team")
    try:
        assert client.load(client.artifact(packed)) == 9
        assert client.load(client.artifact(collected.id)) == [4, 9]
    finally:
        client.close()


def test_an_id_that_is_no_id_is_an_unknown_execution(server: ServerProcess, tmp_path: Path) -> None:
    """The server answers a malformed id with a 422 about its path parameter; the CLI
    says what the embedded engine says."""
    env = {**os.environ, **remote_env(server, tmp_path)}
    for args in (["executions", "show", "nope"], ["logs", "nope", "x"], ["recover", "nope"]):
        r = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True)
        assert r.returncode != 0
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("Error: no execution 'nope'; give its id or at least 4"), r.stderr
