"""Which process runs an execution of the embedded engine, and whether it still does.

A kernel or ``papercrane run`` runs its executions in its own process, and nothing else
will ever end them: killed mid-run (a kernel restart, ``kill -9``, the out-of-memory
killer, a laptop closed for good), it leaves them "running" in the store for ever, where
``papercrane recover`` refuses them as still running. So an execution records the
process that runs it; whoever reads it later on the same host can tell that process is
gone and record the execution as aborted (``LocalEngine.execution``).

A server's executions record no owner: a restarted server takes its own back.
"""

from __future__ import annotations

import os
import socket
from functools import cache
from typing import Any

#: Set by ``papercrane run`` for the kernel it starts, to a marker of its own: that
#: kernel's executions record it (``run`` in the runner), so the run follows its own
#: executions and not those of another run, of the same notebook or not, at the same time.
RUN_VARIABLE = "PAPERCRANE_RUN_ID"


@cache
def this_process() -> dict[str, Any]:
    """This process, as an execution's ``runner``: host and pid and, on Linux, what
    makes the pid unambiguous: its start time (a pid given to another process since is
    not taken for it), the pid namespace (containers sharing a host name and a store
    have pids of their own) and the boot (after a reboot, no process of before runs);
    and the ``papercrane run`` that started it, if one did (``RUN_VARIABLE``)."""
    pid = os.getpid()
    found = {
        "host": socket.gethostname(),
        "pid": pid,
        "start": _start_time(pid),
        "pidns": _read_link("/proc/self/ns/pid"),
        "boot": _read_text("/proc/sys/kernel/random/boot_id"),
    }
    if os.environ.get(RUN_VARIABLE):
        found["run"] = os.environ[RUN_VARIABLE]
    return found


def gone(runner: dict[str, Any]) -> bool:
    """True only when sure: the runner was on this host and its process has exited (a
    zombie not yet reaped counts as exited), or its pid now names a process that
    started later, or the machine has rebooted since. A runner on another host or in
    another pid namespace, or one this host cannot check, is taken to be alive."""
    me = this_process()
    if not runner or runner == me or runner.get("host") != me["host"]:
        return False  # (nothing named, this very process, or another host)
    if runner.get("boot") and me["boot"] and runner["boot"] != me["boot"]:
        return True  # the machine restarted since
    if runner.get("pidns") != me["pidns"]:
        return False  # another container's pids (or one of them unknown)
    pid = runner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if pid != os.getpid():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # (alive, another user's)
        except OSError:
            return False
    stat = _stat(pid)
    if stat is None:
        return False
    state, start = stat
    return state == "Z" or runner.get("start") not in (None, start)


def _stat(pid: int) -> tuple[str, int] | None:
    """The process's state letter and start (clock ticks since boot), from
    ``/proc/PID/stat`` (fields 3 and 22); None where there is no ``/proc`` to read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return fields[0].decode(), int(fields[19])
    except (IndexError, ValueError):
        return None


def _start_time(pid: int) -> int | None:
    stat = _stat(pid)
    return stat[1] if stat is not None else None


def _read_link(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip() or None
    except OSError:
        return None
