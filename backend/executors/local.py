"""Run each attempt in a fresh Python subprocess through the runner entrypoint, the same
command a Kubernetes pod runs. Output is streamed back line by line while it runs."""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Any

from ..errors import ConfigError
from ..runner import AttemptResult, system_error
from .base import AttemptSpec, Executor, LogSink

_POLL = 0.02


def _pump(stream: IO[bytes], name: str, out: queue.Queue) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    try:
        while chunk := stream.read1(65536):  # type: ignore[attr-defined]
            out.put((name, decoder.decode(chunk)))
        tail = decoder.decode(b"", final=True)
        if tail:
            out.put((name, tail))
    finally:
        out.put((name, None))


def _die_with_parent() -> Any:
    """A pre-exec hook for the child: on Linux, be killed when the process that started
    it dies (a kernel or a server killed with SIGKILL must not leave attempts running).
    libc is loaded here, in the parent: the child, forked from a threaded process, only
    makes the one system call."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    sig = int(signal.SIGKILL)
    return lambda: prctl(1, sig)  # 1 = PR_SET_PDEATHSIG


def _kill(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.wait(timeout=10)


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"the task process was killed by {name}{hint}"
    return f"the task process exited with code {code} before reporting a result"


class LocalExecutor(Executor):
    name = "local"

    def command(self, attempt_key: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "papercrane.backend.runner",
            self.storage.url_root,
            attempt_key,
        ]

    def run(
        self, attempt: AttemptSpec, sink: LogSink, cancel: threading.Event | None = None
    ) -> AttemptResult:
        if not self.storage.shareable:
            raise ConfigError(
                f"storage {self.storage.url_root} lives inside this process, so a task "
                "subprocess can't read it; use --executor inline or a file/object-store URL"
            )
        key = f"{attempt.prefix}/attempt.json"
        self.storage.write_bytes(key, json.dumps(attempt.to_dict()).encode())
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        started = time.time()
        proc = subprocess.Popen(
            self.command(key),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            preexec_fn=_die_with_parent(),
        )
        lines: queue.Queue = queue.Queue()
        pumps = [
            threading.Thread(target=_pump, args=(proc.stdout, "stdout", lines), daemon=True),
            threading.Thread(target=_pump, args=(proc.stderr, "stderr", lines), daemon=True),
        ]
        for t in pumps:
            t.start()
        timeout = attempt.config.timeout
        deadline = started + timeout if timeout else None
        open_streams = 2
        timed_out = False
        try:
            while open_streams or proc.poll() is None:
                try:
                    stream, text = lines.get(timeout=_POLL)
                except queue.Empty:
                    pass
                else:
                    if text is None:
                        open_streams -= 1
                    else:
                        sink.log(stream, text)
                if deadline is not None and time.time() > deadline and proc.poll() is None:
                    timed_out = True
                    _kill(proc)
                if cancel is not None and cancel.is_set() and proc.poll() is None:
                    _kill(proc)
                    return AttemptResult(
                        "aborted",
                        error=system_error("the attempt was stopped", "Aborted"),
                        started_at=started,
                        ended_at=time.time(),
                    )
        except BaseException:
            _kill(proc)
            raise
        finally:
            for t in pumps:
                t.join(timeout=1)
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        return self._result(attempt, proc.returncode, timed_out, started)

    def _result(
        self, attempt: AttemptSpec, code: int, timed_out: bool, started: float
    ) -> AttemptResult:
        if timed_out:
            message = (
                f"task {attempt.task.name!r} ran longer than its timeout of "
                f"{attempt.config.timeout:g} s and was stopped"
            )
            error = {"kind": "user", "type": "TaskTimeout", "message": message, "traceback": ""}
            return AttemptResult("failed", error=error, started_at=started, ended_at=time.time())
        try:
            data = json.loads(self.storage.read_bytes(f"{attempt.prefix}/result.json"))
        except Exception:
            return AttemptResult(
                "failed",
                error=system_error(_describe_exit(code), "LostProcess"),
                started_at=started,
                ended_at=time.time(),
            )
        return AttemptResult.from_dict(data)
