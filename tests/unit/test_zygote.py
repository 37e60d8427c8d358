"""The local executor's zygote, with real processes: attempts forked from it behave as
spawned ones (isolation, fresh user modules, the caller's environment and folder), it
is replaced when stale, timeouts and cancels kill the whole attempt, a broken or
switched-off zygote falls back to a plain spawn, and nothing outlives its owner."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from papercrane.backend import runner
from papercrane.backend.config import Config
from papercrane.backend.engine import LocalEngine
from papercrane.backend.executors.base import AttemptSpec
from papercrane.backend.executors.local import LocalExecutor
from papercrane.backend.executors.zygote import SWITCH, Zygote
from papercrane.backend.model import TaskConfig, TaskSpec
from papercrane.backend.runner import AttemptResult

from ..processes import gone

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalEngine]:
    monkeypatch.delenv(SWITCH, raising=False)
    monkeypatch.chdir(tmp_path)
    e = LocalEngine(Config(home=tmp_path / "home"))
    yield e
    e.close()


@pytest.fixture
def executor(engine: LocalEngine) -> LocalExecutor:
    ex = engine.executor("local")
    assert isinstance(ex, LocalExecutor)
    return ex


class Lines:
    """A log sink that keeps what each stream said."""

    def __init__(self) -> None:
        self.streams: dict[str, str] = {"stdout": "", "stderr": ""}

    def log(self, stream: str, text: str) -> None:
        self.streams[stream] += text


def attempt(
    engine: LocalEngine, code: str, imports: tuple[str, ...] = (), **config: Any
) -> AttemptSpec:
    spec = TaskSpec(
        name="t", code=textwrap.dedent(code), inputs=(), outputs=("y",), imports=imports
    )
    _, key = engine.bundle(spec)
    return AttemptSpec(
        execution_id=uuid.uuid4().hex[:16],
        node="t",
        attempt=1,
        task=spec,
        task_key=key,
        config=TaskConfig(executor="local", **config),
        inputs={},
    )


def sleeper(pid_file: Path) -> str:
    """A task that writes its pid to ``pid_file``, then sleeps for a minute."""
    return f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)"


def run(
    engine: LocalEngine, code: str, imports: tuple[str, ...] = (), **config: Any
) -> tuple[AttemptResult, Any]:
    """Run ``code`` as an attempt on the local executor: its result and its ``y``."""
    result = engine.executor("local").run(attempt(engine, code, imports, **config), Lines())
    ref = result.outputs.get("y")
    return result, engine.artifacts.load(ref) if ref is not None else None


def wait_for(path: Path) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.02)
    raise AssertionError(f"{path} was never written")


SNAPSHOT = """
import os, sys
y = {
    "parent": os.getppid(),
    "argv": sys.argv[:2],
    "executable": [sys.executable, sys.prefix, tuple(sys.flags)],
    "path0": sys.path[0],
    "path": sys.path,
    "cwd": os.getcwd(),
    "fds": sorted(os.listdir("/proc/self/fd")),
    "umask": open("/proc/self/status").read().split("Umask:")[1].split()[0],
    "pgid_is_pid": os.getpgid(0) == os.getpid() == os.getsid(0),
    "stdout": os.readlink("/proc/self/fd/1").split(":")[0],
    "env": os.environ.get("PAPERCRANE_TEST_VALUE"),
}
"""


def test_a_forked_attempt_looks_like_a_spawned_one(
    engine: LocalEngine, executor: LocalExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAPERCRANE_TEST_VALUE", "from the caller")
    # A kernel's path starts with its working folder; the folders after it that an
    # attempt lacks (pytest's here) are added after it, to both kinds of attempt.
    monkeypatch.setattr(sys, "path", ["", *sys.path])
    old = os.umask(0o027)
    try:
        forked_result, forked = run(engine, SNAPSHOT)
        monkeypatch.setenv(SWITCH, "0")
        spawned_result, spawned = run(engine, SNAPSHOT)
    finally:
        os.umask(old)
    assert forked_result.status == spawned_result.status == "succeeded"
    assert forked.pop("parent") == executor.zygote.pid
    assert spawned.pop("parent") == os.getpid()
    assert forked == spawned
    assert forked["umask"] == "0027" and forked["env"] == "from the caller"
    assert forked["path0"] == os.getcwd() and forked["pgid_is_pid"]


def test_module_state_does_not_leak_between_attempts(
    engine: LocalEngine, executor: LocalExecutor
) -> None:
    code = """
    import sys, cloudpickle
    from papercrane.backend import runner
    y = [hasattr(cloudpickle, "leak"), hasattr(runner, "leak"), "leaky" in sys.modules]
    cloudpickle.leak = runner.leak = 1
    sys.modules["leaky"] = sys
    """
    first, seen_first = run(engine, code)
    second, seen_second = run(engine, code)
    assert seen_first == seen_second == [False, False, False]
    assert first.status == second.status == "succeeded"
    assert executor.zygote.pid is not None


def test_a_file_left_open_by_the_task_is_flushed(engine: LocalEngine, tmp_path: Path) -> None:
    out = tmp_path / "left-open.txt"
    # The attempt skips the interpreter's teardown; the namespace it drops still closes
    # (and flushes) what the task left open, as in a spawned process.
    code = f"f = open({str(out)!r}, 'w')\nf.write('written')\ny = 1"
    result, _ = run(engine, code)
    assert result.status == "succeeded"
    assert out.read_text() == "written"


def test_edits_to_a_helper_module_are_seen(engine: LocalEngine, tmp_path: Path) -> None:
    helper = tmp_path / "helper_mod.py"
    helper.write_text("VALUE = 1\n")
    assert run(engine, "import helper_mod\ny = helper_mod.VALUE")[1] == 1
    helper.write_text("VALUE = 'edited'\n")  # another size: no stale .pyc either way
    assert run(engine, "import helper_mod\ny = helper_mod.VALUE")[1] == "edited"


def test_environment_changes_reach_the_task(
    engine: LocalEngine, executor: LocalExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = "import os\ny = os.environ.get('PAPERCRANE_TEST_VALUE')"
    monkeypatch.setenv("PAPERCRANE_TEST_VALUE", "a")
    assert run(engine, code)[1] == "a"
    first = executor.zygote.pid
    assert first is not None
    monkeypatch.setenv("PAPERCRANE_TEST_VALUE", "b")
    assert run(engine, code)[1] == "b"
    assert executor.zygote.pid not in (None, first)
    assert gone(first)  # the stale one retired: it had nothing running


def test_an_install_makes_the_zygote_stale(
    engine: LocalEngine, executor: LocalExecutor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    packages = tmp_path / "site"
    packages.mkdir()
    monkeypatch.setenv("PYTHONPATH", str(packages))
    code = "import importlib.util\ny = importlib.util.find_spec('newly_installed') is not None"
    assert run(engine, code)[1] is False
    first = executor.zygote.pid
    assert str(packages) in executor.zygote.watched()
    (packages / "newly_installed.py").write_text("")  # as pip would, in site-packages
    assert run(engine, code)[1] is True
    assert executor.zygote.pid not in (None, first)
    assert run(engine, code)[1] is True


def test_papercranes_own_source_is_watched(engine: LocalEngine, executor: LocalExecutor) -> None:
    run(engine, "y = 1")
    if "site-packages" in runner.__file__:
        pytest.skip("papercrane is not an editable install: site-packages is watched")
    assert runner.__file__ in executor.zygote.watched()


def _maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def test_a_task_that_imports_numpy_warms_the_zygote(
    engine: LocalEngine, executor: LocalExecutor
) -> None:
    """The first attempt that needs numpy has the zygote import it; later attempts are
    forked with it imported, and still see the same numpy a spawned runner would."""
    import numpy

    run(engine, "y = 1")
    zygote = executor.zygote.pid
    assert zygote is not None and "numpy" not in _maps(zygote)  # nothing asked for it
    code = "import sys\ny = [np.__file__, np.arange(3).sum()]"
    first, y = run(engine, code, imports=("np=numpy",))
    assert first.status == "succeeded" and y == [numpy.__file__, 3]
    assert executor.zygote.pid == zygote and "_multiarray_umath" in _maps(zygote)
    # A child forked after the warm-up finds numpy imported before its task runs.
    seen = "import sys\ny = 'numpy' in sys.modules"
    assert run(engine, seen)[1] is True


def test_blas_threads_work_in_attempts_forked_after_numpy(
    engine: LocalEngine, executor: LocalExecutor
) -> None:
    """OpenBLAS's thread pool, started when the zygote imported numpy, is stopped before
    each fork and started again in the child: a threaded matrix product completes."""
    code = "m = np.ones((400, 400))\ny = float((m @ m).sum())"
    for _ in range(3):
        result, y = run(engine, code, imports=("np=numpy",), timeout=60)
        assert result.status == "succeeded" and y == 400.0**3
    assert executor.zygote.pid is not None


def test_a_folder_with_its_own_numpy_gets_its_own(
    engine: LocalEngine, executor: LocalExecutor, tmp_path: Path
) -> None:
    """``python -m`` puts the working folder first on sys.path: a runner started there
    imports the folder's numpy, so a zygote holding the installed one must not fork it."""
    run(engine, "y = np.zeros(1).size", imports=("np=numpy",))  # the zygote has numpy
    (tmp_path / "numpy").mkdir()
    (tmp_path / "numpy" / "__init__.py").write_text("LOCAL = 'the folder numpy'\n")
    result, y = run(engine, "y = np.LOCAL", imports=("np=numpy",))
    assert result.status == "succeeded" and y == "the folder numpy"
    (tmp_path / "numpy" / "__init__.py").unlink()  # now only a namespace folder: no matter
    result, y = run(engine, "import os\ny = [np.__name__, os.getppid()]", imports=("np=numpy",))
    assert result.status == "succeeded" and y == ["numpy", executor.zygote.pid]


