"""Telling whether the process that runs an execution is still there (``owner``)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from papercrane.backend import owner

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc, which Linux has"
)


def test_a_live_process_is_not_gone() -> None:
    me = owner.this_process()
    assert me["pid"] > 0 and isinstance(me["start"], int)
    assert not owner.gone(me)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        runner = {**me, "pid": child.pid, "start": owner._start_time(child.pid)}
        assert not owner.gone(runner)
    finally:
        child.kill()
        child.wait()
    assert owner.gone(runner)  # exited and reaped


def test_a_killed_process_not_yet_reaped_is_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    runner = {**owner.this_process(), "pid": child.pid, "start": owner._start_time(child.pid)}
    child.kill()
    deadline = time.monotonic() + 10
    while owner._stat(child.pid) is not None and owner._stat(child.pid)[0] != "Z":
        assert time.monotonic() < deadline, "the child did not become a zombie"
        time.sleep(0.01)
    try:
        assert owner.gone(runner)  # a zombie: its parent has not waited for it yet
    finally:
        child.wait()


def test_a_pid_given_to_a_later_process_is_gone() -> None:
    """Same pid, another start: the runner's process ended and the pid was reused."""
    me = owner.this_process()
    assert owner.gone({**me, "start": me["start"] - 1})


def test_a_runner_from_before_a_reboot_is_gone() -> None:
    me = owner.this_process()
    assert me["boot"]
    assert owner.gone({**me, "boot": "an-earlier-boot"})  # even with this very pid


def test_what_cannot_be_checked_is_taken_to_be_alive() -> None:
    me = owner.this_process()
    assert not owner.gone({})  # recorded before runners were
    assert not owner.gone({**me, "host": "another-host"})  # its pids are not ours
    dead = {**me, "start": me["start"] - 1}  # (gone, as above, when it is checkable)
    assert not owner.gone({**dead, "pidns": "pid:[1]"})  # another container's pids
    assert not owner.gone({**dead, "pidns": None})
    assert not owner.gone({**me, "pid": "12"})
    assert not owner.gone({**me, "start": None})  # (no /proc where it ran)
