"""A warm fork server ("zygote") for the local executor, the caller's side.

A fresh ``python -m papercrane.backend.runner`` spends most of its life before the task
starts: interpreter start-up, then importing the runner, cloudpickle and IPython's
display formatter, on every attempt. The zygote (``zygote_server.py``, which describes
the protocol) is a helper process that has done those imports once; for each attempt it
forks a child that calls the same runner entrypoint with the caller's working folder,
umask and CPU affinity, stdout/stderr on pipes the executor reads live, in a process
group of its own. Each attempt is still its own process, forked from a zygote that
never ran user code, so nothing one task does reaches the next, and user modules are
imported fresh by each attempt, so edits to a helper ``.py`` are seen.

Warm modules: an attempt that needs numpy (``zygote_server.WARM``: slow to import, safe
to fork after) asks the zygote to import it before forking, so this attempt and the
next ones find it imported instead of paying its import each. Not when the attempt's
folder has a module of that name of its own, which a spawned runner would import
instead (``python -m`` puts the folder first on ``sys.path``): such an attempt does not
warm it and, if the zygote already has it, is spawned plainly.

Freshness: what the zygote imported must be what a fresh runner would import. The
caller restarts it (the old one exits once its running attempts have ended) when:

- the environment differs from the one it was started with (``PYTHON*`` variables and
  others shape imports; a task must see ``os.environ`` as the kernel set it);
- a resource limit differs;
- a watched file or folder has a new mtime: the folders on ``sys.path`` (an install,
  upgrade or uninstall in site-packages), the site folders' ``.pth`` files, and the
  imported module files outside site-packages and the standard library (papercrane's
  own source in an editable install).

Known gaps, each a corner: a file inside site-packages edited in place; a change that
lands between the zygote's imports and its ``stat`` of the file a few milliseconds
later.

What a task can tell apart from a spawned runner, none of it a promise we made: its
parent is the zygote (``os.getppid()``, and ``ps`` shows the zygote's command line);
``PYTHONHASHSEED`` randomization is per zygote rather than per attempt (string hashes,
and so the iteration order of sets of strings, repeat between attempts); the runner is
called as ``papercrane.backend.runner.main`` rather than run as ``__main__`` (running it
as ``__main__`` again costs ~4 ms per attempt); objects still alive when the attempt
ends are not finalized (see ``zygote_server._leave``); a ``nice`` value set in the
caller after the zygote started is not inherited; once a task needed numpy, later tasks
find it in ``sys.modules`` before they import it, and OpenBLAS sized its thread pool for
the CPUs the caller had when the zygote started.

Lifetime: each local executor (so each engine) has its own zygote, started with its
first attempt and stopped by ``close`` when the engine closes. It is started from a
thread that lives as long as it does, with ``PR_SET_PDEATHSIG`` (the signal follows the
*thread* that forked, and scheduler workers come and go); its children set it relative
to the zygote. A dead caller thus takes the zygote and every attempt with it, as it
takes a plainly spawned attempt.

Anything unexpected raises ``ZygoteUnavailable`` with no attempt running (a child forked
for a request that then failed is killed: the zygote kills a child whose attempt socket
the caller closed), and the executor spawns the attempt plainly.
``PAPERCRANE_LOCAL_ZYGOTE=0`` turns the zygote off.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Collection
from typing import IO, Any

from .zygote_server import LENGTH, WARM, mtime, prctl

log = logging.getLogger(__name__)

SWITCH = "PAPERCRANE_LOCAL_ZYGOTE"
SERVER = "papercrane.backend.executors.zygote_server"

#: How long the zygote may take to import its modules before we give up on it.
START_TIMEOUT = 60.0
#: How long a request may wait for its answer (milliseconds when healthy; a zygote
#: that does not answer is killed, and its children with it).
REPLY_TIMEOUT = 30.0
#: After a zygote failed to start, attempts spawn plainly for this long.
RETRY_AFTER = 60.0


class ZygoteUnavailable(Exception):
    """The zygote can't take this attempt, and nothing was started; the caller spawns
    a process instead."""


def switched_off() -> str | None:
    """Why attempts may not go through a zygote here, or None when they may: it needs
    Linux (fork, descriptor passing, ``PR_SET_PDEATHSIG``) and can be turned off with
    ``PAPERCRANE_LOCAL_ZYGOTE=0``. Read per attempt, so the switch works from a kernel."""
    if os.environ.get(SWITCH, "1").strip().lower() in {"0", "false", "no", "off"}:
        return f"{SWITCH}={os.environ[SWITCH]}"
    if not sys.platform.startswith("linux"):
        return f"the zygote needs Linux, not {sys.platform}"
    return None


def die_with_parent() -> Any:
    """A pre-exec hook for a child: on Linux, be killed when the thread that started it
    ends (a kernel or a server killed with SIGKILL must not leave attempts running).
    libc is loaded here, in the parent: the child, forked from a threaded process, only
    makes the one system call."""
    if not sys.platform.startswith("linux"):
        return None
    call = prctl()
    if call is None:
        return None
    sig = int(signal.SIGKILL)
    return lambda: call(1, sig)  # 1 = PR_SET_PDEATHSIG


def _umask() -> int | None:
    """This process's umask, read without changing it (``os.umask`` can only be read by
    setting it, which would race with the caller's other threads)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _rlimits() -> tuple[Any, ...]:
    import resource

    out = []
    for name in sorted(n for n in dir(resource) if n.startswith("RLIMIT_")):
        with contextlib.suppress(OSError, ValueError):
            out.append((name, resource.getrlimit(getattr(resource, name))))
    return tuple(out)


