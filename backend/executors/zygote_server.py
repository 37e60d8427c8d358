"""The zygote process: a warm fork server for the local executor (its caller's side is
``zygote.py``, which says why it exists).

It runs as ``python -m papercrane.backend.executors.zygote_server FD``, FD being its end
of a ``SOCK_SEQPACKET`` socket pair, the *control* socket. Linux only.

1. It imports what every runner imports (``PRELOAD``), never user code, and answers one
   JSON message: ``{"pid": ..., "watch": [[path, mtime_ns], ...]}``, the files and
   folders whose change makes it stale (``watch_list``).
2. Per attempt the caller sends ``b"spawn"`` with three descriptors: its *attempt
   socket* (one end of a new stream socket pair; the caller keeps the other end) and
   the write ends of the stdout and stderr pipes. It then writes the request on the
   attempt socket: a length-prefixed JSON object (runner arguments, cwd, umask, CPU
   affinity). ``b"spawn numpy"`` (names after a space, comma-separated) also asks the
   zygote to import those of ``WARM`` first, once: modules the task needs that are
   slow to import and safe to fork after.
3. The zygote forks. The child makes itself a session leader (so a timeout or a
   cancel kills its process group, as with ``Popen(start_new_session=True)``), writes
   ``{"pid": N, "warm": [...], "watch": [...]}`` on the attempt socket (the ``WARM``
   modules it has, and what those added to the watch list), reads the request, takes
   the caller's cwd, umask and affinity and calls the runner's ``main`` with its
   stdout/stderr on the caller's pipes. The pid is written only after ``setsid``: a
   caller that kills the group at once must find it.
4. The zygote reaps the child and writes ``{"exit": CODE}`` (``Popen.returncode``
   conventions: ``-9`` for SIGKILL) on the attempt socket. If the caller closes its
   end first, the attempt is abandoned: the zygote kills its process group.
5. ``b"retire"`` asks a stale zygote to exit once its children have ended. EOF on the
   control socket means the caller is gone: the zygote kills its children and exits.

The zygote and each child set ``PR_SET_PDEATHSIG``, so killing the caller (even with
SIGKILL) takes the zygote and every running attempt with it.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import json
import os
import select
import signal
import socket
import struct
import sys
import threading
import traceback
from typing import Any

#: What a fresh runner process imports on every attempt: the runner and the checkpoint
#: module it enters for each task, cloudpickle for common values, and IPython's display
#: formatter for a cell that ends with an expression.
PRELOAD = (
    "papercrane.backend.runner",
    "papercrane.checkpoint",
    "cloudpickle",
    "IPython.core.formatters",
)
#: Modules a zygote imports when an attempt needs them (``b"spawn numpy"``), so that
#: its children find them imported. Only what is slow to import and known to be safe to
#: fork after importing: numpy starts no Python threads, and OpenBLAS's worker threads
#: are stopped by its own ``pthread_atfork`` handler before each fork and started again
#: in the child on first use. (pandas, pyarrow, torch... are not here: some start
#: thread pools or hold state a fork does not carry over.)
WARM = frozenset({"numpy"})
#: The request's length prefix.
LENGTH = struct.Struct("!Q")
#: How long a child waits for its request (the caller sends it right after the fds).
REQUEST_TIMEOUT = 30.0
#: A child's exit code when it could not become the attempt (EX_SOFTWARE).
SETUP_FAILED = 70

_PR_SET_PDEATHSIG = 1


def prctl() -> Any:
    """libc's ``prctl``, or None; loaded before forking, so a child only calls it."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1


def watch_list() -> list[tuple[str, int]]:
    """Files and folders whose change could make a runner forked from this process
    differ from a freshly started one: every folder on ``sys.path`` (an install, upgrade
    or uninstall in site-packages adds or removes entries there), the ``.pth`` files of
    the site folders (editable installs) and every imported module file outside the
    standard library and site-packages (papercrane's own source in an editable install).
    Not covered: a file inside site-packages edited in place."""
    sites = _site_folders()
    watch: dict[str, int] = {}
    for entry in sys.path:
        if entry and entry != os.getcwd() and os.path.exists(entry):  # not its cwd, "/"
            watch[entry] = mtime(entry)
    for folder in sites:
        with contextlib.suppress(OSError):
            for name in os.listdir(folder):
                if name.endswith(".pth"):
                    path = os.path.join(folder, name)
                    watch[path] = mtime(path)
    watch.update(module_watch(sys.modules))
    return sorted(watch.items())


