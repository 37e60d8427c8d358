"""Calling a function on a helper thread once a delay has passed, unless cancelled."""

from __future__ import annotations

import math
import threading
import time
from typing import Any


class Deadlines:
    """Calls a function on a helper thread once its delay has passed, unless it was
    cancelled first. One daemon thread per process, started on first use.

    Waking the thread costs the caller's thread a GIL hand-over, and a quick task's job
    is cancelled before the thread would even see it. So arming notifies the thread
    only when it would otherwise wake too late (it waits with no deadline, or for a
    later one), and with nothing armed the thread lingers: it sleeps until the last
    job's arming plus the shortest delay ever armed, a time no job armed meanwhile can
    be due before, and only then waits for a notification. A run of quick tasks then
    wakes it about once per delay instead of once per task."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._jobs: dict[object, tuple[float, Any]] = {}
        self._thread: threading.Thread | None = None
        #: When the waiting thread wakes on its own; None: only when notified.
        self._wake_at: float | None = None
        self._last_arm = -math.inf
        self._shortest = math.inf

    def arm(self, delay: float, fn: Any) -> object:
        token = object()
        with self._cond:
            now = time.monotonic()
            at = now + delay
            self._jobs[token] = (at, fn)
            self._last_arm = now
            self._shortest = min(self._shortest, delay)
            if self._thread is None or not self._thread.is_alive():  # (also after a fork)
                self._thread = threading.Thread(
                    target=self._serve, name="papercrane-deadlines", daemon=True
                )
                self._thread.start()
            elif self._wake_at is None or at < self._wake_at:
                self._cond.notify()
        return token

    def cancel(self, token: object) -> None:
        with self._cond:
            self._jobs.pop(token, None)

    def _serve(self) -> None:
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    if not self._jobs:
                        until = self._last_arm + self._shortest
                        self._wake_at = until if until > now else None
                        self._cond.wait(until - now if until > now else None)
                        continue
                    token, (at, fn) = min(self._jobs.items(), key=lambda job: job[1][0])
                    if at <= now:
                        del self._jobs[token]
                        self._wake_at = now  # (busy until ``fn`` returns: no notify needed)
                        break
                    self._wake_at = at
                    self._cond.wait(at - now)
            fn()  # outside the condition: it takes its run's lock, and may write


deadlines = Deadlines()
