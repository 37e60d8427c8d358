"""Run the task in this process: the fastest loop, same records as a subprocess run.

Inputs are the caller's live objects (no load); outputs are still written to storage so
the cache and lineage are the same as for the ``local`` executor. The timeout uses
SIGALRM, so it only applies when called from the main thread (the kernel's cell thread).
"""

from __future__ import annotations

import contextlib
import io
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from .. import runner
from ..errors import ConfigError, TaskTimeout
from ..runner import AttemptResult
from .base import AttemptSpec, Executor, LogSink


class _Capture(io.TextIOBase):
    """Passes text through to the cell and keeps a copy for the attempt's log."""

    def __init__(self, target: Any) -> None:
        self._target = target
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        self._target.write(text)
        self.parts.append(text)
        return len(text)

    def flush(self) -> None:
        self._target.flush()

    def close(self) -> None:
        """Also called when the capture is collected (``io`` objects close themselves),
        which flushes: only when the attempt wrote something is the stream flushed, as
        before. Flushing ipykernel's stream waits for its I/O thread (twice per attempt,
        stdout and stderr), and a map's attempts mostly print nothing. (Display messages
        flush the streams themselves, so output order is kept either way.)"""
        if self.parts:
            super().close()

    def writable(self) -> bool:
        return True


@contextlib.contextmanager
def _alarm(seconds: float, label: str) -> Iterator[None]:
    def _expired(signum: int, frame: Any) -> None:
        raise TaskTimeout(f"{label} ran longer than its timeout of {seconds:g} s and was stopped")

    previous = signal.signal(signal.SIGALRM, _expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class InlineExecutor(Executor):
    name = "inline"

    in_process = True
    shares_install = True

    def run(
        self, attempt: AttemptSpec, sink: LogSink, cancel: threading.Event | None = None
    ) -> AttemptResult:
        """Run the cell with its output captured (and passed through), under its timeout.

        The streams are swapped and restored by hand, as ``contextlib.redirect_stdout``
        does, and the alarm is set up only for a task with a timeout, on the main
        thread (SIGALRM): a map runs thousands of attempts whose bodies take a few µs."""
        if attempt.values is None:
            raise ConfigError("the inline executor needs the input values in this process")
        out, err = _Capture(sys.stdout), _Capture(sys.stderr)
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = out, err
        try:
            timeout = attempt.config.timeout
            if timeout and threading.current_thread() is threading.main_thread():
                with _alarm(timeout, f"task {attempt.task.name!r}"):
                    result = self._execute(attempt)
            else:
                result = self._execute(attempt)
        finally:
            sys.stdout, sys.stderr = saved
        if out.parts:
            self._keep_log(attempt, result, "stdout", out.parts)
        if err.parts:
            self._keep_log(attempt, result, "stderr", err.parts)
        return result

    def _keep_log(
        self, attempt: AttemptSpec, result: AttemptResult, stream: str, parts: list[str]
    ) -> None:
        key = f"{attempt.prefix}/{stream}.log"
        self.storage.write_bytes(key, "".join(parts).encode())
        result.logs[stream] = key

    def _execute(self, attempt: AttemptSpec) -> AttemptResult:
        local = attempt.task.environment.local_modules
        stale = _stale_modules(local) if local and attempt.config.cache else ""
        if stale:  # (printed into the task's captured stderr, so the user sees it)
            print(
                f"papercrane: not caching this result: {stale}. An inline task runs the "
                "modules this kernel imported; reload it (importlib.reload) to run the "
                "file, or use --executor local",
                file=sys.stderr,
            )
        result = runner.execute(
            attempt.task,
            attempt.values,  # type: ignore[arg-type]
            self.artifacts,
            attempt.declared_outputs,
            checkpoint_key=attempt.checkpoint_key,
        )
        result.uncacheable = stale
        return result


def _stale_modules(local: dict[str, str]) -> str:
    """Which local module of the task this process holds in another state than its file
    (the cache key's), said for people; "" if none."""
    from ..environment import live_module_differs

    for top in sorted(local):
        why = live_module_differs(top)
        if why:
            return f"module {top!r} in this kernel is not {top}'s file: {why}"
    return ""