def _site_folders() -> list[str]:
    import site

    sites = [os.path.realpath(p) for p in site.getsitepackages()]
    if site.ENABLE_USER_SITE:
        sites.append(os.path.realpath(site.getusersitepackages()))
    return sites


def module_watch(names: Any) -> dict[str, int]:
    """The files of the modules ``names`` (keys of ``sys.modules``) that lie outside
    the standard library and site-packages (whose folders are watched instead)."""
    import sysconfig

    paths = sysconfig.get_paths()
    stdlib = [os.path.realpath(paths[k]) for k in ("stdlib", "platstdlib")]
    covered = tuple(p + os.sep for p in (*_site_folders(), *stdlib))
    watch: dict[str, int] = {}
    for name in list(names):
        path = getattr(sys.modules.get(name), "__file__", None)
        if path and not os.path.realpath(path).startswith(covered):
            watch[path] = mtime(path)
    return watch


class _Server:
    """The zygote's loop: fork on request, reap children, report their exit."""

    def __init__(self, ctrl: socket.socket) -> None:
        self.ctrl = ctrl
        self.pid = os.getpid()
        #: Running children: pid -> the zygote's copy of their attempt socket.
        self.children: dict[int, socket.socket] = {}
        self.retiring = False
        #: ``WARM`` modules whose import failed here: a child imports them itself (and
        #: fails as a spawned runner would), the zygote does not try again.
        self.warm_failed: set[str] = set()
        #: What warming added to the watch list (files outside site-packages and the
        #: standard library), told to the caller with every pid.
        self.warm_watch: dict[str, int] = {}
        self.prctl = prctl()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.poller = select.epoll()

    def serve(self) -> list[str]:
        """Returns only in a forked child: the runner's arguments."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        # SIGCHLD wakes the poll below through the wakeup pipe.
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        self.poller.register(self.ctrl.fileno(), select.EPOLLIN)
        self.poller.register(self.wake_r, select.EPOLLIN)
        while True:
            if self.retiring and not self.children:
                os._exit(0)
            for fd, _events in self.poller.poll():
                if fd == self.ctrl.fileno():
                    args = self._request()
                    if args is not None:
                        return args
                elif fd == self.wake_r:
                    with contextlib.suppress(OSError):
                        while os.read(self.wake_r, 512):
                            pass
                else:
                    self._abandoned(fd)
            self._reap()

    def _request(self) -> list[str] | None:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(self.ctrl, 64, 3)
        except OSError:
            msg, fds = b"", []
        if not msg:  # the caller is gone: so are its attempts
            self._shutdown()
        verb, _, names = msg.partition(b" ")
        if verb == b"spawn" and len(fds) == 3:
            if names:
                self._warm(names.decode("ascii", "replace").split(","))
            return self._fork(*fds)
        for fd in fds:
            os.close(fd)
        if msg == b"retire":
            self.retiring = True
        return None

    def _warm(self, names: list[str]) -> None:
        """Import the ``WARM`` modules among ``names`` that are not imported yet; what
        they bring in is frozen out of the collector's sight as the preloads are."""
        before = set(sys.modules)
        for name in names:
            if name in WARM and name not in sys.modules and name not in self.warm_failed:
                try:
                    importlib.import_module(name)
                except Exception:  # the task's own import will say what is wrong
                    self.warm_failed.add(name)
        if len(sys.modules) != len(before):
            self.warm_watch.update(module_watch(set(sys.modules) - before))
            gc.freeze()

    def _fork(self, conn_fd: int, out_w: int, err_w: int) -> list[str] | None:
        conn = socket.socket(fileno=conn_fd)
        try:
            pid = os.fork()
        except OSError as exc:
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps({"error": f"fork failed: {exc}"}).encode() + b"\n")
            conn.close()
            os.close(out_w)
            os.close(err_w)
            return None
        if pid == 0:
            try:
                return self._become_attempt(conn, out_w, err_w)
            except BaseException:
                # Never fall back into the zygote's loop from a child. fd 2 is the
                # caller's stderr pipe once _become_attempt got that far.
                with contextlib.suppress(BaseException):
                    os.write(2, traceback.format_exc().encode("utf-8", "replace"))
                os._exit(SETUP_FAILED)
        os.close(out_w)
        os.close(err_w)
        self.children[pid] = conn
        # Only the hang-up: the request on this socket is the child's to read.
        self.poller.register(conn.fileno(), select.EPOLLRDHUP)
        return None

    def _abandoned(self, fd: int) -> None:
        """The caller closed an attempt socket before the attempt ended: kill it."""
        with contextlib.suppress(OSError):
            self.poller.unregister(fd)
        for pid, conn in self.children.items():
            if conn.fileno() == fd:
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
                return

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is None:
                continue
            with contextlib.suppress(OSError, ValueError):
                self.poller.unregister(conn.fileno())
            code = os.waitstatus_to_exitcode(status)
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps({"exit": code}).encode() + b"\n")
            conn.close()

    def _shutdown(self) -> None:
        for pid in self.children:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
        for pid in self.children:
            with contextlib.suppress(OSError):
                os.waitpid(pid, 0)
        os._exit(0)

    def _become_attempt(self, conn: socket.socket, out_w: int, err_w: int) -> list[str]:
        """In the child: leave the zygote's loop behind and take on the request."""
        # First: die with the zygote (which dies with the caller). If it already died,
        # the signal would never come.
        if self.prctl is not None:
            self.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != self.pid:
            os._exit(SETUP_FAILED)
        os.setsid()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        self.poller.close()
        self.ctrl.close()
        os.close(self.wake_r)
        os.close(self.wake_w)
        for other in self.children.values():
            other.close()
        self.children.clear()
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.close(out_w)
        os.close(err_w)
        hello = {
            "pid": os.getpid(),
            "warm": sorted(WARM.intersection(sys.modules)),
            "watch": sorted(self.warm_watch.items()),
        }
        conn.sendall(json.dumps(hello).encode() + b"\n")
        conn.settimeout(REQUEST_TIMEOUT)
        (size,) = LENGTH.unpack(_recv_exactly(conn, LENGTH.size))
        request = json.loads(_recv_exactly(conn, size))
        conn.close()
        _enter(request)
        return list(request["args"])


