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
        self.buffer_ = io.StringIO()

    def write(self, text: str) -> int:
        self._target.write(text)
        self.buffer_.write(text)
        return len(text)

    def flush(self) -> None:
        self._target.flush()

    def writable(self) -> bool:
        return True


@contextlib.contextmanager
def _alarm(seconds: float | None, label: str) -> Iterator[None]:
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

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
        if attempt.values is None:
            raise ConfigError("the inline executor needs the input values in this process")
        out, err = _Capture(sys.stdout), _Capture(sys.stderr)
        label = f"task {attempt.task.name!r}"
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):  # noqa: SIM117
            with _alarm(attempt.config.timeout, label):
                result = runner.execute(
                    attempt.task,
                    attempt.values,
                    self.artifacts,
                    set(attempt.declared_outputs),
                    checkpoint_key=attempt.checkpoint_key,
                )
        for stream, cap in (("stdout", out), ("stderr", err)):
            text = cap.buffer_.getvalue()
            if text:
                key = f"{attempt.prefix}/{stream}.log"
                self.storage.write_bytes(key, text.encode())
                result.logs[stream] = key
        return result