class ForkedProcess:
    """An attempt process forked by the zygote, with the parts of ``subprocess.Popen``
    the local executor uses (``pid``, ``stdout``, ``stderr``, ``poll``, ``wait``,
    ``returncode``). Its exit status comes from the zygote, its parent. Closing it
    before it ended abandons the attempt: the zygote kills it."""

    def __init__(
        self, pid: int, sock: socket.socket, stdout: IO[bytes], stderr: IO[bytes], buf: bytes
    ) -> None:
        self.pid = pid
        self.stdout = stdout
        self.stderr = stderr
        self.returncode: int | None = None
        #: Set when the zygote died before reporting: its children die with it.
        self.lost = False
        self._sock = sock
        self._buf = buf

    def poll(self) -> int | None:
        return self._check(0.0)

    def wait(self, timeout: float | None = None) -> int:
        code = self._check(timeout)
        if code is None:
            raise subprocess.TimeoutExpired(SERVER, timeout or 0.0)
        return code

    def close(self) -> None:
        self._sock.close()

    def describe(self) -> str | None:
        """Why the process ended without a result, when its exit code can't tell."""
        if self.lost:
            return (
                "the task process was lost: the local executor's zygote (the process "
                "that forked it) died, and its children with it"
            )
        return None

    def _check(self, timeout: float | None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            if b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                self.returncode = json.loads(line).get("exit")
                continue
            if self._sock.fileno() < 0:
                return None
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._sock.settimeout(remaining)
            try:
                data = self._sock.recv(4096)
            except (TimeoutError, BlockingIOError):
                return None
            except OSError:
                data = b""
            if not data:
                # The zygote died; its child was killed with it (PR_SET_PDEATHSIG), and
                # the rest of the attempt's process group goes too.
                self.returncode = -int(signal.SIGKILL)
                self.lost = True
                with contextlib.suppress(OSError):
                    os.killpg(self.pid, signal.SIGKILL)
            self._buf += data
        self.close()
        return self.returncode


class _Instance:
    """One zygote process, as the caller sees it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.limits = _rlimits()
        self.proc: subprocess.Popen | None = None
        self.ctrl: socket.socket | None = None
        self.pid = 0
        self.watch: list[tuple[str, int]] = []
        #: The ``WARM`` modules it has imported (as its last child said).
        self.warm: set[str] = set()
        #: Set by its keeper thread once the process has exited and been reaped.
        self.exited = threading.Event()
        self.started = threading.Event()
        self.error: BaseException | None = None

    def stale(self, env: dict[str, str]) -> str | None:
        """Why a runner forked from it could differ from a freshly started one."""
        if self.exited.is_set():
            return "it exited"
        if env != self.env:
            changed = sorted(
                k for k in env.keys() | self.env.keys() if env.get(k) != self.env.get(k)
            )
            return f"the environment changed ({', '.join(changed)})"
        if _rlimits() != self.limits:
            return "a resource limit changed"
        for path, when in self.watch:
            if mtime(path) != when:
                return f"{path} changed"
        return None

    def kill(self) -> None:
        """Kill the zygote; its children die with it (``PR_SET_PDEATHSIG``)."""
        if self.proc is not None:
            with contextlib.suppress(OSError):
                self.proc.kill()


class Zygote:
    """The zygote of one local executor: started on first use, restarted when it died
    or went stale, stopped by ``close``. Safe to use from several threads: requests go
    out under a lock, each with its own socket pair for the answers."""

    def __init__(self, python: str = sys.executable, reply_timeout: float = REPLY_TIMEOUT):
        self.python = python
        self.reply_timeout = reply_timeout
        self._lock = threading.Lock()
        self._current: _Instance | None = None
        #: Every zygote not yet exited: the current one and retired ones still running.
        self._live: set[_Instance] = set()
        self._retry_at = 0.0
        self._owner = os.getpid()

    @property
    def pid(self) -> int | None:
        """The current zygote's pid, if one is running (for tests and diagnostics)."""
        cur = self._current
        return cur.pid if cur is not None and not cur.exited.is_set() else None

    def pids(self) -> list[int]:
        """Every zygote process of this object still running, retired ones included."""
        with self._lock:
            return [i.pid for i in self._live if i.pid and not i.exited.is_set()]

    def watched(self) -> list[str]:
        """The files and folders whose change restarts the current zygote."""
        cur = self._current
        return [path for path, _ in cur.watch] if cur is not None else []

    def spawn(
        self, args: list[str], env: dict[str, str], cwd: str, warm: Collection[str] = ()
    ) -> ForkedProcess:
        """Fork an attempt process that runs the runner with ``args`` in ``cwd``, with
        ``env`` as its environment; the zygote imports the modules ``warm`` names (those
        of ``WARM``) before, if it hasn't yet. Raises ``ZygoteUnavailable`` when it
        can't, in which case no attempt was started."""
        if os.getpid() != self._owner:
            raise ZygoteUnavailable("this process is a fork of the one that owns the zygote")
        affinity = sorted(os.sched_getaffinity(0))
        request = json.dumps({"args": args, "cwd": cwd, "umask": _umask(), "affinity": affinity})
        for _ in range(2):  # a zygote found dead is restarted once
            proc = self._try_spawn(env, request.encode(), cwd, warm)
            if proc is not None:
                return proc
        raise ZygoteUnavailable("the zygote died twice in a row")

    def _try_spawn(
        self, env: dict[str, str], request: bytes, cwd: str, warm: Collection[str]
    ) -> ForkedProcess | None:
        """The attempt, or None when the zygote turned out dead (it is then dropped)."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        ok = False
        try:
            with self._lock:
                inst = self._ready(env)
                assert inst.ctrl is not None
                verb = b"spawn" + _warm_request(inst, env, cwd, warm)
                try:
                    socket.send_fds(inst.ctrl, [verb], [theirs.fileno(), out_w, err_w])
                except OSError:
                    self._drop(inst)
                    return None
            # The zygote has its copies: ours must go, or the pipes never see EOF.
            theirs.close()
            os.close(out_w)
            os.close(err_w)
            out_w = err_w = -1
            mine.settimeout(self.reply_timeout)
            try:
                mine.sendall(LENGTH.pack(len(request)) + request)
                buf = b""
                while b"\n" not in buf and (data := mine.recv(4096)):
                    buf += data
            except TimeoutError:
                inst.kill()  # a zygote that does not answer is of no use
                raise ZygoteUnavailable("the zygote did not answer") from None
            except OSError:
                buf = b""
            if b"\n" not in buf:  # EOF: the zygote died before its child said hello
                with self._lock:
                    self._drop(inst)
                return None
            line, rest = buf.split(b"\n", 1)
            msg = json.loads(line)
            if "pid" not in msg:
                raise ZygoteUnavailable(_refusal(msg, err_r))
            with self._lock:
                inst.warm.update(msg.get("warm", ()))
                known = {path for path, _ in inst.watch}
                inst.watch += [(p, int(m)) for p, m in msg.get("watch", ()) if p not in known]
            stdout = open(out_r, "rb")  # noqa: SIM115 (the executor's pumps read and close it)
            stderr = open(err_r, "rb")  # noqa: SIM115
            proc = ForkedProcess(int(msg["pid"]), mine, stdout, stderr, rest)
            ok = True
            return proc
        finally:
            theirs.close()
            for fd in (out_w, err_w):
                if fd >= 0:
                    os.close(fd)
            if not ok:
                mine.close()  # the zygote kills a child whose socket closes
                os.close(out_r)
                os.close(err_r)

    # -- lifecycle (under self._lock) ----------------------------------------------
    def _ready(self, env: dict[str, str]) -> _Instance:
        cur = self._current
        reason = cur.stale(env) if cur is not None else None
        if cur is not None and reason is not None:
            log.debug("replacing the zygote %d: %s", cur.pid, reason)
            self._retire(cur)
            cur = None
        if cur is None:
            if time.monotonic() < self._retry_at:
                raise ZygoteUnavailable("the zygote failed to start less than a minute ago")
            try:
                cur = self._start(env)
            except ZygoteUnavailable:
                self._retry_at = time.monotonic() + RETRY_AFTER
                raise
            self._current = cur
        return cur

    def _start(self, env: dict[str, str]) -> _Instance:
        inst = _Instance(dict(env))
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        cmd = [self.python, "-m", SERVER, str(theirs.fileno())]

        def keep() -> None:
            """Start the zygote and wait for it: the thread that forks a process is the
            one whose end fires ``PR_SET_PDEATHSIG``, so it must live as long."""
            try:
                inst.proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    pass_fds=[theirs.fileno()],
                    cwd="/",  # its imports must not come from the user's folder
                    env=env,
                    start_new_session=True,  # no terminal signals (Ctrl-C) for it
                    preexec_fn=die_with_parent(),
                )
            except BaseException as exc:
                inst.error = exc
                inst.started.set()
                inst.exited.set()
                return
            inst.started.set()
            code = inst.proc.wait()
            inst.exited.set()
            log.debug("the zygote %d exited with %d", inst.proc.pid, code)
            with self._lock:
                self._drop(inst)

        threading.Thread(target=keep, name="papercrane-zygote", daemon=True).start()
        try:
            inst.started.wait()
            theirs.close()  # the zygote has its copy: its exit must read as EOF here
            if inst.error is not None:
                raise ZygoteUnavailable(f"could not start the zygote: {inst.error}")
            mine.settimeout(START_TIMEOUT)
            try:
                hello = json.loads(mine.recv(1 << 20) or b"{}")
            except (OSError, ValueError) as exc:
                hello = {"error": f"no answer from the zygote: {exc}"}
            if "pid" not in hello:
                raise ZygoteUnavailable(hello.get("error", "the zygote exited at start"))
            mine.settimeout(self.reply_timeout)
            inst.ctrl, inst.pid = mine, int(hello["pid"])
            inst.watch = [(p, int(m)) for p, m in hello["watch"]]
            self._live.add(inst)
            return inst
        except BaseException:
            inst.kill()
            mine.close()
            raise
        finally:
            theirs.close()

    def _retire(self, inst: _Instance) -> None:
        """Stop using a stale zygote; it exits once its running attempts have ended.
        Its control socket stays open until then: EOF would tell it to kill them."""
        if self._current is inst:
            self._current = None
        try:
            assert inst.ctrl is not None
            inst.ctrl.send(b"retire")
        except (OSError, AssertionError):
            inst.kill()

    def _drop(self, inst: _Instance) -> None:
        """Forget a zygote that died or exited; its keeper thread reaps it."""
        if self._current is inst:
            self._current = None
        self._live.discard(inst)
        if inst.ctrl is not None:
            inst.ctrl.close()

    def close(self) -> None:
        """Stop every zygote of this object; their running attempts are killed (the
        executor's engine is closing). A later request starts a new one."""
        with self._lock:
            live, self._live, self._current = list(self._live), set(), None
            for inst in live:
                if inst.ctrl is not None:
                    inst.ctrl.close()  # EOF: it kills its children and exits
        for inst in live:
            if not inst.exited.wait(10):
                inst.kill()
                inst.exited.wait(10)


def _warm_request(inst: _Instance, env: dict[str, str], cwd: str, warm: Collection[str]) -> bytes:
    """What to add to a spawn request so the zygote imports the ``WARM`` modules of
    ``warm`` first (b" numpy"), leaving out any that ``cwd`` has of its own. Raises
    ``ZygoteUnavailable`` when the zygote already has a module that ``cwd`` shadows."""
    names = sorted((set(warm) & WARM) - inst.warm)
    for name in sorted(inst.warm) + names:
        if _shadowed(cwd, name, env):
            if name in inst.warm:
                raise ZygoteUnavailable(
                    f"{cwd} has a module {name!r} of its own, and the zygote imported another"
                )
            names.remove(name)
    return (" " + ",".join(names)).encode() if names else b""


def _shadowed(cwd: str, name: str, env: dict[str, str]) -> bool:
    """Whether a runner started in ``cwd`` would import its own ``name`` from there:
    ``python -m`` puts the working folder first on ``sys.path`` (unless safe-path mode).
    A folder without ``__init__.py`` is only a namespace portion, which loses to a
    regular package found later on the path."""
    if env.get("PYTHONSAFEPATH"):
        return False
    try:
        spec = importlib.machinery.PathFinder.find_spec(name, [cwd])
    except (ImportError, OSError, ValueError):
        return True
    return spec is not None and spec.loader is not None


def _refusal(msg: dict[str, Any], err_r: int) -> str:
    """Why the zygote could not start an attempt: its message, or the child's own
    traceback when it died setting itself up."""
    if "exit" not in msg:
        return str(msg.get("error", "the zygote refused the request"))
    os.set_blocking(err_r, False)
    with contextlib.suppress(OSError):
        detail = os.read(err_r, 8192).decode("utf-8", "replace").strip()
        if detail:
            return f"the forked process exited with {msg['exit']} at start: {detail}"
    return f"the forked process exited with {msg['exit']} at start"
