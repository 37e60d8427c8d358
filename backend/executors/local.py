"""Run each attempt in a fresh Python process through the runner entrypoint, the same
code a Kubernetes pod runs. Output is streamed back line by line while it runs.

On Linux the process is forked from a warm zygote (``zygote.py``) that has the runner's
imports done, which saves most of a spawn's start-up; anywhere else, with
``PAPERCRANE_LOCAL_ZYGOTE=0``, or when the zygote can't take an attempt, it is a plain
``python -m papercrane.backend.runner`` subprocess. Both behave the same to the caller.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import IO, TYPE_CHECKING, Any

from ..errors import ConfigError
from ..runner import AttemptResult, system_error
from ..search_path import kernel_path
from .base import AttemptSpec, Executor, LogSink

if TYPE_CHECKING:  # imported where used: a kernel's cache hits load this executor only
    from .zygote import ForkedProcess, Zygote

log = logging.getLogger(__name__)

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


def _kill(proc: subprocess.Popen | ForkedProcess) -> None:
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


#: Modules that loading an input stored with a serializer imports.
_SERIALIZER_MODULES = {"npy": "numpy", "parquet": "pandas"}


def needed_modules(attempt: AttemptSpec) -> set[str]:
    """Top-level modules the attempt will import for sure: those its code imports (as
    the task records them), those of the distributions its environment names, and those
    loading its inputs takes. (The zygote imports the ones it may, ahead of time.)"""
    refs = (entry.partition("=")[2] for entry in attempt.task.imports)
    names = {ref.partition(":")[0].partition(".")[0] for ref in refs}
    names.update(attempt.task.environment.packages)
    names.update(
        _SERIALIZER_MODULES[ref.serializer]
        for ref in attempt.inputs.values()
        if ref.serializer in _SERIALIZER_MODULES
    )
    return names


class LocalExecutor(Executor):
    name = "local"
    shares_install = True  # a subprocess (or a fork) of this interpreter

    def __init__(self, artifacts: Any) -> None:
        super().__init__(artifacts)
        self._zygote: Zygote | None = None
        self._zygote_lock = threading.Lock()

    @property
    def zygote(self) -> Zygote:
        """This executor's zygote (created on first use; its process on first spawn)."""
        with self._zygote_lock:
            if self._zygote is None:
                from .zygote import Zygote

                self._zygote = Zygote()
            return self._zygote

    def close(self) -> None:
        """Stop the zygote, and with it any attempt still running from this executor."""
        with self._zygote_lock:
            zygote, self._zygote = self._zygote, None
        if zygote is not None:
            zygote.close()

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
        data = attempt.to_dict()
        # Inputs this engine vouches for are not hashed again by the attempt (``Vouched``).
        data["vouched"] = self.storage.vouched.export(r.uri for r in attempt.inputs.values())
        # A folder a cell put on sys.path is on the attempt's too (``search_path``).
        data["sys_path"] = kernel_path()
        self.storage.write_bytes(key, json.dumps(data).encode())
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        started = time.time()
        proc = self._spawn(key, env, needed_modules(attempt))
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
            # Polled every round, pipes open or not: that is how the end of a forked
            # attempt's zygote is noticed (and the rest of its process group killed).
            while (proc.poll() is None) or open_streams:
                if not open_streams:
                    # Both pipes closed: the process is ending. Wait for its exit
                    # rather than for output that won't come.
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=_POLL)
                else:
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
            from .zygote import ForkedProcess  # (imported by ``_spawn``)

            if isinstance(proc, ForkedProcess):
                proc.close()
        return self._result(attempt, proc, timed_out, started)

    def _spawn(
        self, key: str, env: dict[str, str], warm: set[str]
    ) -> subprocess.Popen | ForkedProcess:
        """The attempt's process: forked from the zygote when it can, else spawned. The
        zygote's refusals are logged at debug level: they cost time, never behaviour."""
        from .zygote import ZygoteUnavailable, die_with_parent, switched_off

        reason = switched_off()
        if reason is None:
            try:
                return self.zygote.spawn([self.storage.url_root, key], env, os.getcwd(), warm)
            except (ZygoteUnavailable, OSError) as exc:
                reason = str(exc) or type(exc).__name__
        log.debug("local executor: spawning %s without the zygote: %s", key, reason)
        return subprocess.Popen(
            self.command(key),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            preexec_fn=die_with_parent(),
        )

    def _result(
        self,
        attempt: AttemptSpec,
        proc: subprocess.Popen | ForkedProcess,
        timed_out: bool,
        started: float,
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
            from .zygote import ForkedProcess

            lost = proc.describe() if isinstance(proc, ForkedProcess) else None
            return AttemptResult(
                "failed",
                error=system_error(lost or _describe_exit(proc.returncode), "LostProcess"),
                started_at=started,
                ended_at=time.time(),
            )
        result = AttemptResult.from_dict(data)
        self.storage.vouched.adopt(result.vouched)  # its own child's word: see Vouched
        return result