def _recv_exactly(conn: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise EOFError("the executor went away before sending the request")
        buf += chunk
    return bytes(buf)


def _enter(request: dict[str, Any]) -> None:
    """Take on what a process spawned by the caller would have inherited. The
    environment needs nothing: the caller restarts the zygote when its own differs."""
    cwd = request["cwd"]
    os.chdir(cwd)
    if request.get("umask") is not None:
        os.umask(int(request["umask"]))
    affinity = request.get("affinity")
    if affinity:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, affinity)
    # ``python -m`` puts the working folder first on sys.path (unless safe-path mode),
    # which is how a task imports the user's helper modules: the zygote's was "/".
    if not getattr(sys.flags, "safe_path", False) and sys.path and sys.path[0] == "/":
        sys.path[0] = cwd
    importlib.invalidate_caches()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ctrl = socket.socket(fileno=int(argv[0]))
    environ = dict(os.environ)
    try:
        runner = importlib.import_module(PRELOAD[0])
        for name in PRELOAD[1:]:
            with contextlib.suppress(Exception):  # the runner will say so itself
                importlib.import_module(name)
        hello: dict[str, Any] = {"pid": os.getpid(), "watch": watch_list()}
    except Exception as exc:
        hello = {"error": f"the zygote could not start: {type(exc).__name__}: {exc}"}
    ctrl.send(json.dumps(hello).encode())
    if "error" in hello:
        sys.exit(1)
    # What the zygote imported stays out of the collector's sight: a child's collections
    # then neither scan nor copy (on write) those pages.
    gc.freeze()
    args = _Server(ctrl).serve()
    # In a forked child from here on. Imports must not have changed the environment
    # the caller compared.
    if os.environ != environ:
        os.environ.clear()
        os.environ.update(environ)
    sys.argv = [runner.__file__, *args]
    try:
        status = runner.main(args)
    except SystemExit as exc:  # the task's own sys.exit, or SIGTERM (see the runner)
        status = exc.code
    _leave(status)


def _leave(status: Any) -> None:
    """End the attempt process as the interpreter would (join non-daemon threads, run
    atexit callbacks, flush stdio, exit with ``sys.exit``'s status), minus tearing down
    every module it inherited from the zygote: in a forked child that touches, and so
    copies, most of the zygote's memory, tens of milliseconds per attempt. Objects still
    alive at exit are not finalized, which Python never promised either."""
    # What the interpreter itself calls first: threading's own exit hooks (which stop
    # idle ThreadPoolExecutor workers), then joining the non-daemon threads.
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    if status is None:
        code = 0
    elif isinstance(status, int):
        code = status & 0xFF
    else:
        print(status, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
