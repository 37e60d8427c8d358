"""Fair sharing of a server's attempt slots among projects.

Every execution asks the gate before it starts an attempt. A slot is granted while the
server is under ``max_running`` and the project under its own limit, and only to a
project that is not ahead of another project that also waits: max-min fairness on
running attempts. So one project's 1,000-node fan-out takes what is free, but a second
project's single task gets the next slot rather than waiting behind the fan-out.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any


class FairGate:
    def __init__(self, capacity: int, project_limit: int = 0, limits: dict[str, int] | None = None):
        self.capacity = capacity
        self.project_limit = project_limit
        self.limits = dict(limits or {})
        self.running: Counter[str] = Counter()
        self._demand: dict[int, tuple[str, int]] = {}
        self._lock = threading.Lock()

    def limit(self, project: str) -> int:
        return self.limits.get(project, self.project_limit) or self.capacity

    def try_acquire(self, run: Any, queued: int) -> bool:
        project = run.options.project
        with self._lock:
            self._demand[id(run)] = (project, queued)
            if sum(self.running.values()) >= self.capacity:
                return False
            if self.running[project] >= self.limit(project):
                return False
            waiting = {
                p for p, n in self._demand.values() if n > 0 and self.running[p] < self.limit(p)
            }
            if waiting and self.running[project] > min(self.running[p] for p in waiting):
                return False
            self.running[project] += 1
            self._demand[id(run)] = (project, queued - 1)
            return True

    def release(self, run: Any) -> None:
        with self._lock:
            project = run.options.project
            self.running[project] = max(0, self.running[project] - 1)

    def forget(self, run: Any) -> None:
        with self._lock:
            self._demand.pop(id(run), None)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "capacity": self.capacity,
                "running": dict(self.running),
                "waiting": {p: n for p, n in self._demand.values() if n},
            }