def test_live_output_and_per_attempt_logs(engine: LocalEngine, executor: LocalExecutor) -> None:
    spec = attempt(engine, "import sys\nprint('out')\nprint('err', file=sys.stderr)\ny = 1")
    sink = Lines()
    result = executor.run(spec, sink)
    assert result.status == "succeeded"
    assert sink.streams == {"stdout": "out\n", "stderr": "err\n"}
    assert engine.storage.read_bytes(result.logs["stdout"]) == b"out\n"
    assert engine.storage.read_bytes(result.logs["stderr"]) == b"err\n"
    assert executor.zygote.pid is not None


def test_timeout_kills_the_attempts_process_group(engine: LocalEngine, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    code = f"""
    import os, subprocess, time
    child = subprocess.Popen(["sleep", "60"])
    open({str(pids)!r}, "w").write(f"{{os.getpid()}} {{child.pid}}")
    time.sleep(60)
    """
    result, _ = run(engine, code, timeout=1)
    assert result.status == "failed" and result.error["type"] == "TaskTimeout"
    task, grandchild = map(int, pids.read_text().split())
    assert gone(task) and gone(grandchild)


def test_timeout_applies_after_the_task_closed_its_output(engine: LocalEngine) -> None:
    result, _ = run(engine, "import os, time\nos.close(1)\nos.close(2)\ntime.sleep(60)", timeout=1)
    assert result.status == "failed" and result.error["type"] == "TaskTimeout"


def test_cancel_kills_the_attempt(engine: LocalEngine, executor: LocalExecutor, tmp_path: Path):
    pid_file = tmp_path / "pid"
    spec = attempt(
        engine,
        sleeper(pid_file),
    )
    cancel = threading.Event()
    results: list[AttemptResult] = []
    worker = threading.Thread(target=lambda: results.append(executor.run(spec, Lines(), cancel)))
    worker.start()
    pid = int(wait_for(pid_file))
    cancel.set()
    worker.join(30)
    assert results and results[0].status == "aborted"
    assert gone(pid)


def test_sigkill_is_reported_as_before(engine: LocalEngine) -> None:
    result, _ = run(engine, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    assert result.status == "failed"
    assert result.error["message"] == "the task process was killed by SIGKILL (out of memory?)"


def test_exit_code_is_reported_as_before(engine: LocalEngine) -> None:
    result, _ = run(engine, "import os\nos._exit(3)")
    assert (
        result.error["message"] == "the task process exited with code 3 before reporting a result"
    )


@pytest.mark.parametrize("zygote", ["1", "0"])
def test_papercranes_own_failure_in_the_tasks_process_is_reported_with_its_traceback(
    engine: LocalEngine, zygote: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug of papercrane's around the task (Python 3.10's NumPy once broke storing an
    output) is a system error that names it, not "exited with code 1 before reporting a
    result" with an empty log. Here the task itself breaks the runner's collection of its
    outputs, standing in for such a bug."""
    monkeypatch.setenv(SWITCH, zygote)
    code = """
    import sys

    def collect(*args, **kwargs):
        raise RuntimeError("a stand-in bug while storing outputs")

    # The runner's module: ``__main__`` in a ``python -m`` process, imported in the zygote.
    for name in ("__main__", "papercrane.backend.runner"):
        if hasattr(sys.modules.get(name), "collect"):
            sys.modules[name].collect = collect
    y = 1
    """
    lines = Lines()
    result = engine.executor("local").run(attempt(engine, code), lines)
    assert result.status == "failed" and result.error["kind"] == "system"
    assert result.error["message"] == (
        "papercrane failed around the task: RuntimeError: a stand-in bug while storing outputs"
    )
    assert 'runner.py", line' in result.error["traceback"]
    log = engine.storage.read_bytes(result.logs["stderr"]).decode()
    assert log.rstrip().endswith("RuntimeError: a stand-in bug while storing outputs")
    assert "a stand-in bug" in lines.streams["stderr"]  # shown live too


def test_a_dead_zygote_loses_its_attempt_and_is_replaced(
    engine: LocalEngine, executor: LocalExecutor, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    code = f"""
    import os, subprocess, time
    child = subprocess.Popen(["sleep", "60"])
    open({str(pid_file)!r}, "w").write(f"{{os.getpid()}} {{child.pid}}")
    time.sleep(60)
    """
    spec = attempt(engine, code)
    results: list[AttemptResult] = []
    worker = threading.Thread(target=lambda: results.append(executor.run(spec, Lines())))
    worker.start()
    pid, grandchild = map(int, wait_for(pid_file).split())
    zygote = executor.zygote.pid
    assert zygote is not None
    os.kill(zygote, signal.SIGKILL)
    worker.join(30)
    assert results and results[0].status == "failed"
    assert "zygote" in results[0].error["message"]
    assert gone(pid) and gone(grandchild)
    result, y = run(engine, "y = 2")
    assert result.status == "succeeded" and y == 2
    assert executor.zygote.pid not in (None, zygote)


def test_parallel_attempts_from_worker_threads(
    engine: LocalEngine, executor: LocalExecutor
) -> None:
    specs = [
        attempt(engine, f"import time\nprint('attempt {i}')\ntime.sleep(0.2)\ny = {i}")
        for i in range(8)
    ]
    sinks = [Lines() for _ in specs]
    results: dict[int, AttemptResult] = {}
    run(engine, "y = 0")  # the zygote's own descriptors are open from here on
    descriptors = sorted(os.listdir("/proc/self/fd"))

    def work(i: int) -> None:
        results[i] = executor.run(specs[i], sinks[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(specs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == list(range(8))
    for i, result in results.items():
        assert result.status == "succeeded"
        assert engine.artifacts.load(result.outputs["y"]) == i
        assert sinks[i].streams["stdout"] == f"attempt {i}\n"
    assert executor.zygote.pids() == [executor.zygote.pid]
    assert sorted(os.listdir("/proc/self/fd")) == descriptors  # none leaked


def test_switched_off_spawns_plainly(
    engine: LocalEngine,
    executor: LocalExecutor,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv(SWITCH, "0")
    with caplog.at_level(logging.DEBUG, logger="papercrane.backend.executors.local"):
        assert run(engine, "import os\ny = os.getppid()")[1] == os.getpid()
    assert executor.zygote.pid is None
    assert f"without the zygote: {SWITCH}=0" in caplog.text


def test_a_zygote_that_cannot_start_falls_back(
    engine: LocalEngine, executor: LocalExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    executor._zygote = Zygote(python="/bin/false")  # a zygote that exits at once
    with caplog.at_level(logging.DEBUG, logger="papercrane.backend.executors.local"):
        assert run(engine, "import os\ny = os.getppid()")[1] == os.getpid()
        assert run(engine, "import os\ny = os.getppid()")[1] == os.getpid()
    assert "the zygote exited at start" in caplog.text
    assert "failed to start less than a minute ago" in caplog.text  # no retry storm


def test_closing_the_attempt_socket_kills_the_attempt(
    engine: LocalEngine, executor: LocalExecutor, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    spec = attempt(
        engine,
        sleeper(pid_file),
    )
    key = f"{spec.prefix}/attempt.json"
    import json

    engine.storage.write_bytes(key, json.dumps(spec.to_dict()).encode())
    proc = executor.zygote.spawn([engine.storage.url_root, key], dict(os.environ), os.getcwd())
    assert int(wait_for(pid_file)) == proc.pid
    proc.close()  # the caller gave up on it (an interrupted executor, say)
    proc.stdout.close()
    proc.stderr.close()
    assert gone(proc.pid)


def test_closing_the_engine_leaves_no_process(
    engine: LocalEngine, executor: LocalExecutor, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    spec = attempt(
        engine,
        sleeper(pid_file),
    )
    results: list[AttemptResult] = []
    worker = threading.Thread(target=lambda: results.append(executor.run(spec, Lines())))
    worker.start()
    pid = int(wait_for(pid_file))
    zygote = executor.zygote.pid
    assert zygote is not None
    engine.close()
    worker.join(30)
    assert results and results[0].status == "failed"
    assert gone(pid) and gone(zygote)


OWNER = """
import os, sys, threading, time
from pathlib import Path
from papercrane.backend.config import Config
from papercrane.backend.engine import LocalEngine
from papercrane.backend.executors.base import AttemptSpec
from papercrane.backend.model import TaskConfig, TaskSpec

home, pid_file = Path(sys.argv[1]), sys.argv[2]
engine = LocalEngine(Config(home=home))
code = f"import os, time\\nopen({pid_file!r}, 'w').write(str(os.getpid()))\\ntime.sleep(60)"
spec = TaskSpec(name="t", code=code, inputs=(), outputs=())
_, key = engine.bundle(spec)
attempt = AttemptSpec("e1", "t", 1, spec, key, TaskConfig(executor="local"), {})

class Quiet:
    def log(self, stream, text):
        pass

executor = engine.executor("local")
threading.Thread(target=executor.run, args=(attempt, Quiet()), daemon=True).start()
while executor.zygote.pid is None:
    time.sleep(0.01)
print(executor.zygote.pid, flush=True)
time.sleep(120)
"""


def test_a_killed_owner_takes_the_zygote_and_its_attempts(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    env = {k: v for k, v in os.environ.items() if k != SWITCH}
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(tmp_path / "home"), str(pid_file)],
        stdout=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert owner.stdout is not None
        zygote = int(owner.stdout.readline())
        task = int(wait_for(pid_file))
        assert zygote != task
        owner.kill()  # SIGKILL: no clean-up code runs in the owner
        owner.wait(30)
        assert gone(zygote) and gone(task)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        if owner.stdout is not None:
            owner.stdout.close()


def test_the_attempt_ends_as_a_python_process_does(engine: LocalEngine, tmp_path: Path) -> None:
    """A forked attempt skips the interpreter's module teardown, not the rest of its
    ending: non-daemon threads finish, atexit callbacks run, stdio is flushed."""
    thread_file, atexit_file = tmp_path / "thread", tmp_path / "atexit"
    code = f"""
    import atexit, sys, threading, time
    def late():
        time.sleep(0.3)
        open({str(thread_file)!r}, "w").write("finished")
    threading.Thread(target=late).start()
    from concurrent.futures import ThreadPoolExecutor
    pool = ThreadPoolExecutor(2)  # left running: its idle workers must not keep us
    pool.submit(print, "from the pool")
    atexit.register(lambda: open({str(atexit_file)!r}, "w").write("ran"))
    sys.stdout.write("no newline, still flushed")
    y = 1
    """
    spec = attempt(engine, code)
    sink = Lines()
    result = engine.executor("local").run(spec, sink)
    assert result.status == "succeeded"
    assert thread_file.read_text() == "finished" and atexit_file.read_text() == "ran"
    assert "no newline, still flushed" in sink.streams["stdout"]
    assert "from the pool" in sink.streams["stdout"]


@pytest.mark.parametrize("zygote", ["1", "0"])
def test_sys_exit_or_keyboard_interrupt_in_a_task_is_the_users_error(
    engine: LocalEngine, zygote: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The task's own ``sys.exit()`` or ``raise KeyboardInterrupt`` is its failure, with
    its traceback: not a lost process (a system error, retried without being asked)."""
    monkeypatch.setenv(SWITCH, zygote)
    result, _ = run(engine, "import sys\nsys.exit(5)")
    assert result.status == "failed" and result.error["kind"] == "user"
    assert result.error["type"] == "SystemExit"
    assert result.error["message"].startswith("the task called sys.exit(5);")
    assert result.error["traceback"].startswith("Traceback (most recent call last):")
    assert "runner.py" not in result.error["traceback"]
    result, _ = run(engine, "raise KeyboardInterrupt('stop')")
    assert result.status == "failed" and result.error["kind"] == "user"
    assert result.error["message"] == "the task's code raised KeyboardInterrupt (stop)"
    assert "stderr" not in result.logs  # (no traceback of the runner's printed)


@pytest.mark.parametrize("zygote", ["1", "0"])
def test_sigterm_still_ends_the_attempt_with_its_exit_code(
    engine: LocalEngine, zygote: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM (a pod being deleted) ends the attempt at once with no result, as a
    Python process ends: the runner's own exit, not a ``sys.exit()`` of the task's."""
    monkeypatch.setenv(SWITCH, zygote)
    result, _ = run(engine, "import os, signal, time\nos.kill(os.getpid(), signal.SIGTERM)\ny = 1")
    assert result.error["kind"] == "system"
    assert (
        result.error["message"] == "the task process exited with code 143 before reporting a result"
    )


def test_a_cache_hit_neither_starts_nor_imports_the_zygote(tmp_path: Path) -> None:
    """A fresh process (a papermill run's kernel) whose ``local`` task is a cache hit:
    nothing is spawned, so the zygote's module is not even imported."""
    script = textwrap.dedent(
        """
        import sys
        from papercrane.backend.api import RunRequest
        from papercrane.backend.config import Config
        from papercrane.backend.engine import LocalEngine
        from papercrane.backend.model import TaskConfig, TaskSpec

        engine = LocalEngine(Config(home=sys.argv[1]))
        spec = TaskSpec(name="t", code="y = x * 2", inputs=("x",), outputs=("y",))
        x = engine.find_artifact(engine.artifacts.fingerprinter().value(3))
        x = x or engine.put_value(3, "input 'x'")
        request = RunRequest(
            spec=spec, config=TaskConfig(cache=True), inputs={"x": x}, values={"x": 3}
        )
        result = engine.run_task(request)
        engine.close()
        print(result.execution.status.value, result.values["y"],
              "papercrane.backend.executors.zygote" in sys.modules)
        """
    )

    def run() -> list[str]:
        done = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert run() == ["succeeded", "6", "True"]  # a miss: its attempt forked from the zygote
    assert run() == ["cached", "6", "False"]
